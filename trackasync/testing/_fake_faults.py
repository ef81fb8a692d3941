"""Scripted and random faults, and the rate limiter, of the fake Tracking API.

Faults model what goes wrong between a client and the real API: error statuses
from the API or a proxy in front of it, slow answers, and connections that close
without an answer. A connection can close before the request is processed (the
data is lost) or after its commands were stored (the data is in, but the client
cannot know: the ambiguous case that makes dedup-safe retries matter).
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, Literal

__all__ = [
    "CHAOS_KINDS",
    "Fault",
    "FaultKind",
    "FaultPlan",
    "RejectPredicate",
    "SlidingWindowLimiter",
    "default_error_body",
]

FaultKind = Literal["error", "drop", "drop_after", "delay"]

RejectPredicate = Callable[[str, Mapping[str, Any]], bool]
"""Called with a valid write command's name and data; True makes it fail."""

CHAOS_KINDS = (
    "500",
    "502",
    "503",
    "429",
    "429-retry-after",
    "drop",
    "drop-after",
    "delay",
)
"""What :meth:`FaultPlan.chaos` picks from, uniformly, unless told otherwise."""


@dataclass(frozen=True, slots=True)
class Fault:
    """One injected fault, applied to one request.

    ``kind`` is ``"error"`` (answer ``status`` with ``body``), ``"drop"`` (close
    the connection before processing), ``"drop_after"`` (process and store, then
    close without answering) or ``"delay"`` (wait ``delay`` seconds, then process
    normally). ``route`` limits the fault to one route name (``"batch"``,
    ``"customers"``, ``"customers/events"``, ``"system/time"``); None means any.
    ``retry_after`` (seconds or an HTTP date) becomes a ``Retry-After`` header.
    """

    kind: FaultKind
    status: int = 500
    retry_after: float | str | None = None
    body: bytes | None = None
    content_type: str = "application/json"
    delay: float = 0.0
    route: str | None = None

    @property
    def label(self) -> str:
        """A short name for the request log, e.g. ``"503"`` or ``"drop_after"``."""
        if self.kind == "error":
            suffix = "" if self.retry_after is None else "+retry-after"
            return f"{self.status}{suffix}"
        return self.kind


def default_error_body(status: int) -> dict[str, Any]:
    """The body sent with an injected error when the test gives none.

    It uses the ``errors: [{code, description, message}]`` shape the mobile SDKs
    parse for 404/5xx answers, one of the shapes a client must tolerate.
    """
    try:
        reason = HTTPStatus(status).phrase
    except ValueError:
        reason = "Error"
    return {
        "success": False,
        "errors": [{"code": status, "description": reason, "message": reason}],
    }


def _chaos_fault(kind: str, delay: float, retry_after: float) -> Fault:
    if kind == "drop":
        return Fault("drop")
    if kind == "drop-after":
        return Fault("drop_after")
    if kind == "delay":
        return Fault("delay", delay=delay)
    if kind == "429-retry-after":
        return Fault("error", status=429, retry_after=retry_after)
    if kind in CHAOS_KINDS:
        return Fault("error", status=int(kind))
    raise ValueError(f"unknown chaos kind {kind!r}; choose from {CHAOS_KINDS}")


class FaultPlan:
    """The faults waiting for the next requests, random chaos, and rejections.

    Scripted faults are taken first-in first-out, one per request, each by the
    first request its ``route`` matches. Chaos only applies when no scripted
    fault does.
    """

    __slots__ = (
        "_chaos_menu",
        "_chaos_rate",
        "_queue",
        "_rng",
        "predicate_errors",
        "rejections",
    )

    def __init__(self) -> None:
        self._queue: deque[Fault] = deque()
        self._chaos_rate = 0.0
        self._chaos_menu: tuple[Fault, ...] = ()
        self._rng = random.Random()
        self.rejections: list[tuple[RejectPredicate, str]] = []
        self.predicate_errors: list[Exception] = []

    @property
    def pending(self) -> int:
        """How many scripted faults are still waiting for a request."""
        return len(self._queue)

    def add(self, fault: Fault, count: int) -> None:
        """Apply ``fault`` to the next ``count`` matching requests."""
        if count < 0:
            raise ValueError("count must be >= 0")
        self._queue.extend([fault] * count)

    def chaos(
        self,
        rate: float,
        *,
        seed: int | None,
        delay: float,
        retry_after: float,
        kinds: Iterable[str] | None,
    ) -> None:
        """Give each request a ``rate`` chance of a random fault; 0 turns it off."""
        if not 0.0 <= rate <= 1.0:
            raise ValueError("chaos rate must be between 0 and 1")
        menu = tuple(
            _chaos_fault(kind, delay, retry_after)
            for kind in (CHAOS_KINDS if kinds is None else kinds)
        )
        if rate and not menu:
            raise ValueError("chaos needs at least one fault kind")
        self._chaos_rate = rate
        self._chaos_menu = menu
        self._rng = random.Random(seed)

    def take(self, route: str) -> Fault | None:
        """The fault for a request to ``route``, or None to handle it normally."""
        queue = self._queue
        if queue:
            for index, fault in enumerate(queue):
                if fault.route is None or fault.route == route:
                    del queue[index]
                    return fault
        if self._chaos_rate and self._rng.random() < self._chaos_rate:
            return self._rng.choice(self._chaos_menu)
        return None

    def rejection(self, name: str, data: Mapping[str, Any]) -> str | None:
        """The error for a write command a test chose to reject, else None.

        A predicate that raises is a bug in the test, not a server error: the
        exception is kept in :attr:`predicate_errors` (the test is failed with
        it later) and the command is rejected with an error naming it, so the
        client settles at once instead of retrying a 500 for a minute.
        """
        for predicate, error in self.rejections:
            try:
                rejected = predicate(name, data)
            except Exception as exc:
                self.predicate_errors.append(exc)
                return f"reject_commands predicate raised {type(exc).__name__}: {exc}"
            if rejected:
                return error
        return None

    def clear(self) -> None:
        """Forget scripted faults and rejections, and stop chaos."""
        self._queue.clear()
        self.rejections.clear()
        self._chaos_rate = 0.0
        self._chaos_menu = ()


class SlidingWindowLimiter:
    """Admit at most ``rate * window`` requests in any ``window`` seconds.

    Bloomreach states its limit per minute (6,000 requests, i.e. 100 per second
    over a 60 s window), so a burst is fine as long as the window total is not
    exceeded. Refused requests do not count.
    """

    __slots__ = ("_capacity", "_hits", "_window")

    def __init__(self, rate: float, window: float) -> None:
        if rate <= 0 or window <= 0:
            raise ValueError("rate limit and window must be positive")
        self._capacity = max(1, int(rate * window))
        self._window = window
        self._hits: deque[float] = deque()

    @property
    def capacity(self) -> int:
        """Requests allowed per window."""
        return self._capacity

    def admit(self, now: float) -> float | None:
        """Count a request at monotonic time ``now``.

        Returns None when it is admitted, else the seconds until a slot frees.
        """
        hits = self._hits
        horizon = now - self._window
        while hits and hits[0] <= horizon:
            hits.popleft()
        if len(hits) >= self._capacity:
            return hits[0] - horizon
        hits.append(now)
        return None
