"""Pipeline rules that a mutation run showed no other test would notice breaking.

Each test here pins one rule of the queue, the batcher, the sender or the hook
runner, seen through the public API (``Client``, ``Delivery``, ``stats()``,
``flush()``) and the documented clock seams. ``tools/mutate.py`` lists the
mutant each one kills.

The few reaches into internals are the helpers just below, so that a change
of structure means adapting them and nothing else.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from itertools import pairwise
from types import SimpleNamespace
from typing import Any

import pytest

from trackasync import (
    Client,
    Delivery,
    DeliveryFailed,
    Limits,
    PrivateKey,
    QueueFull,
    Request,
    Response,
    Retry,
)
from trackasync.testing import RecordingTransport, accept_all, commands_of

from .conftest import BASE_URL, IDS, NO_WAIT, PROJECT

# -- the reaches into internals ---------------------------------------------------------


class Clock:
    """A monotonic clock that moves only when told to (or when slept on)."""

    def __init__(self, start: float = 100.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


def freeze_limiter_clock(monkeypatch: pytest.MonkeyPatch) -> tuple[Clock, list[float]]:
    """Freeze the rate limiter's clock; its sleeps advance it and are recorded."""
    from trackasync import _ratelimit

    clock = Clock()
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        clock.now += seconds

    monkeypatch.setattr(_ratelimit, "time", SimpleNamespace(monotonic=clock))
    monkeypatch.setattr(_ratelimit, "_sleep", sleep)
    return clock, slept


def instant_retry_waits(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The sender's retry waits return at once; the delays asked are recorded."""
    from trackasync import _sender

    asked: list[float] = []

    async def sleep(seconds: float) -> None:
        asked.append(seconds)

    monkeypatch.setattr(_sender, "_sleep", sleep)
    return asked


def small_hook_bounds(
    monkeypatch: pytest.MonkeyPatch, *, backlog: int, concurrency: int
) -> None:
    """Shrink the hook runner's documented bounds (10,000 and 16) for a test."""
    from trackasync import _hooks

    monkeypatch.setattr(_hooks, "HOOK_BACKLOG", backlog)
    monkeypatch.setattr(_hooks, "HOOK_CONCURRENCY", concurrency)


def waiters_of(delivery: Delivery) -> int:
    """How many awaiters and callbacks a delivery still holds."""
    return len(delivery._waiters or ())


# -- helpers ----------------------------------------------------------------------------


def client(transport: Any, **options: Any) -> Client:
    options.setdefault("linger", 0.0)
    options.setdefault("retry", NO_WAIT)
    options.setdefault("rate_limit", None)
    return Client(
        BASE_URL,
        PROJECT,
        auth=PrivateKey("key", "secret"),
        transport=transport,
        **options,
    )


def numbers(transport: RecordingTransport) -> list[int]:
    """The ``n`` property of every command sent, in the order sent."""
    return [command["data"]["properties"]["n"] for command in transport.commands]


def n_of(request: Request) -> list[int]:
    return [command["data"]["properties"]["n"] for command in commands_of(request)]


def stats_add_up(c: Client) -> None:
    stats = c.stats()
    accounted = (
        stats.delivered + sum(stats.failed.values()) + stats.queued + stats.in_flight
    )
    assert stats.enqueued == accounted, stats


async def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.001)


class Gate:
    """A transport handler holding the requests that ``hold(request)`` picks."""

    def __init__(self, hold: Callable[[Request], bool] = lambda _: True) -> None:
        self.open = asyncio.Event()
        self.hold = hold

    async def __call__(self, request: Request) -> Response:
        if self.hold(request):
            await self.open.wait()
        return accept_all(request)


# -- the rate limiter, end to end -------------------------------------------------------


async def test_every_retry_waits_for_the_rate_limiter(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Seven attempts of one command at 1 request/s: each retry waits a full
    interval for its slot, as a first request would (no second ever sees two)."""
    clock, slept = freeze_limiter_clock(monkeypatch)
    instant_retry_waits(monkeypatch)
    sent_at: list[float] = []

    def answer(request: Request) -> Response:
        sent_at.append(clock.now)
        if len(sent_at) < 7:
            return Response(503, b'{"errors": ["busy"]}')
        return accept_all(request)

    patient = Retry(attempts=10, timeout=600.0, wait_initial=0.0, wait_max=0.0)
    async with client(
        RecordingTransport(answer), rate_limit=1.0, retry=patient
    ) as tracker:
        receipt = await tracker.track_and_wait(IDS, "view", {"n": 0})
    assert receipt.attempts == 7
    assert sent_at == [100.0 + n for n in range(7)]
    assert slept == [1.0] * 6


async def test_a_429_with_retry_after_holds_the_limiter_for_that_long(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A 429 saying "Retry-After: 3" pauses the limiter itself: the retry (and any
    other request) gets its slot 3 s later on the limiter's clock."""
    clock, slept = freeze_limiter_clock(monkeypatch)
    asked = instant_retry_waits(monkeypatch)
    sent_at: list[float] = []

    def answer(request: Request) -> Response:
        sent_at.append(clock.now)
        if len(sent_at) == 1:
            return Response(429, b'{"errors": ["slow down"]}', {"retry-after": "3"})
        return accept_all(request)

    retry = Retry(attempts=4, timeout=600.0, wait_initial=0.0, wait_max=0.0)
    async with client(
        RecordingTransport(answer), rate_limit=100.0, retry=retry
    ) as tracker:
        receipt = await tracker.track_and_wait(IDS, "view", {"n": 0})
        assert tracker.stats().rate_limited == 1
    assert receipt.attempts == 2
    assert asked == [3.0]  # the sender's own wait
    assert sent_at == [100.0, 103.0]  # and the limiter's pause
    assert slept == [3.0]


async def test_a_429_halves_the_pace_of_the_following_requests(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Without Retry-After, a 429 halves the rate in force: at 4 requests/s the
    requests after it leave well over the usual 0.25 s apart."""
    clock, _ = freeze_limiter_clock(monkeypatch)
    instant_retry_waits(monkeypatch)
    sent_at: list[float] = []

    def answer(request: Request) -> Response:
        sent_at.append(clock.now)
        if len(sent_at) == 1:
            return Response(429, b'{"errors": ["slow down"]}')
        return accept_all(request)

    async with client(
        RecordingTransport(answer), rate_limit=4.0, mode="single", max_in_flight=1
    ) as tracker:
        for n in range(12):
            tracker.track_nowait(IDS, "view", {"n": n})
        result = await tracker.flush(timeout=10)
    assert (result.delivered, result.pending) == (12, 0)
    gaps = [later - earlier for earlier, later in pairwise(sent_at[6:])]
    # Half the rate is 0.5 s apart; each accepted request then recovers 2 % of
    # the rate, so the gaps shrink slowly, staying well over 0.25 s.
    assert gaps
    assert all(gap > 0.3 for gap in gaps), gaps
    # And each accepted request brings the rate back up a little.
    assert all(later < earlier for earlier, later in pairwise(gaps)), gaps


# -- the queue ---------------------------------------------------------------------------


async def test_a_batch_over_the_byte_cap_gives_its_tail_back_to_the_front() -> None:
    """Six commands of ~250 bytes, 3 per batch and 600 bytes per batch: each
    batch keeps two, and the third goes first into the next batch, so the API
    sees them in the order they were queued."""
    transport = RecordingTransport()
    limits = Limits(max_command_bytes=300, max_batch_commands=3, max_batch_bytes=600)
    tracker = client(transport, linger=60.0, limits=limits, max_in_flight=1)
    async with tracker:
        for n in range(6):
            tracker.track_nowait(IDS, "view", {"n": n, "pad": "x" * 150})
        result = await tracker.flush(timeout=5)
    assert result.delivered == 6
    assert [n_of(request) for request in transport.requests] == [
        [0, 1],
        [2, 3],
        [4, 5],
    ]


async def test_producers_waiting_for_room_get_it_in_the_order_they_came() -> None:
    """With the queue full, two producers wait in track(); as room appears, the
    first to wait is the first queued."""
    gate = Gate()
    transport = RecordingTransport(gate)
    tracker = client(transport, max_queue=1, max_in_flight=1, queue_timeout=None)
    async with tracker:
        tracker.track_nowait(IDS, "view", {"n": 0})
        await wait_until(lambda: tracker.stats().in_flight == 1)
        tracker.track_nowait(IDS, "view", {"n": 1})  # the queue is now full
        first = asyncio.create_task(tracker.track(IDS, "view", {"n": 2}))
        for _ in range(3):
            await asyncio.sleep(0)
        second = asyncio.create_task(tracker.track(IDS, "view", {"n": 3}))
        for _ in range(3):
            await asyncio.sleep(0)
        assert not first.done()
        assert not second.done()
        gate.open.set()
        await asyncio.gather(first, second)
        result = await tracker.flush(timeout=5)
    assert result.pending == 0
    assert numbers(transport) == [0, 1, 2, 3]


async def test_a_newcomer_cannot_take_the_room_kept_for_a_woken_producer() -> None:
    """Room freed for a producer waiting in track() is kept for it until it runs:
    a track_nowait() tried at every turn of the loop meanwhile gets QueueFull,
    and the queue never holds more than max_queue."""
    gate = Gate()
    transport = RecordingTransport(gate)
    tracker = client(transport, max_queue=1, max_in_flight=1, queue_timeout=None)
    loop = asyncio.get_running_loop()
    seen_queued: list[int] = []
    newcomer: asyncio.Future[Delivery] = loop.create_future()

    def try_newcomer() -> None:
        seen_queued.append(tracker.stats().queued)
        try:
            delivery = tracker.track_nowait(IDS, "view", {"n": 3})
        except QueueFull:
            loop.call_soon(try_newcomer)
        else:
            newcomer.set_result(delivery)

    async with tracker:
        tracker.track_nowait(IDS, "view", {"n": 0})
        await wait_until(lambda: tracker.stats().in_flight == 1)
        tracker.track_nowait(IDS, "view", {"n": 1})
        waiting = asyncio.create_task(tracker.track(IDS, "view", {"n": 2}))
        for _ in range(3):
            await asyncio.sleep(0)
        assert not waiting.done()
        loop.call_soon(try_newcomer)
        gate.open.set()
        await asyncio.wait_for(asyncio.gather(waiting, newcomer), 5)
        result = await tracker.flush(timeout=5)
    assert result.pending == 0
    assert numbers(transport) == [0, 1, 2, 3]
    assert max(seen_queued) <= 1


async def test_room_freed_twice_before_the_producers_run_is_not_handed_out_twice() -> (
    None
):
    """Two requests end together and the batcher takes twice before any woken
    producer runs: the second take may wake only as many producers as there is
    room left beside the first's reservation, so the queue stays within max_queue."""
    gate = Gate()
    transport = RecordingTransport(gate)
    tracker = client(
        transport,
        max_queue=2,
        max_in_flight=4,
        limits=Limits(max_batch_commands=1),
        queue_timeout=None,
    )
    queued_after: list[int] = []

    async def produce(n: int) -> None:
        await tracker.track(IDS, "view", {"n": n})
        queued_after.append(tracker.stats().queued)

    async with tracker:
        for n in range(4):  # four requests held, one command each
            tracker.track_nowait(IDS, "view", {"n": n})
            await wait_until(lambda: tracker.stats().queued == 0)
        assert tracker.stats().in_flight == 4
        tracker.track_nowait(IDS, "view", {"n": 4})
        tracker.track_nowait(IDS, "view", {"n": 5})  # the queue is now full
        producers = []
        for n in range(6, 9):
            producers.append(asyncio.create_task(produce(n)))
            for _ in range(3):
                await asyncio.sleep(0)
        assert not any(task.done() for task in producers)
        gate.open.set()
        await asyncio.wait_for(asyncio.gather(*producers), 5)
        result = await tracker.flush(timeout=5)
    assert result.pending == 0
    assert max(queued_after) <= 2, queued_after
    assert sorted(numbers(transport)) == list(range(9))


# -- the batcher -------------------------------------------------------------------------


async def test_flush_sends_at_once_despite_both_lingers() -> None:
    """flush() itself makes what is queued urgent: with a 60 s linger and a 60 s
    await_linger, the commands still go now."""
    transport = RecordingTransport()
    tracker = client(transport, linger=60.0, await_linger=60.0)
    async with tracker:
        for n in range(3):
            tracker.track_nowait(IDS, "view", {"n": n})
        result = await tracker.flush(timeout=5)
        assert (result.delivered, result.failed, result.pending) == (3, 0, 0)
    assert numbers(transport) == [0, 1, 2]


async def test_flush_sends_only_what_was_queued_when_called() -> None:
    """Commands queued after flush() was called wait for their linger."""
    transport = RecordingTransport(Gate(lambda request: 0 in n_of(request)))
    gate = transport.handler
    assert isinstance(gate, Gate)
    tracker = client(transport, linger=60.0, await_linger=60.0, max_in_flight=1)
    async with tracker:
        tracker.track_nowait(IDS, "view", {"n": 0})
        flushing = asyncio.create_task(tracker.flush(timeout=5))
        await wait_until(lambda: len(transport.requests) == 1)
        later = tracker.track_nowait(IDS, "view", {"n": 1})
        gate.open.set()
        result = await flushing
        assert result.delivered == 1
        for _ in range(20):
            await asyncio.sleep(0)
        assert not later.done()
        assert len(transport.requests) == 1
        report = await tracker.aclose(timeout=5)
    assert report.delivered == 2


async def test_a_full_batch_leaves_without_waiting_for_the_linger() -> None:
    """Fifty queued commands make a full batch: it goes at once, linger or not."""
    transport = RecordingTransport()
    tracker = client(transport, linger=60.0, await_linger=60.0)
    async with tracker:
        for n in range(50):
            tracker.track_nowait(IDS, "view", {"n": n})
        await wait_until(lambda: len(transport.requests) == 1)
        assert tracker.stats().delivered == 50
    assert numbers(transport) == list(range(50))


async def test_closing_sends_what_is_queued_without_waiting_for_the_linger() -> None:
    """aclose() delivers the queued commands now, not when their linger ends."""
    transport = RecordingTransport()
    tracker = client(transport, linger=60.0, await_linger=60.0)
    async with tracker:
        for n in range(3):
            tracker.track_nowait(IDS, "view", {"n": n})
        report = await tracker.aclose(timeout=5)
    assert (report.delivered, report.undelivered) == (3, [])
    assert numbers(transport) == [0, 1, 2]


# -- the sender ---------------------------------------------------------------------------


async def test_an_internal_error_while_sending_fails_the_commands_gave_up(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A transport that raises something other than RequestError (a bug) fails the
    commands it carried "gave_up", logged, instead of leaving them in flight."""

    def broken(request: Request) -> Response:
        raise RuntimeError("a bug in a transport")

    async with client(RecordingTransport(broken)) as tracker:
        deliveries = [tracker.track_nowait(IDS, "view", {"n": n}) for n in range(3)]
        for delivery in deliveries:
            with pytest.raises(DeliveryFailed) as caught:
                await asyncio.wait_for(delivery, 5)
            assert caught.value.reason == "gave_up"
            assert "internal error: RuntimeError" in str(caught.value)
            assert caught.value.attempts == 1
        stats = tracker.stats()
        assert (stats.in_flight, stats.failed["gave_up"]) == (0, 3)
        stats_add_up(tracker)
    assert "unexpected error while delivering 3 commands" in caplog.text
    # The outcome names the exception's type, never its text.
    assert "a bug in a transport" not in str(caught.value)


# -- the on_result hook -------------------------------------------------------------------


async def test_the_hook_is_called_once_for_each_command_of_an_accepted_batch() -> None:
    """One accepted request of five commands: five hook calls, one per command."""
    seen: list[Delivery] = []
    transport = RecordingTransport()
    tracker = client(transport, linger=60.0, on_result=seen.append)
    async with tracker:
        deliveries = [tracker.track_nowait(IDS, "view", {"n": n}) for n in range(5)]
        await tracker.flush(timeout=5)
        await wait_until(lambda: len(seen) >= 5)
        for _ in range(20):
            await asyncio.sleep(0)
    assert len(transport.requests) == 1
    assert len(seen) == 5
    assert {id(d) for d in seen} == {id(d) for d in deliveries}


async def test_a_hook_parked_in_flush_lifts_the_backpressure(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A hook that calls flush() while its backlog is full and the sender waits
    for room: the sender must go on, or flush() could never return."""
    small_hook_bounds(monkeypatch, backlog=3, concurrency=1)
    transport = RecordingTransport()
    go = asyncio.Event()
    later = asyncio.Event()
    flushed: list[Any] = []
    calls = 0

    async def hook(delivery: Delivery) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            await go.wait()
            flushed.append(await tracker.flush(timeout=5))
        else:
            await later.wait()

    tracker = client(
        transport,
        max_in_flight=1,
        limits=Limits(max_batch_commands=1),
        on_result=hook,
    )
    async with tracker:
        for n in range(10):
            tracker.track_nowait(IDS, "view", {"n": n})
        # The first hook runs and holds the only hook slot; three more outcomes
        # fill the backlog and the sender stops before its fifth request.
        await wait_until(lambda: len(transport.requests) == 4)
        for _ in range(20):
            await asyncio.sleep(0)
        assert len(transport.requests) == 4
        go.set()
        await wait_until(lambda: bool(flushed), timeout=10)
        later.set()
    assert (flushed[0].delivered, flushed[0].pending) == (6, 0)
    assert numbers(transport) == list(range(10))


async def test_the_hook_backlog_reopens_once_it_drains(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Backpressure is temporary: once the slow hook ends and the backlog drains,
    the sender goes on and every command is delivered."""
    small_hook_bounds(monkeypatch, backlog=3, concurrency=1)
    transport = RecordingTransport()
    go = asyncio.Event()
    calls = 0

    async def hook(delivery: Delivery) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            await go.wait()

    tracker = client(
        transport,
        max_in_flight=1,
        limits=Limits(max_batch_commands=1),
        on_result=hook,
    )
    async with tracker:
        for n in range(10):
            tracker.track_nowait(IDS, "view", {"n": n})
        await wait_until(lambda: len(transport.requests) == 4)
        for _ in range(20):
            await asyncio.sleep(0)
        assert len(transport.requests) == 4  # held back by the full backlog
        go.set()
        result = await tracker.flush(timeout=5)
        assert (result.delivered, result.pending) == (6, 0)
        await wait_until(lambda: calls == 10)
    assert numbers(transport) == list(range(10))


async def test_a_parked_hook_does_not_hold_a_hook_slot(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With one hook slot, the hook of A waits in flush() for C, whose request
    waits for the hook of B: B's hook must run while A's is parked."""
    small_hook_bounds(monkeypatch, backlog=10_000, concurrency=1)
    gate = Gate(lambda request: 2 in n_of(request))
    transport = RecordingTransport(gate)
    flushed: list[Any] = []

    async def hook(delivery: Delivery) -> None:
        n = delivery.data()["properties"]["n"]
        if n == 0:
            flushed.append(await tracker.flush(timeout=5))
        elif n == 1:
            gate.open.set()

    tracker = client(transport, limits=Limits(max_batch_commands=1), on_result=hook)
    try:
        async with tracker:
            for n in range(3):
                tracker.track_nowait(IDS, "view", {"n": n})
            await wait_until(lambda: bool(flushed), timeout=10)
    finally:
        gate.open.set()
    assert flushed[0].pending == 0
    assert sorted(numbers(transport)) == [0, 1, 2]


async def test_hook_calls_past_twice_the_backlog_are_skipped_and_counted() -> None:
    """Drops queue hook calls where nothing can wait: up to 20,000 (twice the
    10,000 backlog, as the README says), the rest skipped and counted."""
    transport = RecordingTransport()
    calls = 0

    def hook(delivery: Delivery) -> None:
        nonlocal calls
        calls += 1

    tracker = client(
        transport, linger=60.0, max_queue=1, overflow="drop_new", on_result=hook
    )
    async with tracker:
        kept = tracker.track_nowait(IDS, "view", {"n": -1})
        for n in range(20_005):
            tracker.track_nowait(IDS, "view", {"n": n})
        stats = tracker.stats()
        assert (stats.dropped, stats.hooks_skipped) == (20_005, 5)
        await wait_until(lambda: calls == 20_000, timeout=30)
        await tracker.flush(timeout=5)
    assert kept.delivered()
    assert calls == 20_001


# -- Delivery -----------------------------------------------------------------------------


async def test_a_done_callback_on_a_settled_delivery_is_scheduled_not_called() -> None:
    """add_done_callback() on a command that already has its outcome runs the
    callback soon, in the loop, never inside the add_done_callback() call."""
    async with client(RecordingTransport()) as tracker:
        delivery = await tracker.track(IDS, "view", {"n": 0})
        await delivery
        called: list[Delivery] = []
        delivery.add_done_callback(called.append)
        assert called == []
        await asyncio.sleep(0)
        assert called == [delivery]


async def test_a_cancelled_awaiter_takes_its_waiter_away() -> None:
    """Cancelling a task that awaits a command leaves nothing of it behind on the
    command, which still gets its outcome."""
    transport = RecordingTransport()
    async with client(transport, linger=60.0, await_linger=60.0) as tracker:
        delivery = tracker.track_nowait(IDS, "view", {"n": 0})
        for _ in range(5):
            task = asyncio.create_task(_await(delivery))
            for _ in range(3):
                await asyncio.sleep(0)
            assert waiters_of(delivery) == 1
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert waiters_of(delivery) == 0
        assert not delivery.done()
        await tracker.flush(timeout=5)
    assert delivery.delivered()


async def _await(delivery: Delivery) -> None:
    await delivery
