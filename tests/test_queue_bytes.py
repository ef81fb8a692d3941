"""The queue is bounded in bytes as well as in commands (``max_queue_bytes``):
big events cannot fill memory the way 10,000 of them would, under every
overflow policy, from the loop and from other threads."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from trackasync import Client, ConfigError, PrivateKey, QueueFull, SyncClient
from trackasync._table import CommandTable
from trackasync.testing import RecordingTransport

from .test_table import BIG, Recorder, delivery, numbers, queued, settle


def table(
    maxsize: int = 100, maxbytes: int = 100, overflow: Any = "raise"
) -> tuple[CommandTable, Recorder]:
    recorder = Recorder()
    buffer = CommandTable(
        maxsize,
        overflow,
        batch_count=50,
        batch_bytes=BIG,
        ledger=recorder,  # type: ignore[arg-type]
        maxbytes=maxbytes,
    )
    buffer.wake = recorder.set
    recorder.buffer = buffer
    return buffer, recorder


@pytest.mark.parametrize("maxbytes", [0, -5, 1.5, True])
def test_bad_byte_bound_is_refused(maxbytes: Any) -> None:
    with pytest.raises(ConfigError, match="max_queue_bytes"):
        table(maxbytes=maxbytes)


def test_raise_when_the_bytes_are_full_and_nothing_queued_is_lost() -> None:
    buffer, recorder = table(maxbytes=100)
    for n in range(4):
        buffer.offer(delivery(n, size=25))
    assert buffer.nbytes == 100
    with pytest.raises(QueueFull, match="100 bytes of commands"):
        buffer.offer(delivery(4, size=1))
    assert numbers(queued(buffer)) == [0, 1, 2, 3]
    assert recorder.dropped == []
    assert buffer.enqueued == 4


def test_an_empty_queue_takes_a_command_bigger_than_the_bound() -> None:
    buffer, _ = table(maxbytes=100)
    buffer.offer(delivery(0, size=500))
    assert buffer.nbytes == 500
    with pytest.raises(QueueFull):
        buffer.offer(delivery(1, size=1))


def test_count_bound_still_named_when_it_is_the_one_reached() -> None:
    buffer, _ = table(maxsize=2, maxbytes=10_000)
    buffer.offer(delivery(0))
    buffer.offer(delivery(1))
    with pytest.raises(QueueFull, match=r"\(2 commands\)"):
        buffer.offer(delivery(2))


def test_drop_new_by_bytes() -> None:
    buffer, recorder = table(maxbytes=50, overflow="drop_new")
    first = delivery(0, size=40)
    second = delivery(1, size=20)
    buffer.offer(first)
    buffer.offer(second)
    assert recorder.dropped == [second]
    assert queued(buffer) == [first]


def test_drop_old_drops_as_many_as_the_new_bytes_need() -> None:
    buffer, recorder = table(maxbytes=100, overflow="drop_old")
    small = [delivery(n, size=20) for n in range(5)]
    for item in small:
        buffer.offer(item)
    big = delivery(9, size=70)
    buffer.offer(big)
    # 100 bytes held; 70 more need 70 freed: the four oldest of 20 go.
    assert recorder.dropped == small[:4]
    assert queued(buffer) == [small[4], big]
    assert buffer.nbytes == 90


async def test_wait_for_bytes_then_resume_in_order() -> None:
    buffer, _ = table(maxbytes=100, overflow="wait")
    buffer.offer(delivery(0, size=60))
    buffer.offer(delivery(1, size=40))
    big = asyncio.create_task(buffer.put(delivery(2, size=70), timeout=None))
    await settle()
    small = asyncio.create_task(buffer.put(delivery(3, size=5), timeout=None))
    await settle()
    # Neither fits; the small one does not overtake the big one (FIFO).
    assert not big.done()
    assert not small.done()
    assert numbers(buffer.take(1, BIG)) == [0]  # 60 bytes free now: not enough
    await settle()
    assert not big.done()
    assert not small.done()
    assert numbers(buffer.take(1, BIG)) == [1]  # empty: the big one goes in
    await asyncio.wait_for(asyncio.gather(big, small), 1.0)
    assert numbers(queued(buffer)) == [2, 3]
    assert buffer.nbytes == 75


async def test_a_cancelled_big_waiter_lets_the_small_ones_behind_it_in() -> None:
    buffer, _ = table(maxbytes=100, overflow="wait")
    buffer.offer(delivery(0, size=90))
    big = asyncio.create_task(buffer.put(delivery(1, size=50), timeout=None))
    await settle()
    small = asyncio.create_task(buffer.put(delivery(2, size=5), timeout=None))
    await settle()
    assert not small.done()
    big.cancel()
    await settle()
    await asyncio.wait_for(small, 1.0)
    assert numbers(queued(buffer)) == [0, 2]


async def test_put_times_out_naming_the_bytes() -> None:
    buffer, _ = table(maxbytes=100, overflow="wait")
    buffer.offer(delivery(0, size=100))
    with pytest.raises(QueueFull, match=r"stayed full \(100 bytes of commands"):
        await buffer.put(delivery(1, size=10), timeout=0.01)
    assert numbers(queued(buffer)) == [0]


# -- the clients -------------------------------------------------------------------


LIMIT_FLOOR = 800_000  # limits.max_command_bytes: the smallest bound allowed


def client(**options: Any) -> Client:
    return Client(
        "https://api.example.test",
        "p",
        auth=PrivateKey("k", "s"),
        transport=RecordingTransport(),
        linger=3600,
        rate_limit=None,
        **options,
    )


def test_bound_below_the_largest_command_is_refused() -> None:
    with pytest.raises(ConfigError, match="max_queue_bytes"):
        client(max_queue_bytes=LIMIT_FLOOR - 1)


def test_env_reads_the_byte_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRACKASYNC_BASE_URL", "https://api.example.test")
    monkeypatch.setenv("TRACKASYNC_PROJECT_TOKEN", "p")
    monkeypatch.setenv("TRACKASYNC_KEY_ID", "k")
    monkeypatch.setenv("TRACKASYNC_SECRET", "s")
    monkeypatch.setenv("TRACKASYNC_MAX_QUEUE_BYTES", "2000000")
    assert Client.from_env()._options.max_queue_bytes == 2_000_000


async def test_client_nowait_raises_when_big_events_fill_the_bytes() -> None:
    # Each event about 100 KB: 8 fit in 800,000 bytes, far below max_queue.
    props = {f"p{i}": "x" * 10_000 for i in range(10)}
    async with client(max_queue_bytes=LIMIT_FLOOR, overflow="raise") as c:
        taken = 0
        while c._table.nbytes + 110_000 <= LIMIT_FLOOR:
            c.track_nowait({"registered": f"u{taken}"}, "big", props)
            taken += 1
        with pytest.raises(QueueFull, match="bytes of commands"):
            c.track_nowait({"registered": "last"}, "big", props)
        assert 5 <= taken <= 8
        assert c.stats().queued == taken
        assert c._table.nbytes <= LIMIT_FLOOR


def test_sync_client_big_events_all_delivered_through_the_byte_bound() -> None:
    """Room by bytes comes back per request: a thread producing events of
    100 KB through a bound of 8 of them is never refused and loses none."""
    props = {f"p{i}": "x" * 10_000 for i in range(10)}
    with SyncClient(
        "https://api.example.test",
        "p",
        auth=PrivateKey("k", "s"),
        send=False,
        max_queue_bytes=LIMIT_FLOOR,
        overflow="wait",
        linger=0,
        max_in_flight=1,
    ) as sync:
        handles = [sync.track({"registered": f"u{n}"}, "big", props) for n in range(40)]
        for handle in handles:
            handle.result(timeout=10)
        assert sync.stats().delivered == 40


def test_hand_over_waits_for_bytes_then_resumes() -> None:
    buffer, _ = table(maxsize=100, maxbytes=100, overflow="wait")
    buffer.bind(lambda fn: fn())
    buffer.hand_over(delivery(0, size=60), timeout=None)
    buffer.hand_over(delivery(1, size=40), timeout=None)
    with pytest.raises(QueueFull, match="stayed full"):
        buffer.hand_over(delivery(2, size=10), timeout=0.05)
    resumed = threading.Event()

    def producer() -> None:
        buffer.hand_over(delivery(3, size=50), timeout=5)
        resumed.set()

    thread = threading.Thread(target=producer)
    thread.start()
    assert not resumed.wait(0.05)
    buffer.take(1, BIG)  # 60 bytes come back
    thread.join(5)
    assert resumed.is_set()
    assert numbers(queued(buffer)) == [1, 3]


def test_hand_over_raise_policy_refuses_by_bytes() -> None:
    buffer, _ = table(maxsize=100, maxbytes=100, overflow="raise")
    buffer.bind(lambda fn: fn())
    buffer.hand_over(delivery(0, size=100), timeout=None)
    with pytest.raises(QueueFull, match="bytes of commands"):
        buffer.hand_over(delivery(1, size=1), timeout=None)
    assert numbers(queued(buffer)) == [0]
