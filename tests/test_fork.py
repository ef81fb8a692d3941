"""After os.fork(), the child's client starts afresh and nothing is sent twice.

The fake API runs in a thread of the parent, on its own loop; a child reaches
it over loopback. Each test counts what the fake stored.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from trackasync import Client, ClientState
from trackasync.testing import FakeTrackingAPI

pytestmark = [
    pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork"),
    # Forking a process that runs threads (the fake's) is what these tests do on
    # purpose; newer Pythons warn about it.
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
]


class ThreadedFake:
    """A FakeTrackingAPI served from its own event loop in a thread."""

    def __init__(self) -> None:
        self.api: FakeTrackingAPI | None = None
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        async def serve() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            async with FakeTrackingAPI() as api:
                self.api = api
                self._ready.set()
                await self._stop.wait()

        asyncio.run(serve())

    def __enter__(self) -> FakeTrackingAPI:
        self._thread.start()
        assert self._ready.wait(10)
        assert self.api is not None
        return self.api

    def __exit__(self, *exc: object) -> None:
        assert self._loop is not None
        assert self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)


@pytest.fixture
def api() -> Iterator[FakeTrackingAPI]:
    with ThreadedFake() as fake:
        yield fake


def make_client(api: FakeTrackingAPI) -> Client:
    return Client(
        api.base_url,
        api.project_token,
        auth=api.auth,
        linger=60.0,  # the parent's commands stay queued across the fork
        rate_limit=None,
    )


def child_work(client: Client) -> int:
    """What a forked child does; returns its exit status (0: all as expected)."""

    async def work() -> int:
        stats = client.stats()
        if (stats.discarded_at_fork, stats.queued, stats.enqueued) != (5, 0, 0):
            return 3
        for n in range(3):
            await client.track_and_wait({"registered": "child"}, "view", {"n": n})
        report = await client.aclose()
        return 0 if report.delivered == 3 else 4

    try:
        return asyncio.run(work())
    except BaseException:
        return 5


def queue_in_parent(client: Client, loop: asyncio.AbstractEventLoop) -> None:
    async def queue() -> None:
        for n in range(5):
            client.track_nowait({"registered": "parent"}, "view", {"n": n})
        await asyncio.sleep(0.01)  # the client's tasks are running

    loop.run_until_complete(queue())
    assert client.state is ClientState.OPEN
    assert client.stats().queued == 5


def stored_by(api: FakeTrackingAPI) -> dict[str, list[Any]]:
    found: dict[str, list[Any]] = {}
    for event in api.events:
        found.setdefault(event.customer_ids["registered"], []).append(
            event.properties["n"]
        )
    return {who: sorted(ns) for who, ns in found.items()}


def test_a_forked_child_gets_a_fresh_client_and_sends_nothing_twice(
    api: FakeTrackingAPI,
) -> None:
    """os.fork() with 5 commands queued: the child discards its copies and sends
    its own; the parent sends its 5; the fake holds each event once."""
    client = make_client(api)
    loop = asyncio.new_event_loop()
    try:
        queue_in_parent(client, loop)
        pid = os.fork()
        if pid == 0:  # the child: never returns into pytest
            os._exit(child_work(client))
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        report = loop.run_until_complete(client.aclose())
    finally:
        loop.close()
    assert report.delivered == 5
    assert client.stats().discarded_at_fork == 0
    assert stored_by(api) == {"parent": [0, 1, 2, 3, 4], "child": [0, 1, 2]}


def _mp_target(client: Client, results: Any) -> None:
    results.put(child_work(client))


def test_multiprocessing_fork_context(api: FakeTrackingAPI) -> None:
    """The same through multiprocessing's fork context."""
    client = make_client(api)
    loop = asyncio.new_event_loop()
    try:
        queue_in_parent(client, loop)
        context = multiprocessing.get_context("fork")
        results = context.SimpleQueue()
        process = context.Process(target=_mp_target, args=(client, results))
        process.start()
        process.join(30)
        assert process.exitcode == 0
        assert results.get() == 0
        report = loop.run_until_complete(client.aclose())
    finally:
        loop.close()
    assert report.delivered == 5
    assert stored_by(api) == {"parent": [0, 1, 2, 3, 4], "child": [0, 1, 2]}


def test_a_client_created_before_the_fork_and_unused_just_works(
    api: FakeTrackingAPI,
) -> None:
    """gunicorn --preload: a client made at import, first used in the child."""
    client = make_client(api)
    pid = os.fork()
    if pid == 0:

        async def work() -> int:
            await client.track_and_wait({"registered": "child"}, "view", {"n": 0})
            await client.aclose()
            return 0 if client.stats().discarded_at_fork == 0 else 6

        try:
            os._exit(asyncio.run(work()))
        except BaseException:
            os._exit(7)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert stored_by(api) == {"child": [0]}
