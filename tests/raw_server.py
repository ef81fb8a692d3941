"""A raw TCP server on 127.0.0.1 that answers HTTP requests with scripted bytes.

aiohttp.web cannot send what a broken proxy sends (a header line without a
colon, a 100 KB header, a body shorter than its Content-Length), so this server
writes whatever bytes the test gives it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from types import TracebackType

#: Writes one answer; the connection is closed after it returns.
Answer = Callable[["RawServer", asyncio.StreamWriter], Awaitable[None]]


def raw(data: bytes) -> Answer:
    """An answer that writes ``data`` at once."""

    async def write(server: RawServer, writer: asyncio.StreamWriter) -> None:
        writer.write(data)
        await writer.drain()

    return write


def http(status: int, body: bytes, *headers: str, close: bool = True) -> bytes:
    """A well-formed HTTP/1.1 answer with a Content-Length; ``close`` tells the
    client the connection ends with it."""
    head = [f"HTTP/1.1 {status} X", f"Content-Length: {len(body)}", *headers]
    if close:
        head.append("Connection: close")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


class RawServer:
    """Serves ``answer`` to every request.

    A connection carries one request, unless ``keep_alive`` is set (for answers
    that are valid HTTP): then it serves requests until the client hangs up.
    ``requests`` keeps each request's raw bytes (head and body); ``connections``
    counts accepted connections; ``written`` is how many body bytes a streaming
    answer managed to write before the client went away.
    """

    def __init__(self, answer: Answer | bytes, *, keep_alive: bool = False) -> None:
        self._answer = raw(answer) if isinstance(answer, bytes) else answer
        self._keep_alive = keep_alive
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()
        self.requests: list[bytes] = []
        self.connections = 0
        self.written = 0
        self.port = 0

    @property
    def base_url(self) -> str:
        """The server's URL."""
        return f"http://127.0.0.1:{self.port}"

    async def __aenter__(self) -> RawServer:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._server is not None
        self._server.close()
        # Scripts that stall (``silent``, ``streamed``) end with the test; on
        # Python 3.12+ wait_closed() would wait for them.
        for task in list(self._handlers):
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        await self._server.wait_closed()

    async def _handle(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.connections += 1
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        task.add_done_callback(self._handlers.discard)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                body = await reader.readexactly(length)
                self.requests.append(head + body)
                await self._answer(self, writer)
                # Most scripts are not valid HTTP: nothing after them could be
                # framed, so the connection ends with them.
                if not self._keep_alive:
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()


def streamed(
    head: bytes,
    *,
    chunk: int = 16 << 10,
    delay: float = 0.001,
    limit: int = 64 << 20,
) -> Answer:
    """An answer that writes ``head`` then body chunks slowly, until the client
    hangs up or ``limit`` bytes were written, counted in ``server.written``."""

    async def write(server: RawServer, writer: asyncio.StreamWriter) -> None:
        writer.write(head)
        payload = b"x" * chunk
        written = 0
        try:
            while written < limit:
                writer.write(payload)
                await writer.drain()
                written += chunk
                server.written = written
                await asyncio.sleep(delay)
        except ConnectionError:
            return

    return write


def silent(seconds: float) -> Answer:
    """An answer that says nothing for ``seconds``."""

    async def wait(server: RawServer, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(seconds)

    return wait
