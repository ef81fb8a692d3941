"""After os.fork(): rules a mutation run showed no other test would notice.

The fake API runs in a thread of this process; a forked child reaches it over
loopback. A child never returns into pytest: it reports through its exit status.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator

import pytest

from trackasync import Client, ClientClosed, ClientState

from ._fake_thread import ThreadedFake, threaded_fake

pytestmark = [
    pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork"),
    # Forking a process that runs threads (the fake's) is the point here; newer
    # Pythons warn about it.
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
]


@pytest.fixture
def fake() -> Iterator[ThreadedFake]:
    with threaded_fake() as server:
        yield server


def make_client(fake: ThreadedFake) -> Client:
    return Client(**fake.client_kwargs(), linger=0.0, rate_limit=None)


def in_child(work: Callable[[], int]) -> int:
    """Fork; run ``work()`` (returns an exit status) in the child; its status."""
    pid = os.fork()
    if pid == 0:
        status = 70
        try:
            status = work()
        finally:
            os._exit(status)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def senders(fake: ThreadedFake) -> list[str]:
    return sorted(event.customer_ids["registered"] for event in fake.events())


def test_a_child_sends_through_connections_of_its_own(fake: ThreadedFake) -> None:
    """The parent's transport has sent (its session and sockets exist) when the
    process forks: the child must build its own, and the parent's keeps working."""
    client = make_client(fake)
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(client.track_and_wait({"registered": "p1"}, "view"))

        def child() -> int:
            async def work() -> int:
                receipt = await asyncio.wait_for(
                    client.track_and_wait({"registered": "c1"}, "view"), 10
                )
                await client.aclose()
                return 0 if receipt.status == 200 else 3

            try:
                return asyncio.run(work())
            except BaseException:
                return 4

        assert in_child(child) == 0
        loop.run_until_complete(client.track_and_wait({"registered": "p2"}, "view"))
        report = loop.run_until_complete(client.aclose())
    finally:
        loop.close()
    assert report.delivered == 2
    assert senders(fake) == ["c1", "p1", "p2"]


def test_a_client_closed_before_the_fork_stays_closed_in_the_child(
    fake: ThreadedFake,
) -> None:
    """A closed client cannot be reopened, in the parent or in a forked child."""
    client = make_client(fake)
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(client.track_and_wait({"registered": "p1"}, "view"))
        loop.run_until_complete(client.aclose())
    finally:
        loop.close()

    def child() -> int:
        if client.state is not ClientState.CLOSED:
            return 3

        async def work() -> int:
            try:
                client.track_nowait({"registered": "c1"}, "view")
            except ClientClosed:
                return 0
            await client.aclose()
            return 4

        try:
            return asyncio.run(work())
        except BaseException:
            return 5

    assert in_child(child) == 0
    assert senders(fake) == ["p1"]


_EXITING_CHILD = """
import os, sys
from trackasync import PrivateKey, SyncClient

base_url, token, key_id, secret = sys.argv[1:5]
client = SyncClient(
    base_url, token, auth=PrivateKey(key_id, secret), linger=30.0,
    shutdown_timeout=10.0,
)
for i in range(3):
    client.track({"registered": f"p{i}"}, "parent")
pid = os.fork()
if pid == 0:
    sys.exit(0)  # a normal exit: the interpreter's exit hooks run in the child
_, status = os.waitpid(pid, 0)
print("child", os.waitstatus_to_exitcode(status), flush=True)
# No close(): the parent's own exit delivers its three commands.
"""


def test_a_child_leaves_the_parents_background_threads_alone_at_exit(
    fake: ThreadedFake,
) -> None:
    """A child that exits normally does not try to flush the runtimes it
    inherited (they are the parent's): nothing to say, nothing sent twice."""
    api = fake.api
    done = subprocess.run(
        [
            sys.executable,
            "-W",
            "ignore::DeprecationWarning",
            "-c",
            textwrap.dedent(_EXITING_CHILD),
            api.base_url,
            api.project_token,
            api.key_id,
            api.secret,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "child 0\n"
    assert done.stderr == ""
    assert senders(fake) == ["p0", "p1", "p2"]
