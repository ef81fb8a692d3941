"""Answers a broken proxy or server sends, over real sockets on 127.0.0.1.

Every message, repr, error chain and log record is scanned for the credentials:
aiohttp's parse errors carry the request headers in their repr, and none of
that may reach the caller, an error tracker or a log.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import socket
import traceback
from collections.abc import AsyncIterator, Iterator

import pytest

from tests.raw_server import RawServer, http, silent, streamed
from trackasync import (
    Client,
    DeliveryFailed,
    PrivateKey,
    PublicToken,
    RequestError,
    Retry,
    ServerError,
    TransportError,
)
from trackasync._results import MAX_KEPT_BODY
from trackasync._transport import (
    MAX_ANSWER_BYTES,
    MAX_ERROR_ANSWER_BYTES,
    AiohttpTransport,
    Request,
)

KEY_ID = "wire-key-id"
SECRET = "s3cr3t-wire-value"
TOKEN = "pub-t0ken-wire-value"
BASIC = base64.b64encode(f"{KEY_ID}:{SECRET}".encode()).decode()
#: What must never show: the secret, the Basic credentials, the public token.
SECRETS = (SECRET, BASIC, TOKEN)

AUTHS = {"private": PrivateKey(KEY_ID, SECRET), "public": PublicToken(TOKEN)}

#: Answers aiohttp cannot parse or read, with the message the caller gets.
MALFORMED: dict[str, tuple[bytes, str]] = {
    "header line without a colon": (
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nBadHeaderLine\r\n\r\n{}",
        "127.0.0.1 sent an answer that is not valid HTTP",
    ),
    "100 KB Set-Cookie": (
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nSet-Cookie: s="
        + b"c" * 100_000
        + b"\r\n\r\n{}",
        "127.0.0.1 sent an answer that is not valid HTTP",
    ),
    "bad status line": (
        b"HTTP/1.1 abc OK\r\n\r\n",
        "127.0.0.1 sent an answer that is not valid HTTP",
    ),
    "not HTTP at all": (
        b"\x00\x01garbage\r\n\r\n",
        "127.0.0.1 sent an answer that is not valid HTTP",
    ),
    "bad chunk size": (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n",
        "127.0.0.1 sent an answer that is not valid HTTP",
    ),
    "body shorter than Content-Length": (
        b'HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{"succ',
        "the answer from 127.0.0.1 was cut off or could not be decoded",
    ),
    "body not gzip as announced": (
        b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 5\r\n\r\nabcde",
        "the answer from 127.0.0.1 was cut off or could not be decoded",
    ),
    "connection closed without an answer": (
        b"",
        "127.0.0.1 closed the connection without answering",
    ),
}


def leaks(text: str) -> list[str]:
    """The secrets found in ``text``."""
    return [secret for secret in SECRETS if secret in text]


def chain(error: BaseException) -> Iterator[BaseException]:
    """``error`` and every exception linked to it as cause or context."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [error]
    while todo:
        item = todo.pop()
        if item is None or id(item) in seen:
            continue
        seen.add(id(item))
        yield item
        todo += [item.__cause__, item.__context__]
        if isinstance(item, DeliveryFailed):
            todo.append(item.error)


def assert_no_secret_in_error(error: BaseException) -> None:
    """No secret in the error, anything chained to it, their formatted
    traceback, or the reprs of the locals of the frames it passed through."""
    for item in chain(error):
        for text in (str(item), repr(item), *(repr(v) for v in vars(item).values())):
            assert not leaks(text), f"{type(item).__name__} shows a secret"
        formatted = "".join(traceback.format_exception(item))
        assert not leaks(formatted), "the formatted traceback shows a secret"
        tb = item.__traceback__
        while tb is not None:
            for name, value in tb.tb_frame.f_locals.items():
                assert not leaks(repr(value)), f"local {name!r} shows a secret"
            tb = tb.tb_next


def assert_no_secret_logged(caplog: pytest.LogCaptureFixture) -> None:
    """No log record, at any level and from any logger, shows a secret."""
    formatter = logging.Formatter()
    for record in caplog.records:
        assert not leaks(formatter.format(record)), record.getMessage()


@pytest.fixture
def debug_logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """Every logger captured at DEBUG."""
    caplog.set_level(logging.DEBUG)
    return caplog


@pytest.fixture
async def transport() -> AsyncIterator[AiohttpTransport]:
    """A transport with short timeouts, closed at teardown."""
    made = AiohttpTransport(timeout=5.0, connect_timeout=2.0)
    yield made
    await made.aclose()


def post(base_url: str, auth: PrivateKey | PublicToken) -> Request:
    """A single-route request carrying ``auth``'s header."""
    return Request(
        "POST",
        f"{base_url}/track/v2/projects/p1/customers/events",
        {"Authorization": auth.header, "Content-Type": "application/json"},
        b'{"customer_ids":{"registered":"ann"},"event_type":"x"}',
    )


# -- the transport -----------------------------------------------------------------


@pytest.mark.parametrize("auth_kind", list(AUTHS))
@pytest.mark.parametrize("case", list(MALFORMED))
async def test_malformed_answer_is_a_short_transport_error_without_secrets(
    transport: AiohttpTransport,
    debug_logs: pytest.LogCaptureFixture,
    case: str,
    auth_kind: str,
) -> None:
    """Each malformed answer raises a TransportError with a message of our own,
    nothing chained, and no secret anywhere, logs included."""
    answer, message = MALFORMED[case]
    async with RawServer(answer) as server:
        request = post(server.base_url, AUTHS[auth_kind])
        with pytest.raises(TransportError) as info:
            await transport.send(request)
    # The request did reach the server with its credentials: the test is real.
    assert any(
        leaks(sent.decode("latin-1")) for sent in server.requests
    ) or case.startswith("connection closed")
    assert str(info.value) == message
    assert info.value.__cause__ is None
    assert info.value.__context__ is None
    assert_no_secret_in_error(info.value)
    assert_no_secret_logged(debug_logs)


async def test_connection_refused_names_host_and_port(
    transport: AiohttpTransport,
) -> None:
    """Nothing listening: "connection refused by host:port", nothing chained."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    request = post(f"http://127.0.0.1:{port}", AUTHS["private"])
    with pytest.raises(TransportError) as info:
        await transport.send(request)
    assert str(info.value) == f"connection refused by 127.0.0.1:{port}"
    assert info.value.__cause__ is None
    assert info.value.__context__ is None
    assert_no_secret_in_error(info.value)


async def test_no_answer_in_time_is_a_short_timeout() -> None:
    """A server that never answers: "no answer from host within N s"."""
    transport = AiohttpTransport(timeout=0.3, connect_timeout=2.0)
    try:
        async with RawServer(silent(5.0)) as server:
            with pytest.raises(TransportError) as info:
                await transport.send(post(server.base_url, AUTHS["public"]))
    finally:
        await transport.aclose()
    assert str(info.value) == "no answer from 127.0.0.1 within 0.3 s"
    assert info.value.__context__ is None
    assert_no_secret_in_error(info.value)


def test_request_repr_hides_credentials() -> None:
    """Request's repr, what error trackers record as a local, hides the
    Authorization (and cookie) headers but keeps the others."""
    for auth in AUTHS.values():
        request = Request(
            "POST",
            "https://api.example.test/x",
            {"authorization": auth.header, "Cookie": f"s={TOKEN}", "X-Kept": "yes"},
            b"{}",
        )
        shown = repr(request)
        assert not leaks(shown)
        assert "'authorization': '***'" in shown
        assert "'Cookie': '***'" in shown
        assert "'X-Kept': 'yes'" in shown
        assert "body=<2 bytes>" in shown
        assert request.headers["authorization"] == auth.header  # only the repr hides


# -- how much of an answer is read ---------------------------------------------------


@pytest.mark.parametrize(
    ("status", "cap"), [(200, MAX_ANSWER_BYTES), (500, MAX_ERROR_ANSWER_BYTES)]
)
async def test_huge_body_is_cut_at_the_cap(
    transport: AiohttpTransport, status: int, cap: int
) -> None:
    """A body over the cap is cut to the cap and marked truncated."""
    body = b"y" * (cap * 2 + 17)
    async with RawServer(http(status, body)) as server:
        response = await transport.send(post(server.base_url, AUTHS["private"]))
    assert response.status == status
    assert response.truncated is True
    assert response.body == body[:cap]


@pytest.mark.parametrize(
    ("status", "cap"), [(200, MAX_ANSWER_BYTES), (404, MAX_ERROR_ANSWER_BYTES)]
)
async def test_body_of_exactly_the_cap_is_whole(
    transport: AiohttpTransport, status: int, cap: int
) -> None:
    """A body of exactly the cap is read whole and not marked truncated."""
    body = b"z" * cap
    async with RawServer(http(status, body)) as server:
        response = await transport.send(post(server.base_url, AUTHS["private"]))
    assert response.truncated is False
    assert response.body == body


async def test_huge_slow_body_is_not_read_to_the_end(
    transport: AiohttpTransport,
) -> None:
    """A 500 MB answer streamed slowly: the transport stops at the cap and hangs
    up, long before the server is done."""
    head = b"HTTP/1.1 500 X\r\nContent-Length: 500000000\r\n\r\n"
    async with RawServer(streamed(head, chunk=8 << 10, delay=0.002)) as server:
        response = await transport.send(post(server.base_url, AUTHS["private"]))
        await asyncio.sleep(0.2)  # let the server notice the hang-up
        written = server.written
    assert response.truncated is True
    assert len(response.body) == MAX_ERROR_ANSWER_BYTES
    # Socket buffers hold some, but nowhere near the 64 MB the server would write.
    assert written < 16 << 20


async def test_connection_is_not_reused_after_a_cut_answer(
    transport: AiohttpTransport,
) -> None:
    """The rest of a cut answer must not be read as the next answer: the next
    request gets a fresh connection, where a whole answer keeps it alive."""
    small = http(200, b'{"success": true}', close=False)
    async with RawServer(small, keep_alive=True) as server:
        for _ in range(2):
            await transport.send(post(server.base_url, AUTHS["private"]))
    assert server.connections == 1  # the control: keep-alive works

    # Far more than socket buffers hold: most of it is still unsent when the
    # transport stops reading.
    huge = http(200, b"y" * (8 * MAX_ANSWER_BYTES), close=False)
    async with RawServer(huge, keep_alive=True) as server:
        for _ in range(2):
            response = await transport.send(post(server.base_url, AUTHS["private"]))
            assert response.truncated is True
            assert response.status == 200
    assert server.connections == 2


# -- a whole client ------------------------------------------------------------------


def client_for(base_url: str, auth: PrivateKey | PublicToken) -> Client:
    """A client that retries twice at once and sends each command alone."""
    return Client(
        base_url,
        "project-1",
        auth=auth,
        linger=0.0,
        rate_limit=None,
        timeout=5.0,
        retry=Retry(attempts=2, wait_initial=0.0, wait_max=0.0),
    )


@pytest.mark.parametrize("auth_kind", list(AUTHS))
@pytest.mark.parametrize(
    "case",
    ["header line without a colon", "100 KB Set-Cookie", "bad status line"],
)
async def test_client_delivery_failure_shows_no_secret(
    debug_logs: pytest.LogCaptureFixture, case: str, auth_kind: str
) -> None:
    """Through a whole Client: the command gives up after its retries, and
    neither DeliveryFailed, its .error, their chains, nor any DEBUG log line
    shows a credential."""
    answer, message = MALFORMED[case]
    async with (
        RawServer(answer) as server,
        client_for(server.base_url, AUTHS[auth_kind]) as client,
    ):
        with pytest.raises(DeliveryFailed) as info:
            await client.track_and_wait({"registered": "ann"}, "signup")
    failed = info.value
    assert failed.reason == "gave_up"
    assert failed.attempts == 2
    assert isinstance(failed.error, TransportError)
    assert str(failed.error) == message
    assert message in str(failed)
    assert len(server.requests) == 2
    assert_no_secret_in_error(failed)
    assert_no_secret_logged(debug_logs)
    # The retry was logged at DEBUG, with the safe message.
    assert any(message in record.getMessage() for record in debug_logs.records)


@pytest.mark.parametrize("auth_kind", list(AUTHS))
async def test_system_time_failure_shows_no_secret(
    debug_logs: pytest.LogCaptureFixture, auth_kind: str
) -> None:
    """system_time() raises the transport's safe TransportError."""
    answer, message = MALFORMED["100 KB Set-Cookie"]
    async with (
        RawServer(answer) as server,
        client_for(server.base_url, AUTHS[auth_kind]) as client,
    ):
        with pytest.raises(RequestError) as info:
            await client.system_time()
    assert isinstance(info.value, TransportError)
    assert str(info.value) == message
    assert_no_secret_in_error(info.value)
    assert_no_secret_logged(debug_logs)


async def test_client_keeps_little_of_a_huge_error_answer() -> None:
    """A 500 with a 500 MB body, streamed: the client reads 64 KiB, hangs up,
    and the DeliveryFailed it reports keeps a few kilobytes of it."""
    head = b"HTTP/1.1 500 X\r\nContent-Length: 500000000\r\n\r\n"
    async with (
        RawServer(streamed(head, chunk=8 << 10, delay=0.002)) as server,
        Client(
            server.base_url,
            "project-1",
            auth=AUTHS["private"],
            linger=0.0,
            rate_limit=None,
            retry=Retry.none(),
        ) as client,
    ):
        with pytest.raises(DeliveryFailed) as info:
            await client.track_and_wait({"registered": "ann"}, "signup")
        await asyncio.sleep(0.2)
        written = server.written
    error = info.value.error
    assert isinstance(error, ServerError)
    assert error.status == 500
    assert len(error.body) == MAX_KEPT_BODY
    assert len(str(info.value)) < 1000
    assert written < 16 << 20
