"""Which group of a spool file holds which commands, and how many are live.

The writer keeps this in memory for its own file (the groups it wrote and
the ones it adopted), so that settling commands costs no read: a settle is
recorded as runs of numbers, each within one group, and a group whose
commands are all settled is deleted with its runs and attempts.

A command is settled once (the command table's promise), and a number in a
group's range that is not in the group (a command settled before it was
written) is never settled again; so the commands settled in a group are the
numbers of its range covered by runs.
"""

from __future__ import annotations

import bisect
import sqlite3
from collections.abc import Sequence
from typing import NamedTuple


class Plan(NamedTuple):
    """What a transaction's settled runs do to the groups (applied to the
    ``GroupIndex`` once it commits)."""

    #: Runs to record, each within one group that stays.
    records: list[tuple[int, int]]
    #: Groups left without a live command: (lo, hi), to delete.
    emptied: list[tuple[int, int]]
    #: Commands settled per group (by its ``lo``).
    taken: dict[int, int]


class GroupIndex:
    """The groups of the file: their ranges and live commands."""

    def __init__(self) -> None:
        self._los: list[int] = []
        # lo -> [hi, live commands]
        self._groups: dict[int, list[int]] = {}

    def add(self, lo: int, hi: int, count: int) -> None:
        los = self._los
        if not los or lo > los[-1]:
            los.append(lo)
        else:
            bisect.insort(los, lo)
        self._groups[lo] = [hi, count]

    def live(self) -> int:
        return sum(live for _, live in self._groups.values())

    def plan(self, runs: Sequence[tuple[int, int]]) -> Plan:
        los, groups = self._los, self._groups
        records: list[tuple[int, int, int]] = []
        taken: dict[int, int] = {}
        for a, b in runs:
            i = max(0, bisect.bisect_right(los, a) - 1)
            while i < len(los) and los[i] <= b:
                lo = los[i]
                hi = groups[lo][0]
                x, y = max(a, lo), min(b, hi)
                if x <= y:
                    taken[lo] = taken.get(lo, 0) + y - x + 1
                    records.append((lo, x, y))
                i += 1
        emptied = [(lo, groups[lo][0]) for lo, n in taken.items() if groups[lo][1] <= n]
        gone = {lo for lo, _ in emptied}
        return Plan([(x, y) for lo, x, y in records if lo not in gone], emptied, taken)

    def apply(self, plan: Plan) -> None:
        groups = self._groups
        for lo, n in plan.taken.items():
            groups[lo][1] -= n
        los = self._los
        for lo, _ in plan.emptied:
            del groups[lo]
            i = bisect.bisect_left(los, lo)
            del los[i]


def record(conn: sqlite3.Connection, plan: Plan) -> None:
    """Write what ``plan`` does, in the transaction under way."""
    if plan.records:
        conn.executemany("INSERT OR REPLACE INTO settled VALUES (?, ?)", plan.records)
    for lo, hi in plan.emptied:
        conn.execute("DELETE FROM groups WHERE lo = ?", (lo,))
        conn.execute("DELETE FROM settled WHERE lo BETWEEN ? AND ?", (lo, hi))
        conn.execute("DELETE FROM attempts WHERE seq BETWEEN ? AND ?", (lo, hi))


def runs_of(seqs: list[int]) -> list[tuple[int, int]]:
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
