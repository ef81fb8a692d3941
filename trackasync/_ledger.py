"""Where every command's outcome is recorded: counters, the caller's handle, the
hook's queue, and the log lines that make losses loud.

Only the command store calls it, so each command is counted once and the
``on_result`` hook is queued once per command. The hook itself is never called
from here: ``HookRunner`` calls it later from the client's own task.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from ._delivery import Accepted, Delivery
from ._exceptions import AuthError, DeliveryFailed
from ._hooks import HookRunner
from ._stats import Counters, ThrottledLog

logger = logging.getLogger("trackasync")

#: How often each kind of loss may be logged, in seconds (with counts between).
LOG_INTERVAL = 10.0


class Ledger:
    """Records outcomes; makes every kind of loss visible at WARNING or above."""

    __slots__ = ("_logs", "closed", "counters", "hooks", "last")

    def __init__(self, counters: Counters, hooks: HookRunner | None) -> None:
        self.counters = counters
        self.hooks = hooks
        #: Commands that failed because the client closed, for the close report.
        self.closed: list[Delivery] = []
        #: The last failure's text by reason, for the close summary.
        self.last: dict[str, str] = {}
        self._logs = {
            "dropped": ThrottledLog(
                logging.WARNING,
                "queue full: dropped %d command(s) since the last warning (%s)",
                LOG_INTERVAL,
            ),
            "rejected": ThrottledLog(
                logging.WARNING,
                "the API rejected %d command(s) since the last warning; last: %s",
                LOG_INTERVAL,
            ),
            "gave_up": ThrottledLog(
                logging.WARNING,
                "gave up on %d command(s) since the last warning; last: %s",
                LOG_INTERVAL,
            ),
            "auth": ThrottledLog(
                logging.ERROR,
                "%d command(s) refused for authentication since the last error: %s",
                LOG_INTERVAL,
            ),
        }

    def accepted(self, deliveries: Sequence[Delivery], accepted: Accepted) -> None:
        """The API accepted these commands."""
        done = 0
        hooks = self.hooks
        if hooks is None:
            for delivery in deliveries:
                if delivery._settle(accepted):
                    done += 1
        else:
            settled = [d for d in deliveries if d._settle(accepted)]
            done = len(settled)
            hooks.push_many(settled)
        self.counters.delivered += done

    def failed(self, delivery: Delivery, error: DeliveryFailed) -> bool:
        """This command ended without being accepted; False if it had an outcome."""
        if not delivery._settle(error):
            return False
        reason = error.reason
        self.counters.failed[reason] += 1
        if reason == "closed":
            self.closed.append(delivery)
        else:
            logger.debug("command failed (%s): %s", reason, error)
            self.last[reason] = _errors(error) or str(error)
            cause = error.error
            if isinstance(cause, AuthError):
                self._logs["auth"](
                    f"HTTP {cause.status}: the credentials are wrong or lack the "
                    f"permission (API group: Events/Customer properties -> Set); "
                    f"{_errors(error) or 'no error message'}"
                )
            elif reason in self._logs:
                self._logs[reason](_errors(error) or str(error))
        if self.hooks is not None:
            self.hooks.push(delivery)
        return True

    def flush_logs(self) -> None:
        """Log every count still waiting for its interval (at close)."""
        for log in self._logs.values():
            log.flush()


def _errors(error: DeliveryFailed) -> str:
    """The API's own error strings, short: never the payload, never a header."""
    if error.errors:
        return "; ".join(error.errors)[:500]
    return ""
