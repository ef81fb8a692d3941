"""Test helpers for code that uses trackasync."""
