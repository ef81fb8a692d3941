"""What the file and Redis rate budgets have in common: one step, and a fallback.

A shared budget is one timeline of request slots that every process on it
reserves from, plus a slow-down factor that a 429 seen by any of them halves
and accepted requests restore. One *step* does all of it at once (under a file
lock, or inside a Redis script): apply the 429s and acceptances this process
saw since its last step, then reserve the next slot. The same rules are written
twice, here in Python for the file and in Lua for Redis; tests hold both to the
same cases.

Rules of the step, each for a failure that was seen:

- the slot interval is ``1 / (limit * factor)``, where ``limit`` is the highest
  pace among the processes that stepped in the last ``LIMIT_TTL`` seconds: a
  process with a lower ``rate_limit`` of its own keeps to it on its own
  (``RateLimiter``), it does not drag its neighbours down to it;
- what is read is bounded by what the settings allow: ``next`` at most
  ``max_ahead`` seconds ahead, the factor within [floor, 1], times not in the
  future. A state written "later" than now means the clock stepped back: the
  timeline starts over at once instead of waiting for the clock to catch up.

When the budget cannot be reached (a lock held too long, Redis down or slow),
the process paces itself on its own at ``FALLBACK_SHARE`` of its rate, logs one
WARNING, tries the budget again every ``PROBE_SPACING`` seconds, and logs one
line when it is back. Waiting never blocks the event loop.
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque

from . import _ratelimit
from ._ratelimit import _CUT_SPACING, _FLOOR_SHARE, _RECOVERY_SHARE, RateLimiter

logger = logging.getLogger("trackasync")

# The processes' requests reach the API with some jitter (scheduling, CPU
# contention): pacing exactly at the limit would let a late request and an
# on-time one land in the same window. This share of ``rate_limit`` is the pace
# actually kept, leaving a 1 s window 50 ms of slack.
HEADROOM = 0.95
#: When the budget is out of reach, each process paces itself alone at this
#: share of its ``rate_limit``: four processes together stay at the limit; more
#: meet 429s and halve their pace as a lone client does.
FALLBACK_SHARE = 0.25
#: Seconds between attempts to reach a budget that was out of reach.
PROBE_SPACING = 1.0
#: A process's pace counts as the budget's limit for this long after its last step.
LIMIT_TTL = 10.0
# The longest pause a 429's Retry-After may set for everyone (the default
# Retry.max_retry_after), and the slots reserved ahead beyond it.
MAX_PAUSE = 60.0
_AHEAD_SLOTS = 64
# A state written this much "after" now was written before the clock stepped back.
_CLOCK_SLACK = 1.0

# A slot reserved ahead is used at most this late (later, it may fall in a
# window with slots of other processes): else it is dropped.
SLOT_GRACE = 0.05

#: The state's fields, in order (seconds are wall-clock, or the Redis server's).
FIELDS = ("next", "factor", "last_cut", "limit", "limit_at", "written_at")


def catch_up_slots(rate: float) -> int:
    """Slots that passed unused and may be taken late, at ``rate``: as many as
    keep every one-second window at ``rate`` (the pace is 95 % of it)."""
    return max(0, math.floor(rate * (1 - HEADROOM)) - 1)


def max_ahead(pace: float) -> float:
    """How far ahead of now a sound state's next slot can be, at ``pace``."""
    return MAX_PAUSE + _AHEAD_SLOTS / (pace * _FLOOR_SHARE)


def _finite(value: float) -> bool:
    return not (math.isnan(value) or math.isinf(value))


def step(
    state: list[float] | None,
    now: float,
    pace: float,
    *,
    cut: bool = False,
    pause: float = 0.0,
    accepted: int = 0,
    reserve: bool = True,
    count: int = 1,
    catch_up: int = 0,
) -> tuple[list[float], float, float]:
    """One step of the shared budget: (new state, wait before the slot, factor).

    ``state`` is what was read (None or malformed: start afresh), ``pace`` this
    process's own pace, ``cut`` whether it saw a 429 since its last step,
    ``pause`` the Retry-After seconds it asks everyone to wait, and
    ``accepted`` how many of its requests went through meanwhile; ``count``
    consecutive slots are taken (the wait is the first's), none when
    ``reserve`` is False. Up to ``catch_up`` slots that passed unused may
    still be taken (a wait below zero): processes that woke late get them
    back, and no one-second window sees more than ``pace + catch_up + 1``.
    """
    nxt, factor, last_cut, limit, limit_at = now, 1.0, now - _CUT_SPACING, pace, now
    if state is not None and len(state) == len(FIELDS) and all(map(_finite, state)):
        s_next, s_factor, s_cut, s_limit, s_limit_at, written = state
        if written <= now + _CLOCK_SLACK:  # else the clock stepped back: start over
            if s_next <= now + max_ahead(pace):
                nxt = s_next
            factor = min(1.0, max(_FLOOR_SHARE, s_factor))
            if s_cut <= now:
                last_cut = s_cut
            if pace < s_limit <= pace / _FLOOR_SHARE and s_limit_at >= now - LIMIT_TTL:
                limit, limit_at = s_limit, s_limit_at
    if cut and now - last_cut >= _CUT_SPACING:
        last_cut = now
        factor = max(_FLOOR_SHARE, factor / 2)
    if pause > 0:
        nxt = max(nxt, now + min(pause, MAX_PAUSE))
    if accepted > 0:
        factor = min(1.0, factor + accepted * _RECOVERY_SHARE)
    interval = 1.0 / (limit * factor)
    nxt = max(nxt, now - catch_up * interval)
    delay = nxt - now
    if reserve:
        nxt += count * interval
    return [nxt, factor, last_cut, limit, limit_at, now], delay, factor


class SharedLimiter(RateLimiter):
    """A ``RateLimiter`` that also reserves each slot from a shared budget.

    Subclasses provide ``_step`` (one shared step, or None when the budget is
    out of reach) and ``where`` (how to name the budget in messages). The
    limiter's own ``RateLimiter`` part keeps this process to its ``rate_limit``.
    """

    __slots__ = (
        "_accepted",
        "_ahead",
        "_catch_up",
        "_cut",
        "_down",
        "_factor",
        "_fallback",
        "_pace",
        "_pause_until",
        "_probe_at",
    )

    def __init__(self, rate: float) -> None:
        super().__init__(rate)
        self._pace = rate * HEADROOM
        self._catch_up = catch_up_slots(rate)
        self._fallback = RateLimiter(rate * FALLBACK_SHARE)
        self._factor = 1.0
        # Signals for the next step: a 429 seen, the pause it asked for (a
        # monotonic deadline), the requests accepted.
        self._cut = False
        self._pause_until = 0.0
        self._accepted = 0
        self._down = False
        self._probe_at = 0.0
        # Monotonic times of the slots reserved ahead by the last step.
        self._ahead: deque[float] = deque()

    @property
    def where(self) -> str:
        """The budget, as messages name it (never with a password)."""
        raise NotImplementedError

    @property
    def sharing(self) -> bool:
        """False while the budget is out of reach and pacing is local."""
        return not self._down

    @property
    def current_rate(self) -> float | None:
        if self._down:
            return self._fallback.current_rate
        return self._pace * self._factor

    #: Slots reserved by one step. More than one where a step is a round trip:
    #: the next slots are then ready when the batcher asks, instead of the
    #: pace waiting on one round trip per request.
    slots_per_step = 1

    async def _step(
        self,
        cut: bool,
        pause: float,
        accepted: int,
        reserve: bool = True,
        count: int = 1,
    ) -> tuple[float, float, float] | None:
        """One shared step: (wait before the first slot, factor, interval
        between slots), None if out of reach."""
        raise NotImplementedError

    def _push(self) -> None:
        """Share a 429 now rather than at this process's next slot (which may
        come only after the pause it asks everyone else to keep)."""

    def _take_signals(self) -> tuple[bool, float, int]:
        cut, accepted = self._cut, self._accepted
        pause = max(0.0, self._pause_until - time.monotonic())
        self._cut, self._accepted = False, 0
        return cut, pause, accepted

    def _keep_signals(self, cut: bool, accepted: int) -> None:
        """Signals a failed step took, kept for the next one."""
        self._cut = self._cut or cut
        self._accepted += accepted

    async def acquire(self) -> None:
        await super().acquire()  # this process's own rate_limit
        now = time.monotonic()
        ahead = self._ahead
        while ahead and ahead[0] < now - SLOT_GRACE:
            ahead.popleft()
        if ahead and not self._down:
            slot = ahead.popleft()
            if slot > now:
                await _ratelimit._sleep(slot - now)
            return
        if not self._down or now >= self._probe_at:
            cut, pause, accepted = self._take_signals()
            count = self.slots_per_step
            result = await self._step(cut, pause, accepted, count=count)
            if result is not None:
                if self._down:
                    self._down = False
                    logger.warning(
                        "rate budget %s is reachable again: sharing it", self.where
                    )
                wait, self._factor, interval = result
                first = time.monotonic() + wait
                ahead.extend(first + i * interval for i in range(1, count))
                if wait > 0:
                    await _ratelimit._sleep(wait)
                return
            self._keep_signals(cut, accepted)
            if not self._down:
                self._down = True
                logger.warning(
                    "rate budget %s is out of reach: pacing this process alone "
                    "at %d %% of rate_limit until it is back",
                    self.where,
                    round(FALLBACK_SHARE * 100),
                )
            self._probe_at = time.monotonic() + PROBE_SPACING
        await self._fallback.acquire()

    def rate_limited(self, retry_after: float | None) -> None:
        self._ahead.clear()  # reserved at the old pace, perhaps inside the pause
        self._cut = True
        if retry_after:
            self._pause_until = max(self._pause_until, time.monotonic() + retry_after)
        self._fallback.rate_limited(retry_after)
        if not self._down:
            self._push()

    def accepted(self) -> None:
        self._accepted += 1
        self._fallback.accepted()
