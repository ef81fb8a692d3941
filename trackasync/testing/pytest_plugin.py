"""pytest fixtures that trackasync registers through its ``pytest11`` entry point.

``fake_tracking_api`` yields a running :class:`~trackasync.testing.FakeTrackingAPI`
on a free loopback port, fresh for each test::

    async def test_tracks(fake_tracking_api):
        async with Client(fake_tracking_api.base_url,
                          fake_tracking_api.project_token,
                          auth=fake_tracking_api.auth) as client:
            ...
        assert fake_tracking_api.events

Constructor options come from the ``fake_tracking_api`` marker::

    @pytest.mark.fake_tracking_api(rate_limit=1, rate_window=1)
    async def test_rate_limited(fake_tracking_api): ...

The fixture is an async one and needs pytest-asyncio (any mode: it is declared
with ``pytest_asyncio.fixture``). Without pytest-asyncio the fixture is simply
not defined, so having trackasync installed never breaks a test run.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from ._fake_api import FakeTrackingAPI

__all__ = ["MARKER", "pytest_configure"]

MARKER = "fake_tracking_api"
"""The marker whose keyword arguments configure the ``fake_tracking_api`` fixture."""


def pytest_configure(config: pytest.Config) -> None:
    """Declare the marker, so ``--strict-markers`` runs accept it."""
    config.addinivalue_line(
        "markers",
        f"{MARKER}(**options): FakeTrackingAPI keyword arguments for the "
        f"{MARKER} fixture",
    )


try:
    import pytest_asyncio
except ImportError:  # no async fixture then, and no error either
    pass
else:

    @pytest_asyncio.fixture
    async def fake_tracking_api(
        request: pytest.FixtureRequest,
    ) -> AsyncIterator[FakeTrackingAPI]:
        """A running fake Tracking API, configured by the ``fake_tracking_api`` marker."""
        from ._fake_api import FakeTrackingAPI

        marker = request.node.get_closest_marker(MARKER)
        options: dict[str, Any] = {} if marker is None else dict(marker.kwargs)
        async with FakeTrackingAPI(**options) as api:
            yield api
