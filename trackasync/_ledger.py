"""Where every command's outcome is recorded: counters, the caller's handle, the
hook's queue, and the log lines that make losses loud.

Only the command table calls it, so each command is counted once and the
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

# What a command kept on disk only ends with: copied per command (``_twin``).
_SPILLED = DeliveryFailed(
    "kept",
    "the queue in memory was full: the command is kept in the spool on "
    "disk and sent from there; its outcome reaches on_result and stats()",
)


class Ledger:
    """Records outcomes; makes every kind of loss visible at WARNING or above."""

    __slots__ = ("_logs", "closed", "counters", "hooks", "last_errors")

    def __init__(self, counters: Counters, hooks: HookRunner | None) -> None:
        self.counters = counters
        self.hooks = hooks
        #: Commands that failed because the client closed, for the close report.
        self.closed: list[Delivery] = []
        #: The last error of each failure reason, for the close summary.
        self.last_errors: dict[str, str] = {}
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

    def delivered(self, deliveries: Sequence[Delivery], accepted: Accepted) -> None:
        """The API accepted these commands: they are delivered."""
        done = 0
        hooks = self.hooks
        if hooks is None:
            # Delivery._settle inlined: this loop runs for every command sent,
            # and a method call per command cost more than the rest of it.
            for delivery in deliveries:
                if delivery._outcome is None:
                    delivery._outcome = accepted
                    if delivery._waiters:
                        delivery._wake()
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
        self.record_failed(delivery, error)
        return True

    def kept(self, deliveries: Sequence[Delivery]) -> None:
        """A close that keeps: these commands stay in the spool for the next run.

        Their handles end with reason "kept" (an awaiting caller must not wait
        for a run that may never come); they count in ``kept``, not in
        ``failed``, and the hook is called for them as for any outcome.
        """
        kept = 0
        hooks = self.hooks
        for delivery in deliveries:
            error = DeliveryFailed(
                "kept",
                "the client closed before the API answered; the command is kept "
                "in the spool and the next run on it sends it",
                attempts=delivery.attempts,
            )
            if delivery._settle(error):
                kept += 1
                if hooks is not None:
                    hooks.push(delivery)
        self.counters.kept += kept

    def spilled(self, delivery: Delivery) -> None:
        """Memory is full: this command is kept in the spool only, and this
        run sends it when memory has room (as a recovered command, whose
        outcome reaches the hook and the stats). Its handle ends "kept" now."""
        error = _SPILLED._twin()
        error.attempts = delivery.attempts
        if delivery._settle(error):
            self.counters.kept += 1
            if self.hooks is not None:
                self.hooks.push(delivery)

    def record_failed(self, delivery: Delivery, error: DeliveryFailed) -> None:
        """Count, log and queue the hook for a command whose handle already holds
        this failure (settled at a call in another thread)."""
        reason = error.reason
        self.counters.failed[reason] += 1
        if reason == "closed":
            self.closed.append(delivery)
        else:
            self.last_errors[reason] = (_errors(error) or str(error))[:300]
            logger.debug("command failed (%s): %s", reason, error)
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

    def flush_logs(self) -> None:
        """Log every count still waiting for its interval (at close)."""
        for log in self._logs.values():
            log.flush()


def _errors(error: DeliveryFailed) -> str:
    """The API's own error strings, short: never the payload, never a header."""
    if error.errors:
        return "; ".join(error.errors)[:500]
    return ""
