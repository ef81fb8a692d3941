"""The spool file's format: one row per group commit, settled runs, attempts
kept beside the groups, and the files of format 1 still adopted."""

from __future__ import annotations

import io
import logging
import sqlite3
import time
from pathlib import Path

import pytest

from trackasync._cli.spool import main as spool_cli
from trackasync._delivery import Delivery
from trackasync._spool import SqliteLog
from trackasync._spool_files import spool_files
from trackasync._spool_format import FORMAT, SCHEMA_V1, pack, rows, unpack
from trackasync._spool_read import iter_live
from trackasync.testing import RecordingTransport

from .conftest import IDS, Gate
from .test_spool import spooled


def command(seq: int, body: bytes, kind: str = "customers/events") -> Delivery:
    return Delivery(kind, body, 1_700_000_000.0 + seq, 0, seq)  # type: ignore[arg-type]


async def recover_all(log: SqliteLog) -> list[tuple[int, bytes, int]]:
    """(seq, body, attempts) of everything ``log`` hands back, page by page."""
    out: list[tuple[int, bytes, int]] = []
    while True:
        entries = await log.recover(3)
        if not entries:
            return out
        out += [(e.seq, e.body, e.attempts) for e in entries]


def only_file(directory: Path) -> Path:
    (found,) = spool_files(directory)
    return found.path


def test_a_group_packs_and_unpacks_byte_for_byte() -> None:
    """Bodies (any bytes), numbers, times, kinds and attempts come back as
    they went in, in order."""
    commands = [
        command(5, b'{"a":1}'),
        command(6, b"", "customers"),
        command(9, bytes(range(256))),
    ]
    commands[1].attempts = 4
    lo, hi, count, nbytes, oldest, head, body = pack(commands)
    assert (lo, hi, count, nbytes) == (5, 9, 3, 7 + 0 + 256)
    assert oldest == commands[0].created
    back = unpack(count, head, body)
    assert [(e.seq, e.kind, e.body, e.created, e.attempts) for e in back] == [
        (c.seq, c.kind, c.body, c.created, c.attempts) for c in commands
    ]


def test_a_damaged_group_is_refused() -> None:
    """A head that does not match its body or count raises DatabaseError
    (the file is then moved aside, never half read)."""
    _, _, count, _, _, head, body = pack([command(1, b"abc"), command(2, b"de")])
    with pytest.raises(sqlite3.DatabaseError):
        unpack(count, head, body[:-1])
    with pytest.raises(sqlite3.DatabaseError):
        unpack(count + 1, head, body)
    with pytest.raises(sqlite3.DatabaseError):
        unpack(count, b"\x93junk", body)


def test_a_commit_is_cut_into_groups_by_count_and_by_bytes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Groups hold at most GROUP_COMMANDS commands and, beyond their first
    command, GROUP_BYTES body bytes; a command larger than that is a group of
    its own; every command is in exactly one group, in order."""
    from trackasync import _spool_format

    monkeypatch.setattr(_spool_format, "GROUP_COMMANDS", 3)
    monkeypatch.setattr(_spool_format, "GROUP_BYTES", 10)
    sizes = [1, 1, 1, 1, 4, 4, 3, 25, 2, 10, 1]
    commands = [command(n, b"x" * size) for n, size in enumerate(sizes, 1)]
    out = rows(commands)
    assert [(lo, hi, count, nbytes) for lo, hi, count, nbytes, *_ in out] == [
        (1, 3, 3, 3),  # cut by count
        (4, 6, 3, 9),  # cut by count, 9 bytes
        (7, 7, 1, 3),  # 3 + 25 would pass 10 bytes
        (8, 8, 1, 25),  # larger than a group: alone
        (9, 9, 1, 2),  # 2 + 10 would pass 10 bytes
        (10, 10, 1, 10),  # exactly 10 bytes; 10 + 1 would pass them
        (11, 11, 1, 1),
    ]
    back = [
        e for _, _, count, _, _, head, body in out for e in unpack(count, head, body)
    ]
    assert [(e.seq, e.body) for e in back] == [(c.seq, c.body) for c in commands]
    assert rows([]) == []
    assert [r[:4] for r in rows(commands[:2])] == [(1, 2, 2, 2)]


async def test_one_commit_is_one_row_and_settled_groups_are_deleted(
    tmp_path: Path,
) -> None:
    """A commit of many commands writes one group row; settling some records
    runs, and a group whose commands are all settled leaves the file with its
    runs."""
    log = SqliteLog(tmp_path)
    await log.open()
    commands = [command(n, b'{"n":%d}' % n) for n in range(1, 101)]
    log.append(commands)
    waiter = log.synced(100)
    assert waiter is not None
    await waiter
    conn = sqlite3.connect(only_file(tmp_path))
    assert conn.execute("SELECT count(*), sum(count) FROM groups").fetchone() == (
        1,
        100,
    )
    log.settle(list(range(1, 41)) + list(range(51, 61)))
    log.append([command(101, b"{}")])
    await log.synced(101)  # type: ignore[misc]
    assert conn.execute("SELECT lo, hi FROM settled ORDER BY lo").fetchall() == [
        (1, 40),
        (51, 60),
    ]
    assert len(list(iter_live(conn))) == 51
    log.settle(list(range(41, 51)) + list(range(61, 102)))
    log.append([command(102, b"{}")])
    await log.synced(102)  # type: ignore[misc]
    assert conn.execute("SELECT lo FROM groups").fetchall() == [(102,)]
    assert conn.execute("SELECT count(*) FROM settled").fetchone() == (0,)
    conn.close()
    await log.aclose()


async def test_an_orphan_of_format_2_gives_back_its_live_commands_with_attempts(
    tmp_path: Path,
) -> None:
    """What a closing log keeps (settled ones left out, attempts of the kept
    ones as they were at the close) comes back to the next log, oldest first,
    byte for byte, with negative numbers."""
    first = SqliteLog(tmp_path)
    await first.open()
    commands = [command(n, b'{"body":%d}' % n) for n in range(1, 11)]
    first.append(commands[:6])
    first.append(commands[6:])
    await first.synced(10)  # type: ignore[misc]
    first.settle([2, 3, 7])
    kept = [c for c in commands if c.seq not in (2, 3, 7)]
    for c in kept[:2]:
        c.attempts = 3
    first.release(kept)
    await first.aclose()

    second = SqliteLog(tmp_path)
    await second.open()
    assert second.backlog() == 7
    back = await recover_all(second)
    assert [body for _, body, _ in back] == [c.body for c in kept]
    assert [seq for seq, _, _ in back] == list(range(-1, -8, -1))
    assert [attempts for _, _, attempts in back] == [3, 3, 0, 0, 0, 0, 0]
    second.settle([seq for seq, _, _ in back])
    await second.aclose()
    assert spool_files(tmp_path) == []


async def test_an_orphan_of_format_1_is_adopted_oldest_first(tmp_path: Path) -> None:
    """A file written by the one-row-per-command format is adopted: its
    commands come back by creation time, byte for byte, with their kinds and
    attempts, and the file is deleted."""
    orphan = sqlite3.connect(tmp_path / "1-old.spool")
    orphan.execute(SCHEMA_V1)
    orphan.executemany(
        "INSERT INTO commands VALUES (?, ?, ?, ?, ?)",
        [
            (1, 0, b'{"late":1}', 30.0, 0),
            (2, 1, b'{"early":2}', 10.0, 2),
            (-5, 0, b'{"middle":3}', 20.0, 1),
        ],
    )
    orphan.commit()
    orphan.close()
    log = SqliteLog(tmp_path)
    await log.open()
    entries = await log.recover(10)
    assert [(e.body, e.kind, e.attempts, e.created) for e in entries] == [
        (b'{"early":2}', "customers", 2, 10.0),
        (b'{"middle":3}', "customers/events", 1, 20.0),
        (b'{"late":1}', "customers/events", 0, 30.0),
    ]
    assert not (tmp_path / "1-old.spool").exists()
    log.settle([e.seq for e in entries])
    await log.aclose()


async def test_a_file_of_format_2_makes_a_format_1_reader_fail_not_empty(
    tmp_path: Path,
) -> None:
    """The statement format 1 adopted with fails on a file of format 2, so a
    process of an older version moves it aside instead of finding it empty
    and deleting it."""
    client = spooled(tmp_path, RecordingTransport(Gate()))
    await client.track(IDS, "view")
    await client.aclose(timeout=0.05)
    path = only_file(tmp_path)
    conn = sqlite3.connect(":memory:", isolation_level=None)
    conn.execute(SCHEMA_V1)
    conn.execute("ATTACH DATABASE ? AS orphan", (str(path),))
    (version,) = conn.execute("PRAGMA orphan.user_version").fetchone()
    assert version == FORMAT
    (has_table,) = conn.execute(
        "SELECT count(*) FROM orphan.sqlite_master WHERE name = 'commands'"
    ).fetchone()
    assert has_table == 1
    with pytest.raises(sqlite3.DatabaseError):
        conn.execute(
            "INSERT INTO commands SELECT -(row_number() OVER (ORDER BY created, "
            "seq)), kind, body, created, attempts FROM orphan.commands"
        )


async def test_a_file_of_an_unknown_format_is_moved_aside_untouched(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A file of a format this version does not know is neither read nor
    deleted: it is moved aside with an ERROR."""
    path = tmp_path / "1-future.spool"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE things (x)")
    conn.execute("PRAGMA user_version = 99")
    conn.commit()
    conn.close()
    data = path.read_bytes()
    caplog.set_level(logging.ERROR, logger="trackasync")
    log = SqliteLog(tmp_path)
    await log.open()
    assert log.backlog() == 0
    assert (tmp_path / "1-future.spool.corrupt").read_bytes() == data
    assert any("unknown format" in r.getMessage() for r in caplog.records)
    await log.aclose()


async def test_the_listing_counts_live_commands_of_either_format(
    tmp_path: Path,
) -> None:
    """``trackasync spool DIR`` counts what each file still holds: a format 2
    file with some commands settled, and a format 1 file."""
    log = SqliteLog(tmp_path)
    await log.open()
    bodies = [b'{"n":%d}' % n for n in range(1, 7)]
    log.append([command(n, body) for n, body in enumerate(bodies, 1)])
    await log.synced(6)  # type: ignore[misc]
    log.settle([1, 2])
    log.append([command(7, b"{}")])
    await log.synced(7)  # type: ignore[misc]
    await log.aclose()  # keeps 5 commands
    old = sqlite3.connect(tmp_path / "1-old.spool")
    old.execute(SCHEMA_V1)
    old.execute("INSERT INTO commands VALUES (1, 0, x'7b7d', ?, 0)", (time.time(),))
    old.commit()
    old.close()
    out = io.StringIO()
    assert spool_cli([str(tmp_path)], out=out) == 0
    text = out.getvalue()
    left = sum(len(b) for b in bodies[2:]) + 2
    assert f"5 command(s), {left} bytes of commands" in text
    assert "1 command(s), 2 bytes of commands" in text
    assert "total: 6 command(s) in 2 file(s)" in text


async def test_a_big_commit_is_cut_into_groups_that_read_back_a_page_at_a_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A commit larger than a group becomes several rows; an adopter hands
    them back a page at a time, oldest first, across group boundaries."""
    from trackasync import _spool_format

    monkeypatch.setattr(_spool_format, "GROUP_COMMANDS", 4)
    first = SqliteLog(tmp_path)
    await first.open()
    commands = [command(n, b'{"n":%d}' % n) for n in range(1, 12)]
    first.append(commands)
    await first.synced(11)  # type: ignore[misc]
    conn = sqlite3.connect(only_file(tmp_path))
    assert conn.execute("SELECT count(*) FROM groups").fetchone() == (3,)
    conn.close()
    first.release(commands)
    await first.aclose()
    second = SqliteLog(tmp_path)
    await second.open()
    back = await recover_all(second)
    assert [body for _, body, _ in back] == [c.body for c in commands]
    second.settle([seq for seq, _, _ in back])
    await second.aclose()
