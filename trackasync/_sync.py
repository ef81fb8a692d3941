"""``SyncClient``: the client for code without an event loop.

One ``Client`` runs on an event loop in a background thread that the
``SyncClient`` owns and starts on first use. A call validates and encodes in the
caller's thread (so bad input raises there, at the call) and hands the encoded
command over without waiting for the loop: commands are appended to a list under
a lock and the loop is woken only when that list was empty, so a burst of calls
costs one wake-up, not one cross-thread round trip per call.

The intake is bounded so the overflow policies still answer at the call:

- "raise" and "wait" count slots: a slot is taken at the call and given back
  when the command has its outcome, so ``max_queue`` bounds the commands queued,
  being handed over or in flight. "raise" raises ``QueueFull`` when none is free;
  "wait" blocks the calling thread up to ``queue_timeout`` for one.
- "drop_new" and "drop_old" are applied by the inner client, in its loop, as on
  ``Client``. Should the loop fall ``max_queue`` commands behind the callers, new
  commands are dropped at the call (counted as "dropped").
"""

from __future__ import annotations

import asyncio
import concurrent.futures

# The executor's own exit hook must be registered before ours, so ours runs
# first (they run in reverse order) while the loop can still resolve host names.
import concurrent.futures.thread
import contextlib
import logging
import sys
import threading
import time
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import replace
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypedDict, TypeVar

from . import _fork
from ._auth import PrivateKey, PublicToken
from ._buffer import Overflow
from ._client import (
    DEFAULT_MAX_QUEUE,
    DEFAULT_QUEUE_TIMEOUT,
    DEFAULT_SHUTDOWN_TIMEOUT,
    Client,
)
from ._config import Limits, Retry
from ._delivery import Delivery, Receipt
from ._exceptions import (
    ClientClosed,
    ClientStateError,
    ConfigError,
    DeliveryFailed,
    QueueFull,
)
from ._hooks import ResultHook
from ._network import TLSOption
from ._sender import Mode
from ._stats import CloseReport, FlushResult, Stats

if TYPE_CHECKING:
    from typing_extensions import Unpack

logger = logging.getLogger("trackasync")


class SyncClientOptions(TypedDict, total=False):
    """The keyword options of ``Client`` that ``SyncClient`` passes on (all but
    ``transport``: a transport is bound to one loop and cannot follow a fork)."""

    max_queue: int
    overflow: Overflow
    queue_timeout: float | None
    linger: float
    mode: Mode
    max_in_flight: int
    rate_limit: float | None
    rate_budget: str | None
    retry: Retry | None
    limits: Limits | None
    timeout: float
    connect_timeout: float
    shutdown_timeout: float
    on_result: ResultHook | None
    allow_http: bool
    proxy: str | None
    trust_env: bool
    tls: TLSOption


_T = TypeVar("_T")

# How long a blocked caller sleeps between checks that the background thread
# is still alive: a dead thread must not leave a caller waiting forever.
_LIVENESS_POLL = 0.2
# Extra time allowed beyond a close's own budget before the background thread
# is declared unresponsive.
_CLOSE_GRACE = 5.0
# Starting the background thread and opening the client inside it.
_START_TIMEOUT = 10.0

_monotonic = time.monotonic


class SyncDelivery:
    """The handle ``SyncClient.track``/``update_customer`` return.

    ``result(timeout)`` blocks the calling thread until the command has its
    outcome; ``add_done_callback(fn)`` calls ``fn(handle)`` then.
    """

    __slots__ = ("_delivery", "_runtime")

    def __init__(self, delivery: Delivery, runtime: _Runtime) -> None:
        self._delivery = delivery
        self._runtime = runtime

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

    def __init__(
        self,
        client: Client,
        overflow: str,
        max_queue: int,
        queue_timeout: float | None,
        shutdown_timeout: float,
    ) -> None:
        self.client = client
        self.queue_timeout = queue_timeout
        self.shutdown_timeout = shutdown_timeout
        self.event = client._event
        self.customer = client._customer
        self.max_queue = max_queue
        # Slots are counted for the policies that must answer "full" at the call.
        self.bounded = overflow in ("raise", "wait")
        self.blocking = overflow == "wait"
        self.slots = max_queue
        self.waiting = 0
        self.lock = threading.Lock()
        self.room = threading.Condition(self.lock)
        self.pending: list[Delivery] = []
        self.scheduled = False
        self.closing = False
        # Commands dropped at the intake because the loop fell behind.
        self.intake_dropped = 0
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
            loop.run_forever()
        except BaseException as exc:
            # Anything that escapes the loop ends the thread: remember why, so the
            # next call says so instead of queueing into a dead thread.
            self.failure = exc
            with self.lock:
                self.room.notify_all()
            return
        finally:
            asyncio.set_event_loop(None)
        # A normal stop (close): tidy up inside the thread that ran the loop.
        with contextlib.suppress(RuntimeError):
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
        loop.close()

    def in_loop_thread(self) -> bool:
        return threading.current_thread() is self.thread

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
                f"({type(failure).__name__}: {failure}); create a new client"
            ) from failure
        if not self.thread.is_alive() and not self.closing:
            raise ClientStateError("the SyncClient's background thread is not running")

    # -- handing commands over -------------------------------------------------------

    def hand_over(self, delivery: Delivery) -> None:
        """Queue ``delivery`` for the loop, applying the overflow policy at the call."""
        with self.lock:
            if self.closing:
                raise ClientClosed("the client is closed; it takes no more commands")
            if self.bounded:
                if self.slots <= 0:
                    self._wait_for_room()
                self.slots -= 1
            elif len(self.pending) >= self.max_queue:
                self.intake_dropped += 1
                delivery._settle(
                    DeliveryFailed(
                        "dropped",
                        "dropped by the overflow policy: the background thread "
                        f"was {self.max_queue} commands behind",
                    )
                )
                return
            self.pending.append(delivery)
            if self.scheduled:
                return
            self.scheduled = True
        try:
            self.loop.call_soon_threadsafe(self._drain)
        except RuntimeError:  # the loop is closed: the thread is gone
            self.check_alive()
            raise

    def _wait_for_room(self) -> None:
        """Called with the lock held and no slot free."""
        if not self.blocking or self.in_loop_thread():
            # Never block the loop thread: it is the one that frees the room.
            raise QueueFull(
                f"the queue is full ({self.max_queue} commands); nothing was queued"
            )
        timeout = self.queue_timeout
        self.waiting += 1
        try:
            deadline = None if timeout is None else _monotonic() + timeout
            while self.slots <= 0:
                if self.closing:
                    raise ClientClosed("the client closed while waiting for room")
                if self.failure is not None:
                    self.check_alive()
                left = _LIVENESS_POLL
                if deadline is not None:
                    left = min(left, deadline - _monotonic())
                    if left <= 0:
                        raise QueueFull(
                            f"the queue stayed full ({self.max_queue} commands) "
                            f"for {timeout} s; nothing was queued"
                        )
                self.room.wait(left)
        finally:
            self.waiting -= 1

    def _drain(self) -> None:
        """In the loop: move every handed-over command into the client."""
        with self.lock:
            items, self.pending = self.pending, []
            self.scheduled = False
        submit = self.client._submit_nowait
        release = self._release if self.bounded else None
        for delivery in items:
            try:
                submit(delivery)
            except Exception as exc:
                # Only a closing client refuses here (the slots keep "full" from
                # happening): the command gets a final answer either way.
                delivery._settle(
                    DeliveryFailed(
                        "closed", f"the client did not take the command: {exc}"
                    )
                )
                logger.warning("SyncClient: a command was refused: %s", exc)
            if release is not None:
                delivery.add_done_callback(release)

    def _release(self, _: Delivery) -> None:
        with self.lock:
            self.slots += 1
            if self.waiting:
                self.room.notify()

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
        """Block until ``delivery`` has an outcome, or raise ``TimeoutError``."""
        if self.in_loop_thread():
            raise ClientStateError(
                "result() would wait for the client's own background thread; "
                "do not call it from a done callback"
            )
        self.check_alive()
        settled = threading.Event()
        self.loop.call_soon_threadsafe(
            delivery.add_done_callback, lambda _: settled.set()
        )
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

    # -- the end ----------------------------------------------------------------------

    def discarded(self) -> int:
        """In a forked child: the inherited commands this process will not send."""
        # The inner client resets itself after the fork too, before or after
        # this runs: its inherited queue is then in discarded_at_fork instead.
        stats = self.client.stats()
        return (
            len(self.pending) + stats.queued + stats.in_flight + stats.discarded_at_fork
        )

    def close(self, timeout: float) -> CloseReport:
        with self.lock:
            self.closing = True
            self.room.notify_all()
        _running.discard(self)
        self.check_alive()
        future = asyncio.run_coroutine_threadsafe(self._aclose(timeout), self.loop)
        try:
            report = self._result(future, timeout + _CLOSE_GRACE)
        except TimeoutError:
            raise ClientStateError(
                f"the background thread did not finish closing within "
                f"{timeout + _CLOSE_GRACE:g} s"
            ) from None
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(_CLOSE_GRACE)
        return report

    def close_at_exit(self) -> None:
        if self.closing:
            return
        try:
            report = self.close(self.shutdown_timeout)
        except Exception as exc:
            # No traceback at exit: one line that says what was lost and why.
            logger.warning(
                "trackasync: SyncClient could not flush at exit (%s)",
                type(exc).__name__,
            )
            return
        if report.undelivered:
            logger.warning(
                "trackasync: %d command(s) still undelivered at exit after %g s",
                len(report.undelivered),
                self.shutdown_timeout,
            )

    async def _aclose(self, timeout: float) -> CloseReport:
        self._drain()  # what was handed over before close() is queued, then sent
        return await self.client.aclose(timeout)


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
        if options.get("transport") is not None:
            # A transport is bound to one loop and one process: it cannot be
            # rebuilt after fork, so the client would not be fork-safe.
            raise ConfigError(
                "SyncClient builds its own transport; pass transport= to Client instead"
            )
        self._args = (base_url, project_token)
        self._auth = auth
        self._options = options
        # Built now so that bad settings raise here, in the caller's thread. It is
        # the client the next runtime runs (a fresh one after a fork).
        self._client = Client(base_url, project_token, auth=auth, **options)
        self._overflow: str = options.get("overflow", "wait")
        self._max_queue: int = options.get("max_queue", DEFAULT_MAX_QUEUE)
        self._queue_timeout: float | None = options.get(
            "queue_timeout", DEFAULT_QUEUE_TIMEOUT
        )
        self._shutdown_timeout: float = options.get(
            "shutdown_timeout", DEFAULT_SHUTDOWN_TIMEOUT
        )
        self._runtime: _Runtime | None = None
        self._start_lock = threading.Lock()
        self._closed = False
        self._report: CloseReport | None = None
        # Commands inherited through fork and discarded, and intake drops of
        # earlier runtimes: added to stats().
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
        base_url, project = self._args
        return (
            f"<SyncClient {base_url} project={project} auth={self._auth!r} "
            f"state={state}>"
        )

    @classmethod
    def from_env(cls, **options: Any) -> SyncClient:
        """A client configured from ``TRACKASYNC_*`` environment variables.

        Keyword arguments override what the environment says; see the README.
        """
        from ._env import client_kwargs

        return cls(**client_kwargs(options))

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
        if runtime is not None and runtime.failure is None:
            return runtime
        with self._start_lock:
            if self._closed:
                raise ClientClosed("the client is closed; it takes no more commands")
            runtime = self._runtime
            if runtime is None:
                runtime = _Runtime(
                    self._client,
                    self._overflow,
                    self._max_queue,
                    self._queue_timeout,
                    self._shutdown_timeout,
                )
                runtime.start()
                self._runtime = runtime
            runtime.check_alive()
            return runtime

    def close(self, timeout: float | None = None) -> CloseReport:
        """Stop taking commands, deliver what is queued, stop the thread.

        Waits up to ``timeout`` seconds (default ``shutdown_timeout``), like
        ``Client.aclose``, and returns the same ``CloseReport``. Safe to call
        more than once.
        """
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
        budget = self._shutdown_timeout if timeout is None else timeout
        if runtime is None:
            report = CloseReport(
                delivered=0, failed=self._failed_counts(), undelivered=[]
            )
        else:
            report = runtime.close(budget)
            if runtime.intake_dropped:
                report = replace(report, failed=self._merge_failed(report.failed))
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
        self._client = Client(*self._args, auth=self._auth, **self._options)

    # -- commands ---------------------------------------------------------------------

    def track(
        self,
        customer_ids: Mapping[str, str],
        event_type: str,
        properties: Mapping[str, Any] | None = None,
        *,
        timestamp: object = None,
    ) -> SyncDelivery:
        """Queue an event and return its handle at once (no network wait).

        Raises ``InvalidEvent`` for bad input, and ``QueueFull`` when full under
        "raise" (or after ``queue_timeout`` under "wait", which blocks this thread).
        """
        runtime = self._runtime
        if runtime is None or runtime.failure is not None:
            runtime = self._ready()
        delivery = runtime.event(customer_ids, event_type, properties, timestamp)
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
        runtime = self._runtime
        if runtime is None or self._closed:
            return FlushResult(delivered=0, failed=0, pending=0)
        return runtime.call(self._flush(runtime, timeout), None)

    @staticmethod
    async def _flush(runtime: _Runtime, timeout: float | None) -> FlushResult:
        # Commands still being handed over are part of "what is queued now".
        runtime._drain()
        return await runtime.client.flush(timeout)

    def system_time(self, timeout: float | None = None) -> float:
        """The API's clock, in UNIX seconds (one request; raises ``RequestError``)."""
        runtime = self._ready()
        return runtime.call(runtime.client.system_time(), timeout)

    def stats(self) -> Stats:
        """A snapshot of the counters (read from any thread).

        In a forked child, the inherited commands it discarded (the parent
        sends them) are counted in ``discarded_at_fork``, as on ``Client``.
        """
        runtime = self._runtime
        stats = self._client.stats()
        if self._discarded:
            stats = replace(
                stats, discarded_at_fork=stats.discarded_at_fork + self._discarded
            )
        extra = 0 if runtime is None else runtime.intake_dropped
        if not extra:
            return stats
        failed = self._merge_failed(stats.failed)
        return replace(
            stats,
            enqueued=stats.enqueued + extra,
            dropped=failed["dropped"],
            failed=failed,
        )

    def _failed_counts(self) -> dict[str, int]:
        failed = {"rejected": 0, "gave_up": 0, "dropped": 0, "closed": 0}
        return self._merge_failed(failed)

    def _merge_failed(self, failed: Mapping[str, int]) -> dict[str, int]:
        merged = dict(failed)
        runtime = self._runtime
        if runtime is not None and runtime.intake_dropped:
            merged["dropped"] = merged.get("dropped", 0) + runtime.intake_dropped
        return merged


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
    for runtime in list(_running):
        runtime.close_at_exit()


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
