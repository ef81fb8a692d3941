"""SyncClient against the fake Tracking API served from another thread."""

from __future__ import annotations

import contextlib
import gc
import logging
import sys
import threading
import time
import types
from collections.abc import Iterator
from typing import Any

import pytest

from trackasync import (
    ClientClosed,
    ClientStateError,
    ConfigError,
    DeliveryFailed,
    InvalidEvent,
    PayloadTooLarge,
    QueueFull,
    Receipt,
    SyncClient,
    SyncDelivery,
)
from trackasync.testing import RecordingTransport

from ._fake_thread import ThreadedFake, threaded_fake

IDS = {"registered": "ann@example.com"}


@pytest.fixture
def fake() -> Iterator[ThreadedFake]:
    with threaded_fake() as server:
        yield server


@pytest.fixture
def make(fake: ThreadedFake) -> Iterator[Any]:
    made: list[SyncClient] = []

    def build(**options: Any) -> SyncClient:
        options.setdefault("linger", 0.01)
        client = SyncClient(**fake.client_kwargs(), **options)
        made.append(client)
        return client

    yield build
    for client in made:
        # A test may have killed the client's thread on purpose.
        with contextlib.suppress(ClientStateError):
            client.close(timeout=5)


def slow(fake: ThreadedFake, seconds: float) -> None:
    fake.call(lambda: setattr(fake.api, "response_delay", seconds))


def test_tracks_from_many_threads_and_delivers_everything(
    fake: ThreadedFake, make: Any
) -> None:
    client = make()
    handles: list[SyncDelivery] = []
    lock = threading.Lock()

    def worker(n: int) -> None:
        for i in range(50):
            handle = client.track({"registered": f"t{n}-{i}"}, "page", {"i": i})
            with lock:
                handles.append(handle)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    receipts = [handle.result(timeout=10) for handle in handles]
    assert all(isinstance(r, Receipt) and r.status == 200 for r in receipts)
    assert fake.event_count == 400
    stats = client.stats()
    assert (stats.enqueued, stats.delivered) == (400, 400)


def test_invalid_input_raises_in_the_callers_thread(
    fake: ThreadedFake, make: Any
) -> None:
    client = make()
    with pytest.raises(InvalidEvent):
        client.track({}, "page")
    with pytest.raises(InvalidEvent):
        client.update_customer(IDS, {"bad": object()})
    with pytest.raises(PayloadTooLarge):
        client.track(IDS, "page", {"blob": "x" * 20_000})
    client.track(IDS, "page").result(timeout=5)
    assert client.stats().enqueued == 1
    assert fake.event_count == 1


def test_update_customer_and_track_and_wait(fake: ThreadedFake, make: Any) -> None:
    client = make()
    client.update_customer(IDS, {"tier": "gold"}).result(timeout=5)
    receipt = client.track_and_wait(IDS, "purchase", {"price": 3}, timeout=5)
    assert receipt.status == 200
    assert fake.call(lambda: fake.api.customer(IDS)) == {"tier": "gold"}
    assert [e.event_type for e in fake.events()] == ["purchase"]


def test_rejected_command_raises_delivery_failed(fake: ThreadedFake, make: Any) -> None:
    fake.call(
        lambda: fake.api.reject_commands(
            lambda _name, data: data.get("event_type") == "x"
        )
    )
    client = make()
    with pytest.raises(DeliveryFailed) as info:
        client.track_and_wait(IDS, "x", timeout=5)
    assert info.value.reason == "rejected"
    handle = client.track(IDS, "x")
    failure = handle.exception(timeout=5)
    assert failure is not None
    assert failure.reason == "rejected"


def test_result_timeout_leaves_the_command_queued(
    fake: ThreadedFake, make: Any
) -> None:
    slow(fake, 0.5)
    client = make()
    handle = client.track(IDS, "page")
    with pytest.raises(TimeoutError):
        handle.result(timeout=0.05)
    assert not handle.done()
    assert handle.result(timeout=5).status == 200


def test_raise_policy_answers_full_at_the_call(fake: ThreadedFake, make: Any) -> None:
    slow(fake, 0.5)
    client = make(max_queue=5, overflow="raise")
    handles = [client.track({"registered": f"u{i}"}, "page") for i in range(5)]
    with pytest.raises(QueueFull):
        client.track(IDS, "page")
    for handle in handles:
        handle.result(timeout=5)
    # Room again once those are settled.
    client.track(IDS, "page").result(timeout=5)
    assert fake.event_count == 6


def _fill(client: SyncClient, fake: ThreadedFake) -> None:
    """One command in flight (the only request slot busy), then two queued:
    a queue of 2 is full."""
    client.track({"registered": "a"}, "page")
    deadline = time.monotonic() + 5
    while client.stats().in_flight < 1:
        assert time.monotonic() < deadline, "the first command was never sent"
        time.sleep(0.005)
    client.track({"registered": "b"}, "page")
    client.track({"registered": "c"}, "page")


def test_wait_policy_blocks_the_thread_then_times_out(
    fake: ThreadedFake, make: Any
) -> None:
    slow(fake, 1.0)
    client = make(max_queue=2, overflow="wait", queue_timeout=0.1, max_in_flight=1)
    _fill(client, fake)
    start = time.monotonic()
    with pytest.raises(QueueFull):
        client.track(IDS, "page")
    assert 0.08 <= time.monotonic() - start < 3.0
    assert client.stats().enqueued == 3


def test_wait_policy_resumes_when_room_frees(fake: ThreadedFake, make: Any) -> None:
    slow(fake, 0.3)
    client = make(max_queue=2, overflow="wait", queue_timeout=5, max_in_flight=1)
    _fill(client, fake)
    start = time.monotonic()
    fourth = client.track({"registered": "d"}, "page")  # waits for the first answer
    # Room came when the queued commands left for the next request, after the
    # first answer; the wake-up came with it, not at a polling interval.
    assert client.stats().delivered >= 1
    assert time.monotonic() - start >= 0.1
    fourth.result(timeout=5)
    assert fake.event_count == 4


def test_wait_policy_never_blocks_the_clients_own_thread(
    fake: ThreadedFake, make: Any
) -> None:
    slow(fake, 0.3)
    client = make(max_queue=1, overflow="wait", queue_timeout=5)
    raised: list[BaseException] = []
    finished = threading.Event()

    def callback(_: SyncDelivery) -> None:
        try:
            client.track({"registered": "b"}, "page")
            client.track({"registered": "c"}, "page")  # full: no room, no wait
        except QueueFull as exc:
            raised.append(exc)
        finished.set()

    client.track({"registered": "a"}, "page").add_done_callback(callback)
    assert finished.wait(5)
    assert len(raised) == 1


def test_close_wakes_a_thread_waiting_for_room(fake: ThreadedFake, make: Any) -> None:
    slow(fake, 1.0)
    client = make(max_queue=2, overflow="wait", queue_timeout=30, max_in_flight=1)
    _fill(client, fake)
    outcome: list[BaseException] = []

    def producer() -> None:
        try:
            client.track({"registered": "b"}, "page")
        except BaseException as exc:
            outcome.append(exc)

    waiting = threading.Thread(target=producer)
    waiting.start()
    time.sleep(0.1)
    start = time.monotonic()
    client.close(timeout=5)
    waiting.join(5)
    assert not waiting.is_alive()
    assert [type(e) for e in outcome] == [ClientClosed]
    assert time.monotonic() - start < 5


def test_drop_new_fails_the_handle_not_the_call(fake: ThreadedFake, make: Any) -> None:
    slow(fake, 0.3)
    client = make(max_queue=2, overflow="drop_new", max_in_flight=1, linger=0.0)
    handles = [client.track({"registered": f"u{i}"}, "page") for i in range(40)]
    outcomes = [h.exception(timeout=10) for h in handles]
    dropped = [o for o in outcomes if o is not None]
    assert dropped
    assert all(o.reason == "dropped" for o in dropped)
    assert client.stats().dropped == len(dropped)
    assert fake.event_count == 40 - len(dropped)


def test_done_callback_runs_in_the_background_thread(
    fake: ThreadedFake, make: Any
) -> None:
    client = make()
    seen: list[tuple[str, bool]] = []
    done = threading.Event()

    def callback(handle: SyncDelivery) -> None:
        seen.append((threading.current_thread().name, handle.delivered()))
        done.set()

    client.track(IDS, "page").add_done_callback(callback)
    assert done.wait(5)
    assert seen == [("trackasync-sync", True)]
    # Already done: the callback runs at once, in the calling thread.
    handle = client.track(IDS, "page")
    handle.result(timeout=5)
    handle.add_done_callback(callback)
    assert seen[-1] == (threading.current_thread().name, True)


def test_callbacks_into_the_client(fake: ThreadedFake, make: Any) -> None:
    """A callback may queue more commands, but must not block on the client."""
    client = make()
    errors: list[BaseException] = []
    follow_ups: list[SyncDelivery] = []
    finished = threading.Event()

    def callback(handle: SyncDelivery) -> None:
        follow_up = client.track(IDS, "follow_up")
        follow_ups.append(follow_up)
        for blocking in (follow_up.result, client.flush, client.close):
            try:
                blocking()
            except ClientStateError as exc:
                errors.append(exc)
        finished.set()

    client.track(IDS, "page").add_done_callback(callback)
    assert finished.wait(5)
    assert len(errors) == 3
    follow_ups[0].result(timeout=5)
    assert sorted(e.event_type for e in fake.events()) == ["follow_up", "page"]


def test_a_raising_callback_is_logged(
    fake: ThreadedFake, make: Any, caplog: pytest.LogCaptureFixture
) -> None:
    client = make()

    def boom(_: SyncDelivery) -> None:
        raise RuntimeError("callback bug")

    handle = client.track(IDS, "page")
    handle.add_done_callback(boom)
    handle.result(timeout=5)
    client.flush(timeout=5)
    deadline = time.monotonic() + 5
    while "callback raised" not in caplog.text and time.monotonic() < deadline:
        time.sleep(0.01)
    assert "callback raised" in caplog.text
    client.track(IDS, "page").result(timeout=5)


def test_flush_sends_what_was_handed_over(fake: ThreadedFake, make: Any) -> None:
    client = make(linger=30.0)
    for i in range(5):
        client.track({"registered": f"u{i}"}, "page")
    result = client.flush(timeout=5)
    assert (result.delivered, result.failed, result.pending) == (5, 0, 0)
    assert fake.event_count == 5


def test_close_report_and_reuse(fake: ThreadedFake, make: Any) -> None:
    client = make(linger=30.0)
    for i in range(3):
        client.track({"registered": f"u{i}"}, "page")
    report = client.close(timeout=5)
    assert report.delivered == 3
    assert report.undelivered == []
    assert client.close() is report
    with pytest.raises(ClientClosed):
        client.track(IDS, "page")
    assert fake.event_count == 3


def test_close_gives_up_after_its_timeout(fake: ThreadedFake, make: Any) -> None:
    slow(fake, 3.0)
    client = make()
    handle = client.track(IDS, "page")
    start = time.monotonic()
    report = client.close(timeout=0.2)
    assert time.monotonic() - start < 2.0
    assert list(report.undelivered) == [handle.delivery]
    failure = handle.exception(timeout=1)
    assert failure is not None
    assert failure.reason == "closed"


def test_context_manager_closes_and_joins_the_thread(fake: ThreadedFake) -> None:
    with SyncClient(**fake.client_kwargs(), linger=30.0) as client:
        client.track(IDS, "page")
        thread = client._runtime.thread if client._runtime else None
    assert thread is not None
    assert not thread.is_alive()
    assert fake.event_count == 1


def test_unused_client_starts_no_thread(fake: ThreadedFake) -> None:
    before = threading.active_count()
    client = SyncClient(**fake.client_kwargs())
    assert client.flush().pending == 0
    assert client.stats().enqueued == 0
    report = client.close()
    assert report.delivered == 0
    assert threading.active_count() == before


def test_system_time(fake: ThreadedFake, make: Any) -> None:
    assert abs(make().system_time(timeout=5) - time.time()) < 5


# The dead loop's session and sockets can only be collected, never closed.
@pytest.mark.filterwarnings("ignore::ResourceWarning")
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_dead_background_thread_is_named_at_the_next_call(
    fake: ThreadedFake,
) -> None:
    client = SyncClient(**fake.client_kwargs(), linger=0.01)
    client.track(IDS, "page").result(timeout=5)
    runtime = client._runtime
    assert runtime is not None
    slow(fake, 5.0)
    pending = client.track(IDS, "page")

    def broken() -> None:
        raise RuntimeError("simulated crash")

    # A failure of the loop itself (not of a callback, which asyncio logs and
    # survives, SystemExit included here): the next iteration raises out of it.
    runtime.loop.call_soon_threadsafe(setattr, runtime.loop, "_run_once", broken)
    runtime.thread.join(5)
    assert not runtime.thread.is_alive()
    with pytest.raises(ClientStateError, match=r"died \(RuntimeError\)"):
        client.track(IDS, "page")
    with pytest.raises(ClientStateError, match="died"):
        pending.result(timeout=5)
    with pytest.raises(ClientStateError, match="died"):
        client.close(timeout=1)
    # Collect the dead loop's leftovers here, under this test's filters, not
    # in whichever test happens to run the collector next.
    del client, runtime, pending
    gc.collect()


def test_settings_are_checked_in_the_constructor() -> None:
    with pytest.raises(ConfigError):
        SyncClient("ftp://nope", "p", auth=None)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="overflow"):
        SyncClient("http://127.0.0.1:1", "p", auth=_auth(), overflow="later")
    with pytest.raises(ConfigError, match="transport"):
        SyncClient(
            "http://127.0.0.1:1", "p", auth=_auth(), transport=RecordingTransport()
        )


def _auth() -> Any:
    from trackasync import PublicToken

    return PublicToken("t")


@pytest.mark.parametrize(
    ("module", "attribute", "name"),
    [
        ("gevent.monkey", "is_module_patched", "gevent"),
        ("eventlet.patcher", "is_monkey_patched", "eventlet"),
    ],
)
def test_green_threads_are_refused_with_advice(
    monkeypatch: pytest.MonkeyPatch, module: str, attribute: str, name: str
) -> None:
    stub = types.ModuleType(module)
    setattr(stub, attribute, lambda what: what in ("threading", "thread"))
    monkeypatch.setitem(sys.modules, module, stub)
    with pytest.raises(ClientStateError, match=f"{name} has monkey-patched"):
        SyncClient("http://127.0.0.1:1", "p", auth=_auth())
    setattr(stub, attribute, lambda what: False)
    SyncClient("http://127.0.0.1:1", "p", auth=_auth()).close()


def test_system_exit_in_a_done_callback_is_survived_and_logged(
    fake: ThreadedFake, make: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """A done callback that raises SystemExit in the background thread does not
    end it: the exit is logged at ERROR and every command still gets its outcome."""
    client = make()

    def exit_now(_: SyncDelivery) -> None:
        raise SystemExit(3)

    first = client.track(IDS, "page")
    first.add_done_callback(exit_now)
    handles = [client.track({"registered": f"u{i}"}, "page") for i in range(50)]
    first.result(timeout=5)
    for handle in handles:
        handle.result(timeout=5)
    report = client.close(timeout=5)
    assert report.delivered == 51
    assert any(
        r.levelno == logging.ERROR and "SystemExit" in r.getMessage()
        for r in caplog.records
    )
