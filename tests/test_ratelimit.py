"""Tests for ``trackasync._ratelimit``: client-side pacing and 429 back-off."""

from __future__ import annotations

from itertools import pairwise
from types import SimpleNamespace

import pytest

from trackasync import _ratelimit
from trackasync._ratelimit import DEFAULT_RATE_LIMIT, RateLimiter


class Clock:
    """A monotonic clock that moves only when told to."""

    def __init__(self, start: float = 100.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    """The rate limiter's clock, frozen until a test advances it."""
    fake = Clock()
    monkeypatch.setattr(_ratelimit, "time", SimpleNamespace(monotonic=fake))
    return fake


# Rate 4/s gives an interval of 0.25 s: exact in binary, so delays compare exactly.
RATE = 4.0
INTERVAL = 0.25


def test_default_rate_is_under_the_api_limit() -> None:
    """The default pacing stays at the API's 100 requests per second."""
    assert DEFAULT_RATE_LIMIT == 100.0


def test_burst_of_five_then_one_interval_apart(clock: Clock) -> None:
    """A quiet limiter lets five requests through, then spaces them by 1/rate."""
    limiter = RateLimiter(RATE)
    delays = [limiter.delay() for _ in range(9)]
    assert delays == [0.0] * 5 + [0.25, 0.5, 0.75, 1.0]


def test_requests_at_the_rate_never_wait(clock: Clock) -> None:
    """Requests that arrive one interval apart are never delayed."""
    limiter = RateLimiter(RATE)
    for _ in range(50):
        assert limiter.delay() == 0.0
        clock.now += INTERVAL


def test_faster_requests_are_paced_to_the_rate(clock: Clock) -> None:
    """Requests arriving at twice the rate end up waiting for their slots."""
    limiter = RateLimiter(RATE)
    starts = []
    for _ in range(40):
        starts.append(clock.now + limiter.delay())
        clock.now += INTERVAL / 2
    gaps = [later - earlier for earlier, later in pairwise(starts[10:])]
    assert gaps == pytest.approx([INTERVAL] * len(gaps))


def test_burst_allowance_comes_back_after_idling(clock: Clock) -> None:
    """After a quiet spell of five intervals, five requests go at once again."""
    limiter = RateLimiter(RATE)
    for _ in range(10):
        limiter.delay()
    clock.now += 10.0
    assert [limiter.delay() for _ in range(6)] == [0.0] * 5 + [0.25]


def test_burst_is_not_banked_beyond_five(clock: Clock) -> None:
    """Idling for a long time does not allow more than the burst at once."""
    limiter = RateLimiter(RATE)
    clock.now += 3600.0
    assert [limiter.delay() for _ in range(7)] == [0.0] * 5 + [0.25, 0.5]


def test_429_halves_the_rate(clock: Clock) -> None:
    """Each 429 halves the current rate, and pacing follows the new interval."""
    limiter = RateLimiter(RATE)
    for _ in range(5):
        limiter.delay()
    limiter.rate_limited(None)
    assert limiter.current_rate == 2.0
    assert [limiter.delay() for _ in range(3)] == [0.25, 0.75, 1.25]


def test_429_halving_stops_at_the_floor(clock: Clock) -> None:
    """Repeated 429s never push the rate below 5 % of the configured one."""
    limiter = RateLimiter(100.0)
    seen = []
    for _ in range(8):
        limiter.rate_limited(None)
        seen.append(limiter.current_rate)
        clock.now += 1.0
    assert seen == [50.0, 25.0, 12.5, 6.25, 5.0, 5.0, 5.0, 5.0]


def test_429s_close_together_cut_the_rate_once(clock: Clock) -> None:
    """429s within a second of each other are one overload, so one halving."""
    limiter = RateLimiter(100.0)
    for _ in range(4):
        limiter.rate_limited(None)
        clock.now += 0.2
    assert limiter.current_rate == 50.0
    clock.now += 0.3
    limiter.rate_limited(None)
    assert limiter.current_rate == 25.0


def test_retry_after_pauses_the_next_request(clock: Clock) -> None:
    """A 429 with Retry-After holds the next slot until that many seconds pass."""
    limiter = RateLimiter(100.0)
    limiter.rate_limited(3.0)
    assert limiter.delay() == pytest.approx(3.0)
    clock.now += 3.0
    assert limiter.delay() == pytest.approx(0.02)  # the slot after it, at 50/s


def test_retry_after_never_shortens_a_longer_wait(clock: Clock) -> None:
    """A shorter Retry-After does not bring a later reserved slot forward."""
    limiter = RateLimiter(100.0)
    limiter.rate_limited(5.0)
    limiter.rate_limited(1.0)
    assert limiter.delay() == pytest.approx(5.0)


@pytest.mark.parametrize("retry_after", [None, 0.0])
def test_429_without_retry_after_does_not_pause(
    clock: Clock, retry_after: float | None
) -> None:
    """Without a positive Retry-After, a 429 only slows the rate down."""
    limiter = RateLimiter(RATE)
    limiter.rate_limited(retry_after)
    assert limiter.delay() == 0.0


def test_accepted_recovers_additively_to_the_configured_rate() -> None:
    """Each accepted request adds 2 % of the configured rate, up to that rate."""
    limiter = RateLimiter(100.0)
    limiter.rate_limited(None)
    assert limiter.current_rate == 50.0
    limiter.accepted()
    assert limiter.current_rate == pytest.approx(52.0)
    for _ in range(23):
        limiter.accepted()
    assert limiter.current_rate == pytest.approx(98.0)
    limiter.accepted()
    limiter.accepted()
    assert limiter.current_rate == 100.0


def test_accepted_at_full_rate_changes_nothing() -> None:
    """Accepted requests never raise the rate above the configured one."""
    limiter = RateLimiter(100.0)
    for _ in range(10):
        limiter.accepted()
    assert limiter.current_rate == 100.0


def test_no_rate_never_delays(clock: Clock) -> None:
    """With rate None nothing is ever delayed, not even after 429s."""
    limiter = RateLimiter(None)
    assert all(limiter.delay() == 0.0 for _ in range(1000))
    limiter.rate_limited(None)
    limiter.rate_limited(30.0)
    limiter.accepted()
    assert limiter.current_rate is None
    assert all(limiter.delay() == 0.0 for _ in range(100))


async def test_acquire_sleeps_for_the_delay_and_the_window(
    clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """acquire() sleeps as long as pacing says, and until a window has room."""
    sleeper = Sleeper(clock)
    slept: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        slept.append(seconds)
        await sleeper(seconds)

    monkeypatch.setattr(_ratelimit, "_sleep", fake_sleep)
    limiter = RateLimiter(RATE)
    for _ in range(7):
        await limiter.acquire()
    # Four at once (the burst, capped at the rate), then the window's wait,
    # then one interval apart.
    assert slept == [1.0, 0.25, 0.25]


class Sleeper:
    """A sleep that moves the frozen clock forward, oversleeping when told to."""

    def __init__(self, clock: Clock, late: list[float] | None = None) -> None:
        self.clock = clock
        self.late = late or []

    async def __call__(self, seconds: float) -> None:
        self.clock.now += seconds + (self.late.pop() if self.late else 0.0)


def busiest_window(times: list[float], window: float = 1.0) -> int:
    """The most requests any half-open window of ``window`` seconds holds."""
    times = sorted(times)
    most, start = 0, 0
    for end, t in enumerate(times):
        while times[start] <= t - window:
            start += 1
        most = max(most, end - start + 1)
    return most


@pytest.mark.parametrize("rate", [4.0, 18.0, 100.0])
async def test_no_window_sees_more_than_the_rate_from_the_first_request(
    clock: Clock, monkeypatch: pytest.MonkeyPatch, rate: float
) -> None:
    """From a cold start, no one-second window sees more than ``rate`` requests."""
    monkeypatch.setattr(_ratelimit, "_sleep", Sleeper(clock))
    limiter = RateLimiter(rate)
    released = []
    for _ in range(int(rate) * 4):
        await limiter.acquire()
        released.append(clock.now)
    assert busiest_window(released) == int(rate)
    # ... while the pace over the whole run is still the rate.
    assert released[-1] - released[0] < 4.0


async def test_late_wake_ups_do_not_squeeze_a_window(
    clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The window rule counts when requests really left, not when they were due."""
    late = [0.0, 0.03, 0.0, 0.07, 0.01] * 200
    monkeypatch.setattr(_ratelimit, "_sleep", Sleeper(clock, late))
    limiter = RateLimiter(20.0)
    released = []
    for i in range(200):
        await limiter.acquire()
        released.append(clock.now)
        clock.now += 0.004 * (i % 3)
    assert busiest_window(released) <= 20


async def test_the_fake_api_sees_no_window_over_the_rate_from_a_cold_start() -> None:
    """End to end: a client at rate_limit=18 sends single requests as fast as
    it is let to the fake API limited to 20 in any 1 s: no 429 (the burst on
    top of a full window used to put 22 in the first second)."""
    from trackasync import Client
    from trackasync.testing import FakeTrackingAPI

    async with FakeTrackingAPI() as api:
        api.set_rate_limit(20.0, window=1.0)
        async with Client(
            api.base_url,
            api.project_token,
            auth=api.auth,
            mode="single",
            linger=0.0,
            max_in_flight=8,
            rate_limit=18.0,
        ) as client:
            for i in range(30):
                client.track_nowait({"registered": f"u{i}"}, "page")
            result = await client.flush(timeout=20)
            assert result.delivered == 30
            assert client.stats().rate_limited == 0
