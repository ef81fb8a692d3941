"""Where every command's outcome is recorded: counters, the caller's handle, the hook.

Every path that ends a command (accepted, rejected, given up, dropped, closed)
goes through ``Ledger``, so each command is counted once and the ``on_result``
hook sees each command once.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any

from ._delivery import Accepted, Delivery
from ._exceptions import DeliveryFailed
from ._stats import Counters

logger = logging.getLogger("trackasync")

ResultHook = Callable[[Delivery], Awaitable[None] | None]
Spawn = Callable[[Callable[[Delivery], Coroutine[Any, Any, None]], Delivery], object]


class Ledger:
    """Records outcomes and calls the ``on_result`` hook (sync or async)."""

    __slots__ = ("_async_hook", "_hook", "closed", "counters", "late_hooks", "spawn")

    def __init__(self, counters: Counters, hook: ResultHook | None) -> None:
        self.counters = counters
        self._hook = hook
        self._async_hook = hook is not None and inspect.iscoroutinefunction(hook)
        #: Runs an async hook in the client's task group; ``None`` when there is
        #: none (before start, after close): such calls wait in ``late_hooks``.
        self.spawn: Spawn | None = None
        self.late_hooks: list[Delivery] = []
        #: Commands that failed because the client closed, for the close report.
        self.closed: list[Delivery] = []

    def accepted(self, deliveries: Sequence[Delivery], accepted: Accepted) -> None:
        """The API accepted these commands."""
        done = 0
        hook = self._hook
        for delivery in deliveries:
            if delivery._settle(accepted):
                done += 1
                if hook is not None:
                    self._call_hook(delivery)
        self.counters.delivered += done

    def failed(self, delivery: Delivery, error: DeliveryFailed) -> None:
        """This command ended without being accepted."""
        if delivery._settle(error):
            self.counters.failed[error.reason] += 1
            if error.reason == "closed":
                self.closed.append(delivery)
            if error.reason != "dropped":
                logger.debug("command failed (%s): %s", error.reason, error)
            if self._hook is not None:
                self._call_hook(delivery)

    def _call_hook(self, delivery: Delivery) -> None:
        hook = self._hook
        assert hook is not None
        if self._async_hook:
            if self.spawn is None:
                self.late_hooks.append(delivery)
            else:
                self.spawn(self.run_async_hook, delivery)
            return
        try:
            hook(delivery)
        except Exception:
            # The hook is the caller's code: its failure must not stop delivery.
            logger.exception("on_result hook raised; the pipeline goes on")

    async def run_async_hook(self, delivery: Delivery) -> None:
        """Await the async hook for one command, logging what it raises."""
        hook = self._hook
        assert hook is not None
        try:
            result = hook(delivery)
            if result is not None:
                await result
        except Exception:
            logger.exception("on_result hook raised; the pipeline goes on")
