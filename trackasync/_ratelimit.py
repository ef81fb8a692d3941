"""A client-side limit on requests per second that backs off when the API says 429.

The API allows about 100 requests per second per source IP by default and drops
whatever arrives over it, so the client paces itself below that instead of
finding the limit by losing requests. Pacing is GCRA-style (a "next allowed"
time advanced by one interval per request, with a small burst allowance), which
needs no background task and keeps waiters in the order they asked.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import struct
import sys
import tempfile
import time
from collections.abc import Iterator
from urllib.parse import urlsplit

from ._exceptions import ConfigError

if sys.platform != "win32":
    import fcntl

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


# -- one budget shared by the processes of a host ---------------------------------------

# The shared state: next allowed time, rate in force, time of the last cut (all
# wall-clock seconds, so every process and every boot reads them the same way).
_STATE = struct.Struct("<3d")
# A state further ahead than this is stale (a clock step, a crashed writer):
# start over rather than wait for it.
_STALE_AHEAD = 300.0


# The processes' requests reach the API with some jitter (scheduling, CPU
# contention): pacing the host exactly at the limit would let a late request and
# an on-time one land in the same window. This share of ``rate_limit`` is the
# pace actually kept, leaving a 1 s window 50 ms of slack.
_SHARED_HEADROOM = 0.95


def _wall() -> float:
    return time.time()


class SharedRateLimiter(RateLimiter):
    """``RateLimiter`` whose pacing state lives in a file shared by processes.

    The API's limit is per source IP, so N processes each pacing themselves to
    the limit send N times it. Each request slot is reserved under an exclusive
    ``flock`` on ``path``: an open, a read, a few additions, a write and a
    close, some 10 microseconds at 100 requests per second. A 429 seen by one
    process slows them all. There is no burst allowance (processes starting
    together would multiply it), and the pace kept is 95 % of ``rate``.
    """

    __slots__ = ("_path",)

    def __init__(self, rate: float, path: str) -> None:
        super().__init__(rate * _SHARED_HEADROOM)
        self._path = path

    @property
    def path(self) -> str:
        """The state file shared with the other processes."""
        return self._path

    @property
    def current_rate(self) -> float | None:
        with self._state() as state:
            return state[1]

    def check(self) -> None:
        """Open the state file once, so a bad path fails when the client is built."""
        with self._state():
            pass

    @contextlib.contextmanager
    def _state(self) -> Iterator[list[float]]:
        """The shared (next, current, last_cut), locked; written back on exit.

        The file is opened for each use: a descriptor kept open would be
        inherited by forked children, and they would share its lock.
        """
        # 0o600: the budget is shared only with processes of the same user.
        fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            raw = os.pread(fd, _STATE.size, 0)
            rate = self._rate
            assert rate is not None
            now = _wall()
            state = [0.0, rate, -_CUT_SPACING]
            if len(raw) == _STATE.size:
                next_at, current, last_cut = _STATE.unpack(raw)
                # Each check also fails for NaN: a corrupt value starts over.
                if next_at <= now + _STALE_AHEAD:  # else a clock step or a crash
                    state[0] = next_at
                if current > 0:  # a process with a lower rate_limit caps it
                    state[1] = min(current, rate)
                if last_cut <= now:
                    state[2] = last_cut
            before = list(state)
            yield state
            if state != before:
                os.pwrite(fd, _STATE.pack(*state), 0)
        finally:
            os.close(fd)  # also releases the lock

    def reserve(self) -> tuple[float, float]:
        """Reserve the next shared slot: (its wall-clock time, now)."""
        with self._state() as state:
            now = _wall()
            earliest = max(state[0], now)
            state[0] = earliest + 1.0 / state[1]
        return earliest, now

    def delay(self) -> float:
        earliest, now = self.reserve()
        return max(0.0, earliest - now)

    def rate_limited(self, retry_after: float | None) -> None:
        rate = self._rate
        assert rate is not None
        with self._state() as state:
            now = _wall()
            if now - state[2] >= _CUT_SPACING:
                state[2] = now
                state[1] = max(rate * _FLOOR_SHARE, state[1] / 2)
            if retry_after:
                state[0] = max(state[0], now + retry_after)

    def accepted(self) -> None:
        rate = self._rate
        assert rate is not None
        with self._state() as state:
            if state[1] < rate:
                state[1] = min(rate, state[1] + rate * _RECOVERY_SHARE)


def budget_path(budget: str, base_url: str) -> str:
    """Where the shared state for ``base_url`` lives: ``"host"`` picks a file
    in the temporary directory keyed by the API's host and port; anything else
    is taken as the path of the file."""
    if budget == "host":
        where = urlsplit(base_url)
        key = f"{where.scheme}://{where.hostname}:{where.port or ''}"
        digest = hashlib.sha256(key.encode()).hexdigest()[:16]
        return os.path.join(tempfile.gettempdir(), f"trackasync-budget-{digest}")
    return budget


def make_limiter(rate: float | None, budget: str | None, base_url: str) -> RateLimiter:
    """The limiter a client uses: its own, or the host's shared budget.

    ``budget`` is None or ``"off"`` (pace this client alone), ``"host"`` (share
    with every process of this host that talks to the same API) or a file path.
    """
    if budget is None or budget == "off":
        return RateLimiter(rate)
    if not isinstance(budget, str) or not budget:
        raise ConfigError(
            f"rate_budget must be None, 'off', 'host' or a file path, got {budget!r}"
        )
    if rate is None:
        raise ConfigError("rate_budget needs a rate_limit to share (got None)")
    if sys.platform == "win32":
        raise ConfigError("rate_budget needs POSIX file locks (fcntl), absent here")
    limiter = SharedRateLimiter(rate, budget_path(budget, base_url))
    try:
        limiter.check()
    except OSError as exc:
        raise ConfigError(
            f"rate_budget: cannot open the shared state file {limiter.path!r} "
            f"({exc.strerror})"
        ) from None
    return limiter
