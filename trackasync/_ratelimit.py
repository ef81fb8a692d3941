"""A client-side limit on requests per second that backs off when the API says 429.

The API allows about 100 requests per second per source IP by default and drops
whatever arrives over it, so the client paces itself below that instead of
finding the limit by losing requests. Pacing is GCRA-style (a "next allowed"
time advanced by one interval per request, with a small burst allowance), which
needs no background task and keeps waiters in the order they asked. A record of
the last ``rate`` release times makes sure that no one-second window ever sees
more than ``rate`` requests, the burst included.

A budget shared by several processes lives in ``_budget_shared.py`` (the
common part), ``_budget_file.py`` (one host) and ``_budget_redis.py`` (a fleet);
``make_limiter`` picks one from the ``rate_budget`` setting.
"""

from __future__ import annotations

import asyncio
import math
import os
import sys
import time
from collections import deque
from urllib.parse import urlsplit

from ._exceptions import ConfigError

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
# The sliding window the API counts requests in, at its strictest.
_WINDOW = 1.0

# Looked up at call time, so tests can drive pacing without real waiting.
_sleep = asyncio.sleep

#: The spellings of "no shared budget" accepted by ``rate_budget`` and
#: ``TRACKASYNC_RATE_BUDGET`` (compared case-insensitively).
OFF_SPELLINGS = frozenset({"off", "none", "no", "false", "0", "disabled", ""})
_URL_SCHEMES = ("redis", "rediss", "unix")


class RateLimiter:
    """Paces requests to ``rate`` per second (``None``: no pacing)."""

    __slots__ = ("_current", "_last_cut", "_next", "_rate", "_released")

    def __init__(self, rate: float | None) -> None:
        self._rate = rate
        self._current = rate
        self._next = 0.0
        self._last_cut = -_CUT_SPACING
        # The release times of the last ``rate`` requests: the next one waits
        # until the oldest is a full window old. GCRA alone lets the burst and
        # a window's worth of paced requests meet in the first second.
        size = 0 if rate is None else max(1, math.floor(rate * _WINDOW))
        self._released: deque[float] = deque(maxlen=size or None)

    @property
    def rate(self) -> float | None:
        """The configured rate."""
        return self._rate

    @property
    def current_rate(self) -> float | None:
        """The rate in force now: lower than configured for a while after a 429."""
        return self._current

    def delay(self) -> float:
        """Reserve the next paced slot; returns how long to wait before using it.

        This is the GCRA part only; ``acquire`` also keeps the window rule.
        """
        now = time.monotonic()
        current = self._current
        interval = 0.0 if current is None else 1.0 / current
        earliest = max(self._next, now - (_BURST - 1) * interval)
        self._next = earliest + interval
        return max(0.0, earliest - now)

    async def acquire(self) -> None:
        """Wait for the next request slot."""
        if self._rate is None:
            return
        wait = self.delay()
        if wait > 0:
            await _sleep(wait)
        released = self._released
        held = False
        while True:
            # Actual release times, not planned ones: a late wake-up cannot
            # squeeze one request too many into a window.
            now = time.monotonic()
            if len(released) == released.maxlen and now < released[0] + _WINDOW:
                held = True
                await _sleep(released[0] + _WINDOW - now)
                continue
            released.append(now)
            if held and self._current is not None:
                # Paced on from here: else the burst comes back at once.
                self._next = max(self._next, now + 1.0 / self._current)
            return

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

    async def aclose(self) -> None:
        """Release what the limiter holds (a shared budget's connection)."""


# -- the rate_budget setting ---------------------------------------------------


def parse_rate_budget(value: object, what: str = "rate_budget") -> str | None:
    """``value`` checked and normalized: None (off), ``"host"``, a URL or a path.

    Off has the usual spellings (``off``, ``none``, ``no``, ``false``, ``0``,
    any case). A path must name a file in an existing directory and contain a
    ``/`` (``./budget`` for the working directory), so that a mistyped keyword
    is refused rather than taken for a file name. Messages never repeat a URL:
    it may carry a password.
    """
    if value is None:
        return None
    if not isinstance(value, str):
        raise ConfigError(
            f"{what} must be None, 'off', 'host', a redis:// URL or a file path, "
            f"got {type(value).__name__}"
        )
    text = value.strip()
    if text.lower() in OFF_SPELLINGS:
        return None
    if text.lower() == "host":
        return "host"
    if "://" in text:
        scheme = text.split("://", 1)[0].lower()
        if scheme not in _URL_SCHEMES:
            raise ConfigError(
                f"{what}: a URL must be redis://, rediss:// or unix:// "
                f"(got a {scheme[:20]!r} URL)"
            )
        return text
    if "/" not in text:
        raise ConfigError(
            f"{what} must be 'off', 'host', a redis:// URL or a file path with a "
            f"'/' (e.g. ./budget), got {text[:80]!r}"
        )
    directory = os.path.dirname(os.path.abspath(text))
    if not os.path.isdir(directory):
        raise ConfigError(
            f"{what}: the directory of {text[:200]!r} does not exist; "
            "the budget file is created, its directory is not"
        )
    return text


def make_limiter(rate: float | None, budget: str | None, base_url: str) -> RateLimiter:
    """The limiter a client uses: its own, or a budget shared by processes.

    ``budget`` is None or ``"off"`` (pace this client alone), ``"host"`` (share
    with every process of this user and host that talks to the same API), a
    file path (share through that file) or a ``redis://`` URL (share with every
    process of every host that uses the same Redis key).
    """
    spec = parse_rate_budget(budget)
    if spec is None:
        return RateLimiter(rate)
    if rate is None:
        raise ConfigError("rate_budget needs a rate_limit to share (got None)")
    if "://" in spec:
        from ._budget_redis import RedisBudget

        return RedisBudget(rate, spec, base_url)
    if sys.platform == "win32":
        raise ConfigError("a file rate_budget needs POSIX file locks, absent here")
    from ._budget_file import FileBudget, budget_path

    return FileBudget(rate, budget_path(spec, base_url))


def api_address(base_url: str) -> str:
    """``scheme://host:port`` of the API, the part a budget is keyed by."""
    where = urlsplit(base_url)
    return f"{where.scheme}://{where.hostname}:{where.port or ''}"


def env_rate_budget(name: str, raw: str) -> str | None:
    """``TRACKASYNC_RATE_BUDGET``'s parser (see ``parse_rate_budget``)."""
    return parse_rate_budget(raw, name)
