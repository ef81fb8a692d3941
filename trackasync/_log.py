"""Where commands persist: a narrow, id-keyed log under the command table.

The ``CommandTable`` (``_table.py``) is the one owner of every command in a
process: it applies the overflow policy, hands commands to the batcher and
settles each exactly once. It persists through a ``CommandLog``, which knows
nothing of policies, handles or callers; it only keeps entries keyed by their
sequence number until they are settled:

- ``append``: new commands (their seq, kind, original bytes, wall-clock creation
  time and attempts). Never blocks the event loop; a durable log makes them
  durable in the background with group commits, and ``synced`` tells when.
- ``settle``: commands that reached a final outcome, once per answer.
- ``release``: on a close that keeps, the unsent commands go back to queued,
  with their attempts, for the next run.
- ``recover``: commands an earlier run left, oldest first, a page at a time.

``MemoryLog`` is the first implementation: it keeps nothing (the table's own
memory is the only copy), so the pipeline skips it entirely on its hot path.
A durable implementation (a spool on disk) is the second.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Awaitable, Sequence
from typing import NamedTuple, Protocol

from ._delivery import Delivery, Kind


class LogEntry(NamedTuple):
    """A command as a log keeps it."""

    seq: int
    kind: Kind
    body: bytes
    #: UNIX seconds at the call that created it.
    created: float
    attempts: int


class CommandLog(Protocol):
    """What the command table needs from the place its commands persist."""

    #: False for a log that keeps nothing (memory only): the table then never
    #: calls ``append``, ``settle`` or ``release``.
    persistent: bool

    async def open(self) -> None:
        """Start, in the process and loop that will use it, and take what
        earlier runs left (then offered by ``recover``). Appends made before it
        completes are kept all the same. Called again from time to time, to
        take what runs that ended since left."""
        ...

    def append(self, commands: Sequence[Delivery]) -> None:
        """Keep these new commands; never blocks."""
        ...

    def synced(self, seq: int) -> Awaitable[None] | None:
        """An awaitable that completes once every command up to ``seq`` is
        durable, or None if it already is (or the log is not durable)."""
        ...

    def settle(self, seqs: Sequence[int]) -> None:
        """These commands reached a final outcome: forget them; never blocks."""
        ...

    def release(self, commands: Sequence[Delivery]) -> None:
        """A close that keeps: these commands stay for the next run, queued, with
        their attempts so far."""
        ...

    async def recover(self, limit: int) -> list[LogEntry]:
        """Up to ``limit`` commands left by earlier runs and not yet recovered,
        oldest first; an empty list when there are none left.

        Their ``seq`` is the log's own and must not collide with the table's,
        which numbers new commands 1, 2, 3... in each process: a log gives
        recovered entries negative numbers (-1, -2...), and ``settle`` and
        ``release`` receive them back as they were given.
        """
        ...

    def backlog(self) -> int:
        """Commands left by earlier runs and not yet recovered."""
        ...

    async def aclose(self) -> None:
        """Make everything durable and release the log's resources."""
        ...

    def after_fork_in_child(self) -> None:
        """In a forked child: never touch the parent's files or connections."""
        ...


class MemoryLog:
    """The log of a client without a spool: memory is the only copy."""

    persistent = False

    async def open(self) -> None:
        pass

    def append(self, commands: Sequence[Delivery]) -> None:
        pass

    def synced(self, seq: int) -> Awaitable[None] | None:
        return None

    def settle(self, seqs: Sequence[int]) -> None:
        pass

    def release(self, commands: Sequence[Delivery]) -> None:
        pass

    async def recover(self, limit: int) -> list[LogEntry]:
        return []

    def backlog(self) -> int:
        return 0

    async def aclose(self) -> None:
        pass

    def after_fork_in_child(self) -> None:
        pass


def _stop_spools_at_exit() -> None:
    """At interpreter exit: stop the spools' writer threads (committing what
    they hold), after the clients' own exit hooks closed what they could."""
    spool = sys.modules.get("trackasync._spool")
    if spool is not None:
        spool.stop_all_at_exit()


# Registered here, by a module every client imports before ``_sync``: exit
# hooks run in reverse order, so this runs after SyncClient's flush at exit,
# which still needs the spool to record the outcomes it gets.
_register_exit = getattr(threading, "_register_atexit", None)
if _register_exit is not None:
    _register_exit(_stop_spools_at_exit)
else:  # pragma: no cover - every supported CPython has it
    import atexit

    atexit.register(_stop_spools_at_exit)
