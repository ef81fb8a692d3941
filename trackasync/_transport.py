"""Sending one HTTP request: the ``Transport`` interface and its aiohttp implementation.

A transport knows nothing of commands, batching or retries: it takes a
``Request`` and returns a ``Response`` for any HTTP answer, or raises
``TransportError``/``RequestTimeout`` when there is none. ``trackasync.testing``
ships test doubles for it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

import aiohttp

from ._body import request_body
from ._exceptions import RequestTimeout, TransportError

DEFAULT_TIMEOUT = 30.0
DEFAULT_CONNECT_TIMEOUT = 10.0


@dataclass(frozen=True, slots=True)
class Request:
    """One HTTP request to the API. ``body`` is sent as is, never re-encoded."""

    method: str
    url: str
    headers: Mapping[str, str]
    body: bytes | None = None


@dataclass(frozen=True, slots=True)
class Response:
    """One HTTP answer: status, headers and the raw body."""

    status: int
    body: bytes = b""
    headers: Mapping[str, str] = field(default_factory=dict)

    def header(self, name: str) -> str | None:
        """A header's value by case-insensitive name, or ``None``."""
        value = self.headers.get(name)
        if value is not None:
            return value
        lowered = name.lower()
        for key, item in self.headers.items():
            if key.lower() == lowered:
                return item
        return None


class Transport(Protocol):
    """Sends requests. Implementations must be safe to call concurrently."""

    async def send(self, request: Request) -> Response:
        """Send one request; raise ``TransportError`` if no answer came."""
        ...

    async def aclose(self) -> None:
        """Release connections. Called once, when the client closes."""
        ...


class AiohttpTransport:
    """The default transport: one ``aiohttp.ClientSession`` with keep-alive.

    ``timeout`` bounds a whole request, ``connect_timeout`` getting a connection;
    ``max_connections`` caps open sockets. The session is created on first use,
    inside the running event loop, unless one is passed in (then it is not
    closed by ``aclose``).
    """

    def __init__(
        self,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        max_connections: int = 100,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        self._timeout = aiohttp.ClientTimeout(total=timeout, connect=connect_timeout)
        self._max_connections = max_connections
        self._session = session
        self._owns_session = session is None

    def _get_session(self) -> aiohttp.ClientSession:
        session = self._session
        if session is None:
            session = aiohttp.ClientSession(
                timeout=self._timeout,
                connector=aiohttp.TCPConnector(limit=self._max_connections),
                # The API does not take compressed request bodies, and our own
                # requests must not show up in the application's aiohttp traces.
                auto_decompress=True,
                trust_env=False,
            )
            self._session = session
        return session

    async def send(self, request: Request) -> Response:
        """Send ``request`` and read the whole answer."""
        session = self._session or self._get_session()
        # The error mapping is inlined rather than a context manager: this runs
        # once per request, and a generator-based manager costs a few µs.
        try:
            async with session.request(
                request.method,
                request.url,
                data=request_body(request.body),
                headers=request.headers,
                allow_redirects=False,
            ) as response:
                return Response(
                    response.status, await response.read(), response.headers
                )
        except (asyncio.TimeoutError, aiohttp.ServerTimeoutError) as exc:
            raise RequestTimeout(f"request timed out: {exc!r}") from exc
        except aiohttp.ClientError as exc:
            raise TransportError(f"request failed: {exc!r}") from exc

    async def aclose(self) -> None:
        """Close the session if this transport created it."""
        session, self._session = self._session, None
        if session is not None and self._owns_session:
            await session.close()
