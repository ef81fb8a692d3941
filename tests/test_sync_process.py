"""SyncClient across processes: fork, multiprocessing, and interpreter exit."""

from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from typing import Any

import pytest

from trackasync import SyncClient

from ._fake_thread import ThreadedFake, threaded_fake

pytestmark = [
    pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork"),
    # Python 3.12+ warns about forking a process that runs threads: that is
    # exactly the situation under test.
    pytest.mark.filterwarnings("ignore:This process .* is multi-threaded"),
]


@pytest.fixture
def fake() -> Iterator[ThreadedFake]:
    with threaded_fake() as server:
        yield server


def _event_types(fake: ThreadedFake) -> list[str]:
    return sorted(e.event_type for e in fake.events())


def test_fork_child_starts_fresh_and_does_not_resend(fake: ThreadedFake) -> None:
    client = SyncClient(**fake.client_kwargs(), linger=30.0)
    # Started and holding commands: a thread, a loop, a queue.
    for i in range(5):
        client.track({"registered": f"p{i}"}, "parent")
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        status = 1
        try:
            os.close(read)
            before = client.stats()
            handles = [client.track({"registered": f"c{i}"}, "child") for i in range(3)]
            client.flush(timeout=10)  # the linger is long on purpose
            receipts = [h.result(timeout=10).status for h in handles]
            report = client.close(timeout=10)
            os.write(
                write,
                json.dumps(
                    {
                        "forked": before.discarded_at_fork,
                        "enqueued_before": before.enqueued,
                        "receipts": receipts,
                        "delivered": report.delivered,
                        "report_failed": sum(report.failed.values()),
                    }
                ).encode(),
            )
            status = 0
        finally:
            os._exit(status)
    os.close(write)
    with os.fdopen(read) as pipe:
        child = json.loads(pipe.read() or "null")
    _, status = os.waitpid(pid, 0)
    assert status == 0
    assert child == {
        "forked": 5,
        "enqueued_before": 0,
        "receipts": [200, 200, 200],
        "delivered": 3,
        "report_failed": 0,
    }
    report = client.close(timeout=10)
    assert report.delivered == 5
    assert _event_types(fake) == ["child"] * 3 + ["parent"] * 5
    assert fake.call(lambda: fake.api.duplicates) == 0


def _child_task(client: SyncClient, results: Any) -> None:
    handles = [client.track({"registered": f"m{i}"}, "child") for i in range(4)]
    client.flush(timeout=10)  # the linger is long on purpose
    results.put([h.result(timeout=10).status for h in handles])
    results.put(client.stats().discarded_at_fork)
    client.close(timeout=10)


def test_multiprocessing_fork_context(fake: ThreadedFake) -> None:
    client = SyncClient(**fake.client_kwargs(), linger=30.0)
    for i in range(2):
        client.track({"registered": f"p{i}"}, "parent")
    context = multiprocessing.get_context("fork")
    results = context.Queue()
    workers = [
        context.Process(target=_child_task, args=(client, results)) for _ in range(2)
    ]
    for worker in workers:
        worker.start()
    outcomes = [results.get(timeout=20) for _ in range(4)]
    for worker in workers:
        worker.join(20)
        assert worker.exitcode == 0
    assert sorted(map(str, outcomes)) == sorted(["[200, 200, 200, 200]", "2"] * 2)
    assert client.close(timeout=10).delivered == 2
    assert _event_types(fake) == ["child"] * 8 + ["parent"] * 2
    assert fake.call(lambda: fake.api.duplicates) == 0


_EXIT_SCRIPT = """
import sys
from trackasync import PrivateKey, SyncClient

base_url, token, key_id, secret, linger, shutdown, drop = sys.argv[1:8]
client = SyncClient(
    base_url, token, auth=PrivateKey(key_id, secret),
    linger=float(linger), shutdown_timeout=float(shutdown),
)
for i in range(5):
    client.track({"registered": f"u{i}"}, "at_exit", {"i": i})
print("tracked", flush=True)
if drop == "drop":
    # Nobody holds the client any more: its queue must still be delivered.
    import gc
    del client
    gc.collect()
# No close(): the interpreter's exit must deliver them.
"""


def _run_exit_script(
    fake: ThreadedFake, linger: float, shutdown: float, drop: bool = False
) -> subprocess.CompletedProcess[str]:
    api = fake.api
    return subprocess.run(
        [
            sys.executable,
            "-c",
            textwrap.dedent(_EXIT_SCRIPT),
            api.base_url,
            api.project_token,
            api.key_id,
            api.secret,
            str(linger),
            str(shutdown),
            "drop" if drop else "keep",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize("drop", [False, True], ids=["held", "dropped"])
def test_interpreter_exit_flushes_an_unclosed_client(
    fake: ThreadedFake, drop: bool
) -> None:
    done = _run_exit_script(fake, linger=30.0, shutdown=10.0, drop=drop)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "tracked"
    assert done.stderr == ""
    assert _event_types(fake) == ["at_exit"] * 5


def test_interpreter_exit_is_bounded_and_says_what_was_lost(
    fake: ThreadedFake,
) -> None:
    # The server would answer after a minute; the exit must not wait for it.
    # Only the order of magnitude is checked: a loaded machine (or a coverage
    # run measuring the subprocess) makes the interpreter itself slow to start.
    fake.call(lambda: setattr(fake.api, "response_delay", 60.0))
    start = time.monotonic()
    done = _run_exit_script(fake, linger=30.0, shutdown=0.3)
    assert time.monotonic() - start < 30.0
    assert done.returncode == 0
    assert "Traceback" not in done.stderr
    assert "5 command(s) still undelivered at exit" in done.stderr


def _child_forgets_to_close(client: SyncClient) -> None:
    for i in range(3):
        client.track({"registered": f"f{i}"}, "unclosed_child")
    # No flush, no close: the process's exit must deliver them.


def test_multiprocessing_child_exit_flushes(fake: ThreadedFake) -> None:
    client = SyncClient(**fake.client_kwargs(), linger=30.0)
    context = multiprocessing.get_context("fork")
    worker = context.Process(target=_child_forgets_to_close, args=(client,))
    worker.start()
    worker.join(30)
    assert worker.exitcode == 0
    assert _event_types(fake) == ["unclosed_child"] * 3
    client.close(timeout=5)
