"""The pytest plugin trackasync registers (``pytest11`` entry point ``trackasync``).

It defines the ``fake_tracking_api`` fixture and its marker, and imports nothing
but pytest until a test asks for the fixture: having trackasync installed costs
other projects' test runs nothing. It lives outside the ``trackasync`` package
because importing anything inside it would import the whole client.

``fake_tracking_api`` yields a running :class:`trackasync.testing.FakeTrackingAPI`
on a free loopback port, fresh for each test. The server runs on its own event
loop in a background thread, so the fixture is a plain sync fixture: it works in
sync tests, in pytest-asyncio tests (strict or auto mode) and in anyio tests,
with nothing to configure. Its constructor options come from the marker::

    @pytest.mark.fake_tracking_api(rate_limit=1, rate_window=1)
    async def test_rate_limited(fake_tracking_api): ...

A ``reject_commands`` predicate that raised during the test fails it at
teardown with the predicate's own exception, and so does a ``Client`` or
``SyncClient`` created during the test and left open: the report names the
test and the client (a ``SyncClient`` is closed then, so that the run does not
wait for it at exit).
"""

from __future__ import annotations

from collections.abc import Generator, Iterator
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from trackasync.testing import FakeTrackingAPI

__all__ = [
    "MARKER",
    "fake_tracking_api",
    "pytest_configure",
    "pytest_runtest_teardown",
]

MARKER = "fake_tracking_api"
"""The marker whose keyword arguments configure the ``fake_tracking_api`` fixture."""


# Clients that existed when the fixture started, and those found left open.
_BEFORE = pytest.StashKey[set[int]]()
_LEFT_OPEN = pytest.StashKey[list[str]]()


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_teardown(item: pytest.Item) -> Generator[None, None, None]:
    """Look for clients left open before any fixture ends.

    An async test's event loop is closed by its plugin's own fixture teardown,
    and a ``Client`` still open then is abandoned (and looks closed): the look
    must come first. The ``fake_tracking_api`` teardown reports what it found.
    """
    before = item.stash.get(_BEFORE, None)
    if before is not None:
        from trackasync.testing._open_clients import left_open

        item.stash[_LEFT_OPEN] = left_open(before)
    yield


def pytest_configure(config: pytest.Config) -> None:
    """Declare the marker, so ``--strict-markers`` runs accept it."""
    config.addinivalue_line(
        "markers",
        f"{MARKER}(**options): FakeTrackingAPI keyword arguments for the "
        f"{MARKER} fixture",
    )


@pytest.fixture
def fake_tracking_api(request: pytest.FixtureRequest) -> Iterator[FakeTrackingAPI]:
    """A running fake Tracking API, configured by the ``fake_tracking_api`` marker."""
    # Imported here, on first use, to keep the plugin free for everyone else.
    from trackasync.testing import FakeTrackingAPI
    from trackasync.testing._open_clients import left_open, snapshot

    marker = request.node.get_closest_marker(MARKER)
    options: dict[str, Any] = {} if marker is None else dict(marker.kwargs)
    before = request.node.stash[_BEFORE] = snapshot()
    with FakeTrackingAPI(**options) as api:
        yield api
        # Found by pytest_runtest_teardown, while the fake still serves (a
        # left-open SyncClient delivers what it holds before it is closed).
        unclosed = request.node.stash.get(_LEFT_OPEN, None)
        if unclosed is None:  # the hook did not run (another plugin's teardown)
            unclosed = left_open(before)
    if unclosed:
        pytest.fail(
            f"{request.node.nodeid} left a trackasync client open:\n  "
            + "\n  ".join(unclosed),
            pytrace=False,
        )
