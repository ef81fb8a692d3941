"""``SyncClient``: the client for code without an event loop.

One ``Client`` runs on an event loop in a background thread that the
``SyncClient`` owns and starts on first use. ``SyncClient`` is only an adapter:
a call validates and encodes in the caller's thread (so bad input raises there,
at the call) and hands the encoded command to the client's command table, the
same owner that ``Client`` uses, which applies the overflow policy at the call
("raise" raises, "wait" blocks this thread for room) and moves a burst of
hand-overs into its queue with one wake-up of the loop. Every outcome, drops
included, goes through the same path as on ``Client``: the same counts, log
lines and ``on_result`` calls.
"""

from __future__ import annotations

import asyncio
import concurrent.futures

# The executor's own exit hook must be registered before ours, so ours runs
# first (they run in reverse order) while the loop can still resolve host names.
import concurrent.futures.thread
import contextlib
import dataclasses
import logging
import sys
import threading
import time
from collections.abc import Callable, Coroutine, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

import msgspec

from . import _fork
from ._auth import PrivateKey, PublicToken
from ._client import Client
from ._consent import ConsentAction
from ._delivery import Delivery, Receipt
from ._exceptions import ClientClosed, ClientStateError, ConfigError, DeliveryFailed
from ._options import SyncClientOptions, check_names, timeout_arg
from ._stats import CloseReport, FlushResult, Stats

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from ._options import EnvOptions
    from ._spool import SqliteLog

logger = logging.getLogger("trackasync")


_T = TypeVar("_T")

# How long a blocked caller sleeps between checks that the background thread
# is still alive: a dead thread must not leave a caller waiting forever.
_LIVENESS_POLL = 0.2
# Extra time allowed beyond a close's own budget before the background thread
# is declared unresponsive.
_THREAD_GRACE = 5.0
# Starting the background thread and opening the client inside it.
_START_TIMEOUT = 10.0

_monotonic = time.monotonic
_get_ident = threading.get_ident


class SyncDelivery(msgspec.Struct, eq=False):
    """The handle ``SyncClient.track``/``update_customer`` return.

    ``result(timeout)`` blocks the calling thread until the command has its
    outcome; ``add_done_callback(fn)`` calls ``fn(handle)`` then.

    A Struct, as ``Delivery`` is: one is made per call, and a Struct's
    ``__init__`` costs half of a Python one.
    """

    _delivery: Delivery
    _runtime: _Runtime

    def __repr__(self) -> str:
        return repr(self._delivery).replace("<Delivery", "<SyncDelivery", 1)

    @property
    def delivery(self) -> Delivery:
        """The underlying ``Delivery`` (its kind, body, attempts)."""
        return self._delivery

    def done(self) -> bool:
        """True once the command has a final outcome."""
        return self._delivery.done()

    def delivered(self) -> bool:
        """True once the API accepted the command."""
        return self._delivery.delivered()

    def result(self, timeout: float | None = None) -> Receipt:
        """Wait up to ``timeout`` seconds (None: no limit) for the outcome.

        Returns the ``Receipt``, raises ``DeliveryFailed`` if the command failed
        and ``TimeoutError`` if it has no outcome yet (it stays queued).
        """
        if not self._delivery.done():
            self._runtime.wait(self._delivery, timeout)
        return self._delivery.result()

    def exception(self, timeout: float | None = None) -> DeliveryFailed | None:
        """Like ``result``, but returns the ``DeliveryFailed`` instead of raising it."""
        if not self._delivery.done():
            self._runtime.wait(self._delivery, timeout)
        return self._delivery.exception()

    def add_done_callback(self, fn: Callable[[SyncDelivery], object]) -> None:
        """Call ``fn(handle)`` once the command has its outcome.

        It runs in the client's background thread, or at once in the calling
        thread if the outcome is already known; what it raises is logged. Keep it
        short, and do not wait on the client from it.
        """
        if self._delivery.done():
            _call(fn, self)
            return
        self._runtime.add_callback(self._delivery, lambda _: _call(fn, self))


def _call(fn: Callable[[SyncDelivery], object], handle: SyncDelivery) -> None:
    try:
        fn(handle)
    except Exception:
        logger.exception("a SyncDelivery done callback raised; the pipeline goes on")


class _Runtime:
    """One background thread, its event loop and the ``Client`` running there.

    A ``SyncClient`` has at most one live runtime; after a fork the child drops
    the inherited one (without touching it: its sockets are the parent's) and
    starts a new one on first use.
    """

    def __init__(self, client: Client, shutdown_timeout: float) -> None:
        self.client = client
        options = client._options
        self.queue_timeout = options.queue_timeout
        self.shutdown_timeout = shutdown_timeout
        self.event = client._event
        self.customer = client._customer
        self.table = client._pipeline.table
        # With a durable spool, track() returns once its command is on disk.
        # (Read off the log, not imported: a client without a spool never
        # loads sqlite3 or the spool's modules.)
        log: Any = self.table.log
        self.spool: SqliteLog | None = log if getattr(log, "durable", False) else None
        self.closing = False
        self.forked = False
        self.failure: BaseException | None = None
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(
            target=self._run, name="trackasync-sync", daemon=True
        )

    # -- the background thread ------------------------------------------------------

    def start(self) -> None:
        self.thread.start()
        # Flushed at exit even if its SyncClient is garbage collected meanwhile.
        _running.add(self)
        future = asyncio.run_coroutine_threadsafe(self._open(), self.loop)
        try:
            future.result(_START_TIMEOUT)
        except BaseException as exc:
            # Not started: stop the thread, and let the next call try afresh.
            _running.discard(self)
            self.closing = True
            self.loop.call_soon_threadsafe(self.loop.stop)
            if isinstance(exc, concurrent.futures.TimeoutError):
                raise ClientStateError(
                    f"the background thread did not start within {_START_TIMEOUT} s"
                ) from None
            raise

    async def _open(self) -> None:
        await self.client.__aenter__()

    def _run(self) -> None:
        loop = self.loop
        asyncio.set_event_loop(loop)
        try:
            while True:
                try:
                    loop.run_forever()
                    break
                except (SystemExit, KeyboardInterrupt) as exc:
                    # Raised by a callback (a done callback, a hook): it would
                    # end this thread and strand every command. The pipeline
                    # goes on; the exit was meant for the caller's thread.
                    logger.error(
                        "trackasync: SyncClient: %s raised in the background "
                        "thread by a callback; ignored, the client goes on",
                        type(exc).__name__,
                    )
        except BaseException as exc:
            # Anything else that escapes the loop ends the thread: remember why,
            # so the next call says so instead of queueing into a dead thread.
            self.failure = exc
            logger.error(
                "trackasync: SyncClient: the background thread died (%s)",
                type(exc).__name__,
            )
            # Producers blocked for room would otherwise wait for nothing.
            self.table.break_intake(
                ClientStateError(
                    "the SyncClient's background thread died "
                    f"({type(exc).__name__}); create a new client"
                )
            )
            return
        finally:
            asyncio.set_event_loop(None)
        # A normal stop (close): tidy up inside the thread that ran the loop.
        with contextlib.suppress(RuntimeError):
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
        loop.close()

    def in_loop_thread(self) -> bool:
        return _get_ident() == self.thread.ident

    def check_alive(self) -> None:
        if self.forked:
            raise ClientStateError(
                "this command was queued before the process forked; the parent "
                "process delivers it, this one discarded its copy"
            )
        failure = self.failure
        if failure is not None:
            raise ClientStateError(
                "the SyncClient's background thread died "
                f"({type(failure).__name__}); create a new client"
            ) from failure
        if not self.thread.is_alive() and not self.closing:
            raise ClientStateError("the SyncClient's background thread is not running")

    # -- handing commands over -------------------------------------------------------

    def hand_over(self, delivery: Delivery) -> None:
        """Give ``delivery`` to the client's table; the policy answers here."""
        # Read per call: a done callback calls in from the loop's own thread.
        in_loop = _get_ident() == self.thread.ident
        try:
            self.table.hand_over(delivery, self.queue_timeout, may_wait=not in_loop)
        except RuntimeError:  # the loop is closed: the thread is gone
            self.check_alive()
            raise
        spool = self.spool
        if spool is not None and not in_loop:
            # Group commit: the callers of every thread share a transaction.
            while not spool.wait_durable(delivery, _LIVENESS_POLL):
                self.check_alive()

    # -- calls into the loop ---------------------------------------------------------

    def call(self, coro: Coroutine[Any, Any, _T], timeout: float | None) -> _T:
        """Run ``coro`` in the loop and wait for it, watching the thread's health."""
        if self.in_loop_thread():
            coro.close()
            raise ClientStateError(
                "this call would wait for the client's own background thread; "
                "do not call it from a done callback"
            )
        self.check_alive()
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return self._result(future, timeout)

    def _result(
        self, future: concurrent.futures.Future[_T], timeout: float | None
    ) -> _T:
        deadline = None if timeout is None else _monotonic() + timeout
        while True:
            left = _LIVENESS_POLL
            if deadline is not None:
                left = min(left, max(0.0, deadline - _monotonic()))
            try:
                return future.result(left)
            except concurrent.futures.TimeoutError:
                if future.done():  # it raised a TimeoutError (RequestTimeout)
                    raise
                if self.failure is not None:
                    future.cancel()
                    self.check_alive()
                if deadline is not None and _monotonic() >= deadline:
                    future.cancel()
                    raise TimeoutError(
                        "the client's background thread did not answer in time"
                    ) from None

    def add_callback(
        self, delivery: Delivery, fn: Callable[[Delivery], object]
    ) -> None:
        self.check_alive()
        self.loop.call_soon_threadsafe(delivery.add_done_callback, fn)

    def wait(self, delivery: Delivery, timeout: float | None) -> None:
        """Block until ``delivery`` has an outcome, or raise ``TimeoutError``.

        A caller waiting for a command is what ``await delivery`` is on
        ``Client``: the command leaves within ``await_linger``, not ``linger``.
        """
        if self.in_loop_thread():
            raise ClientStateError(
                "result() would wait for the client's own background thread; "
                "do not call it from a done callback"
            )
        self.check_alive()
        settled = threading.Event()
        self.loop.call_soon_threadsafe(self._watch, delivery, settled)
        deadline = None if timeout is None else _monotonic() + timeout
        while not settled.is_set():
            left = _LIVENESS_POLL
            if deadline is not None:
                left = min(left, deadline - _monotonic())
                if left <= 0:
                    raise TimeoutError(
                        f"the command has no outcome after {timeout} s; it stays queued"
                    )
            if not settled.wait(left):
                self.check_alive()

    def _watch(self, delivery: Delivery, settled: threading.Event) -> None:
        """In the loop: wake ``settled`` at the outcome, and expedite."""
        delivery.add_done_callback(lambda _: settled.set())
        if not delivery.done():
            self.table.drain_inbox()
            self.client._pipeline.expedite()

    def stats(self) -> Stats:
        """A snapshot taken in the loop's thread, so that it adds up."""
        if self.in_loop_thread() or self.failure is not None or self.closing:
            return self.client.stats()
        try:
            return self.call(_snapshot(self.client), _LIVENESS_POLL * 5)
        except (ClientStateError, TimeoutError, RuntimeError):
            return self.client.stats()

    # -- the end ----------------------------------------------------------------------

    def discarded(self) -> int:
        """In a forked child: the inherited commands this process will not send."""
        # The inner client resets itself after the fork too, before or after
        # this runs: its inherited queue is then in discarded_at_fork instead.
        # No lock is taken: a thread of the parent may have held it at the fork.
        pipeline = self.client._pipeline
        return pipeline.table.held() + pipeline.counters.discarded_at_fork

    def begin_close(self, timeout: float) -> concurrent.futures.Future[CloseReport]:
        self.closing = True
        _running.discard(self)
        self.check_alive()
        return asyncio.run_coroutine_threadsafe(self._aclose(timeout), self.loop)

    def end_close(
        self, future: concurrent.futures.Future[CloseReport], wait: float
    ) -> CloseReport:
        try:
            report = self._result(future, wait)
        except TimeoutError:
            raise ClientStateError(
                f"the background thread did not finish closing within {wait:g} s"
            ) from None
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(_THREAD_GRACE)
        return report

    def close(self, timeout: float) -> CloseReport:
        return self.end_close(self.begin_close(timeout), timeout + _THREAD_GRACE)

    async def _aclose(self, timeout: float) -> CloseReport:
        return await self.client.aclose(timeout)


async def _snapshot(client: Client) -> Stats:
    return client.stats()


# Every started and not yet closed runtime: closed at interpreter exit.
_running: set[_Runtime] = set()


class SyncClient:
    """The client for code without an event loop: views, tasks, scripts, workers.

    Takes the same arguments as :class:`Client`. It runs one ``Client`` on an
    event loop in a background thread, started on first use. ``track`` and
    ``update_customer`` are thread-safe and never wait for the network; bad input
    raises ``InvalidEvent`` at the call. Use it as a context manager or call
    ``close()``; a client left open is flushed at interpreter exit, within its
    ``shutdown_timeout``. After ``os.fork()`` the child starts afresh on first
    use and discards its copy of what the parent had queued (the parent sends it).
    """

    def __init__(
        self,
        base_url: str,
        project_token: str,
        *,
        auth: PrivateKey | PublicToken,
        **options: Unpack[SyncClientOptions],
    ) -> None:
        _refuse_green_threads()
        if "transport" in options:
            # A transport is bound to one loop and one process: it cannot be
            # rebuilt after fork, so the client would not be fork-safe.
            raise ConfigError(
                "SyncClient builds its own transport; pass transport= to Client instead"
            )
        check_names(options, "SyncClient")
        # Built now so that bad settings raise here, in the caller's thread. It is
        # the client the next runtime runs (a fresh one after a fork).
        self._setup(Client(base_url, project_token, auth=auth, **options))

    def _setup(self, client: Client) -> None:
        self._client = client
        self._shutdown_timeout = client._options.shutdown_timeout
        self._runtime: _Runtime | None = None
        self._start_lock = threading.Lock()
        self._closed = False
        self._report: CloseReport | None = None
        # Commands inherited through fork and discarded: added to stats().
        self._discarded = 0
        # Reset in a forked child (weakly held: registering keeps no client alive).
        _fork.register(self)

    def __repr__(self) -> str:
        state = (
            "closed"
            if self._closed
            else "unstarted"
            if self._runtime is None
            else "running"
        )
        options = self._client._options
        return (
            f"<SyncClient {options.base_url} project={options.project_token} "
            f"auth={options.auth!r} state={state}>"
        )

    @classmethod
    def from_env(cls, **options: Unpack[EnvOptions]) -> SyncClient:
        """A client configured from ``TRACKASYNC_*`` environment variables.

        Keyword arguments override what the environment says; see the README.
        """
        from ._env import client_options

        if "transport" in options:
            raise ConfigError(
                "SyncClient builds its own transport; pass transport= to Client instead"
            )
        _refuse_green_threads()
        client = cls.__new__(cls)
        client._setup(
            Client._from_options(client_options(options, "SyncClient.from_env"))
        )
        return client

    # -- lifecycle --------------------------------------------------------------------

    def __enter__(self) -> SyncClient:
        if self._closed:
            raise ClientClosed("the client is closed; it cannot be reopened")
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _ready(self) -> _Runtime:
        """The running runtime, started on first use; raises if it cannot run."""
        runtime = self._runtime
        if runtime is not None and runtime.failure is None and not self._closed:
            return runtime
        with self._start_lock:
            if self._closed:
                raise ClientClosed("the client is closed; it takes no more commands")
            runtime = self._runtime
            if runtime is None:
                runtime = _Runtime(self._client, self._shutdown_timeout)
                runtime.start()
                self._runtime = runtime
            runtime.check_alive()
            return runtime

    def close(self, timeout: float | None = None) -> CloseReport:
        """Stop taking commands, deliver what is queued, stop the thread.

        Waits up to ``timeout`` seconds (default ``shutdown_timeout``), like
        ``Client.aclose``, and returns the same ``CloseReport``. Safe to call
        more than once. A bad ``timeout`` raises ``ConfigError`` and changes
        nothing.
        """
        budget = timeout_arg("timeout", timeout)
        runtime = self._runtime
        if runtime is not None and runtime.in_loop_thread():
            raise ClientStateError(
                "close() cannot be called from the client's own background thread"
            )
        with self._start_lock:
            if self._report is not None:
                return self._report
            self._closed = True
            runtime = self._runtime
        _fork.unregister(self)
        if budget is None:
            budget = self._shutdown_timeout
        if runtime is None:
            failed = {"rejected": 0, "gave_up": 0, "dropped": 0, "closed": 0}
            report = CloseReport(delivered=0, failed=failed, undelivered=[])
        else:
            report = runtime.close(budget)
        self._report = report
        return report

    def _after_fork_in_child(self) -> None:
        """The child's copy: forget the parent's thread, loop and connections."""
        self._start_lock = threading.Lock()
        runtime, self._runtime = self._runtime, None
        if runtime is None:
            return
        runtime.forked = True
        self._discarded += runtime.discarded()
        _fork.keep_forever(runtime)
        self._client = Client._from_options(self._client._options)

    # -- commands ---------------------------------------------------------------------

    def track(
        self,
        customer_ids: Mapping[str, str],
        event_type: str,
        properties: Mapping[str, Any] | None = None,
        *,
        timestamp: object = None,
    ) -> SyncDelivery:
        """Queue an event and return its handle at once (no network wait; with
        a durable spool, once the event is on disk).

        Raises ``InvalidEvent`` for bad input, and ``QueueFull`` when full under
        "raise" (or after ``queue_timeout`` under "wait", which blocks this thread).
        """
        runtime = self._runtime
        if runtime is None or runtime.failure is not None:
            runtime = self._ready()
        delivery = runtime.event(customer_ids, event_type, properties, timestamp)
        if delivery._outcome is None:  # not dropped by before_send
            if runtime.spool is None and _get_ident() != runtime.thread.ident:
                # _Runtime.hand_over's common case, inlined: this is per call.
                try:
                    runtime.table.hand_over(delivery, runtime.queue_timeout)
                except RuntimeError:  # the loop is closed: the thread is gone
                    runtime.check_alive()
                    raise
            else:
                runtime.hand_over(delivery)
        return SyncDelivery(delivery, runtime)

    def update_customer(
        self,
        customer_ids: Mapping[str, str],
        properties: Mapping[str, Any],
        *,
        update_timestamp: object = None,
    ) -> SyncDelivery:
        """Queue a customer property update and return its handle at once."""
        runtime = self._runtime
        if runtime is None or runtime.failure is not None:
            runtime = self._ready()
        delivery = runtime.customer(customer_ids, properties, update_timestamp)
        runtime.hand_over(delivery)
        return SyncDelivery(delivery, runtime)

    def consent(
        self,
        customer_ids: Mapping[str, str],
        action: ConsentAction,
        category: str,
        *,
        valid_until: float | str | None = None,
        properties: Mapping[str, Any] | None = None,
        timestamp: object = None,
    ) -> SyncDelivery:
        """Queue a consent and return its handle at once; see
        ``Client.consent_nowait`` (the same checks, from any thread)."""
        runtime = self._runtime
        if runtime is None or runtime.failure is not None:
            runtime = self._ready()
        delivery = runtime.client._consent(
            customer_ids, action, category, valid_until, properties, timestamp
        )
        if delivery._outcome is None:  # not dropped by before_send
            runtime.hand_over(delivery)
        return SyncDelivery(delivery, runtime)

    def track_and_wait(
        self,
        customer_ids: Mapping[str, str],
        event_type: str,
        properties: Mapping[str, Any] | None = None,
        *,
        timestamp: object = None,
        timeout: float | None = None,
    ) -> Receipt:
        """Queue an event and wait up to ``timeout`` for its outcome.

        Returns the ``Receipt``; raises ``DeliveryFailed``, or ``TimeoutError``
        when there is no outcome in time (the event stays queued).
        """
        handle = self.track(customer_ids, event_type, properties, timestamp=timestamp)
        return handle.result(timeout)

    # -- waiting and reading ------------------------------------------------------------

    def flush(self, timeout: float | None = None) -> FlushResult:
        """Send what is queued now and wait (up to ``timeout``) for its outcomes."""
        wait = timeout_arg("timeout", timeout)
        runtime = self._runtime
        if runtime is None or self._closed:
            return FlushResult(delivered=0, failed=0, pending=0)
        return runtime.call(runtime.client.flush(wait), None)

    def system_time(self, timeout: float | None = None) -> float:
        """The API's clock, in UNIX seconds (one request; raises ``RequestError``).

        Raises ``ClientClosed`` once the client is closed or closing.
        """
        if self._closed:
            raise ClientClosed("the client is closed; it sends no more requests")
        runtime = self._ready()
        return runtime.call(runtime.client.system_time(), timeout)

    def stats(self) -> Stats:
        """A snapshot of the counters (read from any thread; it adds up).

        In a forked child, the inherited commands it discarded (the parent
        sends them) are counted in ``discarded_at_fork``, as on ``Client``.
        """
        runtime = self._runtime
        stats = self._client.stats() if runtime is None else runtime.stats()
        if self._discarded:
            stats = dataclasses.replace(
                stats, discarded_at_fork=stats.discarded_at_fork + self._discarded
            )
        return stats


def _refuse_green_threads() -> None:
    """Greenlet-patched ``threading`` would run the loop thread as a greenlet that
    never gets scheduled while the worker blocks: events would sit unsent."""
    patched = None
    gevent_monkey = sys.modules.get("gevent.monkey")
    if gevent_monkey is not None:
        with contextlib.suppress(Exception):
            if gevent_monkey.is_module_patched("threading"):
                patched = "gevent"
    eventlet_patcher = sys.modules.get("eventlet.patcher")
    if patched is None and eventlet_patcher is not None:
        with contextlib.suppress(Exception):
            if eventlet_patcher.is_monkey_patched("thread"):
                patched = "eventlet"
    if patched is not None:
        raise ClientStateError(
            f"SyncClient needs real threads, but {patched} has monkey-patched "
            "'threading' in this process. Run this worker with a thread or process "
            "pool (e.g. gunicorn's 'sync'/'gthread' worker, Celery's 'prefork'), "
            "or use the async trackasync.Client from an asyncio event loop."
        )


def _close_all_at_exit() -> None:
    """Close every client still open, all at once: the exit waits for the
    largest of their budgets, not for their sum."""
    closing: list[tuple[_Runtime, concurrent.futures.Future[CloseReport]]] = []
    for runtime in list(_running):
        if runtime.closing:
            continue
        try:
            closing.append((runtime, runtime.begin_close(runtime.shutdown_timeout)))
        except Exception as exc:
            _exit_failure(exc)
    if not closing:
        return
    deadline = (
        _monotonic() + max(r.shutdown_timeout for r, _ in closing) + _THREAD_GRACE
    )
    for runtime, future in closing:
        try:
            report = runtime.end_close(future, max(0.0, deadline - _monotonic()))
        except Exception as exc:
            _exit_failure(exc)
            continue
        if report.undelivered:
            logger.warning(
                "trackasync: %d command(s) still undelivered at exit after %g s",
                len(report.undelivered),
                runtime.shutdown_timeout,
            )


def _exit_failure(exc: Exception) -> None:
    # No traceback at exit: one line that says what was lost and why.
    logger.warning(
        "trackasync: SyncClient could not flush at exit (%s)", type(exc).__name__
    )


class _Orphans:
    """After a fork: started runtimes whose client is gone are the parent's too."""

    def _after_fork_in_child(self) -> None:
        for runtime in _running:
            _fork.keep_forever(runtime)
        _running.clear()


_orphans = _Orphans()
_fork.register(_orphans)


# Runs before threads are joined and before the executor refuses new work (see
# the import of concurrent.futures.thread above), unlike a plain atexit hook.
_register_exit = getattr(threading, "_register_atexit", None)
if _register_exit is not None:
    _register_exit(_close_all_at_exit)
else:  # pragma: no cover - every supported CPython has it
    import atexit

    atexit.register(_close_all_at_exit)
