"""Taking over the spool files of processes that are gone.

Adoption takes the orphan's lock (``_spool_files``), copies the commands it
still holds into the adopter's file in one transaction, oldest first and byte
for byte, then deletes the orphan and lets the lock go. The copies are
numbered below everything the adopter took before (-1 the oldest), as groups
of the adopter's own format; the orphan may be of either format
(``_spool_format``). A crash between the copy's commit and the delete leaves
both copies: the commands are then sent twice, which the API's deduplication
absorbs (at least once, never lost).
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
from pathlib import Path

from . import _spool_files as files
from ._exceptions import ConfigError
from ._log import LogEntry
from ._spool_format import GROUP_COMMANDS, write_groups
from ._spool_read import iter_live

logger = logging.getLogger("trackasync")

#: A group written by adoption: (lo, hi, count).
Group = tuple[int, int, int]


def adopt_orphans(
    conn: sqlite3.Connection, directory: Path, own: str, adopted: int
) -> tuple[int, int, list[Group]]:
    """Adopt every file of ``directory`` but ``own`` whose owner is gone,
    oldest written first; returns the commands and body bytes adopted, and
    the groups written. ``adopted`` is how many this file adopted before (the
    numbering goes on below them)."""
    for stale in files.stale_locks(directory):
        fd = files.take_lock(stale, create=False)
        if fd is not None:
            files.release_lock(fd, stale)
    total = size = 0
    groups: list[Group] = []
    for orphan in files.spool_files(directory, exclude=own):
        count, nbytes = _adopt(conn, directory, orphan, adopted + total, groups)
        total += count
        size += nbytes
    return total, size, groups


def _adopt(
    conn: sqlite3.Connection,
    directory: Path,
    orphan: files.SpoolFile,
    base: int,
    groups: list[Group],
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
            count, size, written = _copy(conn, orphan.path, base)
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
        groups += written
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


def _copy(
    conn: sqlite3.Connection, path: Path, base: int
) -> tuple[int, int, list[Group]]:
    """Copy an orphan's live commands in one transaction, oldest first,
    numbered below the ``base`` commands adopted so far; a group at a time, so
    memory holds one group, whatever the orphan's size."""
    conn.execute("ATTACH DATABASE ? AS orphan", (f"file:{path}?mode=rw",))
    count = size = 0
    groups: list[Group] = []
    try:
        conn.execute("BEGIN IMMEDIATE")
        batch: list[LogEntry] = []
        for entry in iter_live(conn, "orphan"):
            count += 1
            size += len(entry.body)
            batch.append(entry._replace(seq=-(base + count)))
            if len(batch) == GROUP_COMMANDS:
                groups += [r[:3] for r in write_groups(conn, batch)]
                batch = []
        if batch:
            groups += [r[:3] for r in write_groups(conn, batch)]
        conn.execute("COMMIT")
    finally:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        conn.execute("DETACH DATABASE orphan")
    return count, size, groups
