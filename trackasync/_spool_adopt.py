"""A spool file's format, and taking over the files of processes that are gone.

Each spool file is one SQLite table of commands keyed by sequence number. The
owner's own commands carry the command table's numbers (1, 2, 3...); commands
adopted from other files get negative numbers (-1 the oldest), so that they
never collide and read back oldest first (``ORDER BY seq DESC``).

Adoption takes the orphan's lock (``_spool_files``), copies its rows into the
adopter's file in one transaction, oldest first and byte for byte, then deletes
the orphan and lets the lock go. A crash between the copy's commit and the
delete leaves both copies: the commands are then sent twice, which the API's
deduplication absorbs (at least once, never lost).
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
from pathlib import Path

from . import _spool_files as files
from ._delivery import Kind
from ._exceptions import ConfigError
from ._log import LogEntry

logger = logging.getLogger("trackasync")

KIND_CODE: dict[str, int] = {"customers/events": 0, "customers": 1}
KINDS: tuple[Kind, ...] = ("customers/events", "customers")

SCHEMA = """
CREATE TABLE IF NOT EXISTS commands (
    seq INTEGER PRIMARY KEY,
    kind INTEGER NOT NULL,
    body BLOB NOT NULL,
    created REAL NOT NULL,
    attempts INTEGER NOT NULL
)
"""
#: The file format's version, in SQLite's ``user_version``.
FORMAT = 1


def connect(path: Path, *, create: bool = False) -> sqlite3.Connection:
    """A connection to a spool file in WAL mode with ``synchronous=FULL``
    (never creating the file unless ``create``)."""
    mode = "rwc" if create else "rw"
    conn = sqlite3.connect(
        f"file:{path}?mode={mode}",
        uri=True,
        isolation_level=None,
        check_same_thread=False,
        timeout=10.0,
    )
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    return conn


def read_page(conn: sqlite3.Connection, cursor: int, limit: int) -> list[LogEntry]:
    """Up to ``limit`` adopted commands older than ``cursor``, oldest first."""
    rows = conn.execute(
        "SELECT seq, kind, body, created, attempts FROM commands "
        "WHERE seq < ? ORDER BY seq DESC LIMIT ?",
        (cursor, limit),
    ).fetchall()
    return [
        LogEntry(seq, KINDS[kind], body, created, attempts)
        for seq, kind, body, created, attempts in rows
    ]


def read_runs(conn: sqlite3.Connection, runs: list[tuple[int, int]]) -> list[LogEntry]:
    """The commands numbered within each run (first, last), in order."""
    entries: list[LogEntry] = []
    for first, last in runs:
        rows = conn.execute(
            "SELECT seq, kind, body, created, attempts FROM commands "
            "WHERE seq BETWEEN ? AND ? ORDER BY seq",
            (first, last),
        ).fetchall()
        entries += [
            LogEntry(seq, KINDS[kind], body, created, attempts)
            for seq, kind, body, created, attempts in rows
        ]
    return entries


def adopt_orphans(
    conn: sqlite3.Connection, directory: Path, own: str, adopted: int
) -> tuple[int, int]:
    """Adopt every file of ``directory`` but ``own`` whose owner is gone,
    oldest written first; returns the commands and body bytes adopted.
    ``adopted`` is how many this file adopted before (the numbering goes on
    below them)."""
    for stale in files.stale_locks(directory):
        fd = files.take_lock(stale, create=False)
        if fd is not None:
            files.release_lock(fd, stale)
    total = size = 0
    for orphan in files.spool_files(directory, exclude=own):
        count, nbytes = _adopt(conn, directory, orphan, adopted + total)
        total += count
        size += nbytes
    return total, size


def _adopt(
    conn: sqlite3.Connection, directory: Path, orphan: files.SpoolFile, base: int
) -> tuple[int, int]:
    lock = files.lock_path(directory, orphan.name)
    fd = files.take_lock(lock, create=True)
    if fd is None:
        return 0, 0  # its owner lives, or another process adopts it now
    try:
        if not orphan.path.exists():
            return 0, 0  # adopted and deleted by another process meanwhile
        try:
            files.check_regular(orphan.path)
        except ConfigError as exc:
            logger.error("trackasync: %s", exc)
            return 0, 0
        try:
            count, size = _copy(conn, orphan.path, base)
        except sqlite3.DatabaseError as exc:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            with contextlib.suppress(sqlite3.Error):
                conn.execute("DETACH DATABASE orphan")
            target = files.move_aside(orphan.path)
            logger.error(
                "trackasync: the spool file %s is unreadable (%s: %s); moved "
                "aside to %s, untouched: its commands were NOT sent",
                orphan.path,
                type(exc).__name__,
                exc,
                target,
            )
            return 0, 0
        files.remove_spool(orphan.path)
        if count:
            logger.info(
                "trackasync: adopted %d command(s) (%d bytes) from %s",
                count,
                size,
                orphan.path.name,
            )
        return count, size
    finally:
        files.release_lock(fd, lock)


def _copy(conn: sqlite3.Connection, path: Path, base: int) -> tuple[int, int]:
    """Copy an orphan's rows in one transaction, oldest first, numbered below
    the ``base`` rows adopted so far."""
    conn.execute("ATTACH DATABASE ? AS orphan", (f"file:{path}?mode=rw",))
    try:
        conn.execute("BEGIN IMMEDIATE")
        (has_table,) = conn.execute(
            "SELECT count(*) FROM orphan.sqlite_master WHERE name = 'commands'"
        ).fetchone()
        count = size = 0
        if has_table:
            conn.execute(
                "INSERT INTO commands SELECT "
                "-(? + row_number() OVER (ORDER BY created, seq)), "
                "kind, body, created, attempts FROM orphan.commands",
                (base,),
            )
            count, size = conn.execute(
                "SELECT count(*), coalesce(sum(length(body)), 0) "
                "FROM commands WHERE seq < ?",
                (-base,),
            ).fetchone()
        conn.execute("COMMIT")
    finally:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        conn.execute("DETACH DATABASE orphan")
    return count, size
