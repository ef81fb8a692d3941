"""A nonsensical Retry-After through a whole client: the normal backoff applies."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from trackasync import Client, Response, Retry
from trackasync.testing import RecordingTransport

from .conftest import IDS

MakeClient = Callable[..., Client]


@pytest.fixture
def waits(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Retry waits, recorded instead of slept."""
    recorded: list[float] = []

    async def record(delay: float) -> None:
        recorded.append(delay)

    async def skip(delay: float) -> None:
        pass

    monkeypatch.setattr("trackasync._sender._sleep", record)
    monkeypatch.setattr("trackasync._ratelimit._sleep", skip)
    return recorded


@pytest.mark.parametrize(
    "header", ["-5", "-0.25", "Wed, 21 Oct 2015 07:28:00 GMT", "soon"]
)
async def test_nonsense_retry_after_falls_back_to_backoff(
    make_client: MakeClient, waits: list[float], header: str
) -> None:
    """A negative delay or a past date waits what the backoff draws, not 0."""
    answers = iter(
        [
            Response(429, b"", {"Retry-After": header}),
            Response(503, b"", {"Retry-After": header}),
            Response(200, b'{"success": true}'),
        ]
    )
    transport = RecordingTransport(lambda request: next(answers))
    policy = Retry(attempts=5, timeout=600.0, wait_initial=1.0, wait_max=8.0)
    async with make_client(transport=transport, retry=policy) as client:
        receipt = await client.track_and_wait(IDS, "view")
    assert receipt.attempts == 3
    # Full jitter under ceilings of 1 s, then 2 s: never the 0 s the header
    # would have asked for.
    assert len(waits) == 2
    assert 0.0 < waits[0] <= 1.0
    assert 0.0 < waits[1] <= 2.0
