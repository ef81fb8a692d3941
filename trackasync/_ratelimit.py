"""A client-side limit on requests per second that backs off when the API says 429.

The API allows about 100 requests per second per source IP by default and drops
whatever arrives over it, so the client paces itself below that instead of
finding the limit by losing requests. Pacing is GCRA-style (a "next allowed"
time advanced by one interval per request, with a small burst allowance), which
needs no background task and keeps waiters in the order they asked.
"""

from __future__ import annotations

import asyncio
import time

DEFAULT_RATE_LIMIT = 100.0
# Burst allowance, in requests: lets a quiet client send a few requests at once.
_BURST = 5
# After a 429 the rate halves, down to this share of the configured rate, then
# climbs back by this share per accepted request (additive increase).
_FLOOR_SHARE = 0.05
_RECOVERY_SHARE = 0.02
# Requests in flight together meet the same overload: their 429s are one
# signal, so the rate is cut at most once per this many seconds.
_CUT_SPACING = 1.0

# Looked up at call time, so tests can drive pacing without real waiting.
_sleep = asyncio.sleep


class RateLimiter:
    """Paces requests to ``rate`` per second (``None``: no pacing)."""

    __slots__ = ("_current", "_last_cut", "_next", "_rate")

    def __init__(self, rate: float | None) -> None:
        self._rate = rate
        self._current = rate
        self._next = 0.0
        self._last_cut = -_CUT_SPACING

    @property
    def current_rate(self) -> float | None:
        """The rate in force now: lower than configured for a while after a 429."""
        return self._current

    def delay(self) -> float:
        """Reserve the next slot; returns how long to wait before using it."""
        now = time.monotonic()
        current = self._current
        interval = 0.0 if current is None else 1.0 / current
        earliest = max(self._next, now - (_BURST - 1) * interval)
        self._next = earliest + interval
        return max(0.0, earliest - now)

    async def acquire(self) -> None:
        """Wait for the next request slot."""
        wait = self.delay()
        if wait > 0:
            await _sleep(wait)

    def rate_limited(self, retry_after: float | None) -> None:
        """The API answered 429: slow down, and pause for ``retry_after`` if given."""
        if self._rate is None or self._current is None:
            return  # no pacing at all: the sender's own retry wait covers the 429
        now = time.monotonic()
        if now - self._last_cut >= _CUT_SPACING:
            self._last_cut = now
            self._current = max(self._rate * _FLOOR_SHARE, self._current / 2)
        if retry_after:
            self._next = max(self._next, now + retry_after)

    def accepted(self) -> None:
        """A request went through: recover toward the configured rate."""
        if (
            self._rate is not None
            and self._current is not None
            and self._current < self._rate
        ):
            self._current = min(
                self._rate, self._current + self._rate * _RECOVERY_SHARE
            )
