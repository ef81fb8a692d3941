"""An alias of the pytest plugin, which now lives in the top-level ``pytest_trackasync``.

An environment installed before the plugin moved still names this module in its
``pytest11`` entry point until trackasync is reinstalled; this keeps its test
runs working meanwhile. Importing it loads the whole package, which is exactly
what the new module avoids: nothing should name it.
"""

from pytest_trackasync import (
    MARKER,
    fake_tracking_api,
    pytest_configure,
    pytest_runtest_teardown,
)

__all__ = [
    "MARKER",
    "fake_tracking_api",
    "pytest_configure",
    "pytest_runtest_teardown",
]
