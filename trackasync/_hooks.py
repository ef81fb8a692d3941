"""Running the caller's ``on_result`` hook: never inline, always bounded.

An outcome is recorded wherever it happens (a drop inside ``track_nowait``, a
result in the sender); the hook call is only queued there. A dispatcher task of
the client's own calls it later, so a hook that queues a command, flushes or
closes the client never runs re-entrantly inside the pipeline or inside a
caller's ``track*`` call.

Bounds, both documented in the README:

- Async hooks run at most ``HOOK_CONCURRENCY`` at a time. The backlog of calls
  waiting for them applies *backpressure*: once it holds ``HOOK_BACKLOG`` calls,
  the sender waits before settling its next request, so a slow hook slows
  delivery (and, through the queue's overflow policy, the producers) instead of
  growing a task per command.
- Outcomes recorded where nothing can wait (drops, close) are queued anyway, up
  to twice that backlog; past it their hook calls are skipped, counted in
  ``skipped`` and logged at WARNING.
- At close, queued hook calls get what is left of the close budget. Hooks still
  running then are cancelled and given ``HOOK_CANCEL_GRACE`` seconds to end;
  one that shields itself from cancellation is left behind after that, so
  ``aclose(timeout)`` returns at most that much late.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from typing import Any

from ._delivery import Delivery
from ._stats import ThrottledLog

logger = logging.getLogger("trackasync")

ResultHook = Callable[[Delivery], Awaitable[None] | None]
Spawn = Callable[[Coroutine[Any, Any, None], str], "asyncio.Task[None]"]

HOOK_CONCURRENCY = 16
HOOK_BACKLOG = 10_000
HOOK_CANCEL_GRACE = 0.1
# A sync hook runs in the dispatcher's loop; it yields to the event loop after
# this many calls so a long backlog does not starve the rest of the application.
_SYNC_BATCH = 100


class HookRunner:
    """Queues hook calls and runs them from the client's own tasks."""

    __slots__ = (
        "_active",
        "_backlog",
        "_dispatcher",
        "_hook",
        "_is_async",
        "_parked",
        "_progress",
        "_room",
        "_skipped_log",
        "_spawn",
        "_wake",
        "skipped",
    )

    def __init__(self, hook: ResultHook) -> None:
        self._hook = hook
        self._is_async = inspect.iscoroutinefunction(hook)
        self._backlog: deque[Delivery] = deque()
        self._active: set[asyncio.Task[Any]] = set()
        # Hook tasks now inside the client's flush() or aclose(): they wait for
        # the pipeline, so the pipeline must not wait for them.
        self._parked: set[asyncio.Task[Any]] = set()
        self._dispatcher: asyncio.Task[None] | None = None
        self._spawn: Spawn | None = None
        self._wake = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        # Set whenever a hook call ends: what close() waits on.
        self._progress = asyncio.Event()
        #: Hook calls skipped because the backlog was full (drops, close).
        self.skipped = 0
        self._skipped_log = ThrottledLog(
            logging.WARNING,
            "on_result: skipped the hook for %d command(s): its backlog was full "
            "(%s); the commands themselves are counted as usual",
        )

    # -- queueing (called wherever an outcome is recorded) ----------------------------

    def push(self, delivery: Delivery) -> None:
        """Queue one hook call."""
        backlog = self._backlog
        if len(backlog) >= 2 * HOOK_BACKLOG:
            self.skipped += 1
            self._skipped_log(f"{len(backlog)} calls waiting")
            return
        backlog.append(delivery)
        self._queued()

    def push_many(self, deliveries: Iterable[Delivery]) -> None:
        """Queue a hook call for each of ``deliveries``."""
        self._backlog.extend(deliveries)
        self._queued()

    def _queued(self) -> None:
        if len(self._backlog) >= HOOK_BACKLOG:
            self._room.clear()
        self._wake.set()

    async def room(self) -> None:
        """Wait while the backlog is full: the sender's backpressure."""
        while not self._room.is_set() and not self._parked:
            await self._room.wait()

    # -- running ------------------------------------------------------------------------

    def start(self, spawn: Spawn) -> None:
        """Start the dispatcher; every task of the hook's is started by ``spawn``,
        the pipeline's supervisor."""
        self._spawn = spawn
        self._dispatcher = spawn(self._dispatch(), "trackasync-hooks")

    def tasks(self) -> set[asyncio.Task[Any]]:
        """The dispatcher and the hook calls under way: the runner's own to end."""
        tasks = set(self._active)
        if self._dispatcher is not None:
            tasks.add(self._dispatcher)
        return tasks

    def owns(self, task: asyncio.Task[Any] | None) -> bool:
        """Whether ``task`` is one of ours (a hook calling back into the client)."""
        return task is not None and (task in self._active or task is self._dispatcher)

    def park(self, task: asyncio.Task[Any]) -> None:
        """``task``, a hook, now waits for the pipeline (``flush``/``aclose``)."""
        self._parked.add(task)
        self._room.set()
        self._wake.set()

    def unpark(self, task: asyncio.Task[Any]) -> None:
        self._parked.discard(task)

    async def _dispatch(self) -> None:
        backlog = self._backlog
        while True:
            if not backlog:
                self._wake.clear()
                await self._wake.wait()
                continue
            if self._is_async:
                if len(self._active) - len(self._parked) >= HOOK_CONCURRENCY:
                    self._wake.clear()
                    await self._wake.wait()
                    continue
                assert self._spawn is not None
                task = self._spawn(
                    self._call_async(backlog.popleft()), "trackasync-hook"
                )
                self._active.add(task)
                task.add_done_callback(self._finished)
            else:
                for _ in range(min(len(backlog), _SYNC_BATCH)):
                    self._call_sync(backlog.popleft())
                self._progress.set()
                await asyncio.sleep(0)
            if len(backlog) < HOOK_BACKLOG // 2:
                self._room.set()

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._active.discard(task)
        self._parked.discard(task)
        self._wake.set()
        self._progress.set()

    def _call_sync(self, delivery: Delivery) -> None:
        try:
            self._hook(delivery)
        except Exception:
            # The hook is the caller's code: its failure must not stop delivery.
            logger.exception("on_result hook raised; the pipeline goes on")

    async def _call_async(self, delivery: Delivery) -> None:
        try:
            result = self._hook(delivery)
            if result is not None:
                await result
        except Exception:
            logger.exception("on_result hook raised; the pipeline goes on")

    # -- closing --------------------------------------------------------------------------

    async def close(self, deadline: float) -> None:
        """Run what is queued until ``deadline`` (monotonic), then stop.

        Hooks parked in the client's own ``aclose``/``flush`` are not waited for.
        """
        loop = asyncio.get_running_loop()
        progress = self._progress
        while self._backlog or (self._active - self._parked):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            progress.clear()
            # A timer that sets the event is cheaper than wait_for's task.
            timer = loop.call_later(remaining, progress.set)
            try:
                await progress.wait()
            finally:
                timer.cancel()
        await self.halt()

    async def halt(self) -> None:
        """Stop now: cancel the dispatcher and running hooks; skip what is queued.

        Waits at most ``HOOK_CANCEL_GRACE`` for cancelled hooks to end.
        """
        left = len(self._backlog)
        if left:
            self.skipped += left
            self._backlog.clear()
            logger.warning(
                "on_result: the close budget ran out with %d hook call(s) not run",
                left,
            )
        tasks = [t for t in self._active if t not in self._parked]
        if self._dispatcher is not None:
            tasks.append(self._dispatcher)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=HOOK_CANCEL_GRACE)
        stuck = sum(1 for task in tasks if not task.done())
        if stuck:
            logger.warning(
                "on_result: %d hook(s) ignored cancellation; left running", stuck
            )
        self._skipped_log.flush()
        self._room.set()
