"""SyncClient intake rules that a mutation run showed no other test would notice.

The one reach into internals is the helper just below.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from trackasync import ClientStateError, DeliveryFailed, SyncClient

from ._fake_thread import ThreadedFake, threaded_fake

IDS = {"registered": "ann@example.com"}


def slow_liveness_poll(monkeypatch: pytest.MonkeyPatch, seconds: float) -> None:
    """Make the blocked producer's safety poll (0.2 s) far longer than the test."""
    from trackasync import _sync

    monkeypatch.setattr(_sync, "_LIVENESS_POLL", seconds)


@pytest.fixture
def fake() -> Iterator[ThreadedFake]:
    with threaded_fake() as server:
        yield server


@pytest.fixture
def make(fake: ThreadedFake) -> Iterator[Any]:
    made: list[SyncClient] = []

    def build(**options: Any) -> SyncClient:
        options.setdefault("linger", 0.0)
        client = SyncClient(**fake.client_kwargs(), **options)
        made.append(client)
        return client

    yield build
    for client in made:
        with contextlib.suppress(ClientStateError):
            client.close(timeout=5)


def test_a_freed_slot_wakes_the_blocked_producer_at_once(
    make: Any, fake: ThreadedFake, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under "wait", room freed when queued commands leave for a request wakes
    the thread waiting for it then, not at some later poll (a minute away here)."""
    slow_liveness_poll(monkeypatch, 60.0)
    fake.call(lambda: setattr(fake.api, "response_delay", 0.3))
    client = make(max_queue=1, overflow="wait", queue_timeout=60.0, max_in_flight=1)
    first = client.track({"registered": "a"}, "page")
    deadline = time.monotonic() + 10
    while client.stats().in_flight < 1:  # the only request slot is now busy
        assert time.monotonic() < deadline
        time.sleep(0.005)
    second = client.track({"registered": "b"}, "page")  # the queue is full now
    handles: list[Any] = []
    producer = threading.Thread(
        target=lambda: handles.append(client.track({"registered": "c"}, "page"))
    )
    producer.start()  # it waits until "b" leaves the queue, after "a"'s answer
    # Generous for a loaded machine, far under the poll.
    producer.join(10)
    assert not producer.is_alive(), "the producer was not woken when room freed"
    assert first.done()
    assert second.result(timeout=5).status == 200
    assert handles[0].result(timeout=5).status == 200


def test_a_loop_that_falls_behind_drops_at_the_call(make: Any) -> None:
    """Under "drop_new", commands handed over while the client's thread is busy
    queue up to max_queue; the rest fail "dropped" at once, counted in stats()."""
    client = make(max_queue=2, overflow="drop_new")
    busy = threading.Event()
    release = threading.Event()

    def hold_the_loop(_: Any) -> None:
        busy.set()
        release.wait(10)

    client.track({"registered": "a"}, "page").add_done_callback(hold_the_loop)
    assert busy.wait(10)
    try:
        handles = [client.track({"registered": f"u{n}"}, "page") for n in range(5)]
        dropped = handles[2:]
        assert all(handle.done() for handle in dropped)
        for handle in dropped:
            failure = handle.exception(timeout=0)
            assert isinstance(failure, DeliveryFailed)
            assert failure.reason == "dropped"
    finally:
        release.set()
    for handle in handles[:2]:
        assert handle.result(timeout=5).status == 200
    stats = client.stats()
    assert (stats.enqueued, stats.delivered, stats.dropped) == (6, 3, 3)
