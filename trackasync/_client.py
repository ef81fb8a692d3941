"""The ``Client`` facade: validation at the call, the lifecycle, and the public API.

It validates and encodes each command, hands it to the command store (the one
owner of every command until its outcome), and runs the pipeline's tasks: the
batcher, the sender's workers and the hook dispatcher. It does no I/O and
records no outcome of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import math
import time
import warnings
from collections.abc import Mapping
from types import TracebackType
from typing import Any

import anyio

from . import _fork
from ._alarm import close_details
from ._auth import PrivateKey, PublicToken
from ._batcher import Batcher
from ._buffer import MemoryStore, Overflow
from ._config import Limits, Retry, _positive, api_base
from ._delivery import Delivery, Receipt
from ._dryrun import DRY_RUN_NOTICE, default_transport, resolve_send
from ._encoding import Codec
from ._exceptions import (
    ClientClosed,
    ClientStateError,
    ConfigError,
    DeliveryFailed,
)
from ._hooks import HookRunner, ResultHook
from ._ledger import Ledger
from ._network import Network, TLSOption
from ._ratelimit import DEFAULT_RATE_LIMIT, make_limiter
from ._results import system_time_of
from ._sender import MODES, Mode, Sender
from ._stats import CloseReport, Counters, FlushResult, Stats
from ._timestamps import now as _now, to_seconds
from ._transport import (
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_TIMEOUT,
    Request,
    Transport,
)
from ._version import VERSION

logger = logging.getLogger("trackasync")

DEFAULT_MAX_QUEUE = 10_000
DEFAULT_QUEUE_TIMEOUT = 10.0
DEFAULT_LINGER = 0.5
DEFAULT_AWAIT_LINGER = 0.002
DEFAULT_MAX_IN_FLIGHT = 4
DEFAULT_SHUTDOWN_TIMEOUT = 10.0
# How long a cancelled pipeline task or the session close may take at the end
# of aclose(); a request in flight ends at once when cancelled.
_CLOSE_GRACE = 0.1
# The share of aclose()'s budget kept for on_result hooks of the commands that
# end "closed" (when there is a hook).
_HOOK_SHARE = 0.1

_get_running_loop = asyncio._get_running_loop
_monotonic = time.monotonic
_time_ns = time.time_ns

# Never a running loop, so "self._open_loop is not _get_running_loop()" is one
# identity check that fails for "not started", "closed" and "wrong event loop".
_NOT_OPEN = object()


class ClientState(enum.Enum):
    """Where a ``Client`` is in its life (``client.state``).

    It only moves forward: ``UNOPENED`` → ``OPEN`` → ``CLOSING`` → ``CLOSED``.
    """

    #: Created; it binds to the running event loop and starts its tasks on the
    #: first call or ``async with``.
    UNOPENED = "unopened"
    #: Taking commands and sending them.
    OPEN = "open"
    #: ``aclose()`` has begun (or the event loop stopped): no new commands; what
    #: is queued or in flight is being delivered within the close budget.
    CLOSING = "closing"
    #: Every command has its outcome and the close report is final. A closed
    #: client cannot be reopened.
    CLOSED = "closed"


_UNOPENED, _OPEN, _CLOSING, _CLOSED = ClientState


def _timeout(name: str, value: object) -> float | None:
    """``None`` or a number of seconds >= 0 (infinity allowed), else ConfigError."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{name} must be a number of seconds or None")
    if math.isnan(value) or value < 0:
        raise ConfigError(f"{name} must be >= 0 seconds, got {value!r}")
    return float(value)


class Client:
    """A buffered, batching client for the Bloomreach Engagement Tracking API.

    Use it as ``async with Client(...) as client:``, or call its methods from
    inside a running event loop and ``await client.aclose()`` at the end. See the
    README for every option.
    """

    # Slots make the attribute reads of the per-call hot path cheaper.
    __slots__ = (
        "__weakref__",
        "_auth",
        "_await_linger",
        "_base",
        "_base_url",
        "_batcher",
        "_closer",
        "_codec",
        "_counters",
        "_encode_event",
        "_entered",
        "_headers",
        "_hooks",
        "_ledger",
        "_limits",
        "_linger",
        "_loop",
        "_max_in_flight",
        "_max_queue",
        "_mode",
        "_network",
        "_offer",
        "_on_result",
        "_open_loop",
        "_overflow",
        "_own_transport",
        "_queue_timeout",
        "_rate",
        "_rate_budget",
        "_rate_limit",
        "_report",
        "_retry",
        "_runner",
        "_send",
        "_sender",
        "_shutdown_timeout",
        "_state",
        "_store",
        "_timeouts",
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
    ) -> None:
        # Set first: __del__ reads it even when a check below raises.
        self._state = _UNOPENED
        if not isinstance(auth, (PrivateKey, PublicToken)):
            raise ConfigError(
                "auth must be PrivateKey(key_id, secret) or PublicToken(token)"
            )
        if mode not in MODES:
            raise ConfigError(f"mode must be one of {MODES}, got {mode!r}")
        if (
            isinstance(max_in_flight, bool)
            or not isinstance(max_in_flight, int)
            or max_in_flight < 1
        ):
            raise ConfigError(
                f"max_in_flight must be an int >= 1, got {max_in_flight!r}"
            )
        _positive("linger", linger, allow_zero=True)
        _positive("await_linger", await_linger, allow_zero=True)
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
        # proxy=, trust_env=, tls=: see _network (ConfigError quotes no proxy URL).
        self._network = Network.of(proxy=proxy, trust_env=trust_env, tls=tls)
        self._auth = auth
        self._limits = limits or Limits()
        self._retry = retry or Retry()
        self._mode: Mode = mode
        self._linger = linger
        self._await_linger = await_linger
        self._max_in_flight = max_in_flight
        self._queue_timeout = queue_timeout
        self._shutdown_timeout = shutdown_timeout
        self._headers = {
            "Authorization": auth.header,
            "Content-Type": "application/json",
            "Accept": "application/json",
            "User-Agent": f"trackasync/{VERSION}",
        }
        self._codec = Codec(self._limits)
        self._encode_event = self._codec.event
        self._on_result = on_result
        self._rate_limit = rate_limit
        self._rate_budget = rate_budget
        self._base_url = base_url
        self._max_queue = max_queue
        self._overflow: Overflow = overflow
        self._timeouts = (timeout, connect_timeout)
        self._own_transport = transport is None
        # send=False (or TRACKASYNC_SEND=0): a transport that answers success.
        self._send = resolve_send(send, transport)
        self._new_pipeline()
        # Created last: nothing above can fail with a session left open.
        self._transport: Transport = transport or default_transport(
            self._send, timeout, connect_timeout, self._network
        )
        # In a forked child, _after_fork_in_child runs first thing.
        _fork.register(self)

    def _new_pipeline(self) -> None:
        """The per-process parts: counters, hooks, ledger, store, and no tasks."""
        self._counters = Counters()
        self._hooks = None if self._on_result is None else HookRunner(self._on_result)
        self._ledger = Ledger(self._counters, self._hooks)
        self._rate = make_limiter(self._rate_limit, self._rate_budget, self._base_url)
        self._store = MemoryStore(
            self._max_queue,
            self._overflow,
            batch_count=self._limits.max_batch_commands,
            batch_bytes=self._limits.max_batch_bytes,
            ledger=self._ledger,
        )
        self._offer = self._store.offer
        self._try_offer = self._store.try_offer
        # The loop the client is bound to while it takes commands.
        self._open_loop: object = _NOT_OPEN
        self._loop: asyncio.AbstractEventLoop | None = None
        self._batcher: Batcher | None = None
        self._sender: Sender | None = None
        self._runner: asyncio.Task[None] | None = None
        self._closer: asyncio.Task[None] | None = None
        self._report: CloseReport | None = None
        self._entered = False

    def _after_fork_in_child(self) -> None:
        """In a child process: drop everything inherited and start afresh.

        The parent keeps sending what it had queued; the child's copies are
        discarded, unsent, and counted in ``stats().discarded_at_fork``. The
        inherited tasks, loop and connections belong to the parent: they are
        kept referenced (never closed or collected here, which would touch the
        parent's sockets or report its session as unclosed) and never used.
        """
        discarded = len(self._store) + self._store.in_flight
        _fork.keep_forever((self._store, self._runner, self._transport))
        was = self._state
        self._new_pipeline()
        self._counters.discarded_at_fork = discarded
        if self._own_transport:
            timeout, connect_timeout = self._timeouts
            self._transport = default_transport(
                self._send, timeout, connect_timeout, self._network
            )
        if was is _CLOSING or was is _CLOSED:
            self._state = _CLOSED
            self._finish()
        else:
            self._state = _UNOPENED
        if discarded:
            logger.info(
                "forked: the child discarded %d inherited command(s); the parent "
                "process sends them",
                discarded,
            )

    def __repr__(self) -> str:
        dry_run = "" if self._send else " send=False"
        return (
            f"<Client {self._base} auth={self._auth!r} "
            f"state={self._state.value}{dry_run}>"
        )

    @property
    def state(self) -> ClientState:
        """Where the client is in its life: see ``ClientState``."""
        return self._state

    def __del__(self) -> None:
        # A client dropped while it still holds commands must not lose them
        # silently (aiohttp warns the same way about an unclosed session).
        if self._state is _CLOSED or self._state is _UNOPENED:
            return
        store = getattr(self, "_store", None)
        left = 0 if store is None else len(store) + store.in_flight
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
    def from_env(cls, **options: Any) -> Client:
        """A client configured from ``TRACKASYNC_*`` environment variables.

        Keyword arguments override what the environment says; see the README.
        """
        from ._env import client_kwargs

        return cls(**client_kwargs(options))

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
        if self._open_loop is loop and loop is not None:
            return
        if loop is None:
            raise ClientStateError(
                "trackasync.Client must be used from inside a running event loop "
                "(in a coroutine or a callback of that loop)"
            )
        if self._state is _CLOSING or self._state is _CLOSED:
            raise ClientClosed("the client is closed; it takes no more commands")
        if self._loop is not None and self._loop is not loop:
            raise ClientStateError(
                "this client is bound to another event loop; create one client per loop"
            )
        self._start(loop)

    def _check_loop(self, what: str) -> asyncio.AbstractEventLoop:
        loop = asyncio.get_running_loop()
        if self._loop is not None and self._loop is not loop:
            raise ClientStateError(
                f"{what} called from another event loop than the client's; "
                "create one client per loop"
            )
        return loop

    def _start(self, loop: asyncio.AbstractEventLoop) -> None:
        if not self._send:
            logger.warning(DRY_RUN_NOTICE)
        self._loop = loop
        self._sender = Sender(
            transport=self._transport,
            base=self._base,
            headers=self._headers,
            mode=self._mode,
            retry=self._retry,
            rate=self._rate,
            store=self._store,
            counters=self._counters,
            max_in_flight=self._max_in_flight,
            hooks=self._hooks,
        )
        self._batcher = Batcher(
            store=self._store,
            sender=self._sender,
            linger=self._linger,
            await_linger=self._await_linger,
            max_batch_commands=1
            if self._mode == "single"
            else self._limits.max_batch_commands,
            max_batch_bytes=self._limits.max_batch_bytes,
        )
        if self._hooks is not None:
            self._hooks.start(loop)
        # The background work runs in tasks the client owns, not in the caller's
        # task: the client may be opened in one task and closed in another (test
        # fixtures, framework lifespans) without upsetting a cancel scope.
        self._runner = loop.create_task(self._run(), name="trackasync")
        self._state = _OPEN
        self._open_loop = loop

    async def _run(self) -> None:
        batcher = self._batcher
        assert batcher is not None
        try:
            await batcher.run()
        except asyncio.CancelledError:
            if self._state is _OPEN:
                # Not our close: the event loop is shutting down (asyncio.run
                # returning, Ctrl-C) with the client still open.
                await self._abandon("its event loop stopped")
            raise

    async def _abandon(self, why: str) -> None:
        """End at once, without sending: the loop is going away."""
        self._state = _CLOSING
        self._open_loop = _NOT_OPEN
        left = len(self._store) + self._store.in_flight
        message = (
            f"trackasync.Client was not closed and {why} with {left} "
            "command(s) queued or in flight: they end 'closed', undelivered. "
            "Use 'async with Client(...)' or 'await client.aclose()' before "
            "the loop ends."
        )
        if left:
            logger.warning(message)
        try:
            await self._halt()
            if self._hooks is not None:
                await self._hooks.halt()
            with anyio.move_on_after(_CLOSE_GRACE):
                await self._transport.aclose()
        finally:
            self._finish()
        if left:
            # Last: under "-W error" this raises, and everything is settled by now.
            warnings.warn(message, ResourceWarning, stacklevel=1)

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
        budget = _timeout("timeout", timeout)
        if budget is None:
            budget = self._shutdown_timeout
        if self._report is not None:
            return self._report
        if self._loop is not None and self._loop.is_closed():
            # The loop died without letting the client stop (closed without
            # cancelling its tasks): settle what is left here.
            self._state = _CLOSING
            self._store.close(keep=False)
            self._finish()
            return self._final()
        loop = self._check_loop("aclose()")
        if self._state is _UNOPENED:
            self._state = _CLOSED
            self._open_loop = _NOT_OPEN
            await self._transport.aclose()
            self._finish()
            return self._final()
        closer = self._closer
        if closer is None and self._state is _CLOSING and self._runner is not None:
            # The loop is shutting down and the runner is settling everything
            # (_abandon): its end is this close's end.
            closer = self._runner
        if closer is None:
            self._state = _CLOSING
            self._open_loop = _NOT_OPEN
            closer = self._closer = loop.create_task(
                self._close(budget), name="trackasync-close"
            )
        with self._parked():
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
        report = self._report
        assert report is not None, "the close wrote no report"
        return report

    @contextlib.contextmanager
    def _parked(self) -> Any:
        """Mark an ``on_result`` hook that waits for the pipeline, so the pipeline
        does not wait for it (no deadlock when a hook flushes or closes)."""
        hooks = self._hooks
        task = asyncio.current_task()
        if hooks is None or task is None or not hooks.owns(task):
            yield
            return
        hooks.park(task)
        try:
            yield
        finally:
            hooks.unpark(task)

    async def _close(self, budget: float) -> None:
        deadline = _monotonic() + budget
        store = self._store
        hooks = self._hooks
        clean = False
        try:
            store.stop_intake()
            if self._batcher is not None:
                self._batcher.close()
            # With a hook, its calls for the commands that end "closed" get the
            # last share of the budget: draining stops before it.
            drain_until = deadline - (budget * _HOOK_SHARE if hooks else 0.0)
            if not await self._drain(drain_until):
                logger.warning(
                    "aclose: %d command(s) still queued or in flight after %.1f s; "
                    "giving them up as 'closed'",
                    len(store) + store.in_flight,
                    budget,
                )
            await self._halt()
            # Hooks for the commands that just ended "closed" run too, within
            # what is left of the budget.
            if hooks is not None:
                await hooks.close(deadline)
            clean = True
        finally:
            if not clean:
                # This task was cancelled (the loop is shutting down): stop at
                # once, but leave nothing without an outcome.
                await self._halt()
                if hooks is not None:
                    await hooks.halt()
            with anyio.move_on_after(_CLOSE_GRACE):
                await self._transport.aclose()
            self._finish()

    async def _drain(self, deadline: float) -> bool:
        """Wait until the batcher and every worker are done; False at ``deadline``."""
        runner, sender = self._runner, self._sender
        if runner is None or sender is None:
            return True
        done, _ = await asyncio.wait(
            {runner}, timeout=max(0.0, deadline - _monotonic())
        )
        if not done:
            return False
        sender.stop()
        workers = set(sender.workers)
        if workers:
            _, pending = await asyncio.wait(
                workers, timeout=max(0.0, deadline - _monotonic())
            )
            return not pending
        return True

    async def _halt(self) -> None:
        """Cancel the batcher and the workers, then settle whatever is left."""
        tasks = [t for t in (self._runner, *self._sender_workers()) if t is not None]
        current = asyncio.current_task()
        tasks = [t for t in tasks if not t.done() and t is not current]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=_CLOSE_GRACE)
        runner = self._runner
        if (
            runner is not None
            and runner.done()
            and not runner.cancelled()
            and runner.exception() is not None
        ):
            logger.error("the background task failed", exc_info=runner.exception())
        self._store.close(keep=False)

    def _sender_workers(self) -> list[asyncio.Task[None]]:
        return [] if self._sender is None else list(self._sender.workers)

    def _finish(self) -> None:
        """Write the final report (once) and log what was lost."""
        if self._report is not None:
            return
        self._ledger.flush_logs()
        counters = self._counters
        failed = dict(counters.failed)
        self._report = CloseReport(
            delivered=counters.delivered,
            failed=failed,
            undelivered=list(self._ledger.closed),
        )
        self._state = _CLOSED
        self._open_loop = _NOT_OPEN
        lost = sum(failed.values())
        if lost:
            logger.warning(
                "closed: %d delivered, %d not delivered (%s)%s",
                counters.delivered,
                lost,
                ", ".join(f"{n} {reason}" for reason, n in failed.items() if n),
                close_details(failed, self._ledger.last, self._sender),
            )

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
            await self._store.put(delivery, self._queue_timeout)
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
        self._store.offer(delivery)
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
            await self._store.put(delivery, self._queue_timeout)
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
            await self._store.put(delivery, self._queue_timeout)

    # -- waiting and reading ------------------------------------------------------

    async def flush(self, timeout: float | None = None) -> FlushResult:
        """Send everything queued now and wait until each of those has an outcome.

        With ``timeout``, returns after that many seconds at the latest; what is
        still pending then is counted in ``pending`` (and keeps going).
        """
        wait = _timeout("timeout", timeout)
        self._check_loop("flush()")
        if self._batcher is None:
            return FlushResult(delivered=0, failed=0, pending=0)
        targets = self._store.pending()
        self._batcher.flush()
        with self._parked(), anyio.move_on_after(wait):
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
        self._ensure_open()
        await self._rate.acquire()
        self._counters.requests += 1
        response = await self._transport.send(
            Request("GET", f"{self._base}/system/time", self._headers)
        )
        return system_time_of(response)

    def stats(self) -> Stats:
        """A snapshot of the client's counters; see ``Stats`` for the invariant."""
        store = self._store
        return self._counters.snapshot(
            enqueued=store.accepted,
            queued=len(store),
            in_flight=store.in_flight,
            hooks_skipped=0 if self._hooks is None else self._hooks.skipped,
        )
