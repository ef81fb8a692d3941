"""The background loop that cuts the queue into requests.

It decides *when* and *what*: a request leaves when a batch is full (by count or
bytes), when the oldest queued command has waited ``linger`` seconds, when a
caller awaits a command (after a short coalescing window, ``await_linger``, so
concurrent awaiters still share a request), when ``flush()`` asks, or when the
client closes. It pulls from the command table and hands each batch to the
sender; it never touches HTTP, slots or retries.
"""

from __future__ import annotations

import asyncio
import logging
import time

from ._sender import Sender
from ._table import CommandTable

logger = logging.getLogger("trackasync")

_monotonic = time.monotonic
_time = time.time


class Batcher:
    """Moves commands from the store to the sender, one request at a time."""

    def __init__(
        self,
        *,
        table: CommandTable,
        sender: Sender,
        linger: float,
        await_linger: float,
        max_batch_commands: int,
        max_batch_bytes: int,
    ) -> None:
        self._table = table
        self._sender = sender
        self._linger = linger
        self._await_linger = await_linger
        self._max_count = max_batch_commands
        self._max_bytes = max_batch_bytes
        # Commands at the head of the queue that must leave without lingering:
        # what was queued when flush() was called, or when an awaiter's
        # coalescing window ended.
        self._urgent = 0
        # When the window opened by the first awaiter ends (monotonic), if open.
        self._expedite_at: float | None = None
        self._closing = False
        # The batcher's own wake-up: the table calls it when a command arrives
        # or a batch's worth is queued; flush, expedite and close set it too.
        self._changed = asyncio.Event()
        table.wake = self._changed.set

    def flush(self) -> None:
        """Send everything queued now without waiting for ``linger``."""
        self._urgent = max(self._urgent, len(self._table))
        self._changed.set()

    def expedite(self) -> None:
        """A caller awaits a command: send what is queued within ``await_linger``."""
        if self._expedite_at is None and len(self._table):
            self._expedite_at = _monotonic() + self._await_linger
            self._changed.set()

    def close(self) -> None:
        """Send everything that is queued, then stop."""
        self._closing = True
        self._changed.set()

    async def run(self) -> None:
        """Loop until closed and the queue is empty. Never dies of an error."""
        while True:
            try:
                if await self._step():
                    return
            except Exception:
                # Never let a bug stop the pipeline; the commands stay queued.
                logger.exception("batcher error; continuing")
                await asyncio.sleep(0.1)

    def _delay(self) -> float:
        """Seconds until the oldest queued command must leave (<= 0: now)."""
        oldest = self._table.oldest()
        assert oldest is not None
        # Creation times are wall-clock (they survive a restart): a clock step
        # must neither hold a command longer than the linger nor send early
        # for long, so the wait is bounded by the linger itself.
        delay = min(oldest.created + self._linger - _time(), self._linger)
        expedite_at = self._expedite_at
        if expedite_at is not None:
            window = expedite_at - _monotonic()
            if window <= delay:
                if window <= 0:
                    # The awaiters' window ended: everything queued now goes.
                    self._urgent = len(self._table)
                    self._expedite_at = None
                return window
        return delay

    async def _step(self) -> bool:
        """One decision. Returns True when the loop should end."""
        table = self._table
        changed = self._changed
        changed.clear()
        if not len(table):
            self._expedite_at = None
            if self._closing:
                return True
            await changed.wait()
            return False
        if not (self._closing or self._urgent > 0 or table.ready()):
            delay = self._delay()
            if delay > 0:
                # A timer that sets the event is far cheaper than a cancel scope
                # or wait_for, and this wait happens about once per request.
                timer = asyncio.get_running_loop().call_later(delay, changed.set)
                try:
                    await changed.wait()
                finally:
                    timer.cancel()
                return False
        sender = self._sender
        await sender.reserve()
        # Never empty: only this loop takes commands out of the queue while it
        # runs (drop_old replaces one, the close cancels this loop first).
        try:
            batch = table.take(self._max_count, self._max_bytes)
        except BaseException:
            sender.release()
            raise
        self._urgent = max(0, self._urgent - len(batch))
        sender.start(batch)
        return False
