"""Making a failing API visible at once: the first failed request is a WARNING.

Before this, a refused connection, a DNS failure, a TLS mismatch or a server
that never answered logged nothing at the default level until a command ran
out of retries (half a minute and more), and a short-lived process saw only
its close summary, without a cause. The sender tells the :class:`Alarm` of
every request that failed and will be retried; the first one is logged at
once, naming the host and the kind of failure (the ``RequestError``'s message
says both), and later ones at most once per ``LOG_INTERVAL`` with a count.

The alarm also remembers the last failure, so the close summary can name the
cause of commands that ended "closed" while they were being retried.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Protocol

from ._exceptions import RateLimited, RequestError
from ._stats import ThrottledLog

__all__ = ["LOG_INTERVAL", "Alarm", "close_details"]

#: How often the warning may repeat, in seconds (with a count between).
LOG_INTERVAL = 10.0

# Room for the API's error strings, not whole pages.
_MAX_DETAIL = 300


class Alarm:
    """Logs failed requests that will be retried: the first at once, then
    throttled. One per client pipeline."""

    __slots__ = ("_log", "last")

    def __init__(self, interval: float = LOG_INTERVAL) -> None:
        self._log = ThrottledLog(
            logging.WARNING,
            "%d request(s) failed and will be retried since the last warning; last: %s",
            interval,
        )
        #: The last failure's message, for the close summary.
        self.last: str | None = None

    def failed(self, error: RequestError, commands: int) -> None:
        """A request carrying ``commands`` failed with ``error``; it is retried.

        A 429 is not an alarm: the rate limiter slows down, ``stats()`` counts
        it, and the API asked for exactly that.
        """
        text = str(error)[:_MAX_DETAIL]
        self.last = text
        if isinstance(error, RateLimited):
            return
        self._log(f"{text} ({commands} command(s) in it)")

    def flush(self) -> None:
        """Log the count still waiting for its interval (at close)."""
        self._log.flush()


class _HasAlarm(Protocol):
    @property
    def alarm(self) -> Alarm: ...


def close_details(
    failed: Mapping[str, int], last: Mapping[str, str], sender: _HasAlarm | None
) -> str:
    """The close summary's tail: the last error of each reason that had one.

    ``failed`` counts the failures by reason, ``last`` is the ledger's last
    message by reason, ``sender`` the pipeline's sender (None if it never
    started). Commands that ended "closed" carry no error of their
    own: if requests were failing, the last of those failures is their cause.
    """
    alarm = None if sender is None else sender.alarm
    parts: list[str] = []
    for reason, count in failed.items():
        if not count:
            continue
        text = last.get(reason)
        if text is None and reason == "closed" and alarm and alarm.last is not None:
            text = f"last failed request: {alarm.last}"
        if text is not None:
            parts.append(f"{reason}: {text[:_MAX_DETAIL]}")
    return f"; last errors: {'; '.join(parts)}" if parts else ""
