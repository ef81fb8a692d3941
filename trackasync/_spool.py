"""A durable ``CommandLog``: the spool, one SQLite file per process.

Every command the table accepts is appended here; a command leaves when it
reaches a final outcome. All file I/O runs on one writer thread per log, never
on the event loop: the loop only appends to a queue of operations (a deque,
safe between threads without a lock) and wakes the writer once per burst. The
writer turns everything queued into one transaction (a group commit): the
inserts of new commands, the deletes of settled ones and the attempt counts of
kept ones. A command settled before it was written is never written at all.

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
whose owner is gone (``_spool_files``): their rows are copied into its own
file in one transaction, oldest first, then the orphan is deleted. Adopted
rows get negative sequence numbers (-1 the oldest), as the protocol asks, and
come back to the table through ``recover`` a page at a time.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import sqlite3
import threading
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
from ._spool_adopt import (
    FORMAT,
    KIND_CODE,
    SCHEMA,
    adopt_orphans,
    connect,
    read_page,
    read_runs,
)

logger = logging.getLogger("trackasync")

# While the disk refuses writes, the writer tries again this often.
_RETRY_FAILED = 1.0
# How long the writer sleeps when there is nothing to do (it is woken sooner).
_IDLE = 5.0
# Durable: how long the writer waits for more callers before a commit, in
# steps of _GATHER_STEP while more keep arriving (at most their product).
_GATHER_STEP = 0.0002
_GATHER_STEPS = 5
# At interpreter exit, how long to wait for an unclosed spool's last commit.
_EXIT_WAIT = 10.0


class _Job:
    """Work for the writer thread that answers a waiting coroutine (if any)."""

    __slots__ = ("fn", "future", "loop")

    def __init__(
        self,
        fn: Callable[[], Any],
        loop: asyncio.AbstractEventLoop | None = None,
        future: asyncio.Future[Any] | None = None,
    ) -> None:
        self.fn = fn
        self.loop = loop
        self.future = future


class _Settle(list[int]):
    """Sequence numbers to delete (an operation in the queue)."""


class _Release(list[tuple[int, int]]):
    """(seq, attempts) to update at a close that keeps."""


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
        # The last sequence number appended (the loop's thread).
        self._last_appended = 0
        # Commands kept on disk only because memory was full, as runs of
        # consecutive numbers [first, last], oldest first; their count and
        # bytes; and the bytes of adopted commands not handed back yet.
        self._spilled: collections.deque[list[int]] = collections.deque()
        self._spilled_count = 0
        self._spilled_bytes = 0
        self._backlog_bytes = 0
        self.name = files.new_name()
        self.path = files.spool_path(self.directory, self.name)
        self._ops: collections.deque[Any] = collections.deque()
        self._wake = threading.Event()
        self._urgent = threading.Event()
        self._awake = False
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._conn: sqlite3.Connection | None = None
        self._lock_fd: int | None = None
        # The highest sequence number whose command is committed (or settled,
        # so no longer needing to be): read by the loop, written by the writer.
        self._durable_seq = 0
        self._waiters: collections.deque[tuple[int, asyncio.Future[None]]] = (
            collections.deque()
        )
        self._cond = threading.Condition()
        self._thread_waiters = 0
        #: Why the last commit failed, until one succeeds.
        self.failure: SpoolError | None = None
        #: True once open() adopted what the directory held.
        self.opened = False
        self._stopping = False
        self._closed = False
        self._close_requested = False
        self._forked = False
        # Adopted rows not yet handed to the table, and the next to hand over.
        self._backlog = 0
        self._cursor = 0
        self._adopted = 0
        # Commands written and not deleted, and their body bytes (for stats).
        self.rows = 0
        self.nbytes = 0
        #: Transactions committed, and commands inserted by them (for benchmarks).
        self.commits = 0
        self.inserted = 0

    def __repr__(self) -> str:
        return f"<SqliteLog {str(self.path)!r} {self.durability}>"

    # -- the loop's side ---------------------------------------------------------------

    def _start(self) -> None:
        if self._forked:
            raise SpoolError("this spool belongs to the parent process")
        if self._loop is None:
            self._loop = asyncio._get_running_loop()
        thread = threading.Thread(
            target=self._run, name="trackasync-spool", daemon=False
        )
        self._thread = thread
        _live.add(self)
        thread.start()

    async def open(self) -> None:
        await self._job(self._open_and_adopt)

    def append(self, commands: Sequence[Delivery]) -> None:
        if self._thread is None:
            self._start()
        self._ops.extend(commands)
        self._last_appended = commands[-1].seq
        if not self._awake:
            self._awake = True
            self._wake.set()

    def has_room(self, nbytes: int) -> bool:
        """Whether the spool takes ``nbytes`` more beyond the queue in memory."""
        return self._spilled_bytes + self._backlog_bytes + nbytes <= self.max_bytes

    def spill(self, delivery: Delivery) -> bool:
        """Memory is full: keep ``delivery`` on disk only, to be handed back by
        ``recover`` (after what earlier runs left); False if the spool is full."""
        size = len(delivery.body)
        if not self.has_room(size):
            return False
        self.append((delivery,))
        seq = delivery.seq
        spilled = self._spilled
        if spilled and spilled[-1][1] == seq - 1:
            spilled[-1][1] = seq
        else:
            spilled.append([seq, seq])
        self._spilled_count += 1
        self._spilled_bytes += size
        return True

    def synced(self, seq: int) -> Awaitable[None] | None:
        if not self.durable or seq <= self._durable_seq or seq > self._last_appended:
            # Already durable, or never appended (dropped at the call).
            return None
        failure = self.failure
        loop = self._loop
        assert loop is not None, "synced() before any append"
        future: asyncio.Future[None] = loop.create_future()
        if failure is not None:
            future.set_exception(failure)
            return future
        self._waiters.append((seq, future))
        # The writer may have committed between the check above and the
        # append: look again, so no waiter is left for a commit already made.
        if seq <= self._durable_seq:
            self._resolve(self._durable_seq)
        return future

    def wait_durable(self, delivery: Delivery, timeout: float) -> bool:
        """From a thread other than the loop's (``SyncClient``): wait up to
        ``timeout`` for ``delivery`` to be committed; True once it is (or no
        longer needs to be). Raises ``SpoolError`` if the disk refuses it."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                seq = delivery.seq
                if (
                    self._closed
                    or (seq and seq <= self._durable_seq)
                    # Done without being appended (dropped): nothing to wait for.
                    or (delivery.done() and (not seq or seq > self._last_appended))
                ):
                    return True
                if self.failure is not None and seq:
                    raise self.failure
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._thread_waiters += 1
                try:
                    self._cond.wait(left)
                finally:
                    self._thread_waiters -= 1

    def settle(self, seqs: Sequence[int]) -> None:
        if seqs:
            self._ops.append(_Settle(seqs))
            if not self._awake:
                self._awake = True
                self._wake.set()

    def release(self, commands: Sequence[Delivery]) -> None:
        if commands and self._thread is not None:
            self._ops.append(_Release((c.seq, c.attempts) for c in commands))
            self._urgent.set()
            self._wake.set()

    async def recover(self, limit: int) -> list[LogEntry]:
        entries: list[LogEntry] = []
        if self._backlog:
            entries = await self._job(lambda: self._read_page(limit))
        if entries or not self._spilled_count:
            return entries
        # What this run kept on disk when memory was full, oldest first.
        runs: list[tuple[int, int]] = []
        taken = 0
        spilled = self._spilled
        while spilled and taken < limit:
            first, last = spilled[0]
            n = min(last - first + 1, limit - taken)
            runs.append((first, first + n - 1))
            taken += n
            if first + n > last:
                spilled.popleft()
            else:
                spilled[0][0] = first + n
        self._spilled_count -= taken
        conn = self._connection
        entries = await self._job(lambda: read_runs(conn(), runs))
        self._spilled_bytes -= sum(len(e.body) for e in entries)
        return entries

    def backlog(self) -> int:
        return self._backlog + self._spilled_count

    async def aclose(self) -> None:
        if self._thread is None or self._closed:
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

        self._forked = True
        self._closed = True
        _fork.keep_forever((self._conn, self._thread))
        fd, self._lock_fd = self._lock_fd, None
        if fd is not None:
            os.close(fd)
        _live.discard(self)

    async def _job(self, fn: Callable[[], Any]) -> Any:
        if self._thread is None:
            self._start()
        loop = asyncio.get_running_loop()
        self._loop = loop
        future: asyncio.Future[Any] = loop.create_future()
        self._ops.append(_Job(fn, loop, future))
        self._urgent.set()
        self._wake.set()
        # The writer finishes the job even if this caller is cancelled.
        return await asyncio.shield(future)

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

    # -- the writer thread -------------------------------------------------------------

    def _run(self) -> None:
        inserts: dict[int, tuple[int, int, bytes, float, int]] = {}
        deletes: set[int] = set()
        updates: dict[int, int] = {}
        last_commit = time.monotonic()
        try:
            while True:
                timeout = _RETRY_FAILED if self.failure is not None else _IDLE
                self._wake.wait(timeout)
                if self.durable:
                    self._gather()
                elif not self._stopping:
                    # Interval: let a transaction's worth gather, unless a job
                    # (recover, close) is waiting.
                    left = self.interval - (time.monotonic() - last_commit)
                    if left > 0:
                        self._urgent.wait(left)
                self._wake.clear()
                self._urgent.clear()
                self._awake = False
                top = self._drain(inserts, deletes, updates)
                if self._write(inserts, deletes, updates, top):
                    last_commit = time.monotonic()
                if self._run_jobs(inserts, deletes, updates):
                    return
        except BaseException:
            logger.exception("trackasync: the spool's writer thread failed")
            self.failure = SpoolError("the spool's writer thread failed")
            raise
        finally:
            _live.discard(self)

    def _gather(self) -> None:
        """Durable: callers woken by the last commit call again within a moment
        of each other; wait while they keep coming (briefly: a commit's fsync
        takes far longer) so that they share the next transaction."""
        ops = self._ops
        seen = len(ops)
        for _ in range(_GATHER_STEPS):
            time.sleep(_GATHER_STEP)
            now = len(ops)
            if now == seen:
                return
            seen = now

    def _drain(
        self,
        inserts: dict[int, tuple[int, int, bytes, float, int]],
        deletes: set[int],
        updates: dict[int, int],
    ) -> int:
        """Move queued operations up to the first job into the transaction;
        returns the highest sequence number appended."""
        ops = self._ops
        top = self._durable_seq
        code = KIND_CODE
        while ops:
            op = ops[0]
            if isinstance(op, Delivery):
                ops.popleft()
                seq = op.seq
                if seq > top:
                    top = seq
                inserts[seq] = (seq, code[op.kind], op.body, op.created, op.attempts)
            elif isinstance(op, _Settle):
                ops.popleft()
                for seq in op:
                    # Settled before it was written: never write it.
                    if inserts.pop(seq, None) is None:
                        deletes.add(seq)
                    updates.pop(seq, None)
            elif isinstance(op, _Release):
                ops.popleft()
                for seq, attempts in op:
                    row = inserts.get(seq)
                    if row is not None:
                        inserts[seq] = (*row[:4], attempts)
                    else:
                        updates[seq] = attempts
            else:
                break
        return top

    def _run_jobs(
        self,
        inserts: dict[int, tuple[int, int, bytes, float, int]],
        deletes: set[int],
        updates: dict[int, int],
    ) -> bool:
        """Run the jobs at the head of the queue (what came before each is
        committed first); True when the log closed."""
        ops = self._ops
        while ops and isinstance(ops[0], _Job):
            job: _Job = ops.popleft()
            try:
                result = job.fn()
            except BaseException as exc:
                _answer(job, None, exc)
            else:
                _answer(job, result, None)
            if self._stopping:
                return True
            top = self._drain(inserts, deletes, updates)
            self._write(inserts, deletes, updates, top)
        return False

    def _write(
        self,
        inserts: dict[int, tuple[int, int, bytes, float, int]],
        deletes: set[int],
        updates: dict[int, int],
        top: int,
    ) -> bool:
        """Commit what the transaction holds, if anything (True if it did);
        either way, commands up to ``top`` need nothing more."""
        if inserts or deletes or updates:
            self._commit(inserts, deletes, updates, top)
            return True
        if top > self._durable_seq:
            # All of them settled before they were written.
            self._advance(top)
        return False

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            self._create_own()
        assert self._conn is not None
        return self._conn

    def _create_own(self) -> None:
        """Take this process's lock, then create its file (0600)."""
        lock = files.lock_path(self.directory, self.name)
        fd = files.take_lock(lock, create=True)
        if fd is None:  # pragma: no cover - the name is this process's own
            raise SpoolError(f"spool: cannot lock {str(lock)!r}")
        self._lock_fd = fd
        files.create_private(self.path)
        conn = connect(self.path, create=True)
        conn.execute(SCHEMA)
        conn.execute(f"PRAGMA user_version={FORMAT}")
        self._conn = conn

    def _commit(
        self,
        inserts: dict[int, tuple[int, int, bytes, float, int]],
        deletes: set[int],
        updates: dict[int, int],
        top: int,
    ) -> None:
        try:
            conn = self._connection()
            conn.execute("BEGIN IMMEDIATE")
            try:
                if inserts:
                    conn.executemany(
                        "INSERT OR REPLACE INTO commands VALUES (?, ?, ?, ?, ?)",
                        inserts.values(),
                    )
                if deletes:
                    # An answer settles a run of consecutive commands: one
                    # statement per run, not per command.
                    conn.executemany(
                        "DELETE FROM commands WHERE seq BETWEEN ? AND ?",
                        _runs(deletes),
                    )
                if updates:
                    conn.executemany(
                        "UPDATE commands SET attempts = ? WHERE seq = ?",
                        [(a, seq) for seq, a in updates.items()],
                    )
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        except (sqlite3.Error, OSError) as exc:
            self._failed(exc)
            return
        self.commits += 1
        self.inserted += len(inserts)
        self.rows += len(inserts) - len(deletes)
        self.nbytes += sum(len(row[2]) for row in inserts.values())
        inserts.clear()
        deletes.clear()
        updates.clear()
        if self.failure is not None:
            logger.warning("trackasync: the spool writes again: %s", self.path)
            self.failure = None
        self._advance(top)

    def _advance(self, top: int) -> None:
        with self._cond:
            self._durable_seq = top
            if self._thread_waiters:
                self._cond.notify_all()
        loop = self._loop
        if self._waiters and loop is not None:
            # A closed loop has nobody waiting any more.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._resolve, top)

    def _failed(self, exc: BaseException) -> None:
        full = isinstance(exc, sqlite3.OperationalError) and "full" in str(exc)
        error = SpoolError(
            f"the spool cannot write to {str(self.path)!r}: "
            + (
                "the disk is full"
                if full
                else f"{type(exc).__name__}: {exc}"
                if isinstance(exc, sqlite3.Error)
                else f"{exc.strerror}"
                if isinstance(exc, OSError)
                else type(exc).__name__
            )
            + "; the commands not yet written stay queued in memory and are "
            "written once it can; what was written before is kept"
        )
        if self.failure is None:
            logger.error("trackasync: %s", error)
        self.failure = error
        with self._cond:
            if self._thread_waiters:
                self._cond.notify_all()
        loop = self._loop
        if self._waiters and loop is not None:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._fail_waiters, error)

    # -- jobs (run by the writer thread) -------------------------------------------------

    def _open_and_adopt(self) -> None:
        conn = self._connection()
        count, size = adopt_orphans(conn, self.directory, self.name, self._adopted)
        self._adopted += count
        self._backlog += count
        self._backlog_bytes += size
        self.rows += count
        self.nbytes += size
        self.opened = True

    def _read_page(self, limit: int) -> list[LogEntry]:
        entries = read_page(self._connection(), self._cursor, limit)
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
        """Everything is committed by now: delete the file if it holds nothing,
        else keep it for the next process; let the lock go either way."""
        self._stopping = True
        self._closed = True
        conn = self._conn
        if conn is None:
            return
        (left,) = conn.execute("SELECT count(*) FROM commands").fetchone()
        conn.close()
        self._conn = None
        if not left:
            files.remove_spool(self.path)
        fd, self._lock_fd = self._lock_fd, None
        if fd is not None:
            files.release_lock(fd, files.lock_path(self.directory, self.name))
        with self._cond:
            self._durable_seq = 1 << 62
            self._cond.notify_all()

    def stop_at_exit(self) -> None:
        """At interpreter exit without a close: commit what is queued and stop
        (the file stays, unlocked, for the next process to adopt)."""
        thread = self._thread
        if (
            thread is None
            or self._closed
            or self._close_requested
            or not thread.is_alive()
        ):
            # Closing already: the interpreter joins the writer (not a daemon).
            return
        self._close_requested = True
        self._ops.append(_Job(self._close_files))
        self._urgent.set()
        self._wake.set()
        thread.join(_EXIT_WAIT)


def _runs(seqs: set[int]) -> list[tuple[int, int]]:
    """Sorted runs of consecutive numbers, as (first, last) pairs."""
    ordered = sorted(seqs)
    runs: list[tuple[int, int]] = []
    first = last = ordered[0]
    for seq in ordered[1:]:
        if seq != last + 1:
            runs.append((first, last))
            first = seq
        last = seq
    runs.append((first, last))
    return runs


def _answer(job: _Job, result: Any, error: BaseException | None) -> None:
    future, loop = job.future, job.loop
    if future is None or loop is None:
        return

    def settle() -> None:
        assert future is not None
        if future.done():
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)

    with contextlib.suppress(RuntimeError):  # the loop is closed
        loop.call_soon_threadsafe(settle)


def stop_all_at_exit() -> None:
    """Stop every running writer (``_log`` calls this at interpreter exit)."""
    for log in list(_live):
        try:
            log.stop_at_exit()
        except Exception:
            logger.exception("trackasync: stopping a spool at exit failed")
