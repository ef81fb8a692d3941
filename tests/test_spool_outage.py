"""With a spool, an outage fills the disk, not memory."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from trackasync import Client, Delivery, DeliveryFailed, QueueFull, SyncClient
from trackasync._spool import SqliteLog
from trackasync.testing import RecordingTransport

from .conftest import IDS, NO_WAIT, PROJECT, Gate
from .test_owner import invariant
from .test_spool import AUTH, log_of, rows, spooled


async def test_an_outage_fills_the_disk_and_memory_stays_bounded(
    tmp_path: Path,
) -> None:
    """The API does not answer: past max_queue, commands go to disk only
    (their handles end "kept"), memory holds at most max_queue; when the API
    answers again, every command is delivered, oldest first, and the books
    balance."""
    gate = Gate()
    transport = RecordingTransport(gate)
    seen: list[bytes] = []
    client = spooled(
        tmp_path,
        transport,
        max_queue=20,
        max_in_flight=1,
        on_result=lambda d: seen.append(d.body) if d.delivered() else None,
    )
    async with client:
        handles = [client.track_nowait(IDS, "view", {"n": n}) for n in range(200)]
        durable = await client.track(IDS, "view", {"n": 200})  # waits for disk
        handles.append(durable)
        stats = client.stats()
        assert stats.queued <= 20
        assert stats.kept >= 150
        assert invariant(stats)
        kept = [h for h in handles if h.done()]
        assert all(
            isinstance(h.exception(), DeliveryFailed) and h.exception().reason == "kept"  # type: ignore[union-attr]
            for h in kept
        )
        assert len(rows(tmp_path)) == 201  # everything is on disk
        gate.open.set()
        for _ in range(500):
            if client.stats().delivered == 201:
                break
            await asyncio.sleep(0.02)
    stats = client.stats()
    assert stats.delivered == 201
    # Nothing is left for the next run, and nothing came from an earlier one.
    assert stats.kept == stats.recovered == 0
    assert invariant(stats)
    # Oldest first: the API saw the commands in the order they were made.
    order = [h.body for h in handles]
    assert seen == order
    assert rows(tmp_path) == []


async def test_a_full_spool_applies_the_overflow_policy(tmp_path: Path) -> None:
    """Past spool_max_bytes, a full queue raises QueueFull under "raise"."""
    client = spooled(
        tmp_path,
        RecordingTransport(Gate()),
        max_queue=5,
        max_in_flight=1,
        overflow="raise",
        spool_max_bytes=2_000,
    )
    accepted = 0
    for n in range(1000):
        try:
            client.track_nowait(IDS, "view", {"n": n})
        except QueueFull:
            break
        accepted += 1
    stats = client.stats()
    assert stats.kept > 0
    assert 5 < accepted < 40
    await client.aclose(timeout=0.05)


def test_a_sync_client_spills_to_disk_instead_of_blocking(tmp_path: Path) -> None:
    """SyncClient under "wait" with the API down: past max_queue, track()
    does not block for room; the commands go to disk."""
    client = SyncClient(
        "http://127.0.0.1:9",
        PROJECT,
        auth=AUTH,
        spool=tmp_path,
        durability="interval",
        max_queue=10,
        queue_timeout=0.5,
        retry=NO_WAIT,
        rate_limit=None,
        max_in_flight=1,
        linger=60.0,
    )
    for n in range(300):
        client.track(IDS, "view", {"n": n})
    stats = client.stats()
    assert stats.queued <= 10 + 1
    assert stats.kept >= 280
    report = client.close(timeout=0.1)
    assert report.kept + report.delivered + sum(report.failed.values()) >= 300


async def _spilling_onto_a_full_disk(
    tmp_path: Path, gate: Gate
) -> tuple[Client, SqliteLog, list[Delivery]]:
    """A client whose spool file cannot grow, with commands accepted past
    max_queue (spilled) before the writer found out; then calls until the
    overflow policy refuses one. Returns the client, its log and every
    command a call accepted."""
    client = spooled(
        tmp_path,
        RecordingTransport(gate),
        durability="interval",
        spool_interval=0.05,
        max_queue=5,
        max_in_flight=1,
        overflow="raise",
    )
    await client.__aenter__()  # open: the spool opens its file
    log = log_of(client)
    for _ in range(500):
        if log.opened:
            break
        await asyncio.sleep(0.01)
    conn = log._writer.conn
    assert conn is not None
    (pages,) = conn.execute("PRAGMA page_count").fetchone()
    # The writer is idle: from now on the file cannot grow.
    conn.execute(f"PRAGMA max_page_count={pages}")
    big = {"pad": "x" * 5_000}
    accepted = [client.track_nowait(IDS, "view", {"n": n, **big}) for n in range(30)]
    assert client.stats().kept >= 20  # past max_queue: on disk only, it said
    for n in range(30, 1000):
        try:
            accepted.append(client.track_nowait(IDS, "view", {"n": n, **big}))
        except QueueFull:
            break
        await asyncio.sleep(0.01)
    else:
        raise AssertionError("the spool kept taking commands it cannot write")
    assert log.failure is not None
    return client, log, accepted


async def test_a_full_disk_while_spilling_loses_nothing_accepted(
    tmp_path: Path,
) -> None:
    """The disk fills while commands are kept on disk only (past max_queue):
    the spool takes no more (the overflow policy answers at the call), and
    every command a call accepted, spilled ones included, is still sent once
    the API answers, the disk still refusing them."""
    gate = Gate()
    client, _, accepted = await _spilling_onto_a_full_disk(tmp_path, gate)
    gate.open.set()
    for _ in range(1000):
        if client.stats().delivered == len(accepted):
            break
        await asyncio.sleep(0.02)
    stats = client.stats()
    assert stats.delivered == len(accepted)
    assert invariant(stats)
    await client.aclose(timeout=1.0)


async def test_a_close_with_a_full_disk_says_what_it_could_not_keep(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The API and the disk both refuse until the close: the commands that
    could be neither sent nor written are named in an ERROR, not dropped in
    silence."""
    client, _, accepted = await _spilling_onto_a_full_disk(tmp_path, Gate())
    caplog.set_level(logging.ERROR, logger="trackasync")
    await client.aclose(timeout=0.1)
    lost = [r.getMessage() for r in caplog.records if "LOST" in r.getMessage()]
    assert lost, "nothing said about the commands the spool could not keep"
    assert f"{len(accepted)} command(s)" in lost[0]
