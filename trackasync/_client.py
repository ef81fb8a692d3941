"""The ``Client`` facade: validation at the call, the lifecycle, and the public API.

It owns the pieces (codec, buffer, batcher, sender, transport) and one background
task that runs them. It does no I/O or encoding of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping
from types import TracebackType
from typing import Any

import anyio
import msgspec

from ._auth import PrivateKey, PublicToken
from ._batcher import Batcher
from ._buffer import CommandBuffer, Overflow
from ._config import Limits, Retry, _positive, api_base
from ._delivery import Delivery, Receipt
from ._encoding import Codec
from ._exceptions import (
    APIError,
    ClientClosed,
    ClientStateError,
    ConfigError,
    DeliveryFailed,
)
from ._ledger import Ledger, ResultHook
from ._ratelimit import DEFAULT_RATE_LIMIT, make_limiter
from ._results import error_for, request_id
from ._sender import MODES, Mode, Sender
from ._stats import CloseReport, Counters, FlushResult, Stats, ThrottledWarning
from ._timestamps import now as _now, to_seconds
from ._transport import (
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_TIMEOUT,
    AiohttpTransport,
    Request,
    Transport,
)
from ._version import VERSION

logger = logging.getLogger("trackasync")

DEFAULT_MAX_QUEUE = 10_000
DEFAULT_QUEUE_TIMEOUT = 10.0
DEFAULT_LINGER = 0.5
DEFAULT_MAX_IN_FLIGHT = 4
DEFAULT_SHUTDOWN_TIMEOUT = 10.0

_get_running_loop = asyncio._get_running_loop
_monotonic = time.monotonic
_time_ns = time.time_ns

# Never a running loop, so "self._open_loop is not _get_running_loop()" is one
# identity check that fails for "not started", "closed" and "wrong event loop".
_NOT_OPEN = object()

_UNOPENED, _OPEN, _CLOSING, _CLOSED = "unopened", "open", "closing", "closed"


class Client:
    """A buffered, batching client for the Bloomreach Engagement Tracking API.

    Use it as ``async with Client(...) as client:``, or call its methods from
    inside a running event loop and ``await client.aclose()`` at the end. See the
    README for every option.
    """

    # Slots make the attribute reads of the per-call hot path cheaper.
    __slots__ = (
        "_auth",
        "_base",
        "_batcher",
        "_buffer",
        "_closed_event",
        "_codec",
        "_counters",
        "_dropped_warning",
        "_encode_event",
        "_headers",
        "_ledger",
        "_limits",
        "_linger",
        "_loop",
        "_max_in_flight",
        "_mode",
        "_offer",
        "_open_loop",
        "_queue_timeout",
        "_rate",
        "_report",
        "_retry",
        "_runner",
        "_sender",
        "_shutdown_timeout",
        "_state",
        "_transport",
        "_try_offer",
    )

    def __init__(
        self,
        base_url: str,
        project_token: str,
        *,
        auth: PrivateKey | PublicToken,
        max_queue: int = DEFAULT_MAX_QUEUE,
        overflow: Overflow = "wait",
        queue_timeout: float | None = DEFAULT_QUEUE_TIMEOUT,
        linger: float = DEFAULT_LINGER,
        mode: Mode = "auto",
        max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
        rate_limit: float | None = DEFAULT_RATE_LIMIT,
        rate_budget: str | None = None,
        retry: Retry | None = None,
        limits: Limits | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        shutdown_timeout: float = DEFAULT_SHUTDOWN_TIMEOUT,
        on_result: ResultHook | None = None,
        transport: Transport | None = None,
        allow_http: bool = False,
    ) -> None:
        if not isinstance(auth, (PrivateKey, PublicToken)):
            raise ConfigError(
                "auth must be PrivateKey(key_id, secret) or PublicToken(token)"
            )
        if mode not in MODES:
            raise ConfigError(f"mode must be one of {MODES}, got {mode!r}")
        if not isinstance(max_in_flight, int) or max_in_flight < 1:
            raise ConfigError(
                f"max_in_flight must be an int >= 1, got {max_in_flight!r}"
            )
        _positive("linger", linger, allow_zero=True)
        _positive("timeout", timeout)
        _positive("connect_timeout", connect_timeout)
        _positive("shutdown_timeout", shutdown_timeout, allow_zero=True)
        if queue_timeout is not None:
            _positive("queue_timeout", queue_timeout, allow_zero=True)
        if rate_limit is not None:
            _positive("rate_limit", rate_limit)
        if on_result is not None and not callable(on_result):
            raise ConfigError("on_result must be callable")
        self._base = api_base(base_url, project_token, allow_http)
        self._auth = auth
        self._limits = limits or Limits()
        self._retry = retry or Retry()
        self._mode: Mode = mode
        self._linger = linger
        self._max_in_flight = max_in_flight
        self._queue_timeout = queue_timeout
        self._shutdown_timeout = shutdown_timeout
        self._transport: Transport = transport or AiohttpTransport(
            timeout=timeout, connect_timeout=connect_timeout
        )
        self._headers = {
            "Authorization": auth.header,
            "Content-Type": "application/json",
            "Accept": "application/json",
            "User-Agent": f"trackasync/{VERSION}",
        }
        self._codec = Codec(self._limits)
        self._encode_event = self._codec.event
        self._counters = Counters()
        self._ledger = Ledger(self._counters, on_result)
        self._rate = make_limiter(rate_limit, rate_budget, base_url)
        self._dropped_warning = ThrottledWarning(
            "queue full: dropped %d command(s) since the last warning"
        )
        self._buffer = CommandBuffer(
            max_queue,
            overflow,
            batch_count=self._limits.max_batch_commands,
            batch_bytes=self._limits.max_batch_bytes,
            on_ready=self._on_ready,
            on_drop=self._on_drop,
        )
        self._offer = self._buffer.offer
        self._try_offer = self._buffer.try_offer
        self._state = _UNOPENED
        # The loop the client is bound to while it takes commands.
        self._open_loop: object = _NOT_OPEN
        self._loop: asyncio.AbstractEventLoop | None = None
        self._batcher: Batcher | None = None
        self._sender: Sender | None = None
        self._runner: asyncio.Task[None] | None = None
        self._report: CloseReport | None = None
        self._closed_event: asyncio.Event | None = None

    def __repr__(self) -> str:
        return f"<Client {self._base} auth={self._auth!r} state={self._state}>"

    @classmethod
    def from_env(cls, **options: Any) -> Client:
        """A client configured from ``TRACKASYNC_*`` environment variables.

        Keyword arguments override what the environment says; see the README.
        """
        from ._env import client_kwargs

        return cls(**client_kwargs(options))

    # -- lifecycle ----------------------------------------------------------------

    async def __aenter__(self) -> Client:
        self._ensure_open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def _ensure_open(self) -> None:
        """Start on first use, or explain why the client cannot be used here."""
        loop = _get_running_loop()
        if self._open_loop is loop and loop is not None:
            return
        if loop is None:
            raise ClientStateError(
                "trackasync.Client must be used from inside a running event loop "
                "(in a coroutine or a callback of that loop)"
            )
        if self._state in (_CLOSING, _CLOSED):
            raise ClientClosed("the client is closed; it takes no more commands")
        if self._loop is not None and self._loop is not loop:
            raise ClientStateError(
                "this client is bound to another event loop; create one client per loop"
            )
        self._start(loop)

    def _start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._sender = Sender(
            transport=self._transport,
            base=self._base,
            headers=self._headers,
            mode=self._mode,
            retry=self._retry,
            rate=self._rate,
            ledger=self._ledger,
            counters=self._counters,
        )
        self._batcher = Batcher(
            buffer=self._buffer,
            sender=self._sender,
            rate=self._rate,
            linger=self._linger,
            max_in_flight=self._max_in_flight,
            max_batch_commands=1
            if self._mode == "single"
            else self._limits.max_batch_commands,
            max_batch_bytes=self._limits.max_batch_bytes,
        )
        # The background work runs in a task the client owns, not in the caller's
        # task: the client may be opened in one task and closed in another (test
        # fixtures, framework lifespans) without upsetting a cancel scope.
        self._runner = loop.create_task(self._run(), name="trackasync")
        self._state = _OPEN
        self._open_loop = loop

    async def _run(self) -> None:
        batcher = self._batcher
        assert batcher is not None
        async with anyio.create_task_group() as task_group:
            self._ledger.spawn = task_group.start_soon
            try:
                await batcher.run(task_group)
            finally:
                self._ledger.spawn = None

    def _on_ready(self) -> None:
        if self._batcher is not None:
            self._batcher.wake()

    def _on_drop(self, delivery: Delivery) -> None:
        self._dropped_warning()
        self._ledger.failed(
            delivery,
            DeliveryFailed(
                "dropped",
                f"dropped by the overflow policy {self._buffer.overflow!r}: "
                f"the queue was full ({self._buffer.maxsize} commands)",
            ),
        )

    async def aclose(self, timeout: float | None = None) -> CloseReport:
        """Stop taking commands, deliver what is queued, and close.

        Waits up to ``timeout`` seconds (default ``shutdown_timeout``) for queued
        and in-flight commands, retries included, then cancels what is left.
        Every command still undelivered then fails with reason "closed" and is in
        the report's ``undelivered``. Safe to call more than once.
        """
        if self._report is not None:
            return self._report
        if self._state == _CLOSING:
            return await self._wait_closed()
        budget = self._shutdown_timeout if timeout is None else timeout
        self._state = _CLOSING
        self._open_loop = _NOT_OPEN
        self._closed_event = asyncio.Event()
        self._buffer.close()
        try:
            with anyio.CancelScope(shield=True):
                await self._shutdown(budget)
        finally:
            self._state = _CLOSED
            self._report = CloseReport(
                delivered=self._counters.delivered,
                failed=dict(self._counters.failed),
                undelivered=list(self._ledger.closed),
            )
            self._closed_event.set()
        return self._report

    async def _wait_closed(self) -> CloseReport:
        assert self._closed_event is not None
        await self._closed_event.wait()
        assert self._report is not None
        return self._report

    async def _shutdown(self, budget: float) -> None:
        deadline = _monotonic() + budget
        runner = self._runner
        if runner is not None and self._batcher is not None:
            self._batcher.close()
            done, _ = await asyncio.wait({runner}, timeout=budget)
            if not done:
                logger.warning(
                    "aclose: %d commands still queued or in flight after %.1f s; "
                    "giving them up as 'closed'",
                    len(self._buffer) + self._counters.in_flight,
                    budget,
                )
                runner.cancel()
                await asyncio.wait({runner})
            if not runner.cancelled() and runner.exception() is not None:
                logger.error("the background task failed", exc_info=runner.exception())
        # What is left never got a final answer: give it back to the caller.
        closing = self._buffer.drain()
        if self._sender is not None:
            closing.extend(self._sender.abandon())
        for delivery in closing:
            self._ledger.failed(
                delivery,
                DeliveryFailed(
                    "closed", "the client closed before the command was sent"
                ),
            )
        late = self._ledger.late_hooks
        self._ledger.late_hooks = []
        with anyio.move_on_after(max(0.0, deadline - _monotonic())):
            for delivery in late:
                await self._ledger.run_async_hook(delivery)
        await self._transport.aclose()

    # -- commands -------------------------------------------------------------------

    def track_nowait(
        self,
        customer_ids: Mapping[str, str],
        event_type: str,
        properties: Mapping[str, Any] | None = None,
        *,
        timestamp: object = None,
    ) -> Delivery:
        """Queue an event without waiting; returns its ``Delivery``.

        ``timestamp`` defaults to now, taken here, so a retry is byte-identical
        and the API's deduplication absorbs it. Raises ``InvalidEvent`` for bad
        input and ``QueueFull`` when the queue is full under "wait" or "raise".
        """
        # The hottest path of the library: one identity check, one encode, one
        # object, one append. Each extra call here costs a measurable share.
        if self._open_loop is not _get_running_loop():
            self._ensure_open()
        delivery = Delivery(
            "customers/events",
            self._encode_event(
                customer_ids,
                event_type,
                properties,
                _time_ns() // 1000 / 1_000_000
                if timestamp is None
                else to_seconds(timestamp, "timestamp"),
            ),
            _monotonic(),
        )
        self._offer(delivery)
        return delivery

    async def track(
        self,
        customer_ids: Mapping[str, str],
        event_type: str,
        properties: Mapping[str, Any] | None = None,
        *,
        timestamp: object = None,
    ) -> Delivery:
        """Queue an event; under "wait", waits for room up to ``queue_timeout``.

        Returns as soon as the event is queued: await the returned ``Delivery``
        for its outcome.
        """
        # The same steps as track_nowait, inlined there and here on purpose: a
        # shared helper would add a call to every event of both paths.
        if self._open_loop is not _get_running_loop():
            self._ensure_open()
        delivery = Delivery(
            "customers/events",
            self._encode_event(
                customer_ids,
                event_type,
                properties,
                _time_ns() // 1000 / 1_000_000
                if timestamp is None
                else to_seconds(timestamp, "timestamp"),
            ),
            _monotonic(),
        )
        if not self._try_offer(delivery):
            await self._buffer.put(delivery, self._queue_timeout)
        return delivery

    async def track_and_wait(
        self,
        customer_ids: Mapping[str, str],
        event_type: str,
        properties: Mapping[str, Any] | None = None,
        *,
        timestamp: object = None,
    ) -> Receipt:
        """Queue an event and wait for its outcome (batched with the others).

        Returns the ``Receipt``, or raises ``DeliveryFailed``.
        """
        delivery = await self.track(
            customer_ids, event_type, properties, timestamp=timestamp
        )
        return await delivery

    def update_customer_nowait(
        self,
        customer_ids: Mapping[str, str],
        properties: Mapping[str, Any],
        *,
        update_timestamp: object = None,
    ) -> Delivery:
        """Queue a customer property update without waiting.

        ``update_timestamp`` defaults to now, taken here: the API then keeps the
        newest value of each property whatever order updates arrive in.
        """
        if self._open_loop is not _get_running_loop():
            self._ensure_open()
        body = self._customer_body(customer_ids, properties, update_timestamp)
        delivery = Delivery("customers", body, _monotonic())
        self._buffer.offer(delivery)
        return delivery

    async def update_customer(
        self,
        customer_ids: Mapping[str, str],
        properties: Mapping[str, Any],
        *,
        update_timestamp: object = None,
    ) -> Delivery:
        """Queue a customer property update; under "wait", waits for room."""
        if self._open_loop is not _get_running_loop():
            self._ensure_open()
        body = self._customer_body(customer_ids, properties, update_timestamp)
        delivery = Delivery("customers", body, _monotonic())
        if not self._try_offer(delivery):
            await self._buffer.put(delivery, self._queue_timeout)
        return delivery

    def _customer_body(
        self,
        customer_ids: Mapping[str, str],
        properties: Mapping[str, Any],
        update_timestamp: object,
    ) -> bytes:
        stamp = (
            _now()
            if update_timestamp is None
            else to_seconds(update_timestamp, "update_timestamp")
        )
        return self._codec.customer(customer_ids, properties, stamp)

    # -- the seam for front ends that run in other threads (SyncClient) -----------

    def _event(
        self,
        customer_ids: Mapping[str, str],
        event_type: str,
        properties: Mapping[str, Any] | None,
        timestamp: object,
    ) -> Delivery:
        """Validate and encode an event into a command, not yet queued.

        Touches no client state, so it is safe from any thread: a front end in
        another thread raises ``InvalidEvent`` to its caller, at the call.
        """
        stamp = _now() if timestamp is None else to_seconds(timestamp, "timestamp")
        body = self._encode_event(customer_ids, event_type, properties, stamp)
        return Delivery("customers/events", body, _monotonic())

    def _customer(
        self,
        customer_ids: Mapping[str, str],
        properties: Mapping[str, Any],
        update_timestamp: object,
    ) -> Delivery:
        """Validate and encode a customer update, not yet queued (any thread)."""
        body = self._customer_body(customer_ids, properties, update_timestamp)
        return Delivery("customers", body, _monotonic())

    def _submit_nowait(self, delivery: Delivery) -> None:
        """Queue a command built by ``_event``/``_customer``, in the client's loop,
        applying the overflow policy without waiting (``QueueFull`` when full
        under "wait" or "raise")."""
        if self._open_loop is not _get_running_loop():
            self._ensure_open()
        self._offer(delivery)

    async def _submit(self, delivery: Delivery) -> None:
        """Queue a command built by ``_event``/``_customer``, in the client's loop,
        waiting up to ``queue_timeout`` for room under "wait"."""
        if self._open_loop is not _get_running_loop():
            self._ensure_open()
        if not self._try_offer(delivery):
            await self._buffer.put(delivery, self._queue_timeout)

    # -- waiting and reading ------------------------------------------------------

    async def flush(self, timeout: float | None = None) -> FlushResult:
        """Send everything queued now and wait until each of those has an outcome.

        With ``timeout``, returns after that many seconds at the latest; what is
        still pending then is counted in ``pending`` (and keeps going).
        """
        if self._batcher is None or self._sender is None:
            return FlushResult(delivered=0, failed=0, pending=0)
        targets = self._buffer.snapshot()
        for commands in self._sender.in_flight.values():
            targets.extend(commands)
        self._batcher.flush()
        waiting = [d for d in targets if not d.done()]
        if waiting:
            with anyio.move_on_after(timeout):
                for delivery in waiting:
                    if not delivery.done():
                        with contextlib.suppress(DeliveryFailed):
                            await delivery
        delivered = sum(1 for d in targets if d.delivered())
        pending = sum(1 for d in targets if not d.done())
        return FlushResult(
            delivered=delivered,
            failed=len(targets) - delivered - pending,
            pending=pending,
        )

    async def system_time(self) -> float:
        """The API's clock, in UNIX seconds (``GET /system/time``).

        One request, not retried; raises ``RequestError`` subclasses on failure.
        """
        self._ensure_open()
        await self._rate.acquire()
        self._counters.requests += 1
        response = await self._transport.send(
            Request("GET", f"{self._base}/system/time", self._headers)
        )
        if response.status != 200:
            raise error_for(response)
        try:
            return float(msgspec.json.decode(response.body)["time"])
        except (msgspec.DecodeError, ValueError, TypeError, KeyError):
            raise APIError(
                "unreadable system/time answer",
                status=response.status,
                request_id=request_id(response),
                body=response.body,
            ) from None

    def stats(self) -> Stats:
        """A snapshot of the client's counters."""
        return self._counters.snapshot(len(self._buffer), self._buffer.accepted)
