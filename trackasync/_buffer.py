"""The in-memory ``CommandStore``: a bounded queue, its overflow policies, and
the commands in flight.

The queue holds ``Delivery`` objects whose bodies are already encoded. Drops and
every other outcome go to the ``Ledger``, which never calls the caller's hook
from here: a hook runs later, in the client's own task.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Literal

from ._delivery import Accepted, Delivery
from ._exceptions import ClientClosed, ConfigError, DeliveryFailed, QueueFull
from ._ledger import Ledger

Overflow = Literal["wait", "raise", "drop_new", "drop_old"]
"""What a full queue does with a new command (``Client(overflow=...)``):

- ``"wait"``: ``track``/``update_customer`` wait up to ``queue_timeout`` for
  room, then raise ``QueueFull``; the ``*_nowait`` methods raise at once;
- ``"raise"``: every call raises ``QueueFull`` at once;
- ``"drop_new"``: the new command is dropped (its ``Delivery`` fails "dropped");
- ``"drop_old"``: the oldest queued command is dropped to make room.

Drops are counted in ``stats()`` and logged (WARNING, rate-limited).
"""
OVERFLOW_POLICIES: tuple[Overflow, ...] = ("wait", "raise", "drop_new", "drop_old")


class MemoryStore:
    """A FIFO of commands, at most ``maxsize`` long, and the set in flight.

    When full, ``overflow`` decides: ``"wait"`` (``put`` waits for room, FIFO among
    waiters; ``offer`` raises ``QueueFull``), ``"raise"`` (``QueueFull``),
    ``"drop_new"`` (the new command fails "dropped"), ``"drop_old"`` (the oldest
    queued command does). ``changed`` is set when the batcher may have something
    new to do: the first command arrived, or a batch's worth is queued.
    """

    __slots__ = (
        "_batch_bytes",
        "_batch_count",
        "_flying",
        "_items",
        "_ledger",
        "_limit",
        "_putters",
        "_woken",
        "accepted",
        "changed",
        "closed",
        "maxsize",
        "nbytes",
        "overflow",
    )

    def __init__(
        self,
        maxsize: int,
        overflow: Overflow,
        *,
        batch_count: int,
        batch_bytes: int,
        ledger: Ledger,
    ) -> None:
        if overflow not in OVERFLOW_POLICIES:
            raise ConfigError(
                f"overflow must be one of {OVERFLOW_POLICIES}, got {overflow!r}"
            )
        if not isinstance(maxsize, int) or maxsize < 1:
            raise ConfigError(f"max_queue must be an int >= 1, got {maxsize!r}")
        self.maxsize = maxsize
        self.overflow = overflow
        self.nbytes = 0
        #: Commands taken in, the overflow policy's drops included.
        self.accepted = 0
        self.closed = False
        self._items: deque[Delivery] = deque()
        self._putters: deque[asyncio.Future[None]] = deque()
        # Putters woken for room that have not resumed yet: their slots are
        # reserved, so a newcomer cannot take them and break the FIFO order.
        self._woken = 0
        # What len(queue) must stay under for a command to go straight in: one
        # comparison on the hot path stands for "full", "room reserved for woken
        # waiters" and "waiters queued first" (then it is 0).
        self._limit = maxsize
        self._batch_count = batch_count
        self._batch_bytes = batch_bytes
        self._ledger = ledger
        # In flight: taken for a request, not settled yet. A dict keeps the
        # order they were taken in (for ``pending``) and finds one by identity.
        self._flying: dict[Delivery, None] = {}
        self.changed = asyncio.Event()

    def __len__(self) -> int:
        return len(self._items)

    @property
    def in_flight(self) -> int:
        """Commands taken for requests and not settled yet."""
        return len(self._flying)

    def pending(self) -> list[Delivery]:
        """Every command in flight or queued now, in the order they were taken."""
        return [*self._flying, *self._items]

    def oldest(self) -> Delivery | None:
        """The command queued longest, if any."""
        return self._items[0] if self._items else None

    def ready(self) -> bool:
        """Whether a full batch (by count or bytes) is queued."""
        return len(self._items) >= self._batch_count or self.nbytes >= self._batch_bytes

    def offer(self, delivery: Delivery) -> None:
        """Queue without waiting, applying the overflow policy when full."""
        items = self._items
        if len(items) >= self._limit:
            self._overflow(delivery)
            self.accepted += 1
            return
        self.accepted += 1
        items.append(delivery)
        self.nbytes = nbytes = self.nbytes + len(delivery.body)
        size = len(items)
        if size == 1 or size == self._batch_count or nbytes >= self._batch_bytes:
            self.changed.set()

    def try_offer(self, delivery: Delivery) -> bool:
        """``offer``, except that under "wait" a full queue returns False instead
        of raising, so the caller can ``await put`` only when it must wait."""
        if len(self._items) >= self._limit and self.overflow == "wait":
            return False
        self.offer(delivery)
        return True

    def _refresh_limit(self) -> None:
        self._limit = 0 if self._putters else self.maxsize - self._woken

    async def put(self, delivery: Delivery, timeout: float | None) -> None:
        """Queue, waiting up to ``timeout`` for room under the "wait" policy."""
        if self.try_offer(delivery):
            return
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        self._putters.append(waiter)
        self._limit = 0
        # A timer that fails the waiter costs far less than wait_for, which
        # starts a task; a producer outrunning the sender waits once a batch.
        timer = None if timeout is None else loop.call_later(timeout, _expire, waiter)
        try:
            await waiter
        except BaseException as exc:
            if waiter in self._putters:
                self._putters.remove(waiter)
                self._refresh_limit()
            elif (
                waiter.done() and not waiter.cancelled() and waiter.exception() is None
            ):
                # Woken for room this caller will not use: pass it on.
                self._woken -= 1
                self._wake_putters()
            if isinstance(exc, asyncio.TimeoutError):
                raise QueueFull(
                    f"the queue stayed full ({self.maxsize} commands) for "
                    f"{timeout} s; nothing was queued"
                ) from None
            raise
        finally:
            if timer is not None:
                timer.cancel()
        # Woken by take(): the slot was reserved for this caller.
        self._woken -= 1
        self._refresh_limit()
        if self.closed:
            raise ClientClosed("the client closed while waiting for room")
        self.accepted += 1
        self._items.append(delivery)
        self.nbytes += len(delivery.body)
        size = len(self._items)
        if size == 1 or size == self._batch_count or self.nbytes >= self._batch_bytes:
            self.changed.set()

    def _overflow(self, delivery: Delivery) -> None:
        if self.overflow in ("wait", "raise"):
            raise QueueFull(
                f"the queue is full ({self.maxsize} commands); nothing was queued"
            )
        if self.overflow == "drop_new":
            self._drop(delivery)
            return
        oldest = self._items.popleft()
        self.nbytes -= len(oldest.body)
        self._items.append(delivery)
        self.nbytes += len(delivery.body)
        self._drop(oldest)

    def _drop(self, delivery: Delivery) -> None:
        self._ledger.failed(
            delivery,
            DeliveryFailed(
                "dropped",
                f"dropped by the overflow policy {self.overflow!r}: "
                f"the queue was full ({self.maxsize} commands)",
            ),
        )

    def take(self, max_count: int, max_bytes: int) -> list[Delivery]:
        """Remove and return the oldest commands that fit one batch.

        ``max_bytes`` bounds the sum of the bodies; the first command is always
        taken (a single command never exceeds the batch cap: ``Limits`` ensures it).
        """
        items = self._items
        popleft = items.popleft
        batch = [popleft() for _ in range(min(len(items), max_count))]
        total = sum([len(command.body) for command in batch])
        if total > max_bytes and len(batch) > 1:
            # Rare: the batch is over the byte cap. Keep the longest head that
            # fits and give the tail back, in order.
            kept = total = 0
            for command in batch:
                size = len(command.body)
                if kept and total + size > max_bytes:
                    break
                total += size
                kept += 1
            items.extendleft(reversed(batch[kept:]))
            del batch[kept:]
        self.nbytes -= total
        self._flying.update(dict.fromkeys(batch))
        if batch and self._putters:
            self._wake_putters()
        return batch

    def accept(self, deliveries: list[Delivery], accepted: Accepted) -> None:
        """The API accepted these in-flight commands."""
        flying = self._flying
        for delivery in deliveries:
            flying.pop(delivery, None)
        self._ledger.accepted(deliveries, accepted)

    def fail(self, delivery: Delivery, error: DeliveryFailed) -> None:
        """This in-flight command ended without being accepted."""
        self._flying.pop(delivery, None)
        self._ledger.failed(delivery, error)

    def close(self, *, keep: bool) -> list[Delivery]:
        """Fail everything still queued or in flight "closed" (memory keeps
        nothing, whatever ``keep`` asks) and return those commands."""
        self.stop_intake()
        stranded = self.pending()
        self._flying.clear()
        self._items.clear()
        self.nbytes = 0
        failed = self._ledger.failed
        for delivery in stranded:
            failed(
                delivery,
                DeliveryFailed(
                    "closed",
                    "the client closed before the API answered"
                    if delivery.attempts
                    else "the client closed before the command was sent",
                    attempts=delivery.attempts,
                ),
            )
        return stranded

    def stop_intake(self) -> None:
        """Take no more commands: callers waiting for room get ``ClientClosed``."""
        self.closed = True
        putters, self._putters = self._putters, deque()
        self._refresh_limit()
        for waiter in putters:
            if not waiter.done():
                waiter.set_exception(
                    ClientClosed("the client closed while waiting for room")
                )

    def _wake_putters(self) -> None:
        room = self.maxsize - len(self._items) - self._woken
        putters = self._putters
        while room > 0 and putters:
            waiter = putters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                self._woken += 1
                room -= 1
        self._refresh_limit()


def _expire(waiter: asyncio.Future[None]) -> None:
    """Fail a producer's wait for room that ran out of time."""
    if not waiter.done():
        waiter.set_exception(asyncio.TimeoutError())
