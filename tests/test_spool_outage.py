"""With a spool, an outage fills the disk, not memory."""

from __future__ import annotations

import asyncio
from pathlib import Path

from trackasync import DeliveryFailed, QueueFull, SyncClient
from trackasync.testing import RecordingTransport

from .conftest import IDS, NO_WAIT, PROJECT, Gate
from .test_owner import invariant
from .test_spool import AUTH, rows, spooled


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
