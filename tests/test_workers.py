"""Worker models the README names: RQ, multiprocessing.Pool, and a SIGTERM stop."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from ._fake_thread import ThreadedFake, threaded_fake

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def fake() -> Iterator[ThreadedFake]:
    with threaded_fake() as server:
        yield server


def settings(fake: ThreadedFake) -> dict[str, str]:
    api = fake.api
    return {
        **os.environ,
        "TRACKASYNC_BASE_URL": api.base_url,
        "TRACKASYNC_PROJECT_TOKEN": api.project_token,
        "TRACKASYNC_KEY_ID": api.key_id,
        "TRACKASYNC_SECRET": api.secret,
        "PYTHONPATH": str(ROOT),
    }


def test_rq_jobs_deliver_every_event_under_a_real_worker(
    fake: ThreadedFake, redis_server, tmp_path: Path
) -> None:
    """The RQ recipe: every job's event is stored, and every job succeeded."""
    pytest.importorskip("rq")
    from redis import Redis
    from rq import Queue

    jobs = 40
    with Redis.from_url(redis_server.url) as redis:
        queue = Queue(connection=redis)
        enqueued = [
            queue.enqueue("examples.rq_app.order_shipped", f"u{n}@example.com", n)
            for n in range(jobs)
        ]
        worker = subprocess.run(
            [
                sys.executable, "-m", "rq.cli", "worker", "--burst",
                "--worker-class", "examples.rq_app.TrackingWorker",
                "--url", redis_server.url,
            ],
            capture_output=True, text=True, timeout=240, env=settings(fake),
            cwd=tmp_path, check=False,
        )  # fmt: skip
        assert worker.returncode == 0, worker.stderr[-2000:]
        statuses = {job.get_status(refresh=True) for job in enqueued}
    assert statuses == {"finished"}, worker.stderr[-2000:]
    orders = sorted(e.properties["order_id"] for e in fake.events())
    assert orders == list(range(jobs))


def test_a_retried_rq_job_sends_its_events_once(
    fake: ThreadedFake, redis_server, tmp_path: Path
) -> None:
    """A job that fails after tracking is retried: the retry's event is deduplicated."""
    pytest.importorskip("rq")
    from redis import Redis
    from rq import Queue, Retry

    jobs = 5
    with Redis.from_url(redis_server.url) as redis:
        queue = Queue(connection=redis)
        enqueued = [
            queue.enqueue(
                "tests.rq_jobs.flaky_order", f"u{n}@example.com", n, retry=Retry(max=1)
            )
            for n in range(jobs)
        ]
        worker = subprocess.run(
            [
                sys.executable, "-m", "rq.cli", "worker", "--burst",
                "--worker-class", "examples.rq_app.TrackingWorker",
                "--url", redis_server.url,
            ],
            capture_output=True, text=True, timeout=240, env=settings(fake),
            cwd=tmp_path, check=False,
        )  # fmt: skip
        assert worker.returncode == 0, worker.stderr[-2000:]
        statuses = {job.get_status(refresh=True) for job in enqueued}
        attempts = {int(redis.get(f"attempts:{job.id}")) for job in enqueued}
    assert statuses == {"finished"}, worker.stderr[-2000:]
    assert attempts == {2}
    orders = sorted(e.properties["order_id"] for e in fake.events())
    assert orders == list(range(jobs))
    assert fake.call(lambda: fake.api.duplicates) == jobs


_POOL = """
import multiprocessing
from trackasync import SyncClient

client = SyncClient.from_env(linger=0.05)

def work(n):
    client.track({"registered": f"u{n}"}, "job", {"n": n})
    return n

def close_in_worker(_):
    client.close()

if __name__ == "__main__":
    multiprocessing.set_start_method("fork")
    pool = multiprocessing.Pool(4, initializer=None)
    pool.map(work, range(400))
    # The pattern the README gives: close() and join() end each worker
    # normally, so its client is flushed at exit. "with Pool() as p:" would
    # terminate() them instead, losing what they still queue.
    pool.close()
    pool.join()
    client.close()
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork start method")
def test_multiprocessing_pool_close_and_join_loses_nothing(
    fake: ThreadedFake, tmp_path: Path
) -> None:
    """Pool.close() + join(): every worker flushes at exit, all events stored."""
    script = tmp_path / "pool.py"
    script.write_text(_POOL)
    done = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True, text=True, timeout=120, env=settings(fake), check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert sorted(e.properties["n"] for e in fake.events()) == list(range(400))


_SIGTERM = """
import sys, time
from trackasync import SyncClient, close_on_sigterm

client = SyncClient.from_env(linger=60, max_queue=5000)
if sys.argv[1] == "handler":
    close_on_sigterm(client)
for n in range(2000):
    client.track({"registered": f"u{n}"}, "queued", {"n": n})
print("ready", flush=True)
time.sleep(60)
"""


@pytest.mark.parametrize("mode", ["handler", "default"])
def test_close_on_sigterm_delivers_the_queue_then_ends_as_sigterm(
    fake: ThreadedFake, tmp_path: Path, mode: str
) -> None:
    """With the handler every queued event is stored; without it, most are lost."""
    # Slow answers keep most of the queue unsent when the signal comes.
    fake.call(lambda: setattr(fake.api, "response_delay", 0.2))
    script = tmp_path / "stop.py"
    script.write_text(textwrap.dedent(_SIGTERM))
    proc = subprocess.Popen(
        [sys.executable, str(script), mode],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=settings(fake),
    )  # fmt: skip
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    # The process still ends as SIGTERM ends it: a supervisor sees the same status.
    assert proc.returncode == -signal.SIGTERM, err
    stored = fake.event_count
    if mode == "handler":
        assert stored == 2000
    else:
        assert stored < 2000


def test_close_on_sigterm_refuses_other_threads() -> None:
    """Signal handlers live in the main thread: elsewhere it is a ValueError."""
    import threading

    from trackasync import SyncClient, close_on_sigterm

    client = SyncClient("https://api.example", "p", auth=_auth())
    failures: list[BaseException] = []

    def install() -> None:
        try:
            close_on_sigterm(client)
        except ValueError as exc:
            failures.append(exc)

    thread = threading.Thread(target=install)
    thread.start()
    thread.join()
    client.close()
    assert len(failures) == 1


def _auth():
    from trackasync import PublicToken

    return PublicToken("t")


def test_close_on_sigterm_hands_over_to_the_previous_handler(
    fake: ThreadedFake, tmp_path: Path
) -> None:
    """A handler installed before runs after the close, instead of the default."""
    script = tmp_path / "chain.py"
    script.write_text(
        textwrap.dedent(
            """
            import signal, sys, time
            from trackasync import SyncClient, close_on_sigterm

            def previous(signum, frame):
                print("previous ran", flush=True)
                sys.exit(3)

            signal.signal(signal.SIGTERM, previous)
            client = SyncClient.from_env(linger=60)
            close_on_sigterm(client)
            client.track({"registered": "a"}, "queued")
            print("ready", flush=True)
            time.sleep(60)
            """
        )
    )
    proc = subprocess.Popen(
        [sys.executable, str(script)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=settings(fake),
    )  # fmt: skip
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 3, err
    assert "previous ran" in out
    assert fake.event_count == 1


_BUSY = """
import time
from trackasync import ClientClosed, SyncClient, close_on_sigterm

client = SyncClient.from_env(linger=0.05, max_queue=500)
close_on_sigterm(client)
n = 0
try:
    while True:
        client.track({"registered": f"u{n}"}, "busy", {"n": n})
        n += 1
        if n == 1000:
            print("ready", flush=True)
except ClientClosed:
    print("closed after", n, flush=True)
    time.sleep(60)
"""


def test_close_on_sigterm_while_the_main_thread_is_inside_the_client(
    fake: ThreadedFake, tmp_path: Path
) -> None:
    """SIGTERM in the middle of track() calls: no deadlock, every accepted event sent."""
    script = tmp_path / "busy.py"
    script.write_text(_BUSY)
    proc = subprocess.Popen(
        [sys.executable, str(script)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=settings(fake),
    )  # fmt: skip
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGTERM, err
    accepted = int(out.split("closed after ")[1])
    assert accepted >= 1000
    assert fake.event_count == accepted, err
