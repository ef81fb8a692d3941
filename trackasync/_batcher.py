"""The background loop that cuts the queue into requests.

It decides *when* and *what*: a request leaves when a batch is full (by count or
bytes), when the oldest queued command has waited ``linger`` seconds, when
``flush()`` asks, or when the client closes. It takes an in-flight slot and a
rate-limit slot *before* cutting the batch, so under load the queue keeps filling
while it waits and requests leave as full as they can be. It never touches HTTP.
"""

from __future__ import annotations

import asyncio
import logging
import time

from anyio.abc import TaskGroup

from ._buffer import CommandBuffer
from ._delivery import Delivery
from ._ratelimit import RateLimiter
from ._sender import Sender

logger = logging.getLogger("trackasync")


class Batcher:
    """Moves commands from the buffer to the sender, one request at a time."""

    def __init__(
        self,
        *,
        buffer: CommandBuffer,
        sender: Sender,
        rate: RateLimiter,
        linger: float,
        max_in_flight: int,
        max_batch_commands: int,
        max_batch_bytes: int,
    ) -> None:
        self._buffer = buffer
        self._sender = sender
        self._rate = rate
        self._linger = linger
        # asyncio's primitives, not anyio's: these run once per request on the
        # hot path, and anyio's checkpoints cost several times more.
        self._slots = asyncio.Semaphore(max_in_flight)
        self._workers = max_in_flight
        self._started = 0
        self._task_group: TaskGroup | None = None
        self._jobs: asyncio.Queue[list[Delivery] | None] = asyncio.Queue()
        self._max_count = max_batch_commands
        self._max_bytes = max_batch_bytes
        self._wake = asyncio.Event()
        # Commands at the head of the queue that must leave without lingering:
        # what was queued when flush() was called.
        self._urgent = 0
        self._closing = False

    def wake(self) -> None:
        """Something changed: re-check whether a request should leave."""
        self._wake.set()

    def flush(self) -> None:
        """Send everything queued now without waiting for ``linger``."""
        self._urgent = max(self._urgent, len(self._buffer))
        self._wake.set()

    def close(self) -> None:
        """Send everything that is queued, then stop."""
        self._closing = True
        self._wake.set()

    async def run(self, task_group: TaskGroup) -> None:
        """Loop until closed and the queue is empty. Never dies of an error.

        Requests are sent by up to ``max_in_flight`` long-lived workers rather
        than a task per request: starting a task costs more than a whole batch's
        worth of bookkeeping. Workers start with the first requests, so a client
        that never sends starts none.
        """
        self._task_group = task_group
        try:
            while True:
                try:
                    if await self._step():
                        return
                except Exception:
                    # Never let a bug stop the pipeline; the commands stay queued.
                    logger.exception("batcher error; continuing")
                    await asyncio.sleep(0.1)
        finally:
            for _ in range(self._started):
                self._jobs.put_nowait(None)  # each worker stops after its last job

    async def _step(self) -> bool:
        """One decision. Returns True when the loop should end."""
        buffer = self._buffer
        wake = self._wake
        wake.clear()
        if not len(buffer):
            if self._closing:
                return True
            await wake.wait()
            return False
        oldest = buffer.oldest()
        if oldest is not None and not (
            self._closing or self._urgent > 0 or buffer.ready()
        ):
            delay = oldest.enqueued_at + self._linger - time.monotonic()
            if delay > 0:
                # A timer that sets the event is far cheaper than a cancel scope
                # or wait_for, and this wait happens about once per request.
                timer = asyncio.get_running_loop().call_later(delay, wake.set)
                try:
                    await wake.wait()
                finally:
                    timer.cancel()
                return False
        await self._slots.acquire()
        try:
            await self._rate.acquire()
            batch = buffer.take(self._max_count, self._max_bytes)
        except BaseException:
            self._slots.release()
            raise
        if not batch:  # drained meanwhile (drop_old, close)
            self._slots.release()
            return False
        self._urgent = max(0, self._urgent - len(batch))
        self._sender.hand_over(batch)
        if self._started < self._workers and self._task_group is not None:
            self._task_group.start_soon(self._worker)
            self._started += 1
        self._jobs.put_nowait(batch)
        return False

    async def _worker(self) -> None:
        jobs = self._jobs
        while True:
            batch = await jobs.get()
            if batch is None:
                return
            try:
                await self._sender.deliver(batch)
            finally:
                self._slots.release()
