"""The commands a spool keeps on disk only, because memory was full.

They are numbered by the command table like any other, consecutively while
memory stays full; so they are kept as runs ``[first, last]`` of numbers,
oldest first, not one entry per command: an outage that sends millions of
commands to disk costs a few runs of memory.
"""

from __future__ import annotations

import collections


class Spilled:
    """Runs of numbers of commands on disk only, their count and bytes."""

    def __init__(self) -> None:
        self._runs: collections.deque[list[int]] = collections.deque()
        #: Commands on disk only, not handed back yet, and their body bytes.
        self.count = 0
        self.nbytes = 0

    def add(self, seq: int, size: int) -> None:
        runs = self._runs
        if runs and runs[-1][1] == seq - 1:
            runs[-1][1] = seq
        else:
            runs.append([seq, seq])
        self.count += 1
        self.nbytes += size

    def take(self, limit: int) -> list[tuple[int, int]]:
        """The oldest runs, up to ``limit`` commands in all, no longer counted
        here (``given_back`` takes their bytes off once they are read)."""
        out: list[tuple[int, int]] = []
        taken = 0
        runs = self._runs
        while runs and taken < limit:
            first, last = runs[0]
            n = min(last - first + 1, limit - taken)
            out.append((first, first + n - 1))
            taken += n
            if first + n > last:
                runs.popleft()
            else:
                runs[0][0] = first + n
        self.count -= taken
        return out

    def given_back(self, nbytes: int) -> None:
        self.nbytes -= nbytes
