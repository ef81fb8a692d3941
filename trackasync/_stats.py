"""Counters the pipeline keeps, their public snapshot, and rate-limited warnings."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._delivery import Delivery

logger = logging.getLogger("trackasync")


@dataclass(frozen=True, slots=True)
class Stats:
    """A snapshot of the client's counters since it was created.

    Every command ends in exactly one of ``delivered``, ``failed`` or ``kept``,
    and each is counted in exactly one place at any moment, so at every
    snapshot::

        enqueued + recovered
            == delivered + sum(failed.values()) + kept + queued + in_flight

    (``kept`` and ``recovered`` are 0 without a spool.)

    (``rejected`` and ``dropped`` are ``failed["rejected"]`` and
    ``failed["dropped"]``, not further terms). A command waiting to be retried is
    in flight; its batch-mates that already have an outcome are not.
    """

    #: Commands accepted by ``track``/``update_customer`` into the queue.
    enqueued: int
    #: Commands waiting in the queue now.
    queued: int
    #: Commands in requests under way (including their retries) now.
    in_flight: int
    #: Commands the API accepted.
    delivered: int
    #: Commands the API refused (``failed["rejected"]``).
    rejected: int
    #: Commands the overflow policy dropped (``failed["dropped"]``).
    dropped: int
    #: Failed commands by reason: rejected, gave_up, dropped, closed.
    failed: Mapping[str, int]
    #: HTTP requests sent, retries included.
    requests: int
    #: Requests that were retries of an earlier one.
    retries: int
    #: Request body bytes sent.
    bytes_sent: int
    #: 429 answers seen.
    rate_limited: int
    #: ``on_result`` calls skipped because the hook's backlog was full.
    hooks_skipped: int = 0
    #: In a forked child: the commands it inherited queued or in flight, left to
    #: the parent to send (the other counters start from zero in the child).
    discarded_at_fork: int = 0
    #: Commands in the spool and not in memory: left at close, unsent, for the
    #: next run to send, or (while the client runs) kept on disk because the
    #: queue in memory was full, until they come back to it.
    kept: int = 0
    #: Commands taken back from the spool of an earlier run (of this process or
    #: of one that is gone), to be sent by this one.
    recovered: int = 0
    #: Events ``before_send`` dropped at the call: never enqueued, so not a
    #: term of the invariant above.
    filtered: int = 0


#: (route, HTTP status or None, seconds, commands, body bytes) of one request.
RequestObserver = Callable[[str, int | None, float, int, int], None]


class Counters:
    """The live, mutable counters behind ``Stats``. Pipeline-internal."""

    __slots__ = (
        "bytes_sent",
        "delivered",
        "discarded_at_fork",
        "failed",
        "kept",
        "observers",
        "rate_limited",
        "recovered",
        "requests",
        "retries",
    )

    def __init__(self) -> None:
        self.delivered = 0
        self.kept = 0
        self.recovered = 0
        self.discarded_at_fork = 0
        self.requests = 0
        self.retries = 0
        self.bytes_sent = 0
        self.rate_limited = 0
        self.failed = {"rejected": 0, "gave_up": 0, "dropped": 0, "closed": 0}
        #: Per-request observers (the metrics exporters: trackasync/_requestlog.py):
        #: the sender calls each once per answer or transport error, with
        #: (route, HTTP status or None, seconds, commands, body bytes). They
        #: must not raise. Empty unless metrics are wired: then the sender
        #: does not even read the clock.
        self.observers: list[RequestObserver] = []

    def snapshot(
        self, *, enqueued: int, queued: int, in_flight: int, hooks_skipped: int
    ) -> Stats:
        """A frozen copy, with what the command store holds read off it."""
        failed = dict(self.failed)
        return Stats(
            enqueued=enqueued,
            queued=queued,
            in_flight=in_flight,
            delivered=self.delivered,
            rejected=failed["rejected"],
            dropped=failed["dropped"],
            failed=failed,
            requests=self.requests,
            retries=self.retries,
            bytes_sent=self.bytes_sent,
            rate_limited=self.rate_limited,
            hooks_skipped=hooks_skipped,
            discarded_at_fork=self.discarded_at_fork,
            kept=self.kept,
            recovered=self.recovered,
        )


class ThrottledLog:
    """Logs a recurring line at most once per ``interval``, with a count.

    A full queue can drop thousands of commands a second; one line with the
    count says as much as a thousand lines and does not flood the log. The first
    occurrence logs at once; later ones are counted, and the count since the
    last line goes out when the interval ends (a timer on the running loop), or
    at ``flush()``, so no occurrence is left unreported.
    ``message`` takes the count (``%d``) and a detail (``%s``), such as the last
    error seen.
    """

    __slots__ = (
        "_detail",
        "_interval",
        "_last",
        "_level",
        "_message",
        "_pending",
        "_timer",
    )

    def __init__(self, level: int, message: str, interval: float = 10.0) -> None:
        self._level = level
        self._message = message
        self._interval = interval
        self._last = -interval
        self._pending = 0
        self._detail = ""
        self._timer: asyncio.TimerHandle | None = None

    def __call__(self, detail: str = "", count: int = 1) -> None:
        self._pending += count
        self._detail = detail
        now = time.monotonic()
        if now - self._last >= self._interval:
            self.flush()
        elif self._timer is None:
            loop = asyncio._get_running_loop()
            if loop is not None:
                self._timer = loop.call_at(
                    loop.time() + self._last + self._interval - now, self.flush
                )

    def flush(self) -> None:
        """Log what was counted since the last line, if anything."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._pending:
            logger.log(self._level, self._message, self._pending, self._detail)
            self._pending = 0
            self._last = time.monotonic()


@dataclass(frozen=True, slots=True)
class FlushResult:
    """What ``flush()`` waited for: the commands queued or in flight at the call."""

    delivered: int
    failed: int
    #: Still without an outcome (only when ``flush`` timed out).
    pending: int


@dataclass(frozen=True, slots=True)
class CloseReport:
    """The end of a client: totals, and every command that was not delivered."""

    delivered: int
    failed: Mapping[str, int]
    #: Commands that ended "closed": never delivered, kept for the caller.
    undelivered: list[Delivery] = field(repr=False)
    #: Commands left in the spool, unsent, for the next run (0 without a spool).
    kept: int = 0
    #: The last error seen for each failure reason ("gave_up", "rejected"...),
    #: so that a close summary says why, not only how many.
    last_errors: Mapping[str, str] = field(default_factory=dict)
