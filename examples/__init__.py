"""Runnable examples; each reads its settings from TRACKASYNC_* variables."""
