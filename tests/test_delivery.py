"""Tests for ``trackasync._delivery``: one queued command and its outcome."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import warnings
import weakref
from typing import Any

import pytest

from trackasync._delivery import Accepted, Delivery, Receipt
from trackasync._exceptions import DeliveryFailed

BODY = b'{"customer_ids":{"registered":"ann"},"event_type":"view","timestamp":1.5,"properties":{"n":1}}'


def make(enqueued_at: float = 10.0) -> Delivery:
    return Delivery("customers/events", BODY, enqueued_at)


def failure(reason: Any = "rejected") -> DeliveryFailed:
    return DeliveryFailed(reason, "refused", errors=["bad"], status=200, attempts=1)


async def settle() -> None:
    """Let every ready task run (no real waiting)."""
    for _ in range(5):
        await asyncio.sleep(0)


def test_new_delivery_is_pending() -> None:
    """A fresh delivery is not done, and asking for its outcome raises."""
    delivery = make()
    assert not delivery.done()
    assert not delivery.delivered()
    assert delivery.attempts == 0
    with pytest.raises(asyncio.InvalidStateError):
        delivery.result()
    with pytest.raises(asyncio.InvalidStateError):
        delivery.exception()
    assert repr(delivery) == "<Delivery customers/events pending attempts=0>"


def test_deliveries_compare_by_identity() -> None:
    """Two commands with the same bytes are still two deliveries (sets, lists)."""
    first, second = make(), make()
    assert first != second
    assert first == first
    assert len({first, second}) == 2
    assert [first].count(second) == 0


def test_a_queued_delivery_is_not_tracked_by_the_gc() -> None:
    """A pending delivery holds plain values, so a full queue adds no GC work."""
    delivery = make()
    assert not gc.is_tracked(delivery)
    delivery.attempts += 1
    assert not gc.is_tracked(delivery)


def test_a_delivered_delivery_stays_untracked_by_the_gc() -> None:
    """Storing an accepting outcome does not make the collector track it again,
    so a backlog of delivered commands kept by an application costs no GC time."""
    accepted = Accepted(200, "req-1", 11.0)
    deliveries = [make() for _ in range(3)]
    for delivery in deliveries:
        assert delivery._settle(accepted)
    assert not gc.is_tracked(accepted)
    assert not any(gc.is_tracked(delivery) for delivery in deliveries)
    assert deliveries[0].result().request_id == "req-1"


def test_a_failed_delivery_is_tracked_so_cycles_are_collected() -> None:
    """A failure is an exception: raised from ``result()`` it holds a traceback,
    and so the caller's frame, and the delivery in it. The delivery is tracked,
    so that cycle is collected."""

    class Marker:
        pass

    def fail_and_drop() -> weakref.ref[Marker]:
        marker = Marker()
        delivery = make()
        delivery._settle(failure())
        assert gc.is_tracked(delivery)
        with contextlib.suppress(DeliveryFailed):
            # The failure's traceback now holds this frame, marker included.
            delivery.result()
        return weakref.ref(marker)

    ref = fail_and_drop()
    gc.collect()
    assert ref() is None


def test_data_decodes_the_body() -> None:
    """data() returns the decoded command body."""
    assert make().data() == {
        "customer_ids": {"registered": "ann"},
        "event_type": "view",
        "timestamp": 1.5,
        "properties": {"n": 1},
    }


def test_succeed_gives_a_receipt() -> None:
    """After it settles as accepted, result() is a Receipt built from the accepting answer."""
    delivery = make(enqueued_at=10.0)
    delivery.attempts = 2
    assert delivery._settle(Accepted(200, "req-1", 10.75)) is True
    assert delivery.done()
    assert delivery.delivered()
    assert delivery.exception() is None
    assert delivery.result() == Receipt(
        attempts=2, status=200, request_id="req-1", latency=0.75
    )
    assert repr(delivery) == "<Delivery customers/events delivered attempts=2>"


def test_latency_is_never_negative() -> None:
    """A clock that went backwards gives a latency of 0, not a negative one."""
    delivery = make(enqueued_at=10.0)
    delivery._settle(Accepted(200, None, 9.0))
    assert delivery.result().latency == 0.0


def test_fail_raises_delivery_failed() -> None:
    """After it settles as failed, result() raises that DeliveryFailed and exception() returns it."""
    delivery = make()
    error = failure()
    assert delivery._settle(error) is True
    assert delivery.done()
    assert not delivery.delivered()
    assert delivery.exception() is error
    with pytest.raises(DeliveryFailed) as info:
        delivery.result()
    assert info.value is error
    assert repr(delivery).startswith("<Delivery customers/events failed")


def test_first_outcome_wins() -> None:
    """Once settled, later _settle calls change nothing and return False."""
    delivered = make()
    delivered._settle(Accepted(200, "a", 11.0))
    assert delivered._settle(failure()) is False
    assert delivered._settle(Accepted(500, "b", 12.0)) is False
    assert delivered.result().request_id == "a"

    failed = make()
    error = failure("gave_up")
    failed._settle(error)
    assert failed._settle(Accepted(200, "a", 11.0)) is False
    assert failed._settle(failure("closed")) is False
    assert failed.exception() is error


async def test_await_returns_the_receipt() -> None:
    """Awaiting a delivery waits for the accepting outcome and returns the Receipt."""
    delivery = make()
    task = asyncio.create_task(_await(delivery))
    await settle()
    assert not task.done()
    delivery._settle(Accepted(202, "req-9", 11.0))
    receipt = await asyncio.wait_for(task, 1.0)
    assert receipt == Receipt(attempts=0, status=202, request_id="req-9", latency=1.0)


async def test_await_raises_after_fail() -> None:
    """Awaiting a delivery raises its DeliveryFailed once it settles as failed."""
    delivery = make()
    task = asyncio.create_task(_await(delivery))
    await settle()
    error = failure()
    delivery._settle(error)
    with pytest.raises(DeliveryFailed) as info:
        await asyncio.wait_for(task, 1.0)
    assert info.value is error
    assert info.value.reason == "rejected"


async def test_await_after_outcome_returns_at_once() -> None:
    """Awaiting an already settled delivery does not wait."""
    delivered = make()
    delivered._settle(Accepted(200, None, 10.0))
    assert (await delivered).status == 200
    failed = make()
    failed._settle(failure())
    with pytest.raises(DeliveryFailed):
        await failed


async def test_several_awaiters_all_get_the_outcome() -> None:
    """Every concurrent awaiter receives the same receipt."""
    delivery = make()
    tasks = [asyncio.create_task(_await(delivery)) for _ in range(5)]
    await settle()
    delivery._settle(Accepted(200, "req-2", 12.0))
    receipts = await asyncio.wait_for(asyncio.gather(*tasks), 1.0)
    assert len(set(receipts)) == 1
    assert receipts[0].request_id == "req-2"


async def test_several_awaiters_all_see_the_failure() -> None:
    """Every concurrent awaiter gets the same DeliveryFailed."""
    delivery = make()
    tasks = [asyncio.create_task(_await(delivery)) for _ in range(3)]
    await settle()
    error = failure("closed")
    delivery._settle(error)
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert all(result is error for result in results)


async def test_cancelled_awaiter_does_not_affect_the_delivery() -> None:
    """Cancelling one awaiter leaves the delivery pending and other awaiters waiting."""
    delivery = make()
    cancelled = asyncio.create_task(_await(delivery))
    kept = asyncio.create_task(_await(delivery))
    await settle()
    cancelled.cancel()
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    assert not delivery.done()
    assert not kept.done()
    delivery._settle(Accepted(200, "req-3", 10.5))
    receipt = await asyncio.wait_for(kept, 1.0)
    assert receipt.request_id == "req-3"
    assert delivery.delivered()


async def test_awaiting_with_timeout_can_be_retried() -> None:
    """A caller that times out waiting can await the same delivery again."""
    delivery = make()
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(_await(delivery), 0.001)
    assert not delivery.done()
    delivery._settle(failure("gave_up"))
    with pytest.raises(DeliveryFailed) as info:
        await delivery
    assert info.value.reason == "gave_up"


async def test_never_awaited_delivery_produces_no_warning() -> None:
    """Deliveries settled but never awaited leave no warning or loop error behind."""
    loop = asyncio.get_running_loop()
    reported: list[dict[str, Any]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: reported.append(context))
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            failed = make()
            failed._settle(failure())
            delivered = make()
            delivered._settle(Accepted(200, None, 11.0))
            pending = make()
            # An awaiter that was cancelled before the outcome: still no warning.
            waiter = asyncio.create_task(_await(failed_later := make()))
            await settle()
            waiter.cancel()
            await asyncio.gather(waiter, return_exceptions=True)
            failed_later._settle(failure())
            del failed, delivered, pending, waiter, failed_later
            gc.collect()
            await settle()
        assert caught == []
        assert reported == []
    finally:
        loop.set_exception_handler(previous)


async def _await(delivery: Delivery) -> Receipt:
    return await delivery


def test_done_callbacks_run_once_in_order_at_settle(caplog):
    """add_done_callback: before settle it waits; after, it runs at once; raising is logged."""
    seen: list[tuple[str, object]] = []
    delivery = Delivery("customers/events", b"{}", 0.0)
    delivery.add_done_callback(lambda d: seen.append(("first", d)))

    def boom(d):
        raise RuntimeError("hook bug")

    delivery.add_done_callback(boom)
    delivery.add_done_callback(lambda d: seen.append(("third", d)))
    assert seen == []
    assert delivery._settle(Accepted(200, "rid", 1.0))
    assert seen == [("first", delivery), ("third", delivery)]
    assert "done callback raised" in caplog.text
    assert not delivery._settle(Accepted(200, "rid", 2.0))
    assert len(seen) == 2
    delivery.add_done_callback(lambda d: seen.append(("late", d)))
    assert seen[-1] == ("late", delivery)


def test_a_failures_twin_is_equal_and_independent() -> None:
    """Failures made per command during an outage are copies of one template:
    each is its own object, with the template's text and fields, and raising
    one leaves the others' tracebacks alone."""
    from trackasync import DeliveryFailed

    template = DeliveryFailed("dropped", "the queue was full", attempts=0)
    first, second = template._twin(), template._twin()
    assert first is not second
    assert first is not template
    for twin in (first, second):
        assert isinstance(twin, DeliveryFailed)
        assert str(twin) == "the queue was full"
        assert (twin.reason, twin.errors, twin.status, twin.attempts) == (
            "dropped",
            (),
            None,
            0,
        )
        assert (twin.request_id, twin.error, twin.__cause__) == (None, None, None)
    first.attempts = 3
    assert second.attempts == 0
    assert template.attempts == 0
    try:
        raise first
    except DeliveryFailed:
        pass
    assert first.__traceback__ is not None
    assert second.__traceback__ is None
