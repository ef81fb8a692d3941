"""An in-process fake of the Bloomreach Engagement Tracking API, served by aiohttp.

:class:`FakeTrackingAPI` answers the four tracking routes the way the real API is
documented to, keeps what it accepted so tests can read it back, and lets each
test script faults: error statuses, slow answers, dropped connections, rejected
commands, random chaos and a rate limiter.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from types import TracebackType
from typing import Any

from aiohttp import web

from .._auth import PrivateKey, PublicToken
from .._config import is_loopback
from ._fake_consent import StoredConsent
from ._fake_faults import (
    CHAOS_KINDS,
    Fault,
    FaultKind,
    RejectPredicate,
    SlidingWindowLimiter,
)
from ._fake_handlers import ROUTES, basic_auth_header, token_auth_header
from ._fake_server import FakeServer, HandledRequest
from ._fake_store import CustomerKey, FakeStore, ServerClock, StoredEvent
from ._fake_thread import ServerThread
from ._fake_wait import WaitingMixin

__all__ = [
    "DEFAULT_KEY_ID",
    "DEFAULT_PROJECT_TOKEN",
    "DEFAULT_PUBLIC_TOKEN",
    "DEFAULT_SECRET",
    "REAL_RATE_LIMIT",
    "REAL_RATE_WINDOW",
    "CHAOS_KINDS",
    "CustomerKey",
    "FakeTrackingAPI",
    "HandledRequest",
    "StoredEvent",
]

DEFAULT_PROJECT_TOKEN = "test-project"
DEFAULT_KEY_ID = "test-key-id"
DEFAULT_SECRET = "test-secret"
DEFAULT_PUBLIC_TOKEN = "test-public-token"

REAL_RATE_LIMIT = 100.0
"""The documented default limit, in requests per second: 6,000 per minute..."""
REAL_RATE_WINDOW = 60.0
"""...counted over a one-minute window."""

DEFAULT_REJECTION = "Rejected by the fake server"


class FakeTrackingAPI(FakeServer, WaitingMixin):
    """A fake Tracking API server for tests, demos and benchmarks.

    ``async with FakeTrackingAPI() as api:`` binds ``host`` (loopback by default;
    other addresses need ``allow_remote``) on ``port`` (0: a free one) and exposes
    :attr:`base_url`, :attr:`project_token` and working credentials (:attr:`auth`,
    :attr:`public_auth`). ``with FakeTrackingAPI() as api:`` does the same from
    sync code, serving on a loop of its own in a background thread. :attr:`app`
    can also be served by aiohttp's test tools.

    A request to a tracking route goes through these steps; the first to answer
    wins:

    1. a scripted or chaos fault: an error status, or a drop before processing
       (a delay, like ``response_delay``, reads the body and then waits);
    2. the rate limiter: 429, and the data is not stored;
    3. authentication (``Basic`` or ``Token`` header, or the public token as an
       ``access_token`` parameter): missing or unparsable is 401 "Access key not
       provided", an unknown key id or token 401 "Access key not found", a wrong
       secret 403 "invalid secret";
    4. the project token in the path: 400 "Invalid project id";
    5. the body: 400 for a compressed body, malformed JSON or a bad batch;
    6. per-command validation, then storing. A ``drop_after`` fault closes the
       connection only now: the data is stored, the client gets no answer.

    Authentication comes before the project check so that an unauthenticated
    caller cannot probe project tokens. Every answer has a unique ``x-request-id``.
    What was accepted can be read back (:attr:`events`, :attr:`customers`,
    :meth:`customer`, :attr:`duplicates`, :attr:`requests`), from any thread,
    waited for (:meth:`wait_for_events`, :meth:`await_events`) and forgotten
    (:meth:`reset`). :attr:`environ` holds the ``TRACKASYNC_*`` variables that
    point an app configured from the environment at this fake.

    Single-route validation errors are answered with ``single_route_error_status``
    (200, as most of the docs say, or e.g. 400, as the error-message page says).
    A batch of more than ``max_batch_commands`` gets ``too_many_commands_status``.
    ``rate_limit`` is in requests per second over a sliding ``rate_window``
    (:data:`REAL_RATE_LIMIT` mirrors the real 6,000 per minute); None is off.
    ``clock_offset`` skews the server clock. One instance serves one event loop
    at a time.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        project_token: str = DEFAULT_PROJECT_TOKEN,
        key_id: str = DEFAULT_KEY_ID,
        secret: str = DEFAULT_SECRET,
        public_token: str = DEFAULT_PUBLIC_TOKEN,
        single_route_error_status: int = 200,
        max_batch_commands: int = 50,
        too_many_commands_status: int = 400,
        rate_limit: float | None = None,
        rate_window: float = REAL_RATE_WINDOW,
        rate_limit_retry_after: bool = False,
        response_delay: float = 0.0,
        clock_offset: float = 0.0,
        allow_remote: bool = False,
    ) -> None:
        if not allow_remote and not is_loopback(host):
            raise ValueError(
                f"refusing to bind {host!r}: the fake server accepts anyone's data; "
                "pass allow_remote=True to serve beyond the loopback interface"
            )
        if not (project_token and key_id and secret and public_token):
            raise ValueError("project token and credentials must be non-empty")
        super().__init__(
            auth_headers=(
                basic_auth_header(key_id, secret),
                token_auth_header(public_token),
            )
        )
        # "localhost" may resolve to two addresses, and port 0 would then give
        # each its own port: bind one of them so base_url is unambiguous.
        self._host = "127.0.0.1" if host == "localhost" else host
        self._port = port
        self._project_token = project_token
        self._key_id = key_id
        self._secret = secret
        self._public_token = public_token
        self.single_route_error_status = single_route_error_status
        self.max_batch_commands = max_batch_commands
        self.too_many_commands_status = too_many_commands_status
        self.rate_limit_retry_after = rate_limit_retry_after
        self.response_delay = response_delay
        """Seconds to wait before handling every request (0: none)."""
        self.set_rate_limit(rate_limit, window=rate_window)
        self._clock = ServerClock(clock_offset)
        self._store = FakeStore()
        self._runner: web.AppRunner | None = None
        self._thread: ServerThread | None = None
        self._bound_port: int | None = None
        self.app = self._build_app()
        """The aiohttp application, e.g. for ``aiohttp.test_utils.TestServer``."""

    # -- lifecycle ---------------------------------------------------------------

    async def start(self) -> None:
        """Bind and start serving; :attr:`base_url` is valid afterwards."""
        if self._runner is not None:
            raise RuntimeError("FakeTrackingAPI is already running")
        self._closing = asyncio.Event()
        # A short shutdown grace: a test's server must not wait for a client
        # that gave up on a delayed request.
        runner = web.AppRunner(self.app, access_log=None, shutdown_timeout=0.5)
        await runner.setup()
        try:
            site = web.TCPSite(runner, self._host, self._port)
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self._bound_port = int(runner.addresses[0][1])

    async def stop(self) -> None:
        """Stop serving and close open connections; the stored data stays."""
        runner, self._runner = self._runner, None
        if runner is None:
            return
        self._closing.set()
        self._bound_port = None
        await runner.cleanup()

    async def __aenter__(self) -> FakeTrackingAPI:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()
        if exc is None:
            self.raise_errors()

    def __enter__(self) -> FakeTrackingAPI:
        """Serve from a background thread with its own event loop.

        For sync code and tests, or when the caller's loop must not serve the
        fake: ``with FakeTrackingAPI() as api:``. Reading what it stored and
        scripting faults are safe from any thread.
        """
        if self._thread is not None or self._runner is not None:
            raise RuntimeError("FakeTrackingAPI is already running")
        thread = ServerThread(self.start, self.stop, name="trackasync-fake-api")
        thread.start()
        self._thread = thread
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.stop()
        if exc is None:
            self.raise_errors()

    # -- where and how to connect -----------------------------------------------------

    @property
    def base_url(self) -> str:
        """``http://host:port`` of the running server, without a trailing slash."""
        if self._bound_port is None:
            raise RuntimeError(
                "FakeTrackingAPI is not running; use 'async with' or start()"
            )
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"http://{host}:{self._bound_port}"

    @property
    def project_token(self) -> str:
        """The only project token the server accepts."""
        return self._project_token

    @property
    def key_id(self) -> str:
        """The private API key id that works."""
        return self._key_id

    @property
    def secret(self) -> str:
        """The private API secret that works."""
        return self._secret

    @property
    def public_token(self) -> str:
        """The public API token that works."""
        return self._public_token

    @property
    def auth(self) -> PrivateKey:
        """Working private-key credentials for the trackasync client."""
        return PrivateKey(self._key_id, self._secret)

    @property
    def public_auth(self) -> PublicToken:
        """Working public-token credentials for the trackasync client."""
        return PublicToken(self._public_token)

    @property
    def clock_offset(self) -> float:
        """Seconds added to the server's clock (to simulate clock skew)."""
        return self._clock.offset

    @clock_offset.setter
    def clock_offset(self, value: float) -> None:
        self._clock.offset = value

    # -- what it accepted -----------------------------------------------------------

    @property
    def events(self) -> list[StoredEvent]:
        """The accepted events (duplicates left out), oldest first. A copy."""
        with self._lock:
            return self._store.events

    @property
    def event_count(self) -> int:
        """``len(api.events)`` without copying."""
        with self._lock:
            return self._store.event_count

    @property
    def customers(self) -> dict[CustomerKey, dict[str, Any]]:
        """Properties of every customer that got an update, by customer key. A copy.

        The key is the customer's ``customer_ids`` items, sorted, e.g.
        ``(("registered", "ann@example.com"),)``; :meth:`customer` looks one up
        by a plain ids mapping.
        """
        with self._lock:
            return self._store.customers

    def customer(self, customer_ids: Mapping[str, str]) -> dict[str, Any] | None:
        """One customer's properties, or None if it never got an update.

        ``customer_ids`` is the mapping the client sent, e.g.
        ``api.customer({"registered": "ann@example.com"})``.
        """
        with self._lock:
            return self._store.customer(customer_ids)

    @property
    def duplicates(self) -> int:
        """How many events were discarded as duplicates."""
        with self._lock:
            return self._store.duplicates

    @property
    def consents(self) -> list[StoredConsent]:
        """The recognised consents, in arrival order (every resend included:
        consent events are never deduplicated). A copy."""
        with self._lock:
            return list(self._store.consents)

    @property
    def not_consents(self) -> int:
        """Events named ``consent`` whose fields did not make a consent (the API
        stores them as plain events and answers success)."""
        with self._lock:
            return self._store.not_consents

    def consent_in_force(
        self, customer_ids: Mapping[str, str], category: str
    ) -> StoredConsent | None:
        """The consent that counts for this customer and category: the one with
        the latest timestamp, not the last to arrive."""
        with self._lock:
            return self._store.consent_in_force(customer_ids, category)

    @property
    def requests(self) -> list[HandledRequest]:
        """Every request handled so far, in arrival order. A copy."""
        with self._lock:
            return list(self._log)

    @property
    def errors(self) -> list[Exception]:
        """Exceptions raised by the test's own callbacks (``reject_commands``
        predicates), oldest first. A copy.

        Each also rejected the command it was called for, with an error naming
        the exception. ``async with`` and the pytest fixture re-raise the first
        one when they end, so a broken predicate fails its test.
        """
        with self._lock:
            return list(self._faults.predicate_errors)

    def raise_errors(self) -> None:
        """Raise the first exception of :attr:`errors`, if there is one."""
        errors = self.errors
        if errors:
            raise errors[0]

    def reset(self) -> None:
        """Forget stored data, the request log, faults, errors and the rate window."""
        with self._lock:
            self._store = FakeStore()
            self._log.clear()
            self._faults.clear()
            self._faults.predicate_errors.clear()
            self._reset_rate_window()

    # -- faults -------------------------------------------------------------------

    def fail_next(
        self,
        n: int = 1,
        *,
        status: int = 500,
        retry_after: float | str | None = None,
        body: object = None,
        route: str | None = None,
    ) -> None:
        """Answer the next ``n`` requests with ``status`` and store nothing.

        ``body`` is sent as is when it is ``str`` or ``bytes`` (as text/plain),
        JSON-encoded otherwise, and defaults to an ``errors`` envelope.
        ``retry_after`` adds a ``Retry-After`` header (seconds or an HTTP date).
        """
        raw: bytes | None = None  # None: the default envelope, built when sent
        content_type = "application/json"
        if isinstance(body, str):
            body = body.encode()
        if isinstance(body, bytes):
            raw, content_type = body, "text/plain"
        elif body is not None:
            raw = self._encoder.encode(body)
        fault = Fault(
            "error",
            status=status,
            retry_after=retry_after,
            body=raw,
            content_type=content_type,
            route=self._check_route(route),
        )
        with self._lock:
            self._faults.add(fault, n)

    def delay_next(self, n: int, seconds: float, *, route: str | None = None) -> None:
        """Wait ``seconds`` before handling each of the next ``n`` requests.

        The request is still processed after the wait, even when the client
        has given up by then: a timed-out request may have been stored.
        """
        fault = Fault("delay", delay=seconds, route=self._check_route(route))
        with self._lock:
            self._faults.add(fault, n)

    def drop_next(
        self, n: int = 1, *, after_store: bool = False, route: str | None = None
    ) -> None:
        """Close the connection of the next ``n`` requests without answering.

        By default before processing (nothing stored). With ``after_store`` the
        commands are processed and stored first: the client sees a connection
        error for data the server has.
        """
        kind: FaultKind = "drop_after" if after_store else "drop"
        fault = Fault(kind, route=self._check_route(route))
        with self._lock:
            self._faults.add(fault, n)

    def reject_commands(
        self, predicate: RejectPredicate, *, error: str = DEFAULT_REJECTION
    ) -> None:
        """Make valid write commands for which ``predicate(name, data)`` is true fail.

        ``name`` is ``"customers/events"`` or ``"customers"`` and ``data`` the
        command's decoded body. The command gets ``success: false`` with
        ``errors: [error]`` in its own result and is not stored.

        Both routes' commands reach the predicate, so test ``name`` before
        reading fields one route lacks. A predicate that raises rejects the
        command and lands in :attr:`errors`; see there.
        """
        with self._lock:
            self._faults.rejections.append((predicate, error))

    def chaos(
        self,
        rate: float,
        *,
        seed: int | None = None,
        delay: float = 0.05,
        retry_after: float = 1.0,
        kinds: Iterable[str] | None = None,
    ) -> None:
        """Give each request a ``rate`` chance (0 to 1) of a random fault.

        The faults are picked uniformly from ``kinds`` (default: all of
        :data:`CHAOS_KINDS`: 500, 502, 503, 429 with and without Retry-After,
        drop before or after storing, and a ``delay``-second wait). A ``seed``
        makes the sequence repeatable. ``chaos(0)`` turns it off.
        """
        with self._lock:
            self._faults.chaos(
                rate, seed=seed, delay=delay, retry_after=retry_after, kinds=kinds
            )

    def clear_faults(self) -> None:
        """Drop pending scripted faults and rejections, and stop chaos."""
        with self._lock:
            self._faults.clear()

    @property
    def pending_faults(self) -> int:
        """How many scripted faults have not hit a request yet."""
        with self._lock:
            return self._faults.pending

    def set_rate_limit(
        self, rate: float | None, *, window: float = REAL_RATE_WINDOW
    ) -> None:
        """Allow ``rate`` requests per second over a sliding ``window``; None: off.

        Requests over the limit get 429 and their data is not stored, like the
        real API. Changing the limit starts a fresh window.
        """
        limiter = None if rate is None else SlidingWindowLimiter(rate, window)
        with self._lock:
            self._limiter = limiter
            self._rate_limit = rate
            self._rate_window = window

    def _reset_rate_window(self) -> None:
        rate = self._rate_limit
        window = self._rate_window
        self._limiter = None if rate is None else SlidingWindowLimiter(rate, window)

    # -- plumbing -------------------------------------------------------------------

    @staticmethod
    def _check_route(route: str | None) -> str | None:
        if route is not None and route not in ROUTES.values():
            raise ValueError(
                f"unknown route {route!r}; choose from {sorted(ROUTES.values())}"
            )
        return route
