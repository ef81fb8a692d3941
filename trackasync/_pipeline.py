"""The supervisor: every background task of a client, its start and its end.

One ``Pipeline`` per client and process owns the per-process parts (counters,
ledger, hook runner, command table, rate limiter) and every task the client
runs: the batcher's runner, the sender's workers, the hook dispatcher and the
closer. It alone starts them, drains and halts them, closes (keeping the unsent
commands in a durable log, or failing them "closed"), abandons them when the
event loop goes away, and is replaced after a fork. There is one path that
settles whatever is still pending: ``CommandTable.close``.

The client's state lives in a ``Lifecycle`` that both read: the client's hot
path checks ``open_loop`` with one identity test, and nothing here calls back
into the client.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import time
import warnings
from collections.abc import Coroutine, Iterator
from typing import Any

import anyio

from ._alarm import close_details
from ._batcher import Batcher
from ._delivery import Delivery, forget_owner, new_owner
from ._dryrun import DRY_RUN_NOTICE
from ._hooks import HookRunner
from ._ledger import Ledger
from ._log import CommandLog
from ._options import Options
from ._ratelimit import make_limiter
from ._sender import Sender
from ._stats import CloseReport, Counters
from ._table import CommandTable
from ._transport import Transport

logger = logging.getLogger("trackasync")

# How long a cancelled task or the session close may take at the very end of a
# close; a request in flight ends at once when cancelled.
CANCEL_GRACE = 0.1
# The share of aclose()'s budget kept for on_result hooks of the commands that
# end "closed" (when there is a hook).
HOOK_SHARE = 0.1
# Commands recovered from a durable log per step, and how often a full queue is
# looked at again for room for the next page.
RECOVER_PAGE = 500
# How long the close waits for a durable log to commit and close its file.
LOG_CLOSE_GRACE = 5.0
RECOVER_POLL = 0.05
# How often a durable log looks again for files left by processes now gone.
RESCAN_INTERVAL = 30.0

_monotonic = time.monotonic


class ClientState(enum.Enum):
    """Where a ``Client`` is in its life (``client.state``).

    It only moves forward: ``UNOPENED`` → ``OPEN`` → ``CLOSING`` → ``CLOSED``.
    """

    #: Created; it binds to the running event loop and starts its tasks on the
    #: first call or ``async with``.
    UNOPENED = "unopened"
    #: Taking commands and sending them.
    OPEN = "open"
    #: ``aclose()`` has begun (or the event loop stopped): no new commands; what
    #: is queued or in flight is being delivered within the close budget.
    CLOSING = "closing"
    #: Every command has its outcome and the close report is final. A closed
    #: client cannot be reopened.
    CLOSED = "closed"


UNOPENED, OPEN, CLOSING, CLOSED = ClientState

# Never a running loop, so "open_loop is not _get_running_loop()" is one
# identity check that fails for "not started", "closed" and "wrong event loop".
NOT_OPEN = object()


class Lifecycle:
    """A client's state, shared by the client and its pipeline."""

    __slots__ = ("loop", "open_loop", "state")

    def __init__(self) -> None:
        self.state: ClientState = UNOPENED
        #: The loop the client takes commands in while open, else ``NOT_OPEN``.
        self.open_loop: object = NOT_OPEN
        #: The loop the client is bound to, once started.
        self.loop: asyncio.AbstractEventLoop | None = None


class Pipeline:
    """The per-process machinery of one client, and the owner of its tasks."""

    def __init__(
        self,
        options: Options,
        life: Lifecycle,
        transport: Transport,
        base: str,
        headers: dict[str, str],
        *,
        send: bool = True,
        log: CommandLog | None = None,
    ) -> None:
        self.options = options
        self.send = send
        self.life = life
        self.transport = transport
        self._base = base
        self._headers = headers
        self.counters = Counters()
        self.hooks = (
            None if options.on_result is None else HookRunner(options.on_result)
        )
        self.ledger = Ledger(self.counters, self.hooks)
        self.rate = make_limiter(
            options.rate_limit, options.rate_budget, options.base_url
        )
        limits = options.the_limits
        self.table = CommandTable(
            options.max_queue,
            options.overflow,
            maxbytes=options.max_queue_bytes,
            batch_count=limits.max_batch_commands,
            batch_bytes=limits.max_batch_bytes,
            ledger=self.ledger,
            log=log,
        )
        # With a spool, a full queue in memory overflows to disk.
        self._spilled = asyncio.Event()
        spill = getattr(self.table.log, "spill", None)
        if spill is not None:
            room = self.table.log.has_room  # type: ignore[attr-defined]

            def spill_and_wake(delivery: Delivery) -> bool:
                if not spill(delivery):
                    return False
                self._spilled.set()
                return True

            self.table.enable_spill(spill_and_wake, room)
        # Awaiting one of this client's commands expedites this client only.
        self.owner = self.table.owner = new_owner(self.expedite)
        self.batcher: Batcher | None = None
        self.sender: Sender | None = None
        self.runner: asyncio.Task[None] | None = None
        self.closer: asyncio.Task[None] | None = None
        self.report: CloseReport | None = None
        # Every task started for this pipeline and not finished yet.
        self.tasks: set[asyncio.Task[Any]] = set()

    # -- start -------------------------------------------------------------------------

    def spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        """Start a task of this pipeline in the client's loop."""
        loop = self.life.loop
        assert loop is not None
        task = loop.create_task(coro, name=name)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        options = self.options
        if not self.send:
            logger.warning(DRY_RUN_NOTICE)
        life = self.life
        life.loop = loop
        self.sender = Sender(
            transport=self.transport,
            base=self._base,
            headers=self._headers,
            mode=options.mode,
            retry=options.the_retry,
            rate=self.rate,
            table=self.table,
            spawn=self.spawn,
            counters=self.counters,
            max_in_flight=options.max_in_flight,
            hooks=self.hooks,
        )
        self.batcher = Batcher(
            table=self.table,
            sender=self.sender,
            linger=options.linger,
            await_linger=options.await_linger,
            max_batch_commands=1
            if options.mode == "single"
            else options.the_limits.max_batch_commands,
            max_batch_bytes=options.the_limits.max_batch_bytes,
        )
        self.table.bind(loop.call_soon_threadsafe)
        if self.hooks is not None:
            self.hooks.start(self.spawn)
        if self.table.log.persistent:
            self.spawn(self._recover(), "trackasync-recover")
        # The background work runs in tasks the client owns, not in the caller's
        # task: the client may be opened in one task and closed in another (test
        # fixtures, framework lifespans) without upsetting a cancel scope.
        self.runner = self.spawn(self._run(), "trackasync")
        life.state = OPEN
        life.open_loop = loop

    async def _run(self) -> None:
        batcher = self.batcher
        assert batcher is not None
        try:
            await batcher.run()
        except asyncio.CancelledError:
            if self.life.state is OPEN:
                # Not our close: the event loop is shutting down (asyncio.run
                # returning, Ctrl-C) with the client still open.
                await self.abandon("its event loop stopped")
            raise

    def expedite(self) -> None:
        """A caller awaits one of this client's commands."""
        if self.batcher is not None:
            self.batcher.expedite()

    async def _recover(self) -> None:
        """Open the log, then feed the table what earlier runs left, a page at a
        time, oldest first, whenever its queue has room for a page."""
        table = self.table
        log = table.log
        await log.open()
        page = max(1, min(RECOVER_PAGE, table.maxsize // 2))
        spilled = self._spilled
        while not table.closed:
            if log.backlog():
                if (
                    table.maxsize - len(table) < page
                    or table.nbytes * 2 > table.maxbytes
                ):
                    await asyncio.sleep(RECOVER_POLL)
                    continue
                entries = await log.recover(page)
                if entries:
                    table.recovered(entries)
                    continue
            # Everything on disk is back in memory: new commands go there too.
            table.stop_spilling()
            # Until memory overflows again; and from time to time, a
            # long-running process takes what processes that ended since it
            # started left (a worker of the fleet killed meanwhile).
            spilled.clear()
            timer = asyncio.get_running_loop().call_later(RESCAN_INTERVAL, spilled.set)
            try:
                await spilled.wait()
            finally:
                timer.cancel()
            if not table.closed and not log.backlog():
                await log.open()

    # -- close -------------------------------------------------------------------------

    def begin_close(self, budget: float, keep: bool) -> asyncio.Task[None]:
        """Start the close in a task of its own (or return the one under way):
        callers await it shielded, so cancelling a caller never stops it."""
        if self.closer is not None:
            return self.closer
        life = self.life
        if life.state is CLOSING and self.runner is not None:
            # The loop is shutting down and the runner is settling everything
            # (abandon): its end is this close's end.
            return self.runner
        life.state = CLOSING
        life.open_loop = NOT_OPEN
        self.closer = self.spawn(self._close(budget, keep), "trackasync-close")
        return self.closer

    async def _close(self, budget: float, keep: bool) -> None:
        deadline = _monotonic() + budget
        table = self.table
        hooks = self.hooks
        clean = False
        try:
            table.stop_intake()
            if self.batcher is not None:
                self.batcher.close()
            # With a hook, its calls for the commands that end "closed" get the
            # last share of the budget: draining stops before it.
            drain_until = deadline - (budget * HOOK_SHARE if hooks else 0.0)
            if not await self._drain(drain_until):
                logger.warning(
                    "aclose: %d command(s) still queued or in flight after %.1f s; %s",
                    len(table) + table.in_flight,
                    budget,
                    "keeping them in the spool for the next run"
                    if keep and table.log.persistent
                    else "giving them up as 'closed'",
                )
            await self.halt(keep)
            # Hooks for the commands that just ended "closed" run too, within
            # what is left of the budget.
            if hooks is not None:
                await hooks.close(deadline)
            clean = True
        finally:
            if not clean:
                # This task was cancelled (the loop is shutting down): stop at
                # once, but leave nothing without an outcome.
                await self.halt(keep)
                if hooks is not None:
                    await hooks.halt()
            await self._close_resources()
            self.finish()

    async def _drain(self, deadline: float) -> bool:
        """Wait until the batcher and every worker are done; False at ``deadline``."""
        runner, sender = self.runner, self.sender
        if runner is None or sender is None:
            return True
        done, _ = await asyncio.wait(
            {runner}, timeout=max(0.0, deadline - _monotonic())
        )
        if not done:
            return False
        sender.stop()
        workers = set(sender.workers)
        if workers:
            _, pending = await asyncio.wait(
                workers, timeout=max(0.0, deadline - _monotonic())
            )
            return not pending
        return True

    async def halt(self, keep: bool = False) -> None:
        """Cancel the batcher and the workers, then settle whatever is left:
        kept in a durable log with ``keep``, else failed "closed"."""
        current = asyncio.current_task()
        hook_tasks = set() if self.hooks is None else self.hooks.tasks()
        tasks = [
            t
            for t in self.tasks
            if not t.done()
            and t is not current
            and t is not self.closer
            and t not in hook_tasks
        ]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=CANCEL_GRACE)
        runner = self.runner
        if (
            runner is not None
            and runner.done()
            and not runner.cancelled()
            and runner.exception() is not None
        ):
            logger.error("the background task failed", exc_info=runner.exception())
        self.table.close(keep=keep)

    async def _close_resources(self) -> None:
        with anyio.move_on_after(CANCEL_GRACE):
            await self.transport.aclose()
        with anyio.move_on_after(CANCEL_GRACE):
            await self.rate.aclose()
        # A spool's last commit and its file's close take their own time.
        with anyio.move_on_after(LOG_CLOSE_GRACE):
            await self.table.log.aclose()
        forget_owner(self.table.owner)

    def close_dead_loop(self) -> None:
        """The loop died without letting the client stop (closed without
        cancelling its tasks): settle what is left here, synchronously."""
        self.life.state = CLOSING
        # A durable log keeps what is left for the next run.
        self.table.close(keep=True)
        self.finish()

    async def abandon(self, why: str) -> None:
        """End at once, without sending: the loop is going away."""
        life = self.life
        life.state = CLOSING
        life.open_loop = NOT_OPEN
        table = self.table
        left = len(table) + table.in_flight
        message = (
            f"trackasync.Client was not closed and {why} with {left} "
            "command(s) queued or in flight: "
            + (
                "they are kept in the spool for the next run. "
                if table.log.persistent
                else "they end 'closed', undelivered. "
            )
            + "Use 'async with Client(...)' or 'await client.aclose()' before "
            "the loop ends."
        )
        if left:
            logger.warning(message)
        try:
            # A durable log keeps what is left for the next run.
            await self.halt(keep=True)
            if self.hooks is not None:
                await self.hooks.halt()
            await self._close_resources()
        finally:
            self.finish()
        if left:
            # Last: under "-W error" this raises, and everything is settled by now.
            warnings.warn(message, ResourceWarning, stacklevel=1)

    def finish(self) -> None:
        """Write the final report (once) and log what was lost."""
        if self.report is not None:
            return
        ledger = self.ledger
        ledger.flush_logs()
        counters = self.counters
        failed = dict(counters.failed)
        self.report = CloseReport(
            delivered=counters.delivered,
            failed=failed,
            undelivered=list(ledger.closed),
            kept=counters.kept,
            last_errors=dict(ledger.last_errors),
        )
        life = self.life
        life.state = CLOSED
        life.open_loop = NOT_OPEN
        lost = sum(failed.values())
        if lost or counters.kept:
            parts = [f"{n} {reason}" for reason, n in failed.items() if n]
            logger.warning(
                "closed: %d delivered, %d not delivered (%s)%s%s",
                counters.delivered,
                lost,
                ", ".join(parts) or "none",
                f", {counters.kept} kept in the spool for the next run"
                if counters.kept
                else "",
                close_details(failed, ledger.last_errors, self.sender),
            )

    # -- waiting -----------------------------------------------------------------------

    @contextlib.contextmanager
    def parked(self) -> Iterator[None]:
        """Mark an ``on_result`` hook that waits for the pipeline, so the pipeline
        does not wait for it (no deadlock when a hook flushes or closes)."""
        hooks = self.hooks
        task = asyncio.current_task()
        if hooks is None or task is None or not hooks.owns(task):
            yield
            return
        hooks.park(task)
        try:
            yield
        finally:
            hooks.unpark(task)

    def discard_in_child(self) -> int:
        """After a fork: the commands this (child) copy holds, never to be sent
        here (the parent sends them)."""
        self.table.log.after_fork_in_child()
        return self.table.held()
