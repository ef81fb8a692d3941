"""The spool's writer thread: group commits of what the event loop queued.

The loop never touches the file. It appends to two deques (safe between
threads without a lock) and wakes the writer once per burst: ``appended``
holds the new commands (``Delivery`` objects, in order of their numbers), and
``ops`` the rest in order: ``Settle`` lists of sequence numbers that reached an
outcome, ``Release`` lists of attempts to keep at a close, and ``Job``
functions to run here (open, read a page back, close) once everything queued
before them is committed.

The writer turns everything queued into one transaction (a group commit):
the new commands as one or a few rows of the ``groups`` table
(``_spool_format``), the settled ones as runs in ``settled``, and the groups
left without a live command deleted. A command settled before it was written
is never written at all. Which group holds which sequence numbers, and how
many of its commands are still live, is kept in memory (``GroupIndex``), so a
settle costs no read.

When a commit fails (a full disk), nothing is dropped: the transaction's
contents stay in memory, the failure is reported (``on_failure``), and the
writer tries again every ``_RETRY_FAILED`` seconds.
"""

from __future__ import annotations

import collections
import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from itertools import repeat, starmap
from pathlib import Path
from typing import Any

from . import _spool_files as files
from ._delivery import Delivery
from ._exceptions import SpoolError
from ._log import LogEntry
from ._spool_adopt import Group
from ._spool_format import connect, create_schema, write_groups
from ._spool_groups import GroupIndex, record, runs_of
from ._spool_read import read_runs

logger = logging.getLogger("trackasync")

# While the disk refuses writes, the writer tries again this often.
_RETRY_FAILED = 1.0
# How long the writer sleeps when there is nothing to do (it is woken sooner).
_IDLE = 5.0


class Job:
    """Work for the writer thread; ``done(result, error)`` gets its answer."""

    __slots__ = ("done", "fn")

    def __init__(
        self,
        fn: Callable[[], Any],
        done: Callable[[Any, BaseException | None], None] | None = None,
    ) -> None:
        self.fn = fn
        self.done = done


class Settle(list[int]):
    """Sequence numbers that reached an outcome (an operation in the queue)."""


class Release(list[tuple[int, int]]):
    """(seq, attempts) of commands kept at a close."""


class SpoolWriter:
    """The writer thread of one spool file and everything it owns: the
    connection, the lock, and the transaction being gathered."""

    def __init__(self, directory: Path, name: str, *, durable: bool, interval: float):
        self.directory = directory
        self.name = name
        self.path = files.spool_path(directory, name)
        self.durable = durable
        self.interval = interval
        # New commands, in order; and the other operations (settles,
        # releases and jobs), in order.
        self.appended: collections.deque[Delivery] = collections.deque()
        self.ops: collections.deque[Any] = collections.deque()
        self.wake = threading.Event()
        self.urgent = threading.Event()
        # True while a wake-up is pending: the loop then does not set ``wake``.
        self.awake = False
        self.thread: threading.Thread | None = None
        self.conn: sqlite3.Connection | None = None
        self.lock_fd: int | None = None
        #: The highest sequence number whose command is committed (or settled,
        #: so no longer needing to be): read by the loop, written here.
        self.durable_seq = 0
        #: Why the last commit failed, until one succeeds.
        self.failure: SpoolError | None = None
        self.cond = threading.Condition()
        self.thread_waiters = 0
        #: Set by the closing job: the thread ends after it.
        self.stopping = False
        #: Called (in this thread) after a commit with the new ``durable_seq``,
        #: and when a commit fails.
        self.on_advance: Callable[[int], None] = _ignore
        self.on_failure: Callable[[SpoolError], None] = _ignore
        self.index = GroupIndex()
        # The transaction being gathered: new commands by number (in order),
        # settled numbers of commands already written, attempts to keep.
        self._pending: list[Delivery] = []
        self._settled: list[int] = []
        self._updates: dict[int, int] = {}
        # The highest number appended, and the highest committed (every
        # command up to it is written, or settled before it was).
        self._top = 0
        self._committed = 0
        #: Transactions committed, commands written, and groups written (for
        #: benchmarks).
        self.commits = 0
        self.inserted = 0
        self.groups = 0

    def start(self) -> None:
        thread = threading.Thread(
            target=self._run, name="trackasync-spool", daemon=False
        )
        self.thread = thread
        thread.start()

    def submit(self, job: Job) -> None:
        """Queue a job, to run once everything queued before it is committed."""
        self.ops.append(job)
        self.urgent.set()
        self.wake.set()

    def unwritten(self) -> int:
        """Commands queued or accepted here and not committed yet."""
        return len(self._pending) + len(self.appended)

    # -- the thread ------------------------------------------------------------

    def _run(self) -> None:
        last_commit = time.monotonic()
        try:
            while True:
                timeout = _RETRY_FAILED if self.failure is not None else _IDLE
                self.wake.wait(timeout)
                # Durable: the loop wakes this thread once a burst of callers
                # has appended (``SqliteLog._wake_soon``): commit at once.
                if not self.durable and not self.stopping:
                    # Interval: let a transaction's worth gather, unless a job
                    # (recover, close) is waiting.
                    left = self.interval - (time.monotonic() - last_commit)
                    if left > 0:
                        self.urgent.wait(left)
                self.wake.clear()
                self.urgent.clear()
                self.awake = False
                self._drain()
                if self._write():
                    last_commit = time.monotonic()
                if self._run_jobs():
                    return
        except BaseException:
            logger.exception("trackasync: the spool's writer thread failed")
            self.failure = SpoolError("the spool's writer thread failed")
            raise

    def _drain(self) -> None:
        """Move what the loop queued up to the first job into the transaction."""
        ops = self.ops
        taken: list[Settle | Release] = []
        while ops and not isinstance(ops[0], Job):
            taken.append(ops.popleft())
        # Taken after the settles: every command they name was appended
        # before them, so it is either written already or among these.
        appended = self.appended
        # As many as are there now (the loop may be appending meanwhile),
        # popped in a C loop: an interval's worth can be tens of thousands.
        new = list(starmap(appended.popleft, repeat((), len(appended))))
        if new:
            self._pending += new
            self._top = new[-1].seq
        if not taken:
            return
        # Numbers above the last commit's top are not written yet (commands
        # are appended in order of their numbers).
        written = self._committed
        cancelled: set[int] = set()
        settled = self._settled
        updates = self._updates
        for op in taken:
            if isinstance(op, Settle):
                for seq in op:
                    if seq > written:
                        cancelled.add(seq)
                    else:
                        settled.append(seq)
                if updates:
                    for seq in op:
                        updates.pop(seq, None)
            else:
                for seq, attempts in op:
                    # Attempts only grow: a command never tried keeps what
                    # its group says.
                    if attempts:
                        updates[seq] = attempts
        if cancelled:
            # Settled before it was written: never write it.
            self._pending = [d for d in self._pending if d.seq not in cancelled]

    def _run_jobs(self) -> bool:
        """Run the jobs at the head of the queue (what came before each is
        committed first); True when the log closed."""
        ops = self.ops
        while ops and isinstance(ops[0], Job):
            job: Job = ops.popleft()
            try:
                result = job.fn()
            except BaseException as exc:
                if job.done is not None:
                    job.done(None, exc)
            else:
                if job.done is not None:
                    job.done(result, None)
            if self.stopping:
                return True
            self._drain()
            self._write()
        return False

    def _write(self) -> bool:
        """Commit what the transaction holds, if anything (True if it did);
        either way, the commands appended so far need nothing more."""
        top = self._top
        if self._pending or self._settled or self._updates:
            return self._commit(top)
        if top > self.durable_seq:
            # All of them settled before they were written.
            self._committed = top
            self._advance(top)
        return False

    def connection(self) -> sqlite3.Connection:
        if self.conn is None:
            self._create_own()
        assert self.conn is not None
        return self.conn

    def _create_own(self) -> None:
        """Take this process's lock, then create its file (0600)."""
        lock = files.lock_path(self.directory, self.name)
        fd = files.take_lock(lock, create=True)
        if fd is None:  # pragma: no cover - the name is this process's own
            raise SpoolError(f"spool: cannot lock {str(lock)!r}")
        self.lock_fd = fd
        files.create_private(self.path)
        conn = connect(self.path, create=True)
        try:
            create_schema(conn)
        except BaseException:
            conn.close()  # the next commit tries again, on a new connection
            raise
        self.conn = conn

    def _commit(self, top: int) -> bool:
        pending = self._pending
        settled = self._settled
        plan = self.index.plan(runs_of(settled)) if settled else None
        updates = self._updates
        try:
            conn = self.connection()
            conn.execute("BEGIN IMMEDIATE")
            try:
                rows = write_groups(conn, pending) if pending else []
                if updates:
                    conn.executemany(
                        "INSERT OR REPLACE INTO attempts VALUES (?, ?)",
                        updates.items(),
                    )
                if plan is not None:
                    record(conn, plan)
                conn.execute("COMMIT")
            except BaseException:
                # A failed COMMIT may have rolled back already.
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        except (sqlite3.Error, OSError) as exc:
            self._failed(exc)
            return False
        index = self.index
        for lo, hi, count, *_ in rows:
            index.add(lo, hi, count)
        if plan is not None:
            index.apply(plan)
        self.commits += 1
        self.inserted += len(pending)
        self.groups += len(rows)
        self._pending = []
        self._committed = top
        settled.clear()
        updates.clear()
        if self.failure is not None:
            logger.warning("trackasync: the spool writes again: %s", self.path)
            self.failure = None
        self._advance(top)
        return True

    def _advance(self, top: int) -> None:
        with self.cond:
            self.durable_seq = top
            if self.thread_waiters:
                self.cond.notify_all()
        self.on_advance(top)

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
        with self.cond:
            if self.thread_waiters:
                self.cond.notify_all()
        self.on_failure(error)

    # -- reading (jobs) ----------------------------------------------------------

    def adopted(self, groups: list[Group]) -> None:
        for lo, hi, count in groups:
            self.index.add(lo, hi, count)

    def read_runs(self, runs: list[tuple[int, int]]) -> list[LogEntry]:
        """Commands this run kept on disk only, numbered within ``runs``:
        from the file, or from memory while the disk refuses them."""
        entries = read_runs(self.connection(), runs)
        if self._pending:
            found = {e.seq for e in entries}
            entries += [
                LogEntry(d.seq, d.kind, d.body, d.created, d.attempts)
                for d in self._pending
                if d.seq not in found and any(a <= d.seq <= b for a, b in runs)
            ]
            entries.sort(key=lambda e: e.seq)
        return entries

    def close_files(self) -> None:
        """Everything is committed by now, if the disk let it: delete the file
        if it holds nothing, else keep it for the next process; let the lock
        go either way."""
        self.stopping = True
        conn = self.conn
        lost = self.unwritten()
        if lost:
            logger.error(
                "trackasync: %d command(s) accepted by this process could not "
                "be written to the spool %s (%s) and are LOST: neither sent "
                "nor kept",
                lost,
                self.path,
                self.failure,
            )
            self._pending = []
            self.appended.clear()
        if conn is not None:
            left = self.index.live()
            conn.close()
            self.conn = None
            if not left:
                files.remove_spool(self.path)
            fd, self.lock_fd = self.lock_fd, None
            if fd is not None:
                files.release_lock(fd, files.lock_path(self.directory, self.name))
        with self.cond:
            self.durable_seq = 1 << 62
            self.cond.notify_all()


def _ignore(_: Any) -> None:
    pass
