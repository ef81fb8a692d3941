"""One queued command and the caller's handle on its outcome.

A ``Delivery`` is both: the pipeline queues the very object ``track`` returns, so a
call creates one object, not a command plus a future. Awaiting it is optional and
creates a waiter only for callers that do await.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import weakref
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any, Literal

import msgspec

from ._exceptions import DeliveryFailed

logger = logging.getLogger("trackasync")

Kind = Literal["customers/events", "customers"]


@dataclass(frozen=True, slots=True)
class Receipt:
    """The API accepted the command.

    ``attempts`` is the number of requests that carried it, ``status`` the HTTP
    status of the accepting answer, ``request_id`` its ``x-request-id`` and
    ``latency`` the seconds from the call that queued it to that answer.
    """

    attempts: int
    status: int
    request_id: str | None
    latency: float


class Accepted(msgspec.Struct, frozen=True, gc=False):
    """What one accepting answer says about every command it accepted.

    Shared by all commands of one request, so accepting 50 commands costs one
    object; each command's ``Receipt`` is built only if someone asks for it.

    ``gc=False`` keeps a delivered ``Delivery`` untracked by the garbage
    collector: msgspec tracks a Struct again as soon as a field is set to an
    object of a collected type, and this one (an int, a str or None and a
    float) can never be part of a reference cycle. A backlog of delivered
    commands held by an application then costs the collector nothing.
    """

    status: int
    request_id: str | None
    at: float


class Delivery(msgspec.Struct, eq=False):
    """A queued command (an event or a customer update) and its outcome.

    Await it for the outcome: a :class:`Receipt` once the API accepted the
    command, or :class:`~trackasync.DeliveryFailed` with the reason. Not awaiting
    it is fine. Cancelling a task that awaits it does not affect the command.

    It is a Struct (with identity equality) because one is created per call:
    that costs less than half of a slotted class's ``__init__``, and msgspec
    leaves it untracked by the garbage collector while it holds plain values,
    which spares a queue of thousands of them. Being delivered keeps it so
    (see ``Accepted``); a failure, an exception that can carry a traceback and
    so close a cycle through the caller's frame, makes it tracked, and so does
    awaiting it or adding a callback (a list of waiters).
    """

    #: ``"customers/events"`` or ``"customers"``: the API's name for the command.
    kind: Kind
    #: The command's JSON body, encoded once at the call and sent as is.
    body: bytes
    #: When the command was created, in UNIX seconds (wall clock): the call
    #: that queued it, or, for a recovered command, the call in an earlier run.
    created: float
    #: The id of the client that owns it (0: none), so that awaiting it
    #: expedites that client's requests and no other's.
    owner: int = 0
    #: Its sequence number in the owner's command table (unique per process).
    seq: int = 0
    #: Requests that carried it so far, earlier runs included.
    attempts: int = 0
    #: True for a command that came back from the spool (an earlier run's, or
    #: this run's when the queue in memory was full): nobody holds it but the
    #: ``on_result`` hook, which can tell it apart by this flag.
    recovered: bool = False
    # None while pending, then what ended it.
    _outcome: Accepted | DeliveryFailed | None = None
    # Futures of awaiting callers and done callbacks, woken in order on settle.
    _waiters: list[asyncio.Future[None] | Callable[[Delivery], object]] | None = None

    def __repr__(self) -> str:
        outcome = self._outcome
        state = (
            "pending"
            if outcome is None
            else "delivered"
            if outcome.__class__ is Accepted
            else "failed"
        )
        return f"<Delivery {self.kind} {state} attempts={self.attempts}>"

    def data(self) -> dict[str, Any]:
        """The command's body, decoded: what the API receives as ``data``."""
        decoded: dict[str, Any] = msgspec.json.decode(self.body)
        return decoded

    def done(self) -> bool:
        """True once the command has a final outcome."""
        return self._outcome is not None

    def delivered(self) -> bool:
        """True once the API accepted the command."""
        return self._outcome.__class__ is Accepted

    def result(self) -> Receipt:
        """The receipt; raises ``DeliveryFailed`` if it failed, or
        ``asyncio.InvalidStateError`` while it is still pending."""
        outcome = self._outcome
        if isinstance(outcome, Accepted):
            return Receipt(
                attempts=self.attempts,
                status=outcome.status,
                request_id=outcome.request_id,
                latency=max(0.0, outcome.at - self.created),
            )
        if outcome is not None:
            # The same exception object is raised at every await: drop the
            # frames the last raise added, so its traceback does not grow.
            raise outcome.with_traceback(None)
        raise asyncio.InvalidStateError("the delivery is still pending")

    def exception(self) -> DeliveryFailed | None:
        """The failure, if it failed; ``None`` if delivered. Raises while pending."""
        outcome = self._outcome
        if outcome is None:
            raise asyncio.InvalidStateError("the delivery is still pending")
        return None if isinstance(outcome, Accepted) else outcome

    def add_done_callback(self, fn: Callable[[Delivery], object]) -> None:
        """Call ``fn(delivery)`` once the command has its outcome.

        It runs in the client's event loop thread, scheduled as soon as the
        outcome is recorded (never inside the call that recorded it, such as a
        ``track_nowait`` whose overflow policy dropped this command); when the
        command is already done, it is scheduled at once. What it raises is
        logged, not propagated.
        """
        if self._outcome is not None:
            _soon(fn, self)
        elif self._waiters is None:
            self._waiters = [fn]
        else:
            self._waiters.append(fn)

    def __await__(self) -> Generator[Any, None, Receipt]:
        return self._wait().__await__()

    async def _wait(self) -> Receipt:
        if self._outcome is None:
            loop = asyncio.get_running_loop()
            waiter: asyncio.Future[None] = loop.create_future()
            # Someone waits for this command: its client should not linger.
            ref = _awaited.get(self.owner)
            expedite = None if ref is None else ref()
            if expedite is not None:
                expedite()
            if self._waiters is None:
                self._waiters = [waiter]
            else:
                self._waiters.append(waiter)
            try:
                await waiter
            finally:
                # A cancelled caller leaves only its own waiter behind: the
                # command itself stays queued and gets its outcome regardless.
                if self._waiters is not None and waiter in self._waiters:
                    self._waiters.remove(waiter)
        return self.result()

    # -- used by the pipeline ---------------------------------------------------

    def _settle(self, outcome: Accepted | DeliveryFailed) -> bool:
        """Record the final outcome; False if it already had one."""
        if self._outcome is not None:
            return False
        self._outcome = outcome
        if self._waiters:
            self._wake()
        return True

    def _wake(self) -> None:
        waiters, self._waiters = self._waiters, None
        for waiter in waiters or ():
            if isinstance(waiter, asyncio.Future):
                if not waiter.done():
                    waiter.set_result(None)
            else:
                _soon(waiter, self)


# What to call when a caller starts awaiting a command, per owning client (a
# Delivery holds its owner's id, an int, not a reference: a reference would make
# every queued Delivery tracked by the garbage collector). Weak references: this
# registry must not keep an abandoned client alive (its collection is what warns
# that it was never closed).
_awaited: dict[int, weakref.WeakMethod[Callable[[], None]]] = {}
_owner_ids = itertools.count(1)


def new_owner(expedite: Callable[[], None]) -> int:
    """An owner id whose awaited commands call ``expedite()`` (a bound method),
    until ``forget_owner(id)``."""
    owner = next(_owner_ids)
    _awaited[owner] = weakref.WeakMethod(expedite)
    return owner


def forget_owner(owner: int) -> None:
    _awaited.pop(owner, None)


def _soon(fn: Callable[[Delivery], object], delivery: Delivery) -> None:
    loop = asyncio._get_running_loop()
    if loop is None:  # settled outside any loop (a client abandoned by its loop)
        _call(fn, delivery)
    else:
        loop.call_soon(_call, fn, delivery)


def _call(fn: Callable[[Delivery], object], delivery: Delivery) -> None:
    try:
        fn(delivery)
    except Exception:
        # The callback is the caller's code: its failure must not stop delivery.
        logger.exception("a Delivery done callback raised; the pipeline goes on")
