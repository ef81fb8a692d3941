"""Large request bodies are written in pieces, with the event loop free between
them, and still arrive whole with a ``Content-Length``."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from trackasync import AiohttpTransport, Client, PrivateKey, Request
from trackasync._body import PIECE_BYTES, PIECEWISE_ABOVE, PiecewiseBody, request_body
from trackasync.testing import FakeTrackingAPI, RecordingTransport, commands_of

from .test_e2e import IDS, client_for


class PieceRecorder:
    """Just enough of aiohttp's stream writer: it records each write, in order,
    in a log that other tasks write to as well."""

    def __init__(self, log: list[object]) -> None:
        self.log = log

    async def write(self, chunk: memoryview) -> None:
        self.log.append(bytes(chunk))


def body_of(size: int) -> bytes:
    return bytes(index % 251 for index in range(size))


def test_small_bodies_are_handed_over_as_they_are() -> None:
    small = body_of(PIECEWISE_ABOVE)
    assert request_body(small) is small
    assert request_body(None) is None
    assert request_body(b"") == b""


def test_large_bodies_get_a_payload_with_their_size() -> None:
    large = body_of(PIECEWISE_ABOVE + 1)
    payload = request_body(large)
    assert isinstance(payload, PiecewiseBody)
    assert payload.size == len(large)
    assert payload.content_type == "application/json"
    assert payload.decode("latin-1") == large.decode("latin-1")


async def test_the_loop_runs_between_pieces() -> None:
    body = body_of(5 * PIECE_BYTES + 123)
    log: list[object] = []
    stop = asyncio.Event()

    async def ticker() -> None:
        while not stop.is_set():
            log.append("tick")
            await asyncio.sleep(0)

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0)
    await PiecewiseBody(body).write(PieceRecorder(log))  # type: ignore[arg-type]
    stop.set()
    await task
    pieces = [item for item in log if isinstance(item, bytes)]
    assert b"".join(pieces) == body
    assert [len(piece) for piece in pieces] == [PIECE_BYTES] * 5 + [123]
    # Between any two pieces, the other task ran.
    first = log.index(pieces[0])
    last = log.index(pieces[-1])
    between = log[first : last + 1]
    for before, after in itertools.pairwise(between):
        assert not (isinstance(before, bytes) and isinstance(after, bytes))


async def test_a_content_length_cuts_the_body() -> None:
    body = body_of(3 * PIECE_BYTES)
    log: list[object] = []
    writer = PieceRecorder(log)
    await PiecewiseBody(body).write_with_length(writer, PIECE_BYTES + 10)  # type: ignore[arg-type]
    assert b"".join(log) == body[: PIECE_BYTES + 10]  # type: ignore[arg-type]


async def _read_request(
    reader: asyncio.StreamReader,
) -> tuple[dict[str, str], bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")[1:]
    headers = {
        name.strip().lower(): value.strip()
        for name, _, value in (line.partition(":") for line in lines if line)
    }
    body = await reader.readexactly(int(headers["content-length"]))
    return headers, body


@pytest.mark.parametrize("size", [100, PIECEWISE_ABOVE + 1, 3_000_000])
async def test_the_server_gets_the_whole_body_with_its_length(size: int) -> None:
    """Over a real socket, against a bare server that reads slowly."""
    seen: list[tuple[dict[str, str], bytes]] = []

    async def handle(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await asyncio.sleep(0.05)  # let the client's socket buffer fill up
        seen.append(await _read_request(reader))
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Length: 16\r\n"
            b"Content-Type: application/json\r\n\r\n"
            b'{"success":true}'
        )
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    body = body_of(size)
    transport = AiohttpTransport()
    try:
        response = await transport.send(
            Request(
                "POST",
                f"http://127.0.0.1:{port}/batch",
                {"Content-Type": "application/json"},
                body,
            )
        )
    finally:
        await transport.aclose()
        server.close()
        await server.wait_closed()
    assert response.status == 200
    [(headers, received)] = seen
    assert received == body
    assert headers["content-length"] == str(size)
    assert "transfer-encoding" not in headers
    assert headers["content-type"] == "application/json"


async def test_an_event_near_the_size_limit_is_stored_whole(
    fake_tracking_api: FakeTrackingAPI,
) -> None:
    # 51 values of 15,000 bytes: 765 KB, each value under the 16 KB limit.
    props = {f"part_{i:02d}": f"{i:02d} Keyboard TK " * 1_000 for i in range(51)}
    async with client_for(fake_tracking_api) as client:
        delivery = await client.track(IDS, "view", props)
        receipt = await delivery
    assert receipt.status == 200
    [event] = fake_tracking_api.events
    assert event.properties == props


async def test_by_default_a_batch_body_stays_near_a_megabyte() -> None:
    """Events of about 105 KB: at most 9 in a request, and the limit still lets
    most of that megabyte be used."""
    transport = RecordingTransport()
    props = {f"part_{i}": f"{i} Keyboard TKL " * 1_000 for i in range(7)}
    async with Client(
        "https://api.example.test",
        "project-1",
        auth=PrivateKey("key", "secret"),
        transport=transport,
        linger=60.0,
        rate_limit=None,
    ) as client:
        deliveries = [client.track_nowait(IDS, "view", props) for _ in range(40)]
        await client.flush()
    assert all(delivery.delivered() for delivery in deliveries)
    sizes = [len(request.body or b"") for request in transport.requests]
    counts = [len(commands_of(request)) for request in transport.requests]
    assert max(sizes) <= 1_000_000 + 50 * 64
    assert max(counts) == 9
    assert sum(counts) == 40
