"""A durable ``CommandLog``: the spool, one SQLite file per process.

Every command the table accepts is appended here; a command leaves when it
reaches a final outcome. All file I/O runs on one writer thread per log
(``_spool_writer``), never on the event loop: this side only queues
operations and answers callers. The writer turns everything queued into one
transaction (a group commit), stored as one row per group of commands
(``_spool_format``).

Two settings of durability (``Durability``), both with SQLite in WAL mode and
``synchronous=FULL`` (each commit is fsynced before it counts):

- ``"durable"``: the writer commits as soon as something is queued, and
  ``synced(seq)`` gives callers an awaitable that completes once their command
  is committed: ``await client.track()`` returns only then. Concurrent callers
  share one transaction. Nothing a returned call accepted is lost, neither on a
  crash nor on a power loss (as far as the disk honours fsync).
- ``"interval"``: the writer commits at most every ``interval`` seconds and
  nobody waits. A crash or a power loss loses at most the commands accepted in
  the last ``interval`` seconds before it.

At open, the log creates its own file and adopts every file of the directory
whose owner is gone (``_spool_adopt``), oldest first. Adopted commands get
negative sequence numbers (-1 the oldest), as the protocol asks, and come back
to the table through ``recover`` a page at a time.

While the disk refuses writes, nothing accepted is dropped: what is not
written stays in memory, durable calls raise ``SpoolError``, and the spool
takes no more commands past the queue in memory (``has_room`` is False), so
the overflow policy answers at the call instead.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import time
import weakref
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from . import _spool_files as files
from ._delivery import Delivery
from ._exceptions import ConfigError, SpoolError
from ._log import LogEntry
from ._options import (
    DEFAULT_SPOOL_INTERVAL,
    DEFAULT_SPOOL_MAX_BYTES,
    DURABILITIES,
    Durability,
)
from ._spool_adopt import adopt_orphans
from ._spool_read import read_adopted
from ._spool_spill import Spilled
from ._spool_writer import Job, Release, Settle, SpoolWriter

logger = logging.getLogger("trackasync")

# At interpreter exit, how long to wait for an unclosed spool's last commit.
_EXIT_WAIT = 10.0

# Every log with a running writer: flushed and stopped at interpreter exit.
_live: weakref.WeakSet[SqliteLog] = weakref.WeakSet()


class SqliteLog:
    """A spool in ``directory``: see the module's docstring."""

    persistent = True

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        durability: Durability = "durable",
        interval: float = DEFAULT_SPOOL_INTERVAL,
        max_bytes: int = DEFAULT_SPOOL_MAX_BYTES,
    ) -> None:
        if durability not in DURABILITIES:
            raise ConfigError(
                f"durability must be one of {DURABILITIES}, got {durability!r}"
            )
        self.directory = files.prepare_directory(directory)
        self.durability = durability
        self.durable = durability == "durable"
        self.interval = interval
        #: Command bytes the spool holds at most beyond the queue in memory.
        self.max_bytes = max_bytes
        self.name = files.new_name()
        writer = SpoolWriter(
            self.directory, self.name, durable=self.durable, interval=interval
        )
        writer.on_advance = self._on_advance
        writer.on_failure = self._on_failure
        self._writer = writer
        self.path = writer.path
        self._ops = writer.ops
        self._appended = writer.appended
        self._wake = writer.wake
        self._kick: Callable[[], None] = (
            self._wake_soon if self.durable else self._wake.set
        )
        # The last sequence number appended (the loop's thread).
        self._last_appended = 0
        # Commands kept on disk only because memory was full; and the bytes
        # of adopted commands not handed back yet.
        self._spilled = Spilled()
        self._backlog_bytes = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiters: collections.deque[tuple[int, asyncio.Future[None]]] = (
            collections.deque()
        )
        #: True once open() adopted what the directory held.
        self.opened = False
        self._closed = False
        self._close_requested = False
        self._forked = False
        # Adopted commands not yet handed to the table, the last handed over,
        # and how many were adopted in all (the numbering goes on below).
        self._backlog = 0
        self._cursor = 0
        self._adopted = 0

    def __repr__(self) -> str:
        return f"<SqliteLog {str(self.path)!r} {self.durability}>"

    @property
    def failure(self) -> SpoolError | None:
        """Why the last commit failed, until one succeeds."""
        return self._writer.failure

    @property
    def commits(self) -> int:
        """Transactions committed (for benchmarks)."""
        return self._writer.commits

    @property
    def inserted(self) -> int:
        """Commands written (for benchmarks)."""
        return self._writer.inserted

    @property
    def groups(self) -> int:
        """Groups (rows) written (for benchmarks)."""
        return self._writer.groups

    # -- the loop's side ---------------------------------------------------------------

    def _start(self) -> None:
        if self._forked:
            raise SpoolError("this spool belongs to the parent process")
        if self._loop is None:
            self._loop = asyncio._get_running_loop()
        _live.add(self)
        self._writer.start()

    async def open(self) -> None:
        await self._job(self._open_and_adopt)

    def append(self, commands: Sequence[Delivery]) -> None:
        # On the hot path of every call: nothing but the hand-over.
        writer = self._writer
        if writer.thread is None:
            self._start()
        self._appended.extend(commands)
        self._last_appended = commands[-1].seq
        if not writer.awake:
            writer.awake = True
            self._kick()

    def has_room(self, nbytes: int) -> bool:
        """Whether the spool takes ``nbytes`` more beyond the queue in memory
        (never while the disk refuses writes: they would be in memory only)."""
        return (
            self._spilled.nbytes + self._backlog_bytes + nbytes <= self.max_bytes
            and self._writer.failure is None
        )

    def spill(self, delivery: Delivery) -> bool:
        """Memory is full: keep ``delivery`` on disk only, to be handed back by
        ``recover`` (after what earlier runs left); False if the spool is full."""
        size = len(delivery.body)
        if not self.has_room(size):
            return False
        self.append((delivery,))
        self._spilled.add(delivery.seq, size)
        return True

    def synced(self, seq: int) -> Awaitable[None] | None:
        writer = self._writer
        if not self.durable or seq <= writer.durable_seq or seq > self._last_appended:
            # Already durable, or never appended (dropped at the call).
            return None
        failure = writer.failure
        loop = self._loop
        assert loop is not None, "synced() before any append"
        future: asyncio.Future[None] = loop.create_future()
        if failure is not None:
            future.set_exception(failure)
            return future
        self._waiters.append((seq, future))
        # The writer may have committed between the check above and the
        # append: look again, so no waiter is left for a commit already made.
        if seq <= writer.durable_seq:
            self._resolve(writer.durable_seq)
        return future

    def wait_durable(self, delivery: Delivery, timeout: float) -> bool:
        """From a thread other than the loop's (``SyncClient``): wait up to
        ``timeout`` for ``delivery`` to be committed; True once it is (or no
        longer needs to be). Raises ``SpoolError`` if the disk refuses it."""
        deadline = time.monotonic() + timeout
        writer = self._writer
        with writer.cond:
            while True:
                seq = delivery.seq
                if (
                    self._closed
                    or (seq and seq <= writer.durable_seq)
                    # Done without being appended (dropped): nothing to wait for.
                    or (delivery.done() and (not seq or seq > self._last_appended))
                ):
                    return True
                if writer.failure is not None and seq:
                    raise writer.failure
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                writer.thread_waiters += 1
                try:
                    writer.cond.wait(left)
                finally:
                    writer.thread_waiters -= 1

    def settle(self, seqs: Sequence[int]) -> None:
        if seqs:
            self._ops.append(Settle(seqs))
            writer = self._writer
            if not writer.awake:
                writer.awake = True
                self._kick()

    def _wake_soon(self) -> None:
        """Durable: wake the writer once the callers running in this turn of
        the loop have all appended. Callers woken by one commit resume in
        the same turn; this wakes the writer after the last of them, so they
        share the next transaction, without the writer polling for them."""
        loop = self._loop
        if loop is None or loop.is_closed():
            # Settling after the loop died (a close without it): at once.
            self._wake.set()
        else:
            loop.call_soon(self._wake.set)

    def release(self, commands: Sequence[Delivery]) -> None:
        writer = self._writer
        if commands and writer.thread is not None:
            self._ops.append(Release((c.seq, c.attempts) for c in commands))
            writer.urgent.set()
            self._wake.set()

    async def recover(self, limit: int) -> list[LogEntry]:
        entries: list[LogEntry] = []
        if self._backlog:
            entries = await self._job(lambda: self._read_page(limit))
        if entries or not self._spilled.count:
            return entries
        # What this run kept on disk when memory was full, oldest first.
        runs = self._spilled.take(limit)
        entries = await self._job(lambda: self._writer.read_runs(runs))
        self._spilled.given_back(sum(len(e.body) for e in entries))
        return entries

    def backlog(self) -> int:
        return self._backlog + self._spilled.count

    async def aclose(self) -> None:
        if self._writer.thread is None or self._closed:
            self._closed = True
            return
        self._close_requested = True
        await self._job(self._close_files)

    def after_fork_in_child(self) -> None:
        """In a forked child: the writer thread does not exist here, and the
        file, the connection and the lock are the parent's. The lock's inherited
        descriptor is closed (the lock stays the parent's: it ends with the
        parent's own descriptor); the connection is kept referenced forever and
        never used, so no finalizer checkpoints or closes the parent's file."""
        from . import _fork

        writer = self._writer
        self._forked = True
        self._closed = True
        _fork.keep_forever((writer.conn, writer.thread))
        fd, writer.lock_fd = writer.lock_fd, None
        if fd is not None:
            os.close(fd)
        _live.discard(self)

    async def _job(self, fn: Callable[[], Any]) -> Any:
        if self._writer.thread is None:
            self._start()
        loop = asyncio.get_running_loop()
        self._loop = loop
        future: asyncio.Future[Any] = loop.create_future()
        self._writer.submit(Job(fn, _answer(loop, future)))
        # The writer finishes the job even if this caller is cancelled.
        return await asyncio.shield(future)

    def _on_advance(self, top: int) -> None:
        """In the writer: commands up to ``top`` are durable."""
        loop = self._loop
        if self._waiters and loop is not None:
            # A closed loop has nobody waiting any more.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._resolve, top)

    def _on_failure(self, error: SpoolError) -> None:
        loop = self._loop
        if self._waiters and loop is not None:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._fail_waiters, error)

    def _resolve(self, durable: int) -> None:
        """In the loop: wake the callers whose command is committed."""
        waiters = self._waiters
        while waiters and waiters[0][0] <= durable:
            _, future = waiters.popleft()
            if not future.done():
                future.set_result(None)

    def _fail_waiters(self, error: SpoolError) -> None:
        waiters, self._waiters = self._waiters, collections.deque()
        for _, future in waiters:
            if not future.done():
                future.set_exception(error)

    # -- jobs (run by the writer thread) -------------------------------------------------

    def _open_and_adopt(self) -> None:
        writer = self._writer
        count, size, groups = adopt_orphans(
            writer.connection(), self.directory, self.name, self._adopted
        )
        writer.adopted(groups)
        self._adopted += count
        self._backlog += count
        self._backlog_bytes += size
        self.opened = True

    def _read_page(self, limit: int) -> list[LogEntry]:
        entries = read_adopted(self._writer.connection(), self._cursor, limit)
        self._backlog_bytes = max(
            0, self._backlog_bytes - sum(len(e.body) for e in entries)
        )
        if entries:
            self._cursor = entries[-1].seq
        self._backlog = (
            0 if len(entries) < limit else max(0, self._backlog - len(entries))
        )
        return entries

    def _close_files(self) -> None:
        self._closed = True
        self._writer.close_files()

    def stop_at_exit(self) -> None:
        """At interpreter exit without a close: commit what is queued and stop
        (the file stays, unlocked, for the next process to adopt)."""
        thread = self._writer.thread
        if (
            thread is None
            or self._closed
            or self._close_requested
            or not thread.is_alive()
        ):
            # Closing already: the interpreter joins the writer (not a daemon).
            return
        self._close_requested = True
        self._writer.submit(Job(self._close_files))
        thread.join(_EXIT_WAIT)


def _answer(
    loop: asyncio.AbstractEventLoop, future: asyncio.Future[Any]
) -> Callable[[Any, BaseException | None], None]:
    """A job's answer, handed to ``future`` in its loop."""

    def done(result: Any, error: BaseException | None) -> None:
        def settle() -> None:
            if future.done():
                return
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(result)

        with contextlib.suppress(RuntimeError):  # the loop is closed
            loop.call_soon_threadsafe(settle)

    return done


def stop_all_at_exit() -> None:
    """Stop every running writer (``_log`` calls this at interpreter exit)."""
    for log in list(_live):
        try:
            log.stop_at_exit()
        except Exception:
            logger.exception("trackasync: stopping a spool at exit failed")
