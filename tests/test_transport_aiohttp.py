"""Tests for ``trackasync._transport``: the aiohttp transport and ``Response``."""

from __future__ import annotations

import asyncio
import errno
import inspect
import os
import socket
import ssl
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import aiohttp
import pytest
from aioresponses import CallbackResult, aioresponses
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from trackasync._exceptions import RequestTimeout, TrackError, TransportError
from trackasync._transport import AiohttpTransport, Request, Response

URL_BATCH = "https://api.example.test/track/v2/projects/p1/batch"
HEADERS = {
    "Authorization": "Basic a2V5aWQ6c2VjcmV0",
    "Content-Type": "application/json",
    "X-Custom": "kept",
}
# Deliberately not what json.dumps would produce: it must go out byte for byte.
BODY = b'{"commands":[{"name":"system/time","command_id":"0"}] , "x":1.0}'


_NEEDS_STREAM_WRITER = (
    "stream_writer" in inspect.signature(aiohttp.ClientResponse.__init__).parameters
)


class _MockedResponse(aiohttp.ClientResponse):
    """aioresponses 0.7.9 builds responses without the ``stream_writer`` argument
    aiohttp 3.14 requires (aioresponses issue #289); supply a finished one."""

    def __init__(self, method: str, url: URL, **kwargs: Any) -> None:
        if _NEEDS_STREAM_WRITER:
            kwargs.setdefault("stream_writer", SimpleNamespace(output_size=0))
        super().__init__(method, url, **kwargs)


class _Mock(aioresponses):
    """aioresponses whose canned responses use ``_MockedResponse``."""

    def add(self, url: Any, method: str = "GET", **kwargs: Any) -> None:
        kwargs.setdefault("response_class", _MockedResponse)
        super().add(url, method, **kwargs)


# What aiohttp's connector errors read their host and port from.
_KEY: Any = SimpleNamespace(host="api.example.test", port=443, ssl=True)


def answer(**kwargs: Any) -> CallbackResult:
    """A callback's answer, built the same way as the canned ones."""
    return CallbackResult(response_class=_MockedResponse, **kwargs)


@pytest.fixture
def mocked() -> Any:
    """aioresponses, active for the test."""
    with _Mock() as mock:
        yield mock


@pytest.fixture
async def transport() -> AsyncIterator[AiohttpTransport]:
    """A transport with its own session, closed at teardown."""
    made = AiohttpTransport(timeout=5.0, connect_timeout=1.0)
    yield made
    await made.aclose()


async def test_sends_method_url_headers_and_body_unchanged(
    mocked: Any, transport: AiohttpTransport
) -> None:
    """The request goes out with its method, URL, headers and exact body bytes."""
    seen: dict[str, Any] = {}

    def capture(url: URL, **kwargs: Any) -> CallbackResult:
        seen["url"] = url
        seen.update(kwargs)
        return answer(status=200, body=b'{"success":true}')

    mocked.post(URL_BATCH, callback=capture)
    await transport.send(Request("POST", URL_BATCH, HEADERS, BODY))

    assert str(seen["url"]) == URL_BATCH
    assert seen["data"] is BODY
    assert dict(seen["headers"]) == HEADERS
    assert seen["allow_redirects"] is False
    [call] = mocked.requests[("POST", URL(URL_BATCH))]
    assert call.kwargs["data"] == BODY


async def test_sends_get_without_body(mocked: Any, transport: AiohttpTransport) -> None:
    """A GET request is sent with its method and no body."""
    url = "https://api.example.test/track/v2/projects/p1/system/time"
    mocked.get(url, status=200, body=b'{"success":true,"time":1.5}')
    response = await transport.send(Request("GET", url, HEADERS))
    assert response.status == 200
    [call] = mocked.requests[("GET", URL(url))]
    assert call.kwargs.get("data") is None


async def test_returns_status_headers_and_raw_body(
    mocked: Any, transport: AiohttpTransport
) -> None:
    """Any HTTP answer comes back as a Response with status, headers and body."""
    raw = b'{"success": false, "errors": ["bad"]}\n'
    mocked.post(
        URL_BATCH,
        status=400,
        body=raw,
        headers={"X-Request-Id": "req-77", "Retry-After": "3"},
    )
    response = await transport.send(Request("POST", URL_BATCH, HEADERS, BODY))
    assert isinstance(response, Response)
    assert response.status == 400
    assert response.body == raw
    assert response.header("x-request-id") == "req-77"
    assert response.header("RETRY-AFTER") == "3"
    assert response.header("x-missing") is None


@pytest.mark.parametrize("status", [200, 429, 500, 503])
async def test_error_statuses_are_answers_not_exceptions(
    mocked: Any, transport: AiohttpTransport, status: int
) -> None:
    """Error statuses are returned as Responses; only missing answers raise."""
    mocked.post(URL_BATCH, status=status, body=b"x")
    response = await transport.send(Request("POST", URL_BATCH, HEADERS, BODY))
    assert response.status == status
    assert response.body == b"x"


@pytest.mark.parametrize(
    ("exc", "message"),
    [
        (
            aiohttp.ClientConnectionError("connection refused"),
            "request to api.example.test failed: ClientConnectionError",
        ),
        (
            aiohttp.ServerDisconnectedError(),
            "api.example.test closed the connection without answering",
        ),
        (
            aiohttp.ClientPayloadError("truncated"),
            "the answer from api.example.test was cut off or could not be decoded",
        ),
        (
            aiohttp.ClientOSError(errno.ECONNRESET, "reset"),
            f"connection to api.example.test failed: {os.strerror(errno.ECONNRESET)}",
        ),
        (
            # aiohttp's own strerror names the URL, user info and all.
            aiohttp.ClientOSError(
                errno.EPIPE, "Can not write request body for https://u:pw@x/y"
            ),
            f"connection to api.example.test failed: {os.strerror(errno.EPIPE)}",
        ),
        (
            aiohttp.ClientConnectorDNSError(
                _KEY, socket.gaierror(socket.EAI_NONAME, "Name or service not known")
            ),
            "DNS lookup failed for api.example.test",
        ),
        (
            aiohttp.ClientConnectorError(_KEY, ConnectionRefusedError(111, "x")),
            "connection refused by api.example.test:443",
        ),
        (
            aiohttp.ClientConnectorError(
                _KEY, OSError(errno.ENETUNREACH, "unreachable")
            ),
            "could not connect to api.example.test:443: "
            + os.strerror(errno.ENETUNREACH),
        ),
        (
            aiohttp.ClientConnectorCertificateError(
                _KEY, ssl.SSLCertVerificationError("self-signed")
            ),
            "TLS handshake with api.example.test:443 failed",
        ),
    ],
    ids=lambda item: type(item).__name__ if isinstance(item, Exception) else "",
)
async def test_connection_errors_become_transport_error(
    mocked: Any, transport: AiohttpTransport, exc: Exception, message: str
) -> None:
    """aiohttp client errors are raised as TransportError with a short message of
    our own, and the aiohttp error is neither the cause nor the context."""
    mocked.post(URL_BATCH, exception=exc)
    with pytest.raises(TransportError) as info:
        await transport.send(Request("POST", URL_BATCH, HEADERS, BODY))
    assert type(info.value) is TransportError
    assert isinstance(info.value, TrackError)
    assert str(info.value) == message
    assert info.value.__cause__ is None
    assert info.value.__context__ is None
    assert info.value.status is None


@pytest.mark.parametrize(
    ("exc", "message"),
    [
        (asyncio.TimeoutError(), "no answer from api.example.test within 5 s"),
        (
            aiohttp.ServerTimeoutError("read timed out"),
            "api.example.test stopped answering (timed out)",
        ),
        (
            aiohttp.ConnectionTimeoutError("connect"),
            "no connection to api.example.test:443 within 1 s",
        ),
    ],
    ids=lambda item: type(item).__name__ if isinstance(item, Exception) else "",
)
async def test_timeouts_become_request_timeout(
    mocked: Any, transport: AiohttpTransport, exc: Exception, message: str
) -> None:
    """Timeouts are raised as RequestTimeout (a TransportError) saying which
    wait ran out, without the aiohttp error attached."""
    mocked.post(URL_BATCH, exception=exc)
    with pytest.raises(RequestTimeout) as info:
        await transport.send(Request("POST", URL_BATCH, HEADERS, BODY))
    assert isinstance(info.value, TransportError)
    assert isinstance(info.value, TrackError)
    assert str(info.value) == message
    assert info.value.__cause__ is None
    assert info.value.__context__ is None


async def test_timeout_message_uses_a_passed_in_session_timeout(
    mocked: Any,
) -> None:
    """With a session passed in, the message names that session's timeout."""
    mocked.post(URL_BATCH, exception=asyncio.TimeoutError())
    timeout = aiohttp.ClientTimeout(total=2.5)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        transport = AiohttpTransport(timeout=30.0, session=session)
        with pytest.raises(RequestTimeout) as info:
            await transport.send(Request("POST", URL_BATCH, HEADERS, BODY))
    assert str(info.value) == "no answer from api.example.test within 2.5 s"
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout()) as session:
        mocked.post(URL_BATCH, exception=asyncio.TimeoutError())
        transport = AiohttpTransport(session=session)
        with pytest.raises(RequestTimeout) as info:
            await transport.send(Request("POST", URL_BATCH, HEADERS, BODY))
    assert str(info.value) == "no answer from api.example.test in time"


async def test_unmatched_url_is_a_transport_error(
    mocked: Any, transport: AiohttpTransport
) -> None:
    """aioresponses refuses an unmatched URL with a bare ClientConnectionError:
    a TransportError naming only the host and the error's type."""
    with pytest.raises(TransportError) as info:
        await transport.send(Request("POST", URL_BATCH, HEADERS, BODY))
    assert (
        str(info.value) == "request to api.example.test failed: ClientConnectionError"
    )
    assert info.value.__cause__ is None


async def test_session_is_reused_and_closed_by_aclose(mocked: Any) -> None:
    """The transport's own session serves every request and is closed by aclose()."""
    mocked.post(URL_BATCH, status=200, repeat=True)
    transport = AiohttpTransport()
    await transport.send(Request("POST", URL_BATCH, HEADERS, BODY))
    session = transport._session
    assert session is not None
    await transport.send(Request("POST", URL_BATCH, HEADERS, BODY))
    assert transport._session is session
    assert not session.closed
    await transport.aclose()
    assert session.closed
    await transport.aclose()  # a second close is harmless


async def test_aclose_without_use_is_harmless() -> None:
    """Closing a transport that never sent anything does nothing."""
    transport = AiohttpTransport()
    await transport.aclose()
    assert transport._session is None


async def test_passed_in_session_is_used_and_left_open(mocked: Any) -> None:
    """A session given by the caller is used but not closed by aclose()."""
    mocked.post(URL_BATCH, status=202, body=b"ok")
    async with aiohttp.ClientSession() as session:
        transport = AiohttpTransport(session=session)
        response = await transport.send(Request("POST", URL_BATCH, HEADERS, BODY))
        assert response.status == 202
        await transport.aclose()
        assert not session.closed
    assert session.closed


def test_response_header_is_case_insensitive_for_plain_dicts() -> None:
    """Response.header finds a header in a plain dict whatever the case."""
    response = Response(200, b"", {"X-Request-Id": "abc", "content-type": "text/plain"})
    assert response.header("x-request-id") == "abc"
    assert response.header("X-REQUEST-ID") == "abc"
    assert response.header("Content-Type") == "text/plain"
    assert response.header("retry-after") is None
    assert Response(204).header("x-request-id") is None


def test_response_header_with_multidict() -> None:
    """Response.header works with aiohttp's case-insensitive header mapping."""
    headers = CIMultiDictProxy(CIMultiDict({"X-Request-Id": "abc"}))
    assert Response(200, b"", headers).header("x-REQUEST-id") == "abc"
