"""The spool: commands on disk until their outcome, adopted by the next run."""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import stat
from pathlib import Path
from typing import Any

import pytest

from trackasync import (
    Client,
    ConfigError,
    DeliveryFailed,
    PrivateKey,
    SpoolError,
    SyncClient,
)
from trackasync._spool import SqliteLog
from trackasync._spool_files import spool_files
from trackasync._spool_read import iter_live
from trackasync.testing import RecordingTransport

from .conftest import BASE_URL, IDS, NO_WAIT, PROJECT, Gate

AUTH = PrivateKey("key", "secret")


def spooled(spool: Path, transport: RecordingTransport, **options: Any) -> Client:
    options.setdefault("linger", 0.0)
    return Client(
        BASE_URL,
        PROJECT,
        auth=AUTH,
        transport=transport,
        retry=NO_WAIT,
        rate_limit=None,
        spool=spool,
        **options,
    )


def rows(spool: Path) -> list[bytes]:
    """Every command body in every spool file of the directory, read apart."""
    out: list[bytes] = []
    for found in spool_files(spool):
        conn = sqlite3.connect(f"file:{found.path}?mode=ro", uri=True)
        try:
            out += [entry.body for entry in iter_live(conn)]
        finally:
            conn.close()
    return out


def log_of(client: Client) -> SqliteLog:
    log = client._pipeline.table.log
    assert isinstance(log, SqliteLog)
    return log


async def test_a_durable_track_returns_once_its_command_is_on_disk(
    tmp_path: Path,
) -> None:
    """With the default durability, the event is in the spool file, read by
    another connection, as soon as await track() returns (the API never
    answers)."""
    client = spooled(tmp_path, RecordingTransport(Gate()))
    for n in range(3):
        delivery = await client.track(IDS, "view", {"n": n})
        assert delivery.body in rows(tmp_path)
    await client.aclose(timeout=0.1)


async def test_durable_consents_and_shaped_events_are_on_disk_on_return(
    tmp_path: Path,
) -> None:
    """The durable wait holds for every awaited intake: a consent, an event
    shaped by default_properties, and a customer update are all in the spool
    file when their call returns (the API never answers)."""
    client = spooled(
        tmp_path, RecordingTransport(Gate()), default_properties={"app": "shop"}
    )
    shaped = await client.track(IDS, "view", {"n": 1})
    assert shaped.body in rows(tmp_path)
    consent = await client.consent(IDS, "accept", "newsletter", valid_until="unlimited")
    assert consent.body in rows(tmp_path)
    update = await client.update_customer(IDS, {"plan": "pro"})
    assert update.body in rows(tmp_path)
    await client.aclose(timeout=0.1)


async def test_interval_durability_writes_within_the_interval_without_waiting(
    tmp_path: Path,
) -> None:
    """Under "interval", track() does not wait for the disk; the command is on
    disk within the interval."""
    client = spooled(
        tmp_path,
        RecordingTransport(Gate()),
        durability="interval",
        spool_interval=0.3,
    )
    first = await client.track(IDS, "view", {"n": 0})  # the first commits at once
    for _ in range(100):
        if first.body in rows(tmp_path):
            break
        await asyncio.sleep(0.02)
    second = client.track_nowait(IDS, "view", {"n": 1})
    assert second.body not in rows(tmp_path)  # the interval has not passed
    for _ in range(250):
        if second.body in rows(tmp_path):
            break
        await asyncio.sleep(0.02)
    assert second.body in rows(tmp_path)
    await client.aclose(timeout=0.1)


async def test_delivered_commands_leave_the_spool_and_a_clean_close_leaves_no_file(
    tmp_path: Path,
) -> None:
    """A command leaves the spool at its outcome; an empty spool file is
    deleted at close, with its lock file."""
    transport = RecordingTransport()
    async with spooled(tmp_path, transport) as client:
        handles = [await client.track(IDS, "view", {"n": n}) for n in range(20)]
        for handle in handles:
            await handle
    assert client.stats().delivered == 20
    assert os.listdir(tmp_path) == []


async def test_unsent_commands_are_kept_and_the_next_run_sends_the_original_bytes(
    tmp_path: Path,
) -> None:
    """aclose() keeps what the API never answered; the next client on the
    directory adopts the file, sends those bodies, and deletes it."""
    first = spooled(tmp_path, RecordingTransport(Gate()))
    bodies = [(await first.track(IDS, "view", {"n": n})).body for n in range(5)]
    report = await first.aclose(timeout=0.1)
    assert report.kept == 5
    assert sorted(rows(tmp_path)) == sorted(bodies)

    seen: list[Any] = []
    transport = RecordingTransport()
    async with spooled(tmp_path, transport, on_result=seen.append) as second:
        for _ in range(300):
            if len(seen) == 5:
                break
            await asyncio.sleep(0.01)
    stats = second.stats()
    assert stats.recovered == 5
    assert stats.delivered == 5
    assert all(d.recovered for d in seen)
    # Oldest first, byte for byte.
    assert [d.body for d in seen] == bodies
    sent = b"".join(r.body or b"" for r in transport.requests)
    assert all(body in sent for body in bodies)
    assert os.listdir(tmp_path) == []


async def test_a_file_whose_owner_lives_is_not_adopted(tmp_path: Path) -> None:
    """Two clients open on one directory: neither takes the other's commands."""
    gate = Gate()
    a = spooled(tmp_path, RecordingTransport(gate))
    await a.track(IDS, "a")
    b = spooled(tmp_path, RecordingTransport(gate))
    await b.track(IDS, "b")
    await asyncio.sleep(0.1)
    assert b.stats().recovered == 0
    assert a.stats().recovered == 0
    assert len(spool_files(tmp_path)) == 2
    await a.aclose(timeout=0.05)
    await b.aclose(timeout=0.05)


async def test_an_unreadable_spool_file_is_moved_aside_with_an_error(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A corrupt orphan is renamed, never deleted or emptied, with an ERROR
    naming it; a good orphan beside it is still adopted."""
    first = spooled(tmp_path, RecordingTransport(Gate()))
    body = (await first.track(IDS, "view")).body
    await first.aclose(timeout=0.05)
    junk = b"this is not a database " * 100
    (tmp_path / "999-bad.spool").write_bytes(junk)
    caplog.set_level(logging.ERROR, logger="trackasync")
    transport = RecordingTransport()
    async with spooled(tmp_path, transport) as second:
        await second.flush()
        for _ in range(100):
            if second.stats().delivered:
                break
            await asyncio.sleep(0.01)
    assert second.stats().delivered == 1
    assert body in b"".join(r.body or b"" for r in transport.requests)
    assert (tmp_path / "999-bad.spool.corrupt").read_bytes() == junk
    assert any("999-bad.spool" in r.getMessage() for r in caplog.records)
    assert any("NOT sent" in r.getMessage() for r in caplog.records)


def test_an_unsafe_spool_directory_is_refused(tmp_path: Path) -> None:
    """A directory other users can write, or a link, raises ConfigError at
    construction; a new directory is created 0700."""
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    with pytest.raises(ConfigError, match="written by other users"):
        spooled(shared, RecordingTransport())
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "real", target_is_directory=True)
    (tmp_path / "real").mkdir(mode=0o700)
    with pytest.raises(ConfigError, match="symbolic link"):
        spooled(link, RecordingTransport())
    fresh = tmp_path / "a" / "b"
    spooled(fresh, RecordingTransport())
    assert stat.S_IMODE(os.stat(fresh).st_mode) == 0o700


async def test_spool_files_are_private_and_a_linked_orphan_is_refused(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Spool files are 0600; an orphan that is a symbolic link is not
    adopted (its target is left alone)."""
    outside = tmp_path / "outside.db"
    conn = sqlite3.connect(outside)
    conn.execute(
        "CREATE TABLE commands (seq INTEGER PRIMARY KEY, kind INTEGER, "
        "body BLOB, created REAL, attempts INTEGER)"
    )
    conn.execute("INSERT INTO commands VALUES (1, 0, x'7b7d', 1.0, 0)")
    conn.commit()
    conn.close()
    spool = tmp_path / "spool"
    spool.mkdir(mode=0o700)
    (spool / "1-planted.spool").symlink_to(outside)
    caplog.set_level(logging.ERROR, logger="trackasync")
    client = spooled(spool, RecordingTransport(Gate()))
    await client.track(IDS, "view")
    await asyncio.sleep(0.05)
    assert client.stats().recovered == 0
    own = log_of(client).path
    assert stat.S_IMODE(os.stat(own).st_mode) == 0o600
    assert any("symbolic link" in r.getMessage() for r in caplog.records)
    await client.aclose(timeout=0.05)
    assert outside.exists()


async def test_a_full_disk_raises_at_the_call_and_loses_nothing_spooled(
    tmp_path: Path,
) -> None:
    """When the file cannot grow, a durable track() raises SpoolError; what
    was spooled before stays; once there is room the command is written."""
    client = spooled(tmp_path, RecordingTransport(Gate()))
    before = [(await client.track(IDS, "view", {"n": n})).body for n in range(3)]
    log = log_of(client)
    conn = log._writer.conn
    assert conn is not None
    (pages,) = conn.execute("PRAGMA page_count").fetchone()
    # The writer thread is idle between commits: cap the file at its size.
    conn.execute(f"PRAGMA max_page_count={pages}")
    big = {"a": "x" * 15_000, "b": "y" * 15_000}
    with pytest.raises(SpoolError, match="full"):
        await client.track(IDS, "view", big)
    assert sorted(rows(tmp_path)) == sorted(before)
    conn.execute("PRAGMA max_page_count=1073741823")
    for _ in range(300):
        if len(rows(tmp_path)) == 4:
            break
        await asyncio.sleep(0.02)
    assert len(rows(tmp_path)) == 4
    await client.aclose(timeout=0.05)


def test_sync_client_track_returns_once_its_command_is_on_disk(
    tmp_path: Path,
) -> None:
    """SyncClient.track under the default durability waits for the commit,
    from any thread."""
    import threading

    client = SyncClient(
        "http://127.0.0.1:9",
        PROJECT,
        auth=AUTH,
        spool=tmp_path,
        linger=60.0,
        retry=NO_WAIT,
        rate_limit=None,
    )
    bodies: list[bytes] = []

    def work() -> None:
        for n in range(5):
            handle = client.track(IDS, "view", {"n": n})
            assert handle.delivery.body in rows(tmp_path)
            bodies.append(handle.delivery.body)

    threads = [threading.Thread(target=work) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(bodies) == 15
    report = client.close(timeout=0.1)
    assert report.kept + report.delivered + sum(report.failed.values()) == 15


async def test_kept_handles_end_kept_and_stats_balance(tmp_path: Path) -> None:
    """Handles of kept commands end "kept"; the books balance."""
    client = spooled(tmp_path, RecordingTransport(Gate()))
    handle = await client.track(IDS, "view")
    await client.aclose(timeout=0.05)
    with pytest.raises(DeliveryFailed) as caught:
        handle.result()
    assert caught.value.reason == "kept"
    stats = client.stats()
    assert stats.enqueued == stats.kept == 1


def test_options_validate_the_spool_settings(tmp_path: Path) -> None:
    """Bad durability or interval raise ConfigError at construction."""
    with pytest.raises(ConfigError, match="durability"):
        spooled(tmp_path, RecordingTransport(), durability="sometimes")
    with pytest.raises(ConfigError, match="spool_interval"):
        spooled(tmp_path, RecordingTransport(), spool_interval=0)
    with pytest.raises(ConfigError, match="spool"):
        Client(BASE_URL, PROJECT, auth=AUTH, spool=3)  # type: ignore[arg-type]


async def test_durable_calls_return_when_their_commands_settle_before_written(
    tmp_path: Path,
) -> None:
    """With a fast API, commands are often delivered before the writer gets to
    them: they are never written, and the durable calls still return."""
    client = spooled(tmp_path, RecordingTransport())
    async with client:
        await client.flush()
        await asyncio.sleep(0.05)  # the spool is open
        for _ in range(5):
            calls = [client.track(IDS, "view", {"n": n}) for n in range(100)]
            await asyncio.wait_for(asyncio.gather(*calls), 20)
    assert client.stats().delivered == 500


async def test_a_command_settled_while_the_spool_opens_needs_no_commit(
    tmp_path: Path,
) -> None:
    """A command appended and settled while the log is busy adopting an
    orphan is never written, and its durable wait still ends."""
    import time

    from trackasync._delivery import Delivery
    from trackasync._spool_format import SCHEMA_V1 as SCHEMA

    orphan = sqlite3.connect(tmp_path / "1-orphan.spool")
    orphan.execute(SCHEMA)
    orphan.executemany(
        "INSERT INTO commands VALUES (?, 0, ?, ?, 0)",
        [(n, b'{"n":%d}' % n, 1.0 + n) for n in range(1, 30_001)],
    )
    orphan.commit()
    orphan.close()
    log = SqliteLog(tmp_path)
    opening = asyncio.ensure_future(log.open())
    await asyncio.sleep(0)  # the adoption has started in the writer
    command = Delivery("customers/events", b"{}", time.time(), 0, 1)
    log.append([command])
    waiter = log.synced(1)
    assert waiter is not None
    log.settle([1])
    await asyncio.wait_for(opening, 30)
    assert log.backlog() == 30_000
    await asyncio.wait_for(waiter, 10)
    await log.aclose()


def test_two_processes_starting_at_once_adopt_each_orphan_once(
    tmp_path: Path,
) -> None:
    """Processes that start together over a directory of orphans split them:
    every orphaned command is adopted by exactly one of them."""
    import subprocess
    import sys

    from trackasync._spool_format import SCHEMA_V1 as SCHEMA

    expected: set[bytes] = set()
    for f in range(30):
        conn = sqlite3.connect(tmp_path / f"{f + 1}-orphan{f}.spool")
        conn.execute(SCHEMA)
        bodies = [b'{"file":%d,"n":%d}' % (f, n) for n in range(40)]
        conn.executemany(
            "INSERT INTO commands VALUES (?, 0, ?, ?, 0)",
            [(n + 1, body, 1.0 + n) for n, body in enumerate(bodies)],
        )
        conn.commit()
        conn.close()
        expected.update(bodies)
    go = tmp_path / "go"
    root = Path(__file__).resolve().parent.parent
    command = [sys.executable, "-m", "tests.spool_producer", "adopt"]
    procs = [
        subprocess.Popen(
            [*command, str(tmp_path), str(go)], stdout=subprocess.PIPE, cwd=root
        )
        for _ in range(3)
    ]
    import time

    time.sleep(1.0)  # all three started and polling
    go.touch()
    outputs = [p.communicate(timeout=120)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs)
    seen = [[bytes.fromhex(line.decode()) for line in out.split()] for out in outputs]
    everything = [body for got in seen for body in got]
    assert len(everything) == len(set(everything)), "an orphan adopted twice"
    assert set(everything) == expected


def test_a_client_abandoned_by_its_loop_keeps_its_commands_in_the_spool(
    tmp_path: Path,
) -> None:
    """The loop ends without aclose(): the unsent commands stay in the spool
    for the next run, and the warning says so."""

    async def main() -> Client:
        client = spooled(tmp_path, RecordingTransport(Gate()))
        await client.track(IDS, "view")
        return client

    with pytest.warns(ResourceWarning, match="kept in the spool"):
        client = asyncio.run(main())
    assert client.stats().kept == 1
    assert len(rows(tmp_path)) == 1


async def test_a_durable_call_whose_command_is_dropped_returns_at_once(
    tmp_path: Path,
) -> None:
    """Under "drop_new" with a full queue and a full spool, the dropped
    command is never written: its durable track() returns its failed handle
    without waiting."""
    client = spooled(
        tmp_path,
        RecordingTransport(Gate()),
        max_queue=1,
        overflow="drop_new",
        max_in_flight=1,
        spool_max_bytes=0,
    )
    kept = await client.track(IDS, "view", {"n": 0})
    await asyncio.sleep(0.05)  # the first is in flight; the queue is empty
    queued = await client.track(IDS, "view", {"n": 1})
    dropped = await asyncio.wait_for(client.track(IDS, "view", {"n": 2}), 5)
    assert dropped.exception() is not None
    assert dropped.exception().reason == "dropped"  # type: ignore[union-attr]
    assert not kept.done()
    assert not queued.done()
    await client.aclose(timeout=0.05)


async def test_a_running_client_takes_what_a_process_that_ended_since_left(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A client open on the directory looks again from time to time: a file
    left by another client that closed meanwhile is adopted and sent."""
    from trackasync import _pipeline

    monkeypatch.setattr(_pipeline, "RESCAN_INTERVAL", 0.05)
    transport = RecordingTransport()
    async with spooled(tmp_path, transport) as survivor:
        await survivor.track(IDS, "survivor")
        leaver = spooled(tmp_path, RecordingTransport(Gate()))
        bodies = [(await leaver.track(IDS, "left", {"n": n})).body for n in range(3)]
        assert (await leaver.aclose(timeout=0.05)).kept == 3
        for _ in range(300):
            if survivor.stats().delivered == 4:
                break
            await asyncio.sleep(0.02)
        assert survivor.stats().recovered == 3
        assert survivor.stats().delivered == 4
    sent = b"".join(r.body or b"" for r in transport.requests)
    assert all(body in sent for body in bodies)


@pytest.mark.parametrize("durability", ["durable", "interval"])
def test_a_sync_client_never_closed_is_flushed_at_exit_and_its_spool_recorded(
    tmp_path: Path, durability: str
) -> None:
    """A SyncClient left open delivers at interpreter exit, and its spool
    records those outcomes before it stops: nothing delivered is left in the
    directory to be sent again, and the process exits promptly."""
    import subprocess
    import sys
    import textwrap
    import time

    script = textwrap.dedent(
        f"""
        from trackasync import PrivateKey, SyncClient
        client = SyncClient("http://127.0.0.1:9", "p", auth=PrivateKey("k", "s"),
                            send=False, spool={str(tmp_path)!r},
                            durability={durability!r}, linger=5.0)
        for n in range(20):
            client.track({{"registered": "u"}}, "view", {{"n": n}})
        """
    )
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, timeout=60
    )
    assert result.returncode == 0, result.stderr.decode()[-2000:]
    assert time.monotonic() - started < 30
    assert rows(tmp_path) == []
    assert [p for p in tmp_path.iterdir() if p.suffix == ".spool"] == []
