"""Run an async server on its own event loop in a background thread.

The pytest fixture serves the fake this way, so it works the same for a sync
test, a pytest-asyncio test in either mode, and an anyio test: none of them has
to share its loop with the server, and a test that blocks its own loop (or has
none) still gets answers.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
from collections.abc import Awaitable, Callable

__all__ = ["ServerThread"]

# Starting binds a socket on loopback, and stopping cuts delays short and
# gives connections half a second: either taking this long means the server's
# loop is stuck (say, in a test's predicate that blocks), and a test run must
# not hang on it.
_START_TIMEOUT = 30.0
_STOP_TIMEOUT = 30.0


class ServerThread:
    """Calls ``start()`` in a new thread's loop, serves until :meth:`stop`.

    ``start`` and ``stop`` are the server's coroutine functions; they run in
    the thread's loop. The thread is a daemon so that a test run that forgot
    to stop it can still exit.
    """

    def __init__(
        self,
        start: Callable[[], Awaitable[None]],
        stop: Callable[[], Awaitable[None]],
        *,
        name: str,
    ) -> None:
        self._start = start
        self._stop = stop
        self._ready: concurrent.futures.Future[
            tuple[asyncio.AbstractEventLoop, asyncio.Event]
        ] = concurrent.futures.Future()
        self._stopped: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        """Start the thread; return once the server serves, or raise its error."""
        self._thread.start()
        try:
            self._ready.result(_START_TIMEOUT)
        except BaseException:
            self._thread.join(_START_TIMEOUT)
            raise

    def stop(self) -> None:
        """Stop the server and wait for the thread; raise what stopping raised."""
        if not self._ready.done() or self._ready.exception() is not None:
            return
        loop, stop = self._ready.result()
        with contextlib.suppress(RuntimeError):  # the loop is already closed
            loop.call_soon_threadsafe(stop.set)
        self._thread.join(_STOP_TIMEOUT)
        if self._thread.is_alive():
            raise RuntimeError(
                f"the fake server's thread did not stop within {_STOP_TIMEOUT:g} s: "
                "its event loop is blocked"
            )
        if self._stopped is not None:
            raise self._stopped

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:
            if not self._ready.done():
                self._ready.set_exception(exc)
            else:
                self._stopped = exc

    async def _main(self) -> None:
        stop = asyncio.Event()
        try:
            await self._start()
        except BaseException as exc:
            self._ready.set_exception(exc)
            return
        self._ready.set_result((asyncio.get_running_loop(), stop))
        try:
            await stop.wait()
        finally:
            await self._stop()
