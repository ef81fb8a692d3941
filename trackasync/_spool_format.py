"""A spool file's format: one row per group commit, and writing it.

Format 2 (``PRAGMA user_version = 2``) stores the commands of one commit
together, so that a commit costs one row, not one per command:

- ``groups``: one row per group of commands written together, keyed by the
  lowest sequence number in it (``lo``; ``hi`` the highest). ``head`` is a
  MessagePack array of five columns, one item per command in age order:
  sequence numbers, creation times (UNIX seconds), attempts (nil when all are
  0), kinds (0 events, 1 customers; nil when all are events) and body
  lengths; ``body`` is the bodies, byte for byte, one after the other.
  ``count``, ``nbytes`` and ``oldest`` summarise it for listings.
- ``settled``: runs ``[lo, hi]`` of sequence numbers that reached an outcome,
  each within one group. A group whose commands are all settled is deleted
  with its runs, so the table stays short.
- ``attempts``: the attempts of commands kept at a close, where they differ
  from the ``head``, which is never rewritten.
- ``commands``: a view that no SQLite can evaluate. A version of the library
  that knows only format 1 reads ``commands``; it then fails and moves the
  file aside as unreadable instead of finding nothing and deleting it.

Format 1 (``user_version`` 0 or 1) has one row per command in ``commands``;
files of that format are still read, to adopt what they hold.

Sequence numbers: the owner's own commands carry the command table's numbers
(1, 2, 3...); commands adopted from other files get negative numbers (-1 the
oldest), so that they never collide. Age order is therefore: negative numbers
descending, then positive numbers ascending. Reading a file back is
``_spool_read``'s job.
"""

from __future__ import annotations

import bisect
import sqlite3
from collections.abc import Sequence
from itertools import accumulate
from pathlib import Path
from typing import Protocol

import msgspec

from ._delivery import Kind
from ._log import LogEntry

KIND_CODE: dict[str, int] = {"customers/events": 0, "customers": 1}
KINDS: tuple[Kind, ...] = ("customers/events", "customers")
EVENTS: Kind = "customers/events"

#: The file format's version, in SQLite's ``user_version``.
FORMAT = 2
#: Format 1's one table, one row per command (read when adopting old files).
SCHEMA_V1 = """
CREATE TABLE IF NOT EXISTS commands (
    seq INTEGER PRIMARY KEY,
    kind INTEGER NOT NULL,
    body BLOB NOT NULL,
    created REAL NOT NULL,
    attempts INTEGER NOT NULL
)
"""
SCHEMA = (
    """CREATE TABLE IF NOT EXISTS groups (
        lo INTEGER PRIMARY KEY,
        hi INTEGER NOT NULL,
        count INTEGER NOT NULL,
        nbytes INTEGER NOT NULL,
        oldest REAL NOT NULL,
        head BLOB NOT NULL,
        body BLOB NOT NULL
    )""",
    "CREATE TABLE IF NOT EXISTS settled (lo INTEGER PRIMARY KEY, hi INTEGER NOT NULL)",
    "CREATE TABLE IF NOT EXISTS attempts "
    "(seq INTEGER PRIMARY KEY, attempts INTEGER NOT NULL)",
    # See the module's docstring: format 1 readers must fail on this file.
    "CREATE VIEW IF NOT EXISTS commands (seq, kind, body, created, attempts) AS "
    "SELECT trackasync_spool_format_2(lo), 0, x'', 0.0, 0 FROM groups",
)
#: A group holds at most this many commands, or this many body bytes (more
#: than one commit's worth becomes several groups): reading a page back never
#: loads more than a group or two.
GROUP_COMMANDS = 1000
GROUP_BYTES = 1 << 20

#: A group's ``head``: its commands' columns (see the module's docstring).
Head = tuple[list[int], list[float], list[int] | None, list[int] | None, list[int]]
_ENCODER = msgspec.msgpack.Encoder()
_DECODER = msgspec.msgpack.Decoder(Head)
#: SQLite's page size for new files: larger pages than the default 4 KiB cost
#: several times less CPU per byte of body written (fewer overflow pages).
PAGE_SIZE = 16384

_INSERT = "INSERT INTO groups VALUES (?, ?, ?, ?, ?, ?, ?)"


class Command(Protocol):
    """What ``pack`` reads: a ``Delivery`` or a ``LogEntry``."""

    @property
    def seq(self) -> int: ...
    @property
    def kind(self) -> Kind: ...
    @property
    def body(self) -> bytes: ...
    @property
    def created(self) -> float: ...
    @property
    def attempts(self) -> int: ...


GroupRow = tuple[int, int, int, int, float, bytes, bytes]


def pack(commands: Sequence[Command]) -> GroupRow:
    """The ``groups`` row of ``commands`` (in age order), as one group."""
    seqs, created, attempts, kinds, bodies = _columns(commands)
    return _row(seqs, created, attempts, kinds, bodies, list(map(len, bodies)))


def rows(commands: Sequence[Command]) -> list[GroupRow]:
    """The ``groups`` rows of ``commands`` (in age order): cut into groups of
    at most ``GROUP_COMMANDS`` commands and (beyond a group's first command)
    ``GROUP_BYTES`` body bytes.

    A commit under "interval" can hold an interval's worth of commands (tens
    of thousands): their columns are taken once, a list comprehension each,
    and cut by slicing, so nothing is called per command."""
    n = len(commands)
    if not n:
        return []
    seqs, created, attempts, kinds, bodies = _columns(commands)
    lengths = list(map(len, bodies))
    # ends[i]: body bytes of the first i commands.
    ends = list(accumulate(lengths, initial=0))
    most, limit = GROUP_COMMANDS, GROUP_BYTES
    out: list[GroupRow] = []
    start = 0
    while start < n:
        end = min(start + most, n)
        if ends[end] - ends[start] > limit:
            # The most commands that fit in ``limit`` bytes, at least one.
            fit = bisect.bisect_right(ends, ends[start] + limit, start, end + 1) - 1
            end = max(start + 1, fit)
        out.append(
            _row(
                seqs[start:end],
                created[start:end],
                attempts[start:end],
                kinds[start:end],
                bodies[start:end],
                lengths[start:end],
            )
        )
        start = end
    return out


def _columns(
    commands: Sequence[Command],
) -> tuple[list[int], list[float], list[int], list[Kind], list[bytes]]:
    """The commands' columns, in the order of a group's head (``bodies``
    for the lengths). One list comprehension per column: cheaper than one
    pass building a tuple per command, then transposing them."""
    return (
        [c.seq for c in commands],
        [c.created for c in commands],
        [c.attempts for c in commands],
        [c.kind for c in commands],
        [c.body for c in commands],
    )


def _row(
    seqs: Sequence[int],
    created: Sequence[float],
    attempts: Sequence[int],
    kinds: Sequence[Kind],
    bodies: Sequence[bytes],
    lengths: Sequence[int],
) -> GroupRow:
    n = len(seqs)
    first, last = seqs[0], seqs[-1]
    head = _ENCODER.encode(
        (
            seqs,
            created,
            # Usually all 0 and all events: then not stored at all.
            attempts if any(attempts) else None,
            None if kinds.count(EVENTS) == n else [KIND_CODE[k] for k in kinds],
            lengths,
        )
    )
    body = b"".join(bodies)
    return (min(first, last), max(first, last), n, len(body), created[0], head, body)


def write_groups(
    conn: sqlite3.Connection, commands: Sequence[Command]
) -> list[GroupRow]:
    """Insert ``commands`` (in age order) as groups; returns their rows."""
    out = rows(commands)
    conn.executemany(_INSERT, out)
    return out


def unpack_head(count: int, head: bytes) -> Head:
    """A group's columns: sequence numbers, creation times, attempts (None:
    all 0), kinds (None: all events) and body lengths."""
    try:
        columns = _DECODER.decode(head)
    except msgspec.DecodeError as exc:
        raise sqlite3.DatabaseError(f"spool group: unreadable head ({exc})") from None
    seqs, created, attempts, kinds, lengths = columns
    if not (
        len(seqs) == len(created) == len(lengths) == count > 0
        and (attempts is None or len(attempts) == count)
        and (kinds is None or len(kinds) == count)
        and (kinds is None or all(0 <= k < len(KINDS) for k in kinds))
    ):
        raise sqlite3.DatabaseError("spool group: head and count disagree")
    return columns


def unpack(count: int, head: bytes, body: bytes) -> list[LogEntry]:
    """The commands of one ``groups`` row, in age order."""
    seqs, created, attempts, kinds, lengths = unpack_head(count, head)
    if sum(lengths) != len(body):
        raise sqlite3.DatabaseError("spool group: head and body disagree")
    entries: list[LogEntry] = []
    at = 0
    for i in range(count):
        end = at + lengths[i]
        entries.append(
            LogEntry(
                seqs[i],
                EVENTS if kinds is None else KINDS[kinds[i]],
                body[at:end],
                created[i],
                0 if attempts is None else attempts[i],
            )
        )
        at = end
    return entries


def file_format(conn: sqlite3.Connection, schema: str = "main") -> int:
    """The format of a file: 1 or 2; 0 for a file without any table yet (its
    process died before its first commit); ``DatabaseError`` if unknown."""
    (version,) = conn.execute(f"PRAGMA {schema}.user_version").fetchone()
    names = {
        name
        for (name,) in conn.execute(
            f"SELECT name FROM {schema}.sqlite_master WHERE type = 'table'"
        )
    }
    if version == FORMAT and "groups" in names:
        return FORMAT
    if version in (0, 1) and "commands" in names:
        return 1
    if version in (0, 1, FORMAT) and not names:
        return 0
    raise sqlite3.DatabaseError(
        f"spool file of an unknown format (user_version {version}): written by "
        "a newer version of trackasync?"
    )


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
    try:
        if create:
            # Before anything is written: a file's page size is set at creation.
            conn.execute(f"PRAGMA page_size={PAGE_SIZE}")
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
    except BaseException:
        conn.close()  # the caller retries: never leave one open behind
        raise
    return conn


def create_schema(conn: sqlite3.Connection) -> None:
    """Make a new file a format 2 spool file."""
    conn.execute("BEGIN IMMEDIATE")
    for statement in SCHEMA:
        conn.execute(statement)
    conn.execute(f"PRAGMA user_version={FORMAT}")
    conn.execute("COMMIT")
