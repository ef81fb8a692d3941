"""One queued command and the caller's handle on its outcome.

A ``Delivery`` is both: the pipeline queues the very object ``track`` returns, so a
call creates one object, not a command plus a future. Awaiting it is optional and
creates a waiter only for callers that do await.
"""

from __future__ import annotations

import asyncio
from collections.abc import Generator
from dataclasses import dataclass
from typing import Any, Literal

import msgspec

from ._exceptions import DeliveryFailed

Kind = Literal["customers/events", "customers"]

_PENDING = 0
_DELIVERED = 1
_FAILED = 2


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


class Accepted:
    """What one accepting answer says about every command it accepted.

    Shared by all commands of one request, so accepting 50 commands costs one
    object; each command's ``Receipt`` is built only if someone asks for it.
    """

    __slots__ = ("at", "request_id", "status")

    def __init__(self, status: int, request_id: str | None, at: float) -> None:
        self.status = status
        self.request_id = request_id
        self.at = at


class Delivery:
    """A queued command (an event or a customer update) and its outcome.

    Await it for the outcome: a :class:`Receipt` once the API accepted the
    command, or :class:`~trackasync.DeliveryFailed` with the reason. Not awaiting
    it is fine. Cancelling a task that awaits it does not affect the command.
    """

    __slots__ = (
        "_accepted",
        "_error",
        "_state",
        "_waiters",
        "attempts",
        "body",
        "enqueued_at",
        "kind",
    )

    def __init__(self, kind: Kind, body: bytes, enqueued_at: float) -> None:
        #: ``"customers/events"`` or ``"customers"``: the API's name for the command.
        self.kind: Kind = kind
        #: The command's JSON body, encoded once at the call and sent as is.
        self.body = body
        #: ``time.monotonic()`` at the call.
        self.enqueued_at = enqueued_at
        #: Requests that carried it so far.
        self.attempts = 0
        self._state = _PENDING
        self._accepted: Accepted | None = None
        self._error: DeliveryFailed | None = None
        self._waiters: list[asyncio.Future[None]] | None = None

    def __repr__(self) -> str:
        state = ("pending", "delivered", "failed")[self._state]
        return f"<Delivery {self.kind} {state} attempts={self.attempts}>"

    def data(self) -> dict[str, Any]:
        """The command's body, decoded: what the API receives as ``data``."""
        decoded: dict[str, Any] = msgspec.json.decode(self.body)
        return decoded

    def done(self) -> bool:
        """True once the command has a final outcome."""
        return self._state != _PENDING

    def delivered(self) -> bool:
        """True once the API accepted the command."""
        return self._state == _DELIVERED

    def result(self) -> Receipt:
        """The receipt; raises ``DeliveryFailed`` if it failed, or
        ``asyncio.InvalidStateError`` while it is still pending."""
        if self._state == _DELIVERED:
            accepted = self._accepted
            assert accepted is not None
            return Receipt(
                attempts=self.attempts,
                status=accepted.status,
                request_id=accepted.request_id,
                latency=max(0.0, accepted.at - self.enqueued_at),
            )
        if self._state == _FAILED:
            assert self._error is not None
            raise self._error
        raise asyncio.InvalidStateError("the delivery is still pending")

    def exception(self) -> DeliveryFailed | None:
        """The failure, if it failed; ``None`` if delivered. Raises while pending."""
        if self._state == _PENDING:
            raise asyncio.InvalidStateError("the delivery is still pending")
        return self._error

    def __await__(self) -> Generator[Any, None, Receipt]:
        return self._wait().__await__()

    async def _wait(self) -> Receipt:
        if self._state == _PENDING:
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
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

    def _succeed(self, accepted: Accepted) -> bool:
        if self._state != _PENDING:
            return False
        self._state = _DELIVERED
        self._accepted = accepted
        if self._waiters:
            self._wake()
        return True

    def _fail(self, error: DeliveryFailed) -> bool:
        if self._state != _PENDING:
            return False
        self._state = _FAILED
        self._error = error
        if self._waiters:
            self._wake()
        return True

    def _wake(self) -> None:
        waiters, self._waiters = self._waiters, None
        for waiter in waiters or ():
            if not waiter.done():
                waiter.set_result(None)
