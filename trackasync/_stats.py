"""Counters the pipeline keeps, their public snapshot, and rate-limited warnings."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._delivery import Delivery

logger = logging.getLogger("trackasync")


@dataclass(frozen=True, slots=True)
class Stats:
    """A snapshot of the client's counters since it was created.

    Every command ends in exactly one of ``delivered`` or ``failed``: so
    ``enqueued == delivered + sum(failed.values()) + queued + in_flight``.
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


class Counters:
    """The live, mutable counters behind ``Stats``. Pipeline-internal."""

    __slots__ = (
        "bytes_sent",
        "delivered",
        "failed",
        "in_flight",
        "rate_limited",
        "requests",
        "retries",
    )

    def __init__(self) -> None:
        self.delivered = 0
        self.in_flight = 0
        self.requests = 0
        self.retries = 0
        self.bytes_sent = 0
        self.rate_limited = 0
        self.failed = {"rejected": 0, "gave_up": 0, "dropped": 0, "closed": 0}

    def snapshot(self, queued: int, enqueued: int) -> Stats:
        """A frozen copy, with the queue's depth and intake read off the buffer."""
        failed = dict(self.failed)
        return Stats(
            enqueued=enqueued,
            queued=queued,
            in_flight=self.in_flight,
            delivered=self.delivered,
            rejected=failed["rejected"],
            dropped=failed["dropped"],
            failed=failed,
            requests=self.requests,
            retries=self.retries,
            bytes_sent=self.bytes_sent,
            rate_limited=self.rate_limited,
        )


class ThrottledWarning:
    """Logs a recurring warning at most once per ``interval``, with a count.

    A full queue can drop thousands of commands a second; one line with the
    count says as much as a thousand lines and does not flood the log.
    """

    __slots__ = ("_interval", "_last", "_message", "_pending")

    def __init__(self, message: str, interval: float = 10.0) -> None:
        self._message = message
        self._interval = interval
        self._last = -interval
        self._pending = 0

    def __call__(self, count: int = 1) -> None:
        self._pending += count
        now = time.monotonic()
        if now - self._last >= self._interval:
            logger.warning(self._message, self._pending)
            self._pending = 0
            self._last = now


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
