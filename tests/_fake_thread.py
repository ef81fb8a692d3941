"""A ``FakeTrackingAPI`` served from its own event loop in a thread.

For tests of code that has no event loop of its own (``SyncClient``, forked
children, examples): the test thread stays free to block.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from trackasync.testing import FakeTrackingAPI

T = TypeVar("T")


class ThreadedFake:
    """Runs ``FakeTrackingAPI(**options)`` until ``stop()``."""

    def __init__(self, **options: Any) -> None:
        self.loop = asyncio.new_event_loop()
        self.api = FakeTrackingAPI(**options)
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def start(self) -> None:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.api.start(), self.loop).result(10)

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.api.stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()

    def call(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` in the server's loop thread (for reads that must not race)."""

        async def run() -> T:
            return fn()

        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(10)

    @property
    def base_url(self) -> str:
        return self.api.base_url

    @property
    def event_count(self) -> int:
        return self.call(lambda: self.api.event_count)

    def events(self) -> list[Any]:
        return self.call(lambda: self.api.events)

    def client_kwargs(self) -> dict[str, Any]:
        return {
            "base_url": self.api.base_url,
            "project_token": self.api.project_token,
            "auth": self.api.auth,
        }


@contextmanager
def threaded_fake(**options: Any) -> Iterator[ThreadedFake]:
    fake = ThreadedFake(**options)
    fake.start()
    try:
        yield fake
    finally:
        fake.stop()
