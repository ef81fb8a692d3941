"""pytest fixtures that trackasync registers through its ``pytest11`` entry point."""
