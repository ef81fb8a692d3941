"""Tests for ``trackasync._table.CommandTable``: the queue, its overflow policies,
and the commands in flight."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from trackasync._delivery import Accepted, Delivery
from trackasync._exceptions import ClientClosed, ConfigError, DeliveryFailed, QueueFull
from trackasync._table import CommandTable as MemoryStore, Overflow

BIG = 10**9


def delivery(n: int, size: int = 10) -> Delivery:
    """A command whose body is ``size`` bytes and starts with its number."""
    body = str(n).encode().ljust(size, b" ")
    return Delivery("customers/events", body, float(n))


def numbers(items: list[Delivery]) -> list[int]:
    return [int(item.body) for item in items]


def queued(store: MemoryStore) -> list[Delivery]:
    """The commands queued, not in flight."""
    return list(store._items)


class Recorder:
    """Stands in for the ledger and the store's ``changed`` event: collects
    wake-ups (as queue lengths) and outcomes."""

    def __init__(self) -> None:
        self.ready_at: list[int] = []
        self.dropped: list[Delivery] = []
        self.outcomes: list[tuple[Delivery, str]] = []
        self.buffer: MemoryStore | None = None

    # the store's "changed" event
    def set(self) -> None:
        assert self.buffer is not None
        self.ready_at.append(len(self.buffer))

    # the ledger
    def failed(self, item: Delivery, error: DeliveryFailed) -> bool:
        if not item._settle(error):
            return False
        self.record_failed(item, error)
        return True

    def record_failed(self, item: Delivery, error: DeliveryFailed) -> None:
        if error.reason == "dropped":
            self.dropped.append(item)
        self.outcomes.append((item, error.reason))

    def delivered(self, items: list[Delivery], accepted: Accepted) -> None:
        for item in items:
            item._settle(accepted)
            self.outcomes.append((item, "delivered"))


Make = Callable[..., tuple[MemoryStore, Recorder]]


@pytest.fixture
def make() -> Make:
    """A factory of buffers wired to a Recorder."""

    def build(
        maxsize: int = 100,
        overflow: Overflow = "raise",
        batch_count: int = 50,
        batch_bytes: int = BIG,
    ) -> tuple[MemoryStore, Recorder]:
        recorder = Recorder()
        buffer = MemoryStore(
            maxsize,
            overflow,
            batch_count=batch_count,
            batch_bytes=batch_bytes,
            ledger=recorder,  # type: ignore[arg-type]
        )
        buffer.wake = recorder.set
        recorder.buffer = buffer
        return buffer, recorder

    return build


async def settle() -> None:
    """Let every ready task run until nothing changes (no real waiting)."""
    for _ in range(10):
        await asyncio.sleep(0)


# -- construction ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("maxsize", "overflow"), [(0, "raise"), (-1, "wait"), (1.5, "raise"), (5, "block")]
)
def test_bad_settings_raise_config_error(maxsize: Any, overflow: Any) -> None:
    """A non-positive queue size or an unknown overflow policy is refused."""
    with pytest.raises(ConfigError):
        MemoryStore(
            maxsize,
            overflow,
            batch_count=1,
            batch_bytes=1,
            ledger=Recorder(),  # type: ignore[arg-type]
        )


# -- order and take -------------------------------------------------------------------


def test_fifo_order(make: Make) -> None:
    """Commands come out in the order they went in."""
    buffer, _ = make()
    for n in range(6):
        buffer.offer(delivery(n))
    assert buffer.oldest() is not None
    assert int(buffer.oldest().body) == 0  # type: ignore[union-attr]
    assert numbers(queued(buffer)) == [0, 1, 2, 3, 4, 5]
    assert numbers(buffer.take(4, BIG)) == [0, 1, 2, 3]
    assert numbers(buffer.take(4, BIG)) == [4, 5]
    assert buffer.take(4, BIG) == []
    assert buffer.oldest() is None


def test_take_respects_max_count(make: Make) -> None:
    """take() returns at most max_count commands and leaves the rest."""
    buffer, _ = make()
    for n in range(5):
        buffer.offer(delivery(n))
    assert numbers(buffer.take(2, BIG)) == [0, 1]
    assert len(buffer) == 3
    assert buffer.nbytes == 30


def test_take_respects_max_bytes(make: Make) -> None:
    """take() stops before the command that would pass max_bytes."""
    buffer, _ = make()
    for n in range(5):
        buffer.offer(delivery(n, size=10))
    assert numbers(buffer.take(50, 29)) == [0, 1]
    assert numbers(buffer.take(50, 30)) == [2, 3, 4]  # exactly max_bytes fits
    assert buffer.nbytes == 0


def test_take_always_takes_the_first(make: Make) -> None:
    """A first command larger than max_bytes is still taken, alone."""
    buffer, _ = make()
    buffer.offer(delivery(0, size=100))
    buffer.offer(delivery(1, size=1))
    assert numbers(buffer.take(50, 10)) == [0]
    assert numbers(queued(buffer)) == [1]
    assert buffer.nbytes == 1


def test_in_flight_is_held_until_settled(make: Make) -> None:
    """take() moves commands to in flight; accept/fail settle and release them;
    pending() lists in flight then queued, and is a copy."""
    buffer, recorder = make()
    items = [delivery(n) for n in range(5)]
    for item in items:
        buffer.offer(item)
    taken = buffer.take(3, BIG)
    assert (len(buffer), buffer.in_flight) == (2, 3)
    assert buffer.pending() == items
    buffer.pending().clear()
    assert buffer.in_flight == 3
    buffer.settle(taken[:2], Accepted(200, None, 0.0))
    assert (len(buffer), buffer.in_flight) == (2, 1)
    buffer.fail(taken[2], DeliveryFailed("rejected", "no"))
    assert (len(buffer), buffer.in_flight) == (2, 0)
    assert recorder.outcomes == [
        (items[0], "delivered"),
        (items[1], "delivered"),
        (items[2], "rejected"),
    ]


def test_close_settles_everything_closed(make: Make) -> None:
    """close() fails every queued and in-flight command "closed", in flight
    first, empties the store and refuses more."""
    buffer, recorder = make()
    for n in range(3):
        buffer.offer(delivery(n, size=7))
    buffer.take(1, BIG)
    assert buffer.nbytes == 14
    assert numbers(buffer.close(keep=False)) == [0, 1, 2]
    assert (len(buffer), buffer.in_flight, buffer.nbytes) == (0, 0, 0)
    assert [reason for _, reason in recorder.outcomes] == ["closed"] * 3
    assert buffer.closed
    assert buffer.close(keep=True) == []


# -- ready and on_ready ---------------------------------------------------------------


def test_ready_by_count(make: Make) -> None:
    """ready() turns true when batch_count commands are queued."""
    buffer, _ = make(batch_count=3)
    buffer.offer(delivery(0))
    buffer.offer(delivery(1))
    assert not buffer.ready()
    buffer.offer(delivery(2))
    assert buffer.ready()
    buffer.take(1, BIG)
    assert not buffer.ready()


def test_ready_by_bytes(make: Make) -> None:
    """ready() turns true when batch_bytes bytes are queued."""
    buffer, _ = make(batch_bytes=25)
    buffer.offer(delivery(0, size=10))
    buffer.offer(delivery(1, size=10))
    assert not buffer.ready()
    buffer.offer(delivery(2, size=5))
    assert buffer.ready()  # exactly 25 bytes


def test_on_ready_on_first_command_and_full_batch(make: Make) -> None:
    """on_ready fires for the first command and when a batch's count is reached."""
    buffer, recorder = make(batch_count=3)
    for n in range(7):
        buffer.offer(delivery(n))
    assert recorder.ready_at == [1, 3]
    buffer.take(50, BIG)
    buffer.offer(delivery(7))
    assert recorder.ready_at == [1, 3, 1]


def test_on_ready_when_batch_bytes_are_reached(make: Make) -> None:
    """on_ready fires when the queued bytes reach batch_bytes, not again for
    each command after (the batcher only waits while the queue is not ready),
    and again each time they reach it anew."""
    buffer, recorder = make(batch_bytes=25)
    for n in range(5):
        buffer.offer(delivery(n, size=10))
    assert recorder.ready_at == [1, 3]
    buffer.take(3, BIG)  # 20 bytes left: not ready
    assert not buffer.ready()
    buffer.offer(delivery(5, size=10))
    assert recorder.ready_at == [1, 3, 3]
    buffer.take(1, BIG)
    buffer.take(1, BIG)  # 10 bytes left
    buffer.offer(delivery(6, size=30))  # one command past the mark on its own
    assert recorder.ready_at == [1, 3, 3, 2]


async def test_on_ready_from_put(make: Make) -> None:
    """put() signals on_ready at the same moments as offer()."""
    buffer, recorder = make(overflow="wait", batch_count=2)
    for n in range(3):
        await buffer.put(delivery(n), timeout=None)
    assert recorder.ready_at == [1, 2]


# -- overflow policies -----------------------------------------------------------------


async def test_raise_policy(make: Make) -> None:
    """Under "raise" a full queue refuses the new command and queues nothing."""
    buffer, recorder = make(maxsize=2, overflow="raise")
    buffer.offer(delivery(0))
    buffer.offer(delivery(1))
    with pytest.raises(QueueFull):
        buffer.offer(delivery(2))
    with pytest.raises(QueueFull):
        await buffer.put(delivery(3), timeout=1.0)
    assert numbers(queued(buffer)) == [0, 1]
    assert recorder.dropped == []
    assert buffer.enqueued == 2


async def test_drop_new_policy(make: Make) -> None:
    """Under "drop_new" a full queue hands the new command to on_drop."""
    buffer, recorder = make(maxsize=2, overflow="drop_new")
    first, second, third, fourth = (delivery(n) for n in range(4))
    buffer.offer(first)
    buffer.offer(second)
    buffer.offer(third)
    await buffer.put(fourth, timeout=1.0)
    assert recorder.dropped == [third, fourth]
    assert queued(buffer) == [first, second]
    assert buffer.nbytes == 20
    assert buffer.enqueued == 4


async def test_drop_old_policy(make: Make) -> None:
    """Under "drop_old" the oldest command goes to on_drop and the new one is queued."""
    buffer, recorder = make(maxsize=2, overflow="drop_old")
    items = [delivery(0, size=5), delivery(1, size=6), delivery(2, size=7)]
    for item in items:
        buffer.offer(item)
    assert recorder.dropped == [items[0]]
    assert queued(buffer) == [items[1], items[2]]
    assert buffer.nbytes == 13
    last = delivery(3, size=8)
    await buffer.put(last, timeout=1.0)
    assert recorder.dropped == [items[0], items[1]]
    assert queued(buffer) == [items[2], last]
    assert buffer.nbytes == 15
    assert buffer.enqueued == 4


def test_wait_policy_offer_raises_when_full(make: Make) -> None:
    """Under "wait", offer() cannot wait, so a full queue raises QueueFull."""
    buffer, recorder = make(maxsize=1, overflow="wait")
    buffer.offer(delivery(0))
    with pytest.raises(QueueFull):
        buffer.offer(delivery(1))
    assert recorder.dropped == []
    assert buffer.enqueued == 1


async def test_wait_policy_put_gets_room_from_take(make: Make) -> None:
    """A waiting put() is queued as soon as take() frees a slot."""
    buffer, recorder = make(maxsize=2, overflow="wait")
    buffer.offer(delivery(0))
    buffer.offer(delivery(1))
    waiting = asyncio.create_task(buffer.put(delivery(2), timeout=None))
    await settle()
    assert not waiting.done()
    assert numbers(queued(buffer)) == [0, 1]
    assert numbers(buffer.take(1, BIG)) == [0]
    await asyncio.wait_for(waiting, 1.0)
    assert numbers(queued(buffer)) == [1, 2]
    assert buffer.enqueued == 3
    assert recorder.dropped == []


async def test_wait_policy_putters_are_served_in_order(make: Make) -> None:
    """Several waiting put() calls get room in the order they started waiting."""
    buffer, _ = make(maxsize=1, overflow="wait")
    buffer.offer(delivery(0))
    tasks = []
    for n in (1, 2, 3):
        tasks.append(asyncio.create_task(buffer.put(delivery(n), timeout=None)))
        await settle()
    out: list[int] = []
    for _ in range(3):
        out += numbers(buffer.take(1, BIG))
        await settle()
    out += numbers(buffer.take(1, BIG))
    await asyncio.gather(*tasks)
    assert out == [0, 1, 2, 3]


async def test_wait_policy_woken_putter_keeps_its_slot(make: Make) -> None:
    """A put() made right after take() woke a waiter does not take that slot."""
    buffer, _ = make(maxsize=1, overflow="wait")
    buffer.offer(delivery(0))
    first = asyncio.create_task(buffer.put(delivery(1), timeout=None))
    await settle()
    buffer.take(1, BIG)  # wakes the waiter, which has not resumed yet
    with pytest.raises(QueueFull):
        buffer.offer(delivery(8))
    with pytest.raises(QueueFull):
        await buffer.put(delivery(9), timeout=0)  # from this very task, at once
    await asyncio.wait_for(first, 1.0)
    assert numbers(queued(buffer)) == [1]


async def test_wait_policy_newcomer_queues_behind_waiters(make: Make) -> None:
    """A put() arriving while others wait is served after them, not before."""
    buffer, _ = make(maxsize=1, overflow="wait")
    buffer.offer(delivery(0))
    early = [asyncio.create_task(buffer.put(delivery(n), timeout=None)) for n in (1, 2)]
    await settle()
    buffer.take(1, BIG)  # room for the first waiter only
    late = asyncio.create_task(buffer.put(delivery(3), timeout=None))
    out: list[int] = []
    for _ in range(3):
        await settle()
        out += numbers(buffer.take(1, BIG))
    await asyncio.gather(*early, late)
    assert out == [1, 2, 3]


async def test_offer_raises_while_putters_wait(make: Make) -> None:
    """With put() calls waiting, offer() raises even if a slot is free."""
    buffer, _ = make(maxsize=2, overflow="wait")
    buffer.offer(delivery(0))
    buffer.offer(delivery(1))
    tasks = [asyncio.create_task(buffer.put(delivery(n), timeout=None)) for n in (2, 3)]
    await settle()
    buffer.take(1, BIG)  # one slot for the first waiter; the second still waits
    assert len(buffer) == 1
    with pytest.raises(QueueFull):
        buffer.offer(delivery(9))
    await settle()
    assert numbers(queued(buffer)) == [1, 2]
    buffer.take(1, BIG)
    await asyncio.gather(*tasks)
    assert numbers(queued(buffer)) == [2, 3]


async def test_wait_policy_put_times_out(make: Make) -> None:
    """A put() that finds no room within its timeout raises QueueFull, queuing nothing."""
    buffer, _ = make(maxsize=1, overflow="wait")
    buffer.offer(delivery(0))
    with pytest.raises(QueueFull, match="nothing was queued"):
        await buffer.put(delivery(1), timeout=0.002)
    assert numbers(queued(buffer)) == [0]
    assert buffer.enqueued == 1
    # The timed-out caller left no waiter behind: once there is room, offer works.
    buffer.take(1, BIG)
    buffer.offer(delivery(2))
    assert numbers(queued(buffer)) == [2]


async def test_wait_policy_zero_timeout_fails_at_once(make: Make) -> None:
    """put(timeout=0) on a full queue raises QueueFull without waiting."""
    buffer, _ = make(maxsize=1, overflow="wait")
    buffer.offer(delivery(0))
    with pytest.raises(QueueFull):
        await buffer.put(delivery(1), timeout=0)
    assert len(buffer) == 1


async def test_cancelled_putter_is_forgotten(make: Make) -> None:
    """Cancelling a waiting put() queues nothing and lets the next waiter in."""
    buffer, _ = make(maxsize=1, overflow="wait")
    buffer.offer(delivery(0))
    cancelled = asyncio.create_task(buffer.put(delivery(1), timeout=None))
    await settle()
    waiting = asyncio.create_task(buffer.put(delivery(2), timeout=None))
    await settle()
    cancelled.cancel()
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    buffer.take(1, BIG)
    await asyncio.wait_for(waiting, 1.0)
    assert numbers(queued(buffer)) == [2]


async def test_woken_then_cancelled_putter_passes_the_slot_on(make: Make) -> None:
    """A putter cancelled after it was woken hands its slot to the next waiter."""
    buffer, _ = make(maxsize=1, overflow="wait")
    buffer.offer(delivery(0))
    first = asyncio.create_task(buffer.put(delivery(1), timeout=None))
    await settle()
    second = asyncio.create_task(buffer.put(delivery(2), timeout=None))
    await settle()
    buffer.take(1, BIG)  # wakes the first waiter only
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    await asyncio.wait_for(second, 1.0)
    assert numbers(queued(buffer)) == [2]


async def test_close_wakes_putters_with_client_closed(make: Make) -> None:
    """close() makes every waiting put() raise ClientClosed without queuing."""
    buffer, _ = make(maxsize=1, overflow="wait")
    buffer.offer(delivery(0))
    tasks = [asyncio.create_task(buffer.put(delivery(n), timeout=None)) for n in (1, 2)]
    await settle()
    buffer.stop_intake()
    assert buffer.closed
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert all(isinstance(result, ClientClosed) for result in results)
    assert numbers(queued(buffer)) == [0]
    assert buffer.enqueued == 1


async def test_close_after_wake_still_refuses(make: Make) -> None:
    """A putter woken for room but resumed after close() raises ClientClosed."""
    buffer, _ = make(maxsize=1, overflow="wait")
    buffer.offer(delivery(0))
    task = asyncio.create_task(buffer.put(delivery(1), timeout=None))
    await settle()
    buffer.take(1, BIG)
    buffer.stop_intake()
    with pytest.raises(ClientClosed):
        await task
    assert len(buffer) == 0


def test_accepted_counts_queued_and_dropped(make: Make) -> None:
    """accepted counts every command taken in, drops included, refusals not."""
    buffer, _ = make(maxsize=1, overflow="drop_old")
    for n in range(5):
        buffer.offer(delivery(n))
    assert buffer.enqueued == 5
    buffer.take(1, BIG)
    assert buffer.enqueued == 5
