"""The rate budget shared by the processes of one host."""

from __future__ import annotations

import itertools
import math
import multiprocessing
import os
import struct
from pathlib import Path

import pytest

from trackasync import Client, ConfigError, _ratelimit
from trackasync._ratelimit import (
    RateLimiter,
    SharedRateLimiter,
    budget_path,
    make_limiter,
)

from .test_ratelimit import Clock

pytestmark = pytest.mark.skipif(os.name == "nt", reason="POSIX file locks")

RATE = 4.0
# The shared budget keeps a margin under the configured rate.
PACE = RATE * _ratelimit._SHARED_HEADROOM
INTERVAL = 1 / PACE


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock(1_000_000.0)
    monkeypatch.setattr(_ratelimit, "_wall", fake)
    return fake


@pytest.fixture
def path(tmp_path: Path) -> str:
    return str(tmp_path / "budget")


def test_two_limiters_share_one_pace(clock: Clock, path: str) -> None:
    a, b = SharedRateLimiter(RATE, path), SharedRateLimiter(RATE, path)
    assert [a.delay(), b.delay(), a.delay(), b.delay()] == pytest.approx(
        [0.0, INTERVAL, 2 * INTERVAL, 3 * INTERVAL]
    )
    # Alone, each would have had a burst of slots at once.
    alone = RateLimiter(RATE)
    assert alone.delay() == alone.delay() == 0.0


def test_idle_time_is_not_banked(clock: Clock, path: str) -> None:
    a = SharedRateLimiter(RATE, path)
    assert a.delay() == 0.0
    clock.now += 10
    assert [a.delay(), a.delay()] == pytest.approx([0.0, INTERVAL])


def test_a_429_in_one_process_slows_the_others(clock: Clock, path: str) -> None:
    a, b = SharedRateLimiter(RATE, path), SharedRateLimiter(RATE, path)
    a.rate_limited(2.0)
    assert b.current_rate == PACE / 2
    assert b.delay() == 2.0  # the pause asked for applies to everyone
    a.rate_limited(None)  # within the cut spacing: one signal, one cut
    assert b.current_rate == PACE / 2
    for _ in range(100):
        b.accepted()
    assert a.current_rate == PACE


def test_a_lower_rate_caps_the_shared_pace(clock: Clock, path: str) -> None:
    fast, slow = SharedRateLimiter(RATE, path), SharedRateLimiter(RATE / 4, path)
    assert fast.delay() == 0.0
    assert slow.delay() == pytest.approx(INTERVAL)  # fast's slot is kept
    assert slow.current_rate == PACE / 4
    assert fast.delay() == pytest.approx(INTERVAL + 1 / (PACE / 4))


@pytest.mark.parametrize(
    "content",
    [
        b"garbage",
        struct.pack("<3d", math.nan, math.nan, math.nan),
        struct.pack("<3d", 1e12, -1.0, 1e12),  # far ahead: a clock step
    ],
)
def test_a_stale_or_corrupt_state_starts_over(
    clock: Clock, path: str, content: bytes
) -> None:
    Path(path).write_bytes(content)
    limiter = SharedRateLimiter(RATE, path)
    assert limiter.delay() == 0.0
    assert limiter.current_rate == PACE
    assert limiter.delay() == pytest.approx(INTERVAL)


def test_budget_path_is_keyed_by_api_host(tmp_path: Path) -> None:
    one = budget_path("host", "https://api.exponea.com")
    assert one == budget_path("host", "https://api.exponea.com/")
    assert one != budget_path("host", "https://api.eu1.exponea.com")
    assert budget_path("host", "http://127.0.0.1:1") != budget_path(
        "host", "http://127.0.0.1:2"
    )
    assert budget_path(str(tmp_path / "x"), "https://a.test") == str(tmp_path / "x")


def test_make_limiter_choices(tmp_path: Path) -> None:
    assert type(make_limiter(100.0, None, "https://a.test")) is RateLimiter
    assert type(make_limiter(100.0, "off", "https://a.test")) is RateLimiter
    shared = make_limiter(100.0, str(tmp_path / "b"), "https://a.test")
    assert isinstance(shared, SharedRateLimiter)
    assert (tmp_path / "b").stat().st_mode & 0o777 == 0o600
    with pytest.raises(ConfigError, match="needs a rate_limit"):
        make_limiter(None, "host", "https://a.test")
    with pytest.raises(ConfigError, match="cannot open"):
        make_limiter(100.0, str(tmp_path / "missing" / "b"), "https://a.test")
    with pytest.raises(ConfigError, match="rate_budget must be"):
        make_limiter(100.0, 3, "https://a.test")  # type: ignore[arg-type]


def _reserve(path: str, count: int, out: multiprocessing.Queue[list[float]]) -> None:
    limiter = SharedRateLimiter(1000.0, path)
    out.put([limiter.reserve()[0] for _ in range(count)])


def test_processes_never_share_a_slot(path: str) -> None:
    context = multiprocessing.get_context("fork")
    out: multiprocessing.Queue[list[float]] = context.Queue()
    workers = [context.Process(target=_reserve, args=(path, 50, out)) for _ in range(4)]
    for worker in workers:
        worker.start()
    slots = sorted(s for _ in workers for s in out.get(timeout=20))
    for worker in workers:
        worker.join(20)
        assert worker.exitcode == 0
    gaps = [b - a for a, b in itertools.pairwise(slots)]
    assert len(slots) == 200
    # One interval apart, give or take the float rounding of wall-clock seconds.
    assert min(gaps) > 1 / (1000.0 * _ratelimit._SHARED_HEADROOM) - 1e-6


async def test_client_with_a_shared_budget_delivers(tmp_path: Path) -> None:
    from trackasync.testing import FakeTrackingAPI

    async with FakeTrackingAPI() as api:
        async with Client(
            api.base_url,
            api.project_token,
            auth=api.auth,
            linger=0.0,
            rate_budget=str(tmp_path / "budget"),
        ) as client:
            await client.track_and_wait({"registered": "a"}, "page")
        assert api.event_count == 1
    assert (tmp_path / "budget").stat().st_size == 24
