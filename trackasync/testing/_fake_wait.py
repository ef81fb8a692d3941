"""Waiting for what an app sent to the fake, and handing the fake's settings to an app.

A test that checks the fake right after the app's call races the app's client,
which batches and sends in the background. :meth:`wait_for_events` (blocking,
for sync tests and a fake served from its own thread) and :meth:`await_events`
(for async tests) wait until enough events arrived, and on timeout fail with
an ``AssertionError`` that says what did arrive.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING

from ._fake_store import StoredEvent

if TYPE_CHECKING:
    from ._fake_server import HandledRequest

#: Seconds between two looks at the stored events while waiting.
POLL_INTERVAL = 0.01
#: Seconds :meth:`wait_for_events` waits by default.
DEFAULT_WAIT = 5.0

EventPredicate = Callable[[StoredEvent], bool]


class WaitingMixin:
    """The waiting and settings half of ``FakeTrackingAPI``."""

    if TYPE_CHECKING:  # provided by FakeTrackingAPI

        @property
        def events(self) -> list[StoredEvent]: ...
        @property
        def requests(self) -> list[HandledRequest]: ...
        @property
        def base_url(self) -> str: ...
        @property
        def project_token(self) -> str: ...
        @property
        def key_id(self) -> str: ...
        @property
        def secret(self) -> str: ...

    @property
    def environ(self) -> dict[str, str]:
        """The ``TRACKASYNC_*`` variables that point an app at this fake.

        What ``Client.from_env()`` and ``SyncClient.from_env()`` read: the
        address, the project token and the private key. For example
        ``monkeypatch.setenv`` each item, or pass it as a subprocess's ``env``.
        """
        return {
            "TRACKASYNC_BASE_URL": self.base_url,
            "TRACKASYNC_PROJECT_TOKEN": self.project_token,
            "TRACKASYNC_KEY_ID": self.key_id,
            "TRACKASYNC_SECRET": self.secret,
        }

    def wait_for_events(
        self,
        count: int = 1,
        *,
        where: EventPredicate | None = None,
        timeout: float = DEFAULT_WAIT,
    ) -> list[StoredEvent]:
        """Block until at least ``count`` stored events match ``where`` (all by default).

        Returns the matching events. After ``timeout`` seconds, raises
        ``AssertionError`` listing what was stored and the requests seen. Blocks
        the calling thread: in an async test, ``await api.await_events(...)``.
        """
        _check(count, timeout)
        deadline = time.monotonic() + timeout
        while True:
            found = self._matching(where)
            if len(found) >= count:
                return found
            if time.monotonic() >= deadline:
                raise AssertionError(self._what_arrived(count, where, timeout))
            time.sleep(POLL_INTERVAL)

    async def await_events(
        self,
        count: int = 1,
        *,
        where: EventPredicate | None = None,
        timeout: float = DEFAULT_WAIT,
    ) -> list[StoredEvent]:
        """:meth:`wait_for_events` for async tests: the event loop keeps running."""
        _check(count, timeout)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            found = self._matching(where)
            if len(found) >= count:
                return found
            if loop.time() >= deadline:
                raise AssertionError(self._what_arrived(count, where, timeout))
            await asyncio.sleep(POLL_INTERVAL)

    def _matching(self, where: EventPredicate | None) -> list[StoredEvent]:
        events = self.events
        return events if where is None else [e for e in events if where(e)]

    def _what_arrived(
        self, count: int, where: EventPredicate | None, timeout: float
    ) -> str:
        events = self.events
        requests = self.requests
        matching = len(self._matching(where))
        wanted = f"{count} event(s)" + ("" if where is None else " matching `where`")
        kinds = Counter(e.event_type for e in events)
        stored = ", ".join(f"{kind!r} x{n}" for kind, n in kinds.most_common(10))
        statuses = Counter(f"{r.route} {r.status}" for r in requests)
        seen = ", ".join(f"{key} x{n}" for key, n in statuses.most_common(10))
        return (
            f"waited {timeout:g} s for {wanted}, found {matching}. "
            f"Stored: {len(events)} event(s)"
            + (f" ({stored})" if stored else "")
            + f"; requests: {len(requests)}"
            + (f" ({seen})" if seen else "")
            + ". Did the app flush or close its client?"
        )


def _check(count: int, timeout: float) -> None:
    if count < 1:
        raise ValueError(f"count must be 1 or more, got {count}")
    if not timeout >= 0:
        raise ValueError(f"timeout must be 0 or more seconds, got {timeout}")
