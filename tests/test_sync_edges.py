"""SyncClient at its edges: prompt answers, bad close arguments, calls after the
close, consistent stats from any thread, racing closes, and the exit hook."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from trackasync import ClientClosed, ConfigError, QueueFull, SyncClient

from ._fake_thread import ThreadedFake, threaded_fake

IDS = {"registered": "ann@example.com"}


@pytest.fixture
def fake() -> Iterator[ThreadedFake]:
    with threaded_fake() as server:
        yield server


def test_track_and_wait_does_not_wait_for_the_linger(fake: ThreadedFake) -> None:
    """A caller waiting for its event gets the answer within the await window,
    not after the 0.5 s linger (as on Client)."""
    with SyncClient(**fake.client_kwargs(), linger=5.0) as client:
        client.track_and_wait(IDS, "warm-up", timeout=10)
        start = time.monotonic()
        for _ in range(3):
            client.track_and_wait(IDS, "page", timeout=10)
        assert (time.monotonic() - start) / 3 < 1.0
    assert fake.event_count == 4


@pytest.mark.parametrize("timeout", [float("nan"), -1, "5", True])
def test_a_bad_close_timeout_changes_nothing(fake: ThreadedFake, timeout: Any) -> None:
    """close(timeout=bad) raises ConfigError before any state changes: the
    client still takes and sends commands, and a proper close delivers all."""
    client = SyncClient(**fake.client_kwargs(), linger=0.05)
    client.track(IDS, "before")
    with pytest.raises(ConfigError):
        client.close(timeout=timeout)
    client.track(IDS, "after").result(timeout=10)
    report = client.close(timeout=10)
    assert report.delivered == 2
    assert fake.event_count == 2


def test_system_time_after_close_says_closed(fake: ThreadedFake) -> None:
    """system_time() after close() raises ClientClosed, nothing else."""
    client = SyncClient(**fake.client_kwargs())
    client.system_time(timeout=10)
    client.close(timeout=10)
    with pytest.raises(ClientClosed):
        client.system_time(timeout=10)


def test_stats_from_another_thread_always_add_up(fake: ThreadedFake) -> None:
    """Snapshots taken from a reading thread while producers run balance."""
    client = SyncClient(**fake.client_kwargs(), linger=0.01, max_queue=100_000)
    stop = threading.Event()
    bad: list[Any] = []

    def produce() -> None:
        while not stop.is_set():
            client.track(IDS, "page")

    producers = [threading.Thread(target=produce) for _ in range(2)]
    for thread in producers:
        thread.start()
    try:
        for _ in range(300):
            s = client.stats()
            total = s.delivered + sum(s.failed.values()) + s.queued + s.in_flight
            if s.enqueued != total:
                bad.append(s)
    finally:
        stop.set()
        for thread in producers:
            thread.join()
        client.close(timeout=30)
    assert bad == []


def _race_close_against_producers(fake: ThreadedFake) -> None:
    client = SyncClient(
        **fake.client_kwargs(),
        max_queue=2,
        overflow="wait",
        queue_timeout=30,
        max_in_flight=1,
        linger=0.0,
    )
    handles: list[Any] = []
    lock = threading.Lock()

    def produce(n: int) -> None:
        for i in range(20):
            try:
                handle = client.track({"registered": f"{n}-{i}"}, "page")
            except (ClientClosed, QueueFull):
                return
            with lock:
                handles.append(handle)

    threads = [threading.Thread(target=produce, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    time.sleep(0.05)
    report = client.close(timeout=0.2)
    for thread in threads:
        thread.join(10)
    stats = client.stats()
    assert stats.enqueued == len(handles)
    assert all(h.done() for h in handles)
    assert report.delivered + sum(report.failed.values()) == len(handles)
    closed = [h for h in handles if not h.delivered()]
    assert len(report.undelivered) == len(closed)


def test_close_racing_waiting_producers_counts_every_handle(
    fake: ThreadedFake,
) -> None:
    """Threads blocked for room while close() runs either get ClientClosed (and
    nothing is counted) or a handle that is counted and has an outcome."""
    fake.call(lambda: setattr(fake.api, "response_delay", 0.05))
    for _ in range(5):
        _race_close_against_producers(fake)


def test_the_exit_hook_waits_for_the_largest_budget_not_their_sum(
    tmp_path: Any,
) -> None:
    """Three unclosed clients at exit, with the API unreachable: the exit takes
    about one shutdown_timeout, not three."""
    script = tmp_path / "exit.py"
    script.write_text(
        textwrap.dedent(
            """
            import socket, time
            from trackasync import SyncClient, PrivateKey, Retry
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            sock.listen(100)  # accepts, never answers
            port = sock.getsockname()[1]
            clients = [
                SyncClient(f"http://127.0.0.1:{port}", "p", auth=PrivateKey("k", "s"),
                           shutdown_timeout=2, linger=0.0, timeout=30)
                for _ in range(3)
            ]
            for c in clients:
                c.track({"registered": "a"}, "page")
            time.sleep(0.2)
            print("start", time.monotonic(), flush=True)
            """
        )
    )
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    # From the end of the script (the monotonic clock is the machine's): one
    # budget (2 s) and some grace, well below three budgets (6 s).
    elapsed = time.monotonic() - float(done.stdout.split()[1])
    assert elapsed < 4.5, (elapsed, done.stderr)
    assert done.stderr.count("still undelivered at exit") == 3


@pytest.mark.filterwarnings("ignore::ResourceWarning")
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_dead_thread_wakes_producers_waiting_for_room(fake: ThreadedFake) -> None:
    """Producers blocked for room when the loop's thread dies get a clear
    ClientStateError at once, not a wait for room that can never come."""
    from trackasync import ClientStateError

    fake.call(lambda: setattr(fake.api, "response_delay", 5.0))
    client = SyncClient(
        **fake.client_kwargs(),
        max_queue=1,
        overflow="wait",
        queue_timeout=60,
        max_in_flight=1,
        linger=0.0,
    )
    client.track(IDS, "a")
    deadline = time.monotonic() + 10
    while client.stats().in_flight < 1:
        assert time.monotonic() < deadline
        time.sleep(0.005)
    client.track(IDS, "b")  # the queue is full
    raised: list[BaseException] = []

    def produce(track: Any) -> None:
        try:
            track(IDS, "c")
        except BaseException as exc:
            raised.append(exc)

    # Passed as an argument: the thread lets go of it when it ends.
    producer = threading.Thread(target=produce, args=(client.track,))
    producer.start()
    time.sleep(0.1)
    runtime = client._runtime
    assert runtime is not None

    def broken() -> None:
        raise RuntimeError("simulated crash")

    runtime.loop.call_soon_threadsafe(setattr, runtime.loop, "_run_once", broken)
    producer.join(10)
    assert not producer.is_alive()
    assert [type(e) for e in raised] == [ClientStateError]
    assert "died" in str(raised[0])
    # The dead loop's session and sockets can only be collected here.
    del client, runtime
    import gc

    gc.collect()
