"""The ``Client`` facade: validation at the call, the state, and the public API.

It validates and encodes each command at the call and hands it to the command
table (the one owner of every command until its outcome). Everything that runs
in the background, and the close, belongs to its ``Pipeline``; the client keeps
the intake, the state and the reads.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import sys
import time
import warnings
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any

import anyio

from . import _fork
from ._auth import PrivateKey, PublicToken
from ._config import Limits, Retry, api_base
from ._consent import CONSENT, ConsentAction, ConsentClock, consent_properties
from ._delivery import Delivery, Receipt
from ._dryrun import default_transport, resolve_send
from ._encoding import Codec
from ._exceptions import ClientClosed, ClientStateError, ConfigError, DeliveryFailed
from ._hooks import ResultHook
from ._log import CommandLog
from ._network import TLSOption
from ._options import (
    DEFAULT_AWAIT_LINGER,
    DEFAULT_LINGER,
    DEFAULT_MAX_IN_FLIGHT,
    DEFAULT_MAX_QUEUE,
    DEFAULT_MAX_QUEUE_BYTES,
    DEFAULT_QUEUE_TIMEOUT,
    DEFAULT_SHUTDOWN_TIMEOUT,
    DEFAULT_SPOOL_INTERVAL,
    DEFAULT_SPOOL_MAX_BYTES,
    Durability,
    Mode,
    Options,
    timeout_arg,
)
from ._pipeline import (
    CLOSED,
    CLOSING,
    UNOPENED,
    ClientState,
    Lifecycle,
    Pipeline,
)
from ._ratelimit import DEFAULT_RATE_LIMIT
from ._results import system_time_of
from ._shape import BeforeSend, Shaper, filtered, shaper_of
from ._stats import CloseReport, FlushResult, Stats
from ._table import Overflow
from ._timestamps import now as _now, to_seconds
from ._transport import (
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_TIMEOUT,
    Request,
    Transport,
)
from ._version import VERSION

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from ._options import EnvOptions

__all__ = ["Client", "ClientState"]

logger = logging.getLogger("trackasync")

_get_running_loop = asyncio._get_running_loop
_time = time.time
_time_ns = time.time_ns


class Client:
    """A buffered, batching client for the Bloomreach Engagement Tracking API.

    Use it as ``async with Client(...) as client:``, or call its methods from
    inside a running event loop and ``await client.aclose()`` at the end.

    **Parameters** (all but the first two keyword-only; each is described
    where ``Options`` declares it):

    - ``base_url``: the API's address, e.g. ``https://api.exponea.com``.
    - ``project_token``: the project's token.
    - ``auth``: ``PrivateKey(key_id, secret)`` or ``PublicToken(token)``.
    - ``max_queue`` (10,000), ``max_queue_bytes`` (128 MiB), ``overflow``
      ("wait"), ``queue_timeout`` (10 s): the queue, bounded in commands and in
      bytes, and what a full one does (see ``Overflow``).
    - ``linger`` (0.5 s), ``await_linger`` (0: the loop's next turn), ``mode`` ("auto"):
      how long commands wait to share a request, and which routes they take.
    - ``max_in_flight`` (4), ``rate_limit`` (100/s), ``rate_budget`` (None):
      concurrency and pacing, alone or shared with the host's other processes.
    - ``retry`` (``Retry()``), ``limits`` (``Limits()``): retries and size limits.
    - ``timeout`` (30 s), ``connect_timeout`` (10 s), ``shutdown_timeout``
      (10 s): per request, per connection, and for ``aclose()``.
    - ``on_result``: a hook called with each command's ``Delivery`` at its outcome.
    - ``transport``: where requests go (default: aiohttp); ``allow_http``:
      plain http to a host other than this one; ``send=False``: a dry run.
    - ``proxy``, ``trust_env`` (True), ``tls``: an HTTP(S) proxy, whether the
      environment's proxy variables count, and the CAs to trust.
    - ``spool`` (None), ``durability`` ("durable"), ``spool_interval`` (1 s),
      ``spool_max_bytes`` (8 GiB): a directory where commands survive a crash
      until their outcome, when a command is on disk (see ``Durability``),
      and how much the spool holds beyond the queue in memory.
    - ``default_properties``, ``before_send``: properties merged into every
      event, and a hook that changes or drops each event at its call.
    """

    # Slots make the attribute reads of the per-call hot path cheaper.
    __slots__ = (
        "__weakref__",
        "_base",
        "_codec",
        "_consents",
        "_encode_event",
        "_entered",
        "_headers",
        "_life",
        "_log_factory",
        "_offer",
        "_options",
        "_owner",
        "_persistent",
        "_pipeline",
        "_queue_timeout",
        "_send",
        "_shaper",
        "_synced",
        "_table",
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
        max_queue_bytes: int = DEFAULT_MAX_QUEUE_BYTES,
        overflow: Overflow = "wait",
        queue_timeout: float | None = DEFAULT_QUEUE_TIMEOUT,
        linger: float = DEFAULT_LINGER,
        await_linger: float = DEFAULT_AWAIT_LINGER,
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
        send: bool | None = None,
        proxy: str | None = None,
        trust_env: bool = True,
        tls: TLSOption = None,
        spool: str | os.PathLike[str] | None = None,
        durability: Durability = "durable",
        spool_interval: float = DEFAULT_SPOOL_INTERVAL,
        spool_max_bytes: int = DEFAULT_SPOOL_MAX_BYTES,
        default_properties: Mapping[str, Any] | None = None,
        before_send: BeforeSend | None = None,
    ) -> None:
        options = Options(
            base_url=base_url,
            project_token=project_token,
            auth=auth,
            max_queue=max_queue,
            max_queue_bytes=max_queue_bytes,
            overflow=overflow,
            queue_timeout=queue_timeout,
            linger=linger,
            await_linger=await_linger,
            mode=mode,
            max_in_flight=max_in_flight,
            rate_limit=rate_limit,
            rate_budget=rate_budget,
            retry=retry,
            limits=limits,
            timeout=timeout,
            connect_timeout=connect_timeout,
            shutdown_timeout=shutdown_timeout,
            on_result=on_result,
            transport=transport,
            allow_http=allow_http,
            send=send,
            proxy=proxy,
            trust_env=trust_env,
            tls=tls,
            spool=spool,
            durability=durability,
            spool_interval=spool_interval,
            spool_max_bytes=spool_max_bytes,
            default_properties=default_properties,
            before_send=before_send,
        )
        self._setup(options)

    @classmethod
    def _from_options(
        cls, options: Options, log: Callable[[], CommandLog] | None = None
    ) -> Client:
        """A client for ``options`` (already validated), persisting its commands
        through the log ``log()`` makes (one per process: it is called again in
        a forked child), or in memory only."""
        client = cls.__new__(cls)
        client._setup(options, log)
        return client

    def _setup(
        self, options: Options, log: Callable[[], CommandLog] | None = None
    ) -> None:
        if log is None and options.spool is not None:
            log = _spool_factory(options)
        self._log_factory = log
        self._base = api_base(
            options.base_url, options.project_token, options.allow_http
        )
        self._options = options
        self._queue_timeout = options.queue_timeout
        self._headers = {
            "Authorization": options.auth.header,
            "Content-Type": "application/json",
            "Accept": "application/json",
            "User-Agent": f"trackasync/{VERSION}",
        }
        self._codec = Codec(options.the_limits)
        self._encode_event = self._codec.event
        self._consents = ConsentClock()
        self._shaper = shaper_of(options.default_properties, options.before_send)
        # send=False (or TRACKASYNC_SEND=0): a transport that answers success.
        self._send = resolve_send(options.send, options.transport)
        self._entered = False
        # Last: nothing above can fail with a session left open, and the
        # finalizer does nothing for a client that never got this far.
        self._transport: Transport = options.transport or self._own_transport()
        self._new_pipeline()
        # In a forked child, _after_fork_in_child runs first thing.
        _fork.register(self)

    def _own_transport(self) -> Transport:
        options = self._options
        return default_transport(
            self._send, options.timeout, options.connect_timeout, options.network()
        )

    def _new_pipeline(self) -> None:
        """The per-process parts: a new state and pipeline, with no task yet."""
        self._life = life = Lifecycle()
        pipeline = Pipeline(
            self._options,
            life,
            self._transport,
            self._base,
            self._headers,
            send=self._send,
            log=None if self._log_factory is None else self._log_factory(),
        )
        self._pipeline = pipeline
        self._table = pipeline.table
        self._owner = pipeline.owner
        self._offer = pipeline.table.offer
        self._try_offer = pipeline.table.try_offer
        # With a spool: await track() returns once its command is on disk.
        self._persistent = pipeline.table.log.persistent
        self._synced = pipeline.table.log.synced

    def _after_fork_in_child(self) -> None:
        """In a child process: drop everything inherited and start afresh.

        The parent keeps sending what it had queued; the child's copies are
        discarded, unsent, and counted in ``stats().discarded_at_fork``. The
        inherited tasks, loop and connections belong to the parent: they are
        kept referenced (never closed or collected here, which would touch the
        parent's sockets or report its session as unclosed) and never used.
        """
        old = self._pipeline
        discarded = old.discard_in_child()
        _fork.keep_forever((old, self._transport))
        was = self._life.state
        if self._options.transport is None:
            self._transport = self._own_transport()
        self._new_pipeline()
        self._pipeline.counters.discarded_at_fork = discarded
        if was is CLOSING or was is CLOSED:
            self._life.state = CLOSED
            self._pipeline.finish()
        if discarded:
            logger.info(
                "trackasync: forked: the child discarded %d inherited command(s); "
                "the parent process sends them",
                discarded,
            )

    def __repr__(self) -> str:
        dry_run = "" if self._send else " send=False"
        return (
            f"<Client {self._base} auth={self._options.auth!r} "
            f"state={self._life.state.value}{dry_run}>"
        )

    @property
    def state(self) -> ClientState:
        """Where the client is in its life: see ``ClientState``."""
        return self._life.state

    def __del__(self) -> None:
        # A client dropped while it still holds commands must not lose them
        # silently (aiohttp warns the same way about an unclosed session).
        # A constructor that failed set nothing: nothing to say then.
        life = getattr(self, "_life", None)
        if life is None or life.state is CLOSED or life.state is UNOPENED:
            return
        table = self._table
        left = len(table) + table.in_flight
        if left:
            message = (
                f"trackasync.Client was garbage-collected unclosed with {left} "
                "command(s) queued or in flight: they were never delivered. "
                "Use 'async with Client(...)' or 'await client.aclose()'."
            )
            # At interpreter shutdown the modules these need may be gone
            # already; a finalizer must not raise then.
            with contextlib.suppress(Exception):
                logger.warning(message)
            with contextlib.suppress(Exception):
                warnings.warn(message, ResourceWarning, stacklevel=1)

    @classmethod
    def from_env(cls, **options: Unpack[EnvOptions]) -> Client:
        """A client configured from ``TRACKASYNC_*`` environment variables.

        Keyword arguments override what the environment says; see the README.
        """
        from ._env import client_options

        return cls._from_options(client_options(options, "Client.from_env"))

    # -- lifecycle ----------------------------------------------------------------

    async def __aenter__(self) -> Client:
        self._ensure_open()
        if self._entered:
            raise ClientStateError(
                "this client is already in an 'async with' block; enter it once"
            )
        self._entered = True
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
        life = self._life
        if life.open_loop is loop and loop is not None:
            return
        if loop is None:
            raise ClientStateError(
                "trackasync.Client must be used from inside a running event loop "
                "(in a coroutine or a callback of that loop)"
            )
        if life.state is CLOSING or life.state is CLOSED:
            raise ClientClosed("the client is closed; it takes no more commands")
        if life.loop is not None and life.loop is not loop:
            raise ClientStateError(
                "this client is bound to another event loop; create one client per loop"
            )
        self._pipeline.start(loop)

    def _check_loop(self, what: str) -> asyncio.AbstractEventLoop:
        loop = asyncio.get_running_loop()
        bound = self._life.loop
        if bound is not None and bound is not loop:
            raise ClientStateError(
                f"{what} called from another event loop than the client's; "
                "create one client per loop"
            )
        return loop

    async def aclose(self, timeout: float | None = None) -> CloseReport:
        """Stop taking commands, deliver what is queued, and close.

        Waits up to ``timeout`` seconds (default ``shutdown_timeout``) for queued
        and in-flight commands, retries included, and for ``on_result`` hooks,
        then cancels what is left. Every command still undelivered then fails
        with reason "closed" and is in the report's ``undelivered``.

        Safe to call more than once, and safe to cancel: the close goes on in
        its own task within its budget, and any later ``aclose()`` returns the
        same, final report.
        """
        budget = timeout_arg("timeout", timeout)
        if budget is None:
            budget = self._options.shutdown_timeout
        pipeline = self._pipeline
        if pipeline.report is not None:
            return pipeline.report
        life = self._life
        if life.loop is not None and life.loop.is_closed():
            pipeline.close_dead_loop()
            return self._final()
        self._check_loop("aclose()")
        if life.state is UNOPENED:
            life.state = CLOSED
            await self._transport.aclose()
            await pipeline.rate.aclose()
            pipeline.finish()
            return self._final()
        closer = pipeline.begin_close(budget, keep=True)
        with pipeline.parked():
            try:
                await asyncio.shield(closer)
            except asyncio.CancelledError:
                # The close itself was cancelled (the loop is shutting down): it
                # still settled everything and wrote its report on the way out.
                if closer.cancelled():
                    return self._final()
                raise
        return self._final()

    def _final(self) -> CloseReport:
        report = self._pipeline.report
        assert report is not None, "the close wrote no report"
        return report

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
        if self._life.open_loop is not _get_running_loop():
            self._ensure_open()
        if self._shaper is not None:  # default_properties or before_send
            delivery = self._event(customer_ids, event_type, properties, timestamp)
            if delivery._outcome is None:
                self._offer(delivery)
            return delivery
        now = _time_ns() // 1000 / 1_000_000
        delivery = Delivery(
            "customers/events",
            self._encode_event(
                customer_ids,
                event_type,
                properties,
                now if timestamp is None else to_seconds(timestamp, "timestamp"),
            ),
            now,
            self._owner,
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
        if self._life.open_loop is not _get_running_loop():
            self._ensure_open()
        if self._shaper is not None:  # default_properties or before_send
            delivery = self._event(customer_ids, event_type, properties, timestamp)
            await self._queue(delivery)
            return delivery
        now = _time_ns() // 1000 / 1_000_000
        delivery = Delivery(
            "customers/events",
            self._encode_event(
                customer_ids,
                event_type,
                properties,
                now if timestamp is None else to_seconds(timestamp, "timestamp"),
            ),
            now,
            self._owner,
        )
        if not self._try_offer(delivery):
            await self._table.put(delivery, self._queue_timeout)
        if self._persistent:
            synced = self._synced(delivery.seq)
            if synced is not None:
                await synced
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
        if self._life.open_loop is not _get_running_loop():
            self._ensure_open()
        body = self._customer_body(customer_ids, properties, update_timestamp)
        delivery = Delivery("customers", body, _time(), self._owner)
        self._offer(delivery)
        return delivery

    async def update_customer(
        self,
        customer_ids: Mapping[str, str],
        properties: Mapping[str, Any],
        *,
        update_timestamp: object = None,
    ) -> Delivery:
        """Queue a customer property update; under "wait", waits for room."""
        if self._life.open_loop is not _get_running_loop():
            self._ensure_open()
        body = self._customer_body(customer_ids, properties, update_timestamp)
        delivery = Delivery("customers", body, _time(), self._owner)
        await self._queue(delivery)
        return delivery

    async def _queue(self, delivery: Delivery) -> None:
        """The awaited intake: queue ``delivery`` (waiting for room under
        "wait"), then, with a durable spool, wait until it is on disk. A command
        already settled (dropped by ``before_send``) is not queued. ``track``
        inlines the same steps for its plain case (the hot path)."""
        if delivery._outcome is not None:
            return
        if not self._try_offer(delivery):
            await self._table.put(delivery, self._queue_timeout)
        if self._persistent:
            synced = self._synced(delivery.seq)
            if synced is not None:
                await synced

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

    def consent_nowait(
        self,
        customer_ids: Mapping[str, str],
        action: ConsentAction,
        category: str,
        *,
        valid_until: float | str | None = None,
        properties: Mapping[str, Any] | None = None,
        timestamp: object = None,
    ) -> Delivery:
        """Queue a consent (an ``accept`` or ``reject`` of one category) without
        waiting; returns its ``Delivery``.

        ``action``, ``category`` and ``valid_until`` (UNIX seconds or
        ``"unlimited"``; needed for ``"accept"``) are checked here and raise
        ``InvalidEvent``: the API silently ignores a consent with any of them
        wrong. The timestamp (now, or ``timestamp``) is moved forward if needed
        so that it is strictly later than the previous consent of the same
        customer and category in this process: the later call wins.
        """
        if self._life.open_loop is not _get_running_loop():
            self._ensure_open()
        delivery = self._consent(
            customer_ids, action, category, valid_until, properties, timestamp
        )
        if delivery._outcome is None:  # not dropped by before_send
            self._offer(delivery)
        return delivery

    async def consent(
        self,
        customer_ids: Mapping[str, str],
        action: ConsentAction,
        category: str,
        *,
        valid_until: float | str | None = None,
        properties: Mapping[str, Any] | None = None,
        timestamp: object = None,
    ) -> Delivery:
        """Queue a consent; under "wait", waits for room. See ``consent_nowait``."""
        if self._life.open_loop is not _get_running_loop():
            self._ensure_open()
        delivery = self._consent(
            customer_ids, action, category, valid_until, properties, timestamp
        )
        await self._queue(delivery)
        return delivery

    # -- the seam for SyncClient, which runs in other threads ----------------------

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
        now = _time_ns() // 1000 / 1_000_000  # _timestamps.now, inlined: per call
        stamp = now if timestamp is None else to_seconds(timestamp, "timestamp")
        if self._shaper is not None:
            return self._shaped(
                self._shaper, customer_ids, event_type, properties, stamp, now
            )
        body = self._encode_event(customer_ids, event_type, properties, stamp)
        return Delivery("customers/events", body, now, self._owner)

    def _shaped(
        self,
        shaper: Shaper,
        customer_ids: Mapping[str, str],
        event_type: str,
        properties: Mapping[str, Any] | None,
        stamp: float,
        now: float,
    ) -> Delivery:
        """An event through default_properties and before_send (any thread);
        already settled as "filtered" if before_send dropped it."""
        event = shaper.shape(customer_ids, event_type, properties, stamp)
        if event is None:
            return filtered(now, self._owner)
        if event.event_type == CONSENT:
            # A hook must not turn a consent into something the API ignores.
            props = event.properties
            consent_properties(
                props.get("action"),
                props.get("category"),
                props.get("valid_until"),
                None,
            )
        body = self._codec.event(
            event.customer_ids, event.event_type, event.properties, event.timestamp
        )
        return Delivery("customers/events", body, now, self._owner)

    def _consent(
        self,
        customer_ids: Mapping[str, str],
        action: object,
        category: object,
        valid_until: object,
        properties: Mapping[str, Any] | None,
        timestamp: object,
    ) -> Delivery:
        """Validate, stamp and encode a consent event, not yet queued (any thread)."""
        props = consent_properties(action, category, valid_until, properties)
        now = _now()
        wanted = now if timestamp is None else to_seconds(timestamp, "timestamp")
        stamp = self._consents.stamp(customer_ids, props["category"], wanted)
        if self._shaper is not None:
            return self._shaped(self._shaper, customer_ids, CONSENT, props, stamp, now)
        body = self._codec.event(customer_ids, CONSENT, props, stamp)
        return Delivery("customers/events", body, now, self._owner)

    def _customer(
        self,
        customer_ids: Mapping[str, str],
        properties: Mapping[str, Any],
        update_timestamp: object,
    ) -> Delivery:
        """Validate and encode a customer update, not yet queued (any thread)."""
        body = self._customer_body(customer_ids, properties, update_timestamp)
        return Delivery("customers", body, _time(), self._owner)

    # -- waiting and reading ------------------------------------------------------

    async def flush(self, timeout: float | None = None) -> FlushResult:
        """Send everything queued now and wait until each of those has an outcome.

        With ``timeout``, returns after that many seconds at the latest; what is
        still pending then is counted in ``pending`` (and keeps going).
        """
        wait = timeout_arg("timeout", timeout)
        self._check_loop("flush()")
        pipeline = self._pipeline
        batcher = pipeline.batcher
        if batcher is None:
            return FlushResult(delivered=0, failed=0, pending=0)
        pipeline.table.drain_inbox()
        targets = pipeline.table.pending()
        batcher.flush()
        with pipeline.parked(), anyio.move_on_after(wait):
            # Newest first: commands settle roughly in order, so once the
            # newest is done most others are too and need no waiter of their own.
            for delivery in reversed(targets):
                if not delivery.done():
                    with contextlib.suppress(DeliveryFailed):
                        await delivery
        delivered = pending = 0
        for delivery in targets:
            if delivery.delivered():
                delivered += 1
            elif not delivery.done():
                pending += 1
        return FlushResult(
            delivered=delivered,
            failed=len(targets) - delivered - pending,
            pending=pending,
        )

    async def system_time(self) -> float:
        """The API's clock, in UNIX seconds (``GET /system/time``).

        One request, not retried; raises ``RequestError`` subclasses on failure.
        """
        if self._life.state is CLOSING:
            raise ClientClosed("the client is closing; it sends no more requests")
        self._ensure_open()
        pipeline = self._pipeline
        await pipeline.rate.acquire()
        pipeline.counters.requests += 1
        response = await self._transport.send(
            Request("GET", f"{self._base}/system/time", self._headers)
        )
        return system_time_of(response)

    def stats(self) -> Stats:
        """A snapshot of the client's counters; see ``Stats`` for the invariant."""
        pipeline = self._pipeline
        enqueued, queued, in_flight = pipeline.table.counts()
        hooks = pipeline.hooks
        stats = pipeline.counters.snapshot(
            enqueued=enqueued,
            queued=queued,
            in_flight=in_flight,
            hooks_skipped=0 if hooks is None else hooks.skipped,
        )
        if self._shaper is not None and self._shaper.filtered:
            stats = dataclasses.replace(stats, filtered=self._shaper.filtered)
        return stats


def _spool_factory(options: Options) -> Callable[[], CommandLog]:
    """Makes the spool's log, one per process (again in a forked child). The
    directory is checked at once, so an unsafe one raises at construction."""
    if sys.platform == "win32":
        raise ConfigError("spool= needs a POSIX system (it locks files with flock)")
    from ._spool import SqliteLog
    from ._spool_files import prepare_directory

    assert options.spool is not None
    directory = prepare_directory(options.spool)

    def factory() -> CommandLog:
        return SqliteLog(
            directory,
            durability=options.durability,
            interval=options.spool_interval,
            max_bytes=options.spool_max_bytes,
        )

    return factory
