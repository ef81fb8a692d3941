"""Sending one HTTP request: the ``Transport`` interface and its aiohttp implementation.

A transport knows nothing of commands, batching or retries: it takes a
``Request`` and returns a ``Response`` for any HTTP answer, or raises
``TransportError``/``RequestTimeout`` when there is none. ``trackasync.testing``
ships test doubles for it.

Secrets: aiohttp's errors carry the request (headers included) in their
``repr``, so none of them is ever formatted into a message, chained as a
``__cause__`` or left as a ``__context__``. The error raised here is built from
the error's type, the host and port, and the operating system's own text.
Each ``Response`` names its request and the credentials it carried (the
proxy's included), so whoever reads text out of it can scrub them.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

import aiohttp
from yarl import URL

from ._body import request_body
from ._exceptions import RequestTimeout, TransportError
from ._network import Network, Proxy
from ._scrub import Scrubber, printable

DEFAULT_TIMEOUT = 30.0
DEFAULT_CONNECT_TIMEOUT = 10.0

#: At most this much of a 2xx answer is read: a batch answer for 50 commands is
#: a few kilobytes, so this leaves room for long error strings and no more.
MAX_ANSWER_BYTES = 1 << 20
#: At most this much of any other answer is read: only its error strings matter.
MAX_ERROR_ANSWER_BYTES = 64 << 10

# Headers whose values are credentials, hidden from ``Request``'s repr.
_SECRET_HEADERS = frozenset(("authorization", "proxy-authorization", "cookie"))

# aiohttp 3.10 added these; on older versions the checks below fall back to
# the parent classes.
_CONNECT_TIMEOUTS: tuple[type[BaseException], ...] = tuple(
    cls
    for cls in (getattr(aiohttp, "ConnectionTimeoutError", None),)
    if cls is not None
)


@dataclass(frozen=True, slots=True, repr=False)
class Request:
    """One HTTP request to the API. ``body`` is sent as is, never re-encoded.

    Its ``repr`` hides credential headers: error trackers record it as a local.
    """

    method: str
    url: str
    headers: Mapping[str, str]
    body: bytes | None = None

    def __repr__(self) -> str:
        shown = {
            name: "***" if name.lower() in _SECRET_HEADERS else value
            for name, value in self.headers.items()
        }
        size = "None" if self.body is None else f"<{len(self.body)} bytes>"
        return (
            f"Request(method={self.method!r}, url={self.url!r}, "
            f"headers={shown!r}, body={size})"
        )


@dataclass(frozen=True, slots=True)
class Response:
    """One HTTP answer: status, headers and the raw body.

    ``truncated`` says the body was longer than the transport reads and was
    cut: such an answer cannot be trusted to say what the API did.
    ``request`` is the request it answers, when the transport says so, and
    ``secrets`` the credentials that request carried (the transport's own, such
    as a proxy's, included): no text taken from this answer may show them.
    """

    status: int
    body: bytes = b""
    headers: Mapping[str, str] = field(default_factory=dict)
    truncated: bool = False
    request: Request | None = field(default=None, repr=False, compare=False)
    secrets: tuple[str, ...] = field(default=(), repr=False, compare=False)

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
    """Sends requests. Implementations must be safe to call concurrently.

    A ``Response`` should name its ``request`` (and list in ``secrets`` any
    credential the transport added itself, such as a proxy's): the client
    scrubs those from every text it takes from the answer.
    """

    async def send(self, request: Request) -> Response:
        """Send one request; raise ``TransportError`` if no answer came."""
        ...

    async def aclose(self) -> None:
        """Release connections. Called once, when the client closes."""
        ...


class AiohttpTransport:
    """The default transport: one ``aiohttp.ClientSession`` with keep-alive.

    ``timeout`` bounds a whole request, ``connect_timeout`` getting a connection;
    ``max_connections`` caps open sockets; ``network`` says which proxy and
    which certificate authorities to use (see ``Network``; the default follows
    ``HTTPS_PROXY``/``NO_PROXY``). The session is created on first use,
    inside the running event loop, unless one is passed in (then it is not
    closed by ``aclose``, and ``network``'s TLS setting does not apply to it).
    Answers are read up to ``MAX_ANSWER_BYTES`` (2xx) or
    ``MAX_ERROR_ANSWER_BYTES`` (other statuses); the rest is not read, the
    connection is closed and the ``Response`` is marked ``truncated``.
    """

    def __init__(
        self,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        max_connections: int = 100,
        session: aiohttp.ClientSession | None = None,
        network: Network | None = None,
    ) -> None:
        self._timeout = aiohttp.ClientTimeout(total=timeout, connect=connect_timeout)
        self._max_connections = max_connections
        self._session = session
        self._owns_session = session is None
        self._network = network or Network()
        # Per URL (a client uses three or four): the proxy, read from the
        # environment once; per credential header: what to scrub from answers.
        self._proxies: dict[str, tuple[Proxy | None, dict[str, str] | None]] = {}
        self._secrets: dict[tuple[str | None, Proxy | None], tuple[str, ...]] = {}

    def _get_session(self) -> aiohttp.ClientSession:
        session = self._session
        if session is None:
            context = self._network.ssl_context
            session = aiohttp.ClientSession(
                timeout=self._timeout,
                connector=aiohttp.TCPConnector(
                    limit=self._max_connections,
                    ssl=True if context is None else context,
                ),
                # The API does not take compressed request bodies, and our own
                # requests must not show up in the application's aiohttp traces.
                auto_decompress=True,
                # The proxy is chosen here (Network), not by aiohttp: its
                # trust_env reads ~/.netrc and the environment at every request.
                trust_env=False,
            )
            self._session = session
        return session

    def _proxy(self, url: str) -> tuple[Proxy | None, dict[str, str] | None]:
        """The proxy for ``url`` and the headers for it (its credentials)."""
        found = self._proxies.get(url)
        if found is None:
            proxy = self._network.proxy_for(url)
            headers = None
            if proxy is not None and proxy.header is not None:
                headers = {"Proxy-Authorization": proxy.header}
            found = (proxy, headers)
            if len(self._proxies) < 64:  # a handful of routes in practice
                self._proxies[url] = found
        return found

    def _secrets_of(self, request: Request, proxy: Proxy | None) -> tuple[str, ...]:
        key = (request.headers.get("Authorization"), proxy)
        secrets = self._secrets.get(key)
        if secrets is None:
            extra = () if proxy is None else proxy.secrets
            secrets = Scrubber.for_headers(request.headers, extra).secrets
            if len(self._secrets) < 64:  # one or two entries in practice
                self._secrets[key] = secrets
        return secrets

    async def send(self, request: Request) -> Response:
        """Send ``request`` and read the answer, up to the size cap."""
        session = self._session or self._get_session()
        proxy, proxy_headers = self._proxy(request.url)
        # The error mapping is inlined rather than a context manager: this runs
        # once per request, and a generator-based manager costs a few µs.
        try:
            async with session.request(
                request.method,
                request.url,
                data=request_body(request.body),
                headers=request.headers,
                allow_redirects=False,
                proxy=None if proxy is None else proxy.url,
                proxy_headers=proxy_headers,
            ) as response:
                status = response.status
                cap = (
                    MAX_ANSWER_BYTES if 200 <= status < 300 else MAX_ERROR_ANSWER_BYTES
                )
                body, truncated = await _read_capped(response.content, cap)
                if truncated:
                    # Unread bytes must not be taken for the next answer.
                    response.close()
                return Response(
                    status,
                    body,
                    response.headers,
                    truncated,
                    request,
                    self._secrets_of(request, proxy),
                )
        except (asyncio.TimeoutError, aiohttp.ServerTimeoutError) as exc:
            # The session's own timeout: a session passed in has its own.
            error: TransportError = _timeout_error(exc, request, session.timeout)
        except (aiohttp.ClientError, OSError) as exc:
            error = _transport_error(exc, request, proxy)
        # Raised outside the handler on purpose: the aiohttp error, whose repr
        # holds the request headers, must not ride along as __context__. On
        # Python 3.10 a coroutine still has the handled error (or the OSError
        # beneath it) as its current exception here, so a plain raise would
        # chain it: raise once, clear what that chained, and re-raise as is
        # (a bare raise chains nothing).
        try:
            raise error
        except TransportError:
            error.__context__ = None
            raise

    async def aclose(self) -> None:
        """Close the session if this transport created it."""
        session, self._session = self._session, None
        if session is not None and self._owns_session:
            await session.close()


async def _read_capped(content: aiohttp.StreamReader, cap: int) -> tuple[bytes, bool]:
    """Up to ``cap`` bytes of a body, and whether there was more."""
    chunks: list[bytes] = []
    size = 0
    while True:
        # One byte past the cap tells "exactly cap" apart from "more".
        chunk = await content.read(cap + 1 - size)
        if not chunk:
            return b"".join(chunks), False
        chunks.append(chunk)
        size += len(chunk)
        if size > cap:
            return b"".join(chunks)[:cap], True


def _host_port(url: str) -> tuple[str, str]:
    """The host and port a URL names, and nothing else of it (no user info)."""
    try:
        parsed = URL(url)
    except (TypeError, ValueError):
        return "the API", "?"
    host = parsed.host or "the API"
    return host, "?" if parsed.port is None else str(parsed.port)


def _os_text(error: BaseException | None) -> str:
    """The operating system's description of an ``OSError``'s errno.

    Not ``strerror``: aiohttp puts its own text there, URLs included.
    """
    number = getattr(error, "errno", None)
    if isinstance(number, int) and number > 0:
        return os.strerror(number)
    return type(error).__name__ if error is not None else "unknown error"


def _timeout_error(
    exc: BaseException, request: Request, timeout: aiohttp.ClientTimeout
) -> RequestTimeout:
    """A short, secret-free ``RequestTimeout`` for an aiohttp timeout."""
    host, port = _host_port(request.url)
    if _CONNECT_TIMEOUTS and isinstance(exc, _CONNECT_TIMEOUTS):
        return RequestTimeout(
            f"no connection to {host}:{port}{_within(timeout.connect)}"
        )
    if isinstance(exc, aiohttp.ServerTimeoutError):
        # A read timeout of a session passed in, or a connect timeout on
        # aiohttp < 3.10: either way the server went quiet.
        return RequestTimeout(f"{host} stopped answering (timed out)")
    return RequestTimeout(f"no answer from {host}{_within(timeout.total)}")


def _within(seconds: float | None) -> str:
    return " in time" if seconds is None else f" within {seconds:g} s"


def _tls_detail(exc: BaseException) -> str:
    """What OpenSSL said was wrong with the certificate, if it said."""
    cert_error = getattr(exc, "certificate_error", None)
    message = getattr(cert_error, "verify_message", None)
    if isinstance(message, str) and message:
        return f": {printable(message)[:200]}"
    return ""


def _transport_error(
    exc: BaseException, request: Request, proxy: Proxy | None = None
) -> TransportError:
    """A short, secret-free ``TransportError`` for an aiohttp or socket error."""
    host, port = _host_port(request.url)
    if isinstance(exc, aiohttp.ClientHttpProxyError):
        # The proxy answered the tunnel request with an error status.
        where = "" if proxy is None else f" at {_host_port(proxy.url)[0]}"
        why = " (proxy credentials missing or wrong)" if exc.status == 407 else ""
        return TransportError(
            f"the proxy{where} refused the connection to {host}: HTTP {exc.status}{why}"
        )
    if isinstance(exc, aiohttp.ClientProxyConnectionError):
        proxy_host, proxy_port = exc.host, str(exc.port)
        return TransportError(
            f"could not connect to the proxy at {proxy_host}:{proxy_port}: "
            f"{_os_text(getattr(exc, 'os_error', None))}"
        )
    if isinstance(exc, aiohttp.ClientConnectorError):
        host, port = exc.host, str(exc.port)
        os_error = getattr(exc, "os_error", None)
        if isinstance(exc, aiohttp.ClientSSLError):
            return TransportError(
                f"TLS handshake with {host}:{port} failed{_tls_detail(exc)}"
            )
        if isinstance(os_error, socket.gaierror):
            return TransportError(f"DNS lookup failed for {host}")
        if isinstance(os_error, ConnectionRefusedError):
            return TransportError(f"connection refused by {host}:{port}")
        return TransportError(
            f"could not connect to {host}:{port}: {_os_text(os_error)}"
        )
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return TransportError(f"{host} closed the connection without answering")
    if isinstance(exc, aiohttp.ClientPayloadError):
        return TransportError(
            f"the answer from {host} was cut off or could not be decoded"
        )
    if isinstance(exc, aiohttp.ClientResponseError):
        # aiohttp reports an answer it could not parse (a header line without
        # a colon, a header over its size limit, a bad status line) this way.
        return TransportError(f"{host} sent an answer that is not valid HTTP")
    if isinstance(exc, OSError):
        return TransportError(f"connection to {host} failed: {_os_text(exc)}")
    return TransportError(f"request to {host} failed: {type(exc).__name__}")
