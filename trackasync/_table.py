"""The one owner of every command, from the moment it is accepted to its outcome.

A command is *queued* (accepted, not yet sent), then *in flight* (taken for a
request, retries included), then *settled* (delivered or failed, exactly once),
or, at a close that keeps, *kept* in the log for the next run. Commands taken
back from an earlier run are *recovered*. The table holds each command through
all of this and is the one place where outcomes are recorded, so its counts
always add up::

    enqueued + recovered == settled + kept + queued + in_flight

Both clients hand commands to it: ``Client`` from its event loop (``offer``,
``put``), ``SyncClient`` from any other thread (``hand_over``), with the same
overflow policy, the same drops and the same outcomes either way. The batcher
pulls from it (``take``); the sender settles what it took, once per answer
(``settle``). Nothing here calls back into a client or into the caller's hook:
outcomes go to the ``Ledger``, which counts them, completes the ``Delivery``
and queues the hook for the client's own task. Persistence goes through a
``CommandLog`` (``_log.py``), skipped entirely when it keeps nothing.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Literal

from ._delivery import Accepted, Delivery
from ._exceptions import ClientClosed, ConfigError, DeliveryFailed, QueueFull
from ._ledger import Ledger
from ._log import CommandLog, LogEntry, MemoryLog

Overflow = Literal["wait", "raise", "drop_new", "drop_old"]
"""What a full queue does with a new command.

``"wait"``: the caller waits for room, up to ``queue_timeout`` (``QueueFull``
after it; ``track_nowait`` raises at once). ``"raise"``: ``QueueFull`` at once.
``"drop_new"``: the new command fails with reason "dropped". ``"drop_old"``: the
oldest queued command does, and the new one is queued. Drops are counted and
logged at WARNING.
"""

OVERFLOW_POLICIES: tuple[Overflow, ...] = ("wait", "raise", "drop_new", "drop_old")

_monotonic = time.monotonic

Failure = tuple[Delivery, DeliveryFailed]


def _noop() -> None:
    pass


def _no_room(nbytes: int) -> bool:
    return False


class CommandTable:
    """A FIFO of commands, at most ``maxsize`` long and ``maxbytes`` of bodies,
    and the set in flight.

    When full (by count, or by bytes: a command is taken if its body fits in
    what is left, and always into an empty queue), ``overflow`` decides (see
    ``Overflow``). ``wake`` is called when
    the batcher may have something new to do: the first command arrived, or a
    batch's worth is queued; the batcher sets it to its own wake-up.
    """

    __slots__ = (
        "__weakref__",
        "_batch_bytes",
        "_batch_count",
        "_broken",
        "_byte_limit",
        "_drop_template",
        "_flying",
        "_inbox",
        "_inbox_dropped",
        "_items",
        "_ledger",
        "_limit",
        "_lock",
        "_log",
        "_persistent",
        "_putters",
        "_room",
        "_schedule",
        "_scheduled",
        "_spill",
        "_spill_room",
        "_spilling",
        "_thread_waiting",
        "_ticket_bytes",
        "_tickets",
        "_woken",
        "_woken_bytes",
        "closed",
        "enqueued",
        "maxbytes",
        "maxsize",
        "nbytes",
        "overflow",
        "owner",
        "seq",
        "wake",
    )

    def __init__(
        self,
        maxsize: int,
        overflow: Overflow,
        *,
        batch_count: int,
        batch_bytes: int,
        ledger: Ledger,
        log: CommandLog | None = None,
        owner: int = 0,
        maxbytes: int | None = None,
    ) -> None:
        if overflow not in OVERFLOW_POLICIES:
            raise ConfigError(
                f"overflow must be one of {OVERFLOW_POLICIES}, got {overflow!r}"
            )
        if isinstance(maxsize, bool) or not isinstance(maxsize, int) or maxsize < 1:
            raise ConfigError(f"max_queue must be an int >= 1, got {maxsize!r}")
        if maxbytes is None:
            maxbytes = 1 << 62
        elif (
            isinstance(maxbytes, bool) or not isinstance(maxbytes, int) or maxbytes < 1
        ):
            raise ConfigError(f"max_queue_bytes must be an int >= 1, got {maxbytes!r}")
        self.maxsize = maxsize
        self.maxbytes = maxbytes
        self.overflow = overflow
        self.owner = owner
        self.nbytes = 0
        #: Commands taken in since the start, the overflow policy's drops included
        #: ("enqueued": accepted at the call, not by the API).
        self.enqueued = 0
        #: The last sequence number given to a command.
        self.seq = 0
        self.closed = False
        self.wake: Callable[[], None] = _noop
        self._items: deque[Delivery] = deque()
        self._putters: deque[tuple[asyncio.Future[None], int]] = deque()
        # Putters woken for room that have not resumed yet: their slots are
        # reserved, so a newcomer cannot take them and break the FIFO order.
        self._woken = 0
        self._woken_bytes = 0
        # What len(queue) must stay under for a command to go straight in: one
        # comparison on the hot path stands for "full", "room reserved for woken
        # waiters" and "waiters queued first" (then it is 0).
        self._limit = maxsize
        # The same for bytes: what nbytes plus a new body must stay within.
        self._byte_limit = maxbytes
        self._batch_count = batch_count
        self._batch_bytes = batch_bytes
        self._ledger = ledger
        self._log: CommandLog = log or MemoryLog()
        self._persistent = self._log.persistent
        # In flight: taken for a request, not settled yet. A dict keeps the
        # order they were taken in (for ``pending``) and finds one by identity.
        self._flying: dict[Delivery, None] = {}
        # -- the hand-over from other threads (SyncClient) --
        self._lock = threading.Lock()
        self._room = threading.Condition(self._lock)
        # Commands handed over and not yet moved into the queue by the loop.
        self._inbox: list[Delivery] = []
        # Commands dropped at the call because the loop fell far behind: their
        # outcome is recorded by the loop, like any other.
        self._inbox_dropped: list[Delivery] = []
        self._scheduled = False
        # Room for commands handed over from threads under "wait"/"raise": a
        # slot is taken at the call and comes back when its command leaves the
        # queue (per request, in bulk).
        self._tickets = maxsize
        self._ticket_bytes = maxbytes
        self._thread_waiting = 0
        # Why the loop's thread died, if it did: waiting for it is pointless.
        self._broken: Exception | None = None
        self._drop_template: DeliveryFailed | None = None
        # Set by the pipeline: runs a function in the loop's thread, soon.
        self._schedule: Callable[[Callable[[], None]], object] | None = None
        # With a spool: keeps a command on disk only when memory is full (True
        # if it did), and whether commands go there now (they keep going there
        # until what is on disk has come back, so none overtakes an older one).
        self._spill: Callable[[Delivery], bool] | None = None
        self._spill_room: Callable[[int], bool] = _no_room
        self._spilling = False

    # -- reading -------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._items)

    @property
    def log(self) -> CommandLog:
        return self._log

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

    def held(self) -> int:
        """Commands queued, being handed over or in flight, read without the lock
        (after a fork, another thread of the parent may have held it)."""
        return (
            len(self._items)
            + len(self._flying)
            + len(self._inbox)
            + len(self._inbox_dropped)
        )

    def counts(self) -> tuple[int, int, int]:
        """``(enqueued, queued, in_flight)`` as one consistent reading, whichever
        thread asks (commands being handed over count as queued)."""
        with self._lock:
            handed = len(self._inbox) + len(self._inbox_dropped)
            return self.enqueued, len(self._items) + handed, len(self._flying)

    # -- intake from the loop ------------------------------------------------------

    def offer(self, delivery: Delivery) -> None:
        """Queue without waiting, applying the overflow policy when full."""
        items = self._items
        if self._persistent:
            # Numbered only where a log keys them: memory needs no number.
            self.seq = delivery.seq = self.seq + 1
        nbytes = self.nbytes + len(delivery.body)
        if len(items) >= self._limit or (nbytes > self._byte_limit and items):
            self._overflow(delivery)
            self.enqueued += 1
            return
        self.enqueued += 1
        items.append(delivery)
        before = self.nbytes
        self.nbytes = nbytes
        if self._persistent:
            self._log.append((delivery,))
        size = len(items)
        # The batcher waits for a wake-up only while the queue is not ready, so
        # it is woken when the queue becomes ready, not at every command after.
        if (
            size == 1
            or size == self._batch_count
            or nbytes >= self._batch_bytes > before
        ):
            self.wake()

    def try_offer(self, delivery: Delivery) -> bool:
        """``offer``, except that under "wait" a full queue returns False instead
        of raising, so the caller can ``await put`` only when it must wait."""
        items = self._items
        if (
            len(items) >= self._limit
            or (self.nbytes + len(delivery.body) > self._byte_limit and items)
        ) and (self.overflow == "wait" and not self._spillable(delivery)):
            return False
        self.offer(delivery)
        return True

    def _full_text(self) -> str:
        """Which bound the queue reached: its commands, or its bytes."""
        if len(self._items) < self.maxsize - self._woken and self._tickets > 0:
            return f"{self.maxbytes:,} bytes of commands"
        return f"{self.maxsize} commands"

    def _refresh_limit(self) -> None:
        self._limit = (
            0 if self._putters or self._spilling else self.maxsize - self._woken
        )
        self._byte_limit = self.maxbytes - self._woken_bytes

    def _spillable(self, delivery: Delivery) -> bool:
        return self._spill is not None and self._spill_room(len(delivery.body))

    def enable_spill(
        self, spill: Callable[[Delivery], bool], room: Callable[[int], bool]
    ) -> None:
        """With a spool: when memory is full, ``spill(command)`` keeps a command
        on disk only (False when the spool is full too); ``room(nbytes)`` says
        whether it would take that many bytes more."""
        self._spill = spill
        self._spill_room = room

    def stop_spilling(self) -> None:
        """What was kept on disk has all come back: new commands go to memory."""
        if self._spilling:
            self._spilling = False
            self._refresh_limit()

    async def put(self, delivery: Delivery, timeout: float | None) -> None:
        """Queue, waiting up to ``timeout`` for room under the "wait" policy."""
        if self.try_offer(delivery):
            return
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        size = len(delivery.body)
        entry = (waiter, size)
        self._putters.append(entry)
        self._limit = 0
        # A timer that fails the waiter costs far less than wait_for, which
        # starts a task; a producer outrunning the sender waits once a batch.
        timer = None if timeout is None else loop.call_later(timeout, _expire, waiter)
        try:
            await waiter
        except BaseException as exc:
            if entry in self._putters:
                self._putters.remove(entry)
                # It may have held back smaller ones behind it (bytes).
                self._wake_putters()
            elif (
                waiter.done() and not waiter.cancelled() and waiter.exception() is None
            ):
                # Woken for room this caller will not use: pass it on.
                self._woken -= 1
                self._woken_bytes -= size
                self._wake_putters()
            if isinstance(exc, asyncio.TimeoutError):
                raise QueueFull(
                    f"the queue stayed full ({self._full_text()}) for "
                    f"{timeout} s; nothing was queued"
                ) from None
            raise
        finally:
            if timer is not None:
                timer.cancel()
        # Woken by take(): the slot was reserved for this caller.
        self._woken -= 1
        self._woken_bytes -= size
        self._refresh_limit()
        if self.closed:
            raise ClientClosed("the client closed while waiting for room")
        self.enqueued += 1
        if self._persistent:
            self.seq = delivery.seq = self.seq + 1
        self._append(delivery)

    def _append(self, delivery: Delivery) -> None:
        items = self._items
        items.append(delivery)
        self.nbytes += len(delivery.body)
        if self._persistent:
            self._log.append((delivery,))
        size = len(items)
        if size == 1 or size == self._batch_count or self.nbytes >= self._batch_bytes:
            self.wake()

    def _overflow(self, delivery: Delivery) -> None:
        spill = self._spill
        if spill is not None and spill(delivery):
            # Memory is full: the command is on disk only, and comes back
            # through recovery when there is room.
            if not self._spilling:
                self._spilling = True
                self._limit = 0
            self._ledger.spilled(delivery)
            return
        if self.overflow in ("wait", "raise"):
            if self._persistent:
                self.seq -= 1
            raise QueueFull(
                f"the queue is full ({self._full_text()}); nothing was queued"
            )
        if self.overflow == "drop_new":
            self._drop(delivery)
            return
        # drop_old: as many of the oldest as make room (one, unless by bytes).
        items = self._items
        size = len(delivery.body)
        dropped = []
        while items and self._over(size):
            oldest = items.popleft()
            self.nbytes -= len(oldest.body)
            dropped.append(oldest)
        items.append(delivery)
        self.nbytes += size
        if self._persistent:
            self._log.append((delivery,))
            self._log.settle([oldest.seq for oldest in dropped])
        for oldest in dropped:
            self._drop(oldest)

    def _drop(self, delivery: Delivery) -> None:
        self._ledger.failed(delivery, self._dropped_error())

    def _dropped_error(self) -> DeliveryFailed:
        # One per dropped command, and an outage drops every command: the
        # failure is built once per text and copied (``_twin``) after that.
        text = (
            f"dropped by the overflow policy {self.overflow!r}: "
            f"the queue was full ({self._full_text()})"
        )
        template = self._drop_template
        if template is None or template.args[0] != text:
            template = self._drop_template = DeliveryFailed("dropped", text)
        return template._twin()

    # -- intake from other threads -------------------------------------------------

    def bind(self, schedule: Callable[[Callable[[], None]], object]) -> None:
        """Hand-overs from threads are moved into the queue by ``schedule(fn)``,
        which runs ``fn`` in the loop's thread (``loop.call_soon_threadsafe``)."""
        self._schedule = schedule

    def hand_over(
        self, delivery: Delivery, timeout: float | None, *, may_wait: bool = True
    ) -> None:
        """Accept ``delivery`` from a thread other than the loop's.

        The overflow policy answers here, at the call: "raise" raises
        ``QueueFull`` when the queue is full, "wait" blocks this thread up to
        ``timeout`` for room (unless ``may_wait`` is False), and the drop policies
        are applied by the loop as for any other command. A burst of calls costs
        one wake-up of the loop, not one per call.
        """
        with self._lock:
            if self.closed:
                raise ClientClosed("the client is closed; it takes no more commands")
            if self._broken is not None:
                raise self._broken
            overflow = self.overflow
            if overflow == "wait" or overflow == "raise":
                # No room in memory but room on disk: the loop spills it, and it
                # takes no room; otherwise it takes room, waiting for it if need be.
                size = len(delivery.body)
                # The first test is _has_ticket's common answer, inlined: per call.
                if (
                    self._tickets > 0 and size <= self._ticket_bytes
                ) or self._has_ticket(size):
                    self._tickets -= 1
                    self._ticket_bytes -= size
                elif not self._spillable(delivery):
                    self._wait_for_ticket(
                        size, timeout, may_wait and overflow == "wait"
                    )
                    self._tickets -= 1
                    self._ticket_bytes -= size
                self._inbox.append(delivery)
            elif len(self._inbox) >= self.maxsize:
                # The loop is a whole queue behind the callers: drop here, so
                # the hand-over stays bounded; the loop records the outcome.
                delivery._outcome = self._dropped_error()
                self._inbox_dropped.append(delivery)
            else:
                self._inbox.append(delivery)
            self.enqueued += 1
            # Its sequence number is given in the loop (drain_inbox), so that a
            # log sees commands in the order of their numbers.
            if self._scheduled:
                return
            self._scheduled = True
            schedule = self._schedule
        assert schedule is not None, "hand_over before bind()"
        schedule(self.drain_inbox)

    def _has_ticket(self, size: int) -> bool:
        """Room for a hand-over of ``size`` bytes (with the lock held): a slot,
        and its bytes unless nothing is held (then any size fits)."""
        return self._tickets > 0 and (
            size <= self._ticket_bytes or self._tickets == self.maxsize
        )

    def _wait_for_ticket(self, size: int, timeout: float | None, block: bool) -> None:
        """Called with the lock held and no room."""
        if not block:
            raise QueueFull(
                f"the queue is full ({self._full_text()}); nothing was queued"
            )
        deadline = None if timeout is None else _monotonic() + timeout
        self._thread_waiting += 1
        try:
            while not self._has_ticket(size):
                if self.closed:
                    raise ClientClosed("the client closed while waiting for room")
                if self._broken is not None:
                    raise self._broken
                left = None if deadline is None else deadline - _monotonic()
                if left is not None and left <= 0:
                    raise QueueFull(
                        f"the queue stayed full ({self._full_text()}) for "
                        f"{timeout} s; nothing was queued"
                    )
                self._room.wait(left)
            if self.closed:
                # Room and the close came together: the close wins, so no
                # command is accepted after it began.
                raise ClientClosed("the client closed while waiting for room")
        finally:
            self._thread_waiting -= 1

    def break_intake(self, error: Exception) -> None:
        """The loop's thread died: every hand-over, waiting or new, raises
        ``error`` instead of waiting for room that will never come."""
        with self._lock:
            self._broken = error
            self._room.notify_all()

    def drain_inbox(self) -> None:
        """In the loop: move every handed-over command into the queue."""
        with self._lock:
            items, self._inbox = self._inbox, []
            dropped, self._inbox_dropped = self._inbox_dropped, []
            self._scheduled = False
        if self.overflow in ("wait", "raise"):
            # Room was taken at the call (or the command is to be spilled).
            spill = self._spill
            if spill is None and not self._persistent and items:
                # The common case, in bulk: no numbers, no log, no spilling.
                queue = self._items
                before = len(queue)
                queue.extend(items)
                self.nbytes = nbytes = self.nbytes + sum(
                    map(len, [delivery.body for delivery in items])
                )
                if (
                    before == 0
                    or before < self._batch_count <= len(queue)
                    or nbytes >= self._batch_bytes
                ):
                    self.wake()
                items = []
            for delivery in items:
                self.seq = delivery.seq = self.seq + 1
                if (
                    spill is not None
                    and (self._spilling or self._over(len(delivery.body)))
                    and spill(delivery)
                ):
                    if not self._spilling:
                        self._spilling = True
                        self._limit = 0
                    self._ledger.spilled(delivery)
                else:
                    self._append(delivery)
        else:
            for delivery in items:
                self.seq = delivery.seq = self.seq + 1
                if self._over(len(delivery.body)):
                    self._overflow(delivery)
                else:
                    self._append(delivery)
        if dropped:
            failed = self._ledger.record_failed
            for delivery in dropped:
                error = delivery._outcome
                assert isinstance(error, DeliveryFailed)
                failed(delivery, error)

    def _over(self, size: int) -> bool:
        """Whether the queue holds its most, counting a new body of ``size``."""
        items = self._items
        return len(items) >= self.maxsize or (
            self.nbytes + size > self.maxbytes and len(items) > 0
        )

    def _return_tickets(self, count: int, nbytes: int) -> None:
        with self._lock:
            self._tickets = min(self.maxsize, self._tickets + count)
            self._ticket_bytes = min(self.maxbytes, self._ticket_bytes + nbytes)
            if self._tickets == self.maxsize:
                # Nothing held: rounding from spilled commands must not linger.
                self._ticket_bytes = self.maxbytes
            if self._thread_waiting:
                # Bytes may let fewer through than slots: every waiter checks.
                self._room.notify_all()

    # -- the batcher and the sender -------------------------------------------------

    def take(self, max_count: int, max_bytes: int) -> list[Delivery]:
        """Remove and return the oldest commands that fit one batch.

        ``max_bytes`` bounds the sum of the bodies; the first command is always
        taken (a single command never exceeds the batch cap: ``Limits`` ensures it).
        """
        items = self._items
        popleft = items.popleft
        batch = [popleft() for _ in range(min(len(items), max_count))]
        total = sum(map(len, [command.body for command in batch]))
        if total > max_bytes and len(batch) > 1:
            # Rare: the batch is over the byte cap. Keep the longest head that
            # fits and give the tail back to the front, in order.
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
        if batch:
            if self._putters:
                self._wake_putters()
            if self._tickets < self.maxsize:
                self._return_tickets(len(batch), total)
        return batch

    def settle(
        self,
        accepted: Sequence[Delivery] = (),
        receipt: Accepted | None = None,
        failed: Sequence[Failure] = (),
    ) -> None:
        """Record the final outcomes one answer brought, in one step."""
        flying = self._flying
        if accepted:
            assert receipt is not None
            for delivery in accepted:
                flying.pop(delivery, None)
            self._ledger.delivered(accepted, receipt)
        if failed:
            ledger_failed = self._ledger.failed
            for delivery, error in failed:
                flying.pop(delivery, None)
                ledger_failed(delivery, error)
        if self._persistent:
            self._log.settle(
                [d.seq for d in accepted] + [d.seq for d, _ in failed],
            )

    def fail(self, delivery: Delivery, error: DeliveryFailed) -> None:
        """This in-flight command ended without being accepted."""
        self.settle(failed=((delivery, error),))

    # -- recovery --------------------------------------------------------------------

    def recovered(self, entries: Sequence[LogEntry]) -> int:
        """Queue commands taken back from the log (oldest first): those an
        earlier run left (negative numbers) ahead of the queue, as they are
        older; those this run kept on disk when memory was full (positive
        numbers) behind it, as they are newer. Returns how many."""
        if not entries:
            return 0
        owner = self.owner
        commands = [
            Delivery(
                entry.kind,
                entry.body,
                entry.created,
                owner,
                entry.seq,
                entry.attempts,
                recovered=True,
            )
            for entry in entries
        ]
        counters = self._ledger.counters
        if entries[0].seq < 0:
            self._items.extendleft(reversed(commands))
            counters.recovered += len(commands)
        else:
            # This run's own, kept on disk while memory was full: no longer
            # kept (for the next run) but queued again, so the books balance.
            self._items.extend(commands)
            counters.kept -= len(commands)
        self.nbytes += sum(len(entry.body) for entry in entries)
        self.wake()
        return len(commands)

    # -- the end ---------------------------------------------------------------------

    def stop_intake(self) -> None:
        """Take no more commands: callers waiting for room get ``ClientClosed``.

        What was already handed over from threads is moved into the queue, so
        the close still sends it.
        """
        with self._lock:
            self.closed = True
            self._room.notify_all()
        putters, self._putters = self._putters, deque()
        self._refresh_limit()
        for waiter, _ in putters:
            if not waiter.done():
                waiter.set_exception(
                    ClientClosed("the client closed while waiting for room")
                )
        self.drain_inbox()

    def close(self, *, keep: bool) -> list[Delivery]:
        """Settle everything still queued or in flight; the pipeline has stopped.

        With ``keep`` and a persistent log, the unsent commands stay in the log
        for the next run (counted as kept); otherwise, and always for a memory
        log, they fail "closed". Returns the commands that ended "closed".
        """
        self.stop_intake()
        stranded = self.pending()
        self._flying.clear()
        self._items.clear()
        self.nbytes = 0
        self._return_tickets(self.maxsize, self.maxbytes)
        if not stranded:
            return []
        if keep and self._persistent:
            self._log.release(stranded)
            self._ledger.kept(stranded)
            return []
        failures = [
            (
                delivery,
                DeliveryFailed(
                    "closed",
                    "the client closed before the API answered"
                    if delivery.attempts
                    else "the client closed before the command was sent",
                    attempts=delivery.attempts,
                ),
            )
            for delivery in stranded
        ]
        self.settle(failed=failures)
        return stranded

    def _wake_putters(self) -> None:
        room = self.maxsize - len(self._items) - self._woken
        room_bytes = self.maxbytes - self.nbytes - self._woken_bytes
        putters = self._putters
        while room > 0 and putters:
            waiter, size = putters[0]
            if waiter.done():
                putters.popleft()
                continue
            if size > room_bytes and (self._items or self._woken):
                # First come, first served: the head waits for its bytes.
                break
            putters.popleft()
            waiter.set_result(None)
            self._woken += 1
            self._woken_bytes += size
            room -= 1
            room_bytes -= size
        self._refresh_limit()


def _expire(waiter: asyncio.Future[None]) -> None:
    """Fail a producer's wait for room that ran out of time."""
    if not waiter.done():
        waiter.set_exception(asyncio.TimeoutError())
