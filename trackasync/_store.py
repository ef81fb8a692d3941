"""The owner of every command, from the moment it is accepted to its final outcome.

A command is *queued* (accepted, not yet sent), then *in flight* (taken for a
request, retries included), then *settled* (delivered or failed, exactly once).
The store holds it through all three and is the one place where outcomes are
recorded, so its counts always add up::

    accepted == settled + queued + in_flight

The batcher pulls from it (``take``); the sender settles what it took
(``accept``/``fail``); the client only puts and closes. Nothing here calls back
into the client or into the caller's hook: outcomes go to the ``Ledger``, which
counts them, completes the ``Delivery`` and queues the hook for the client's own
task.

``MemoryStore`` (``_buffer.py``) is the first implementation. A durable store
(a spool on disk) is meant to be the second: it keys commands by an id of its
own, keeps in-flight ones until their outcome, and on ``close(keep=True)``
keeps what is unsent for the next run instead of failing it.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

from ._delivery import Accepted, Delivery
from ._exceptions import DeliveryFailed


class CommandStore(Protocol):
    """What the pipeline needs from the owner of its commands."""

    #: Commands taken in since the start, the overflow policy's drops included.
    accepted: int
    #: Set when the batcher may have something new to do (the first command
    #: arrived, or a batch's worth is queued). The batcher clears and waits on it.
    changed: asyncio.Event

    def __len__(self) -> int:
        """Commands queued now (not in flight)."""
        ...

    @property
    def in_flight(self) -> int:
        """Commands taken for requests and not settled yet."""
        ...

    def offer(self, delivery: Delivery) -> None:
        """Queue without waiting, applying the overflow policy when full."""
        ...

    def try_offer(self, delivery: Delivery) -> bool:
        """``offer``, but False instead of waiting when the policy is "wait"."""
        ...

    async def put(self, delivery: Delivery, timeout: float | None) -> None:
        """Queue, waiting up to ``timeout`` for room under "wait"."""
        ...

    def oldest(self) -> Delivery | None:
        """The command queued longest, if any."""
        ...

    def ready(self) -> bool:
        """Whether a full batch (by count or bytes) is queued."""
        ...

    def take(self, max_count: int, max_bytes: int) -> list[Delivery]:
        """Move the oldest commands that fit one request from queued to in flight."""
        ...

    def pending(self) -> list[Delivery]:
        """Every command queued or in flight now, oldest first where known."""
        ...

    def accept(self, deliveries: list[Delivery], accepted: Accepted) -> None:
        """The API accepted these in-flight commands: settle them."""
        ...

    def fail(self, delivery: Delivery, error: DeliveryFailed) -> None:
        """This command ended without being accepted: settle it."""
        ...

    def stop_intake(self) -> None:
        """Take no more commands; producers waiting for room get ``ClientClosed``."""
        ...

    def close(self, *, keep: bool) -> list[Delivery]:
        """Settle everything still queued or in flight; the pipeline has stopped.

        With ``keep`` a durable store keeps the unsent commands for the next run;
        the in-memory store cannot, and fails them "closed" either way. Returns
        the commands that ended "closed".
        """
        ...
