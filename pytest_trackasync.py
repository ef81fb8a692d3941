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
teardown with the predicate's own exception.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from trackasync.testing import FakeTrackingAPI

__all__ = ["MARKER", "fake_tracking_api", "pytest_configure"]

MARKER = "fake_tracking_api"
"""The marker whose keyword arguments configure the ``fake_tracking_api`` fixture."""


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

    marker = request.node.get_closest_marker(MARKER)
    options: dict[str, Any] = {} if marker is None else dict(marker.kwargs)
    with FakeTrackingAPI(**options) as api:
        yield api
