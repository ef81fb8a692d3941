"""Reading a spool file back: what it still holds, oldest first.

A command is live until it is settled: for format 2 (``_spool_format``), a
command of a group whose number lies in one of the ``settled`` runs is not;
its attempts are the ``attempts`` table's where that has a row, else the
group's. Format 1 files hold live commands only.
"""

from __future__ import annotations

import bisect
import sqlite3
from collections.abc import Iterable, Iterator

from ._log import LogEntry
from ._spool_format import KINDS, file_format, unpack, unpack_head

_COLUMNS = "lo, hi, count, head, body"


class Settled:
    """Runs of settled sequence numbers (each within one group), to tell live
    commands apart."""

    def __init__(self, runs: Iterable[tuple[int, int]]) -> None:
        self._runs = sorted(runs)
        self._starts = [a for a, _ in self._runs]

    def within(self, lo: int, hi: int) -> list[tuple[int, int]]:
        """The runs of the group ``[lo, hi]``."""
        start = bisect.bisect_left(self._starts, lo)
        end = bisect.bisect_right(self._starts, hi)
        return self._runs[start:end]

    @staticmethod
    def settled(seq: int, runs: list[tuple[int, int]]) -> bool:
        return any(a <= seq <= b for a, b in runs)

    @staticmethod
    def live(entries: list[LogEntry], runs: list[tuple[int, int]]) -> list[LogEntry]:
        if not runs:
            return entries
        return [e for e in entries if not Settled.settled(e.seq, runs)]


def _overrides(
    conn: sqlite3.Connection, schema: str, lo: int, hi: int
) -> dict[int, int]:
    return dict(
        conn.execute(
            f"SELECT seq, attempts FROM {schema}.attempts WHERE seq BETWEEN ? AND ?",
            (lo, hi),
        ).fetchall()
    )


def _live_of_row(
    conn: sqlite3.Connection,
    schema: str,
    settled: Settled,
    row: tuple[int, int, int, bytes, bytes],
) -> list[LogEntry]:
    lo, hi, count, head, body = row
    entries = Settled.live(unpack(count, head, body), settled.within(lo, hi))
    overrides = _overrides(conn, schema, lo, hi)
    if overrides:
        entries = [
            e._replace(attempts=overrides.get(e.seq, e.attempts)) for e in entries
        ]
    return entries


def iter_live(conn: sqlite3.Connection, schema: str = "main") -> Iterator[LogEntry]:
    """Every command of a file not yet settled, oldest first, a group at a
    time (format 1: by creation time, as format 1 readers did)."""
    version = file_format(conn, schema)
    if version == 0:
        return
    if version == 1:
        for seq, kind, body, created, attempts in conn.execute(
            f"SELECT seq, kind, body, created, attempts FROM {schema}.commands "
            "ORDER BY created, seq"
        ):
            if not 0 <= kind < len(KINDS):
                raise sqlite3.DatabaseError("spool command of an unknown kind")
            yield LogEntry(seq, KINDS[kind], body, created, attempts)
        return
    settled = Settled(conn.execute(f"SELECT lo, hi FROM {schema}.settled").fetchall())
    for order in ("lo < 0 ORDER BY lo DESC", "lo > 0 ORDER BY lo"):
        for row in conn.execute(
            f"SELECT {_COLUMNS} FROM {schema}.groups WHERE {order}"
        ):
            yield from _live_of_row(conn, schema, settled, row)


def read_adopted(conn: sqlite3.Connection, cursor: int, limit: int) -> list[LogEntry]:
    """Up to ``limit`` adopted commands (negative numbers) numbered below
    ``cursor`` (the last one handed over), oldest first."""
    out: list[LogEntry] = []
    rows = conn.execute(
        f"SELECT {_COLUMNS} FROM groups WHERE lo < ? AND lo < 0 ORDER BY lo DESC",
        (cursor,),
    )
    settled = _settled_below(conn, cursor)
    for row in rows:
        for entry in _live_of_row(conn, "main", settled, row):
            if entry.seq < cursor:
                out.append(entry)
                if len(out) == limit:
                    return out
    return out


def _settled_below(conn: sqlite3.Connection, cursor: int) -> Settled:
    return Settled(
        conn.execute("SELECT lo, hi FROM settled WHERE lo < ?", (cursor,)).fetchall()
    )


def read_runs(conn: sqlite3.Connection, runs: list[tuple[int, int]]) -> list[LogEntry]:
    """The commands numbered within each run (first, last; positive), in order."""
    entries: list[LogEntry] = []
    for first, last in runs:
        settled = Settled(
            conn.execute(
                "SELECT lo, hi FROM settled WHERE lo <= ? AND hi >= ?", (last, first)
            ).fetchall()
        )
        for row in conn.execute(
            f"SELECT {_COLUMNS} FROM groups WHERE lo <= ? AND hi >= ? ORDER BY lo",
            (last, first),
        ):
            entries += [
                e
                for e in _live_of_row(conn, "main", settled, row)
                if first <= e.seq <= last
            ]
    return entries


def summary(conn: sqlite3.Connection) -> tuple[int, int, float | None]:
    """Commands not yet settled in a file, their body bytes, and the oldest's
    creation time (None when empty); bodies are not read."""
    version = file_format(conn)
    if version == 0:
        return 0, 0, None
    if version == 1:
        count, size, oldest = conn.execute(
            "SELECT count(*), coalesce(sum(length(body)), 0), min(created) "
            "FROM commands"
        ).fetchone()
        return count, size, oldest
    settled = Settled(conn.execute("SELECT lo, hi FROM settled").fetchall())
    total = size = 0
    first: float | None = None
    for lo, hi, count, nbytes, oldest in conn.execute(
        "SELECT lo, hi, count, nbytes, oldest FROM groups"
    ).fetchall():
        runs = settled.within(lo, hi)
        if runs:
            # Partly settled: count what is left from the head alone.
            (head,) = conn.execute(
                "SELECT head FROM groups WHERE lo = ?", (lo,)
            ).fetchone()
            seqs, created, _, _, lengths = unpack_head(count, head)
            left = [i for i in range(count) if not Settled.settled(seqs[i], runs)]
            count = len(left)
            nbytes = sum(lengths[i] for i in left)
            oldest = min((created[i] for i in left), default=oldest)
        if count:
            total += count
            size += nbytes
            first = oldest if first is None else min(first, oldest)
    return total, size, first
