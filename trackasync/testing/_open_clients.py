"""Clients a test left open, found for the ``fake_tracking_api`` fixture's report.

An unclosed ``SyncClient`` keeps its thread until interpreter exit, where it
flushes late (after pytest's summary, naming no test); an unclosed ``Client``
goes unnoticed. The fixture takes a :func:`snapshot` before the test and asks
:func:`left_open` after it.

Both clients already register themselves, weakly, for the after-fork reset,
and every started ``SyncClient`` has a runtime in ``_sync._running`` until it
is closed (strongly held: it is found even when the test dropped its
``SyncClient``). Reading those two sets needs no hook in the clients.
"""

from __future__ import annotations

import contextlib
from typing import Any

from .. import _fork, _sync
from .._client import Client, ClientState

#: Seconds a left-open ``SyncClient`` gets to deliver to the fake before it is
#: closed for the test (so the process does not wait for it at exit).
CLOSE_LEFT_OPEN = 2.0


def _registered() -> list[object]:
    # getattr: should these internals move, the fixture finds nothing instead
    # of breaking every test that uses it (tests/test_fake_helpers.py notices).
    return list(getattr(_fork, "_registered", ()))


def _runtimes() -> list[Any]:
    return list(getattr(_sync, "_running", ()))


def snapshot() -> set[int]:
    """Ids of the clients and ``SyncClient`` runtimes that exist now."""
    return {id(obj) for obj in _registered()} | {id(r) for r in _runtimes()}


def left_open(before: set[int]) -> list[str]:
    """Describe each client created since ``before`` and not closed.

    A ``SyncClient`` found open is closed here, within
    :data:`CLOSE_LEFT_OPEN` seconds: otherwise the test run would wait for it
    at exit.
    """
    found: list[str] = []
    inner: set[int] = set()
    for runtime in _runtimes():
        inner.add(id(runtime.client))
        if id(runtime) in before or runtime.closing:
            continue
        queued = runtime.client.stats().queued  # handed-over commands included
        # Reported either way; if it cannot close, its thread is a daemon.
        with contextlib.suppress(Exception):
            runtime.close(CLOSE_LEFT_OPEN)
        found.append(
            f"a SyncClient was left open ({queued} command(s) still queued when "
            "the test ended); close it with `with SyncClient(...)` or "
            "client.close()"
        )
    for obj in _registered():
        if id(obj) in before or id(obj) in inner or not isinstance(obj, Client):
            continue
        if obj.state in (ClientState.OPEN, ClientState.CLOSING):
            found.append(
                f"a Client was left {obj.state.value} ({obj.stats().queued} "
                "command(s) still queued); close it with `async with Client(...)` "
                "or `await client.aclose()`"
            )
    return found
