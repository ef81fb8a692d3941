"""The request pipeline of the fake Tracking API: faults, rate limit, request log.

:class:`FakeServer` builds the aiohttp application. Every tracking route goes
through :meth:`FakeServer._dispatch`, which applies the injected fault or the
rate limiter before the route's handler, stamps the ``x-request-id`` header and
logs the request.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web

from ._fake_faults import Fault, FaultPlan, SlidingWindowLimiter, default_error_body
from ._fake_handlers import ROUTES, TrackingHandlers

__all__ = ["STATE_PATH", "FakeServer", "HandledRequest"]

# A full batch of maximum-size commands must fit; the real limit on the whole
# body is not documented.
_MAX_BODY_BYTES = 48 * 2**20

_NOT_FOUND = "The requested URL was not found on the server"

STATE_PATH = "/_fake/state"
"""Read-only: what the fake stored, as JSON, for a test in another process."""

_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_Inner = Callable[[web.Request], Awaitable[tuple[web.Response, int]]]


@dataclass(frozen=True, slots=True)
class HandledRequest:
    """One entry of :attr:`FakeTrackingAPI.requests`.

    ``route`` is ``"batch"``, ``"customers"``, ``"customers/events"``,
    ``"system/time"``, or None for an unknown path. ``status`` is None when the
    connection was dropped without an answer. ``commands`` counts the commands
    processed (1 for a single route; 0 for ``system/time`` and for requests
    refused before their commands were read). ``fault`` names what was injected:
    ``"500"``, ``"429+retry-after"``, ``"drop"``, ``"drop_after"``, ``"delay"``,
    ``"rate_limited"``, or None.
    """

    method: str
    path: str
    route: str | None
    status: int | None
    commands: int
    request_id: str
    fault: str | None


class FakeServer(TrackingHandlers):
    """The aiohttp application and the steps every request goes through."""

    response_delay: float
    rate_limit_retry_after: bool

    def __init__(self, *, auth_headers: tuple[str, ...]) -> None:
        super().__init__(auth_headers=auth_headers)
        self._faults = FaultPlan()
        self._limiter: SlidingWindowLimiter | None = None
        self._log: list[HandledRequest] = []
        self._request_ids = itertools.count(1)
        # A random prefix keeps ids unique across server instances too.
        self._request_id_prefix = secrets.token_hex(4)
        self._closing = asyncio.Event()

    def _build_app(self) -> web.Application:
        app = web.Application(
            middlewares=[self._http_errors], client_max_size=_MAX_BODY_BYTES
        )
        inner: dict[str, _Inner] = {
            "customers_events": self._handle_event,
            "customers": self._handle_customer,
            "batch": self._handle_batch,
            "system_time": self._handle_time,
        }
        app.router.add_get(STATE_PATH, self._handle_state, name="fake_state")
        for name, handler in inner.items():
            route = ROUTES[name]
            method = "*" if route == "system/time" else "POST"  # time: GET or POST
            app.router.add_route(
                method,
                f"/track/v2/projects/{{token}}/{route}",
                self._route(route, handler),
                name=name,
            )
        return app

    def _route(self, route: str, inner: _Inner) -> _Handler:
        async def handler(request: web.Request) -> web.StreamResponse:
            return await self._dispatch(request, route, inner)

        return handler

    async def _dispatch(
        self, request: web.Request, route: str, inner: _Inner
    ) -> web.StreamResponse:
        """Fault or rate limit first, then the route's own handler."""
        request_id = self._next_request_id()
        with self._lock:
            fault = self._faults.take(route)
        kind = None if fault is None else fault.kind
        label = None if fault is None else fault.label
        commands = 0
        response: web.StreamResponse | None = None
        answered = True
        try:
            delay = self.response_delay
            if fault is not None and kind == "delay":
                delay += fault.delay
            if delay > 0:
                # Receive the whole request first, like a slow server would: a
                # client that times out meanwhile may still get its data stored.
                await request.read()
                await self._pause(delay)
            if kind == "drop":
                response = self._drop(request)
            elif fault is not None and kind == "error":
                response = self._fault_response(fault)
            else:
                response = self._rate_limited()
                if response is not None:
                    label = "rate_limited"
            if response is None:
                response, commands = await inner(request)
                if kind == "drop_after":
                    response = self._drop(request)
            answered = kind not in ("drop", "drop_after")
        except web.HTTPException as exc:  # e.g. a body over client_max_size
            response = self._http_error(exc)
        except ConnectionError:
            # The client left before its body arrived: nobody to answer, and no
            # reason for aiohttp to log an error about it.
            response = web.Response()
            answered = False
        if answered:
            response.headers["x-request-id"] = request_id
        entry = HandledRequest(
            request.method,
            request.path,
            route,
            response.status if answered else None,
            commands,
            request_id,
            label,
        )
        with self._lock:
            self._log.append(entry)
        return response

    @web.middleware
    async def _http_errors(
        self, request: web.Request, handler: _Handler
    ) -> web.StreamResponse:
        """Unknown paths and wrong methods: a JSON answer, an id, a log entry."""
        try:
            return await handler(request)
        except web.HTTPException as exc:
            response = self._http_error(exc)
        request_id = self._next_request_id()
        response.headers["x-request-id"] = request_id
        entry = HandledRequest(
            request.method, request.path, None, response.status, 0, request_id, None
        )
        with self._lock:
            self._log.append(entry)
        return response

    def _http_error(self, exc: web.HTTPException) -> web.Response:
        # The real API's wording for a wrong path or base URL.
        message = _NOT_FOUND if exc.status == 404 else exc.reason
        return self._json(exc.status, {"success": False, "error": message})

    async def _handle_state(self, request: web.Request) -> web.Response:
        """``GET /_fake/state``: everything a test could read in-process.

        Outside the API's path space, not authenticated (the fake only serves
        loopback unless told otherwise), and not logged: reading the state must
        not change it.
        """
        with self._lock:
            store = self._store
            payload = {
                "events": store.events,
                "event_count": store.event_count,
                "customers": [
                    {"customer_ids": dict(key), "properties": properties}
                    for key, properties in store.customers.items()
                ],
                "duplicates": store.duplicates,
                "requests": list(self._log),
                "errors": [
                    f"{type(exc).__name__}: {exc}"
                    for exc in self._faults.predicate_errors
                ],
            }
        return self._json(200, payload)

    def _next_request_id(self) -> str:
        return f"{self._request_id_prefix}-{next(self._request_ids):06d}"

    async def _pause(self, seconds: float) -> None:
        # Cut short when the server stops, so shutdown never waits out a delay.
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._closing.wait(), seconds)

    @staticmethod
    def _drop(request: web.Request) -> web.StreamResponse:
        transport = request.transport
        if transport is not None:
            transport.close()
        # aiohttp fails to write this to the closed transport and quietly ends
        # the connection: the client sees it close without an answer.
        return web.Response()

    def _rate_limited(self) -> web.Response | None:
        with self._lock:
            limiter = self._limiter
            if limiter is None:
                return None
            wait = limiter.admit(time.monotonic())
        if wait is None:
            return None
        headers = None
        if self.rate_limit_retry_after:
            headers = {"Retry-After": str(max(1, math.ceil(wait)))}
        payload = {"success": False, "error": "Rate limit exceeded"}
        return self._json(429, payload, headers)

    def _fault_response(self, fault: Fault) -> web.Response:
        headers = None
        if fault.retry_after is not None:
            value = fault.retry_after
            headers = {"Retry-After": value if isinstance(value, str) else f"{value:g}"}
        body = fault.body
        if body is None:  # chaos errors carry no body of their own
            body = self._encoder.encode(default_error_body(fault.status))
        return web.Response(
            status=fault.status,
            body=body,
            content_type=fault.content_type,
            headers=headers,
        )
