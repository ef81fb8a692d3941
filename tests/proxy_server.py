"""A small HTTP proxy on 127.0.0.1 for the network tests: CONNECT tunnels and
plain forwarding, optional Basic credentials (407 without them), and every
connection sent to 127.0.0.1 whatever host it names, so a test can use a name
(``api.example.test``) that only the proxy "resolves".

A 407 answer echoes the ``Proxy-Authorization`` it got, as some proxies'
error pages do: the client must scrub it.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
from types import TracebackType


class ProxyServer:
    """``async with ProxyServer() as proxy:``; ``proxy.url`` to use it."""

    def __init__(self, *, login: str | None = None, password: str | None = None):
        self._expected = None
        if login is not None:
            pair = f"{login}:{password or ''}".encode()
            self._expected = "Basic " + base64.b64encode(pair).decode()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        #: (method, target) of every request the proxy was asked to carry.
        self.requests: list[tuple[str, str]] = []
        #: How many were refused with 407.
        self.refused = 0
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def __aenter__(self) -> ProxyServer:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
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
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=2.0)
        await self._server.wait_closed()

    async def _serve(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self._handle(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass
        finally:
            self._tasks.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _handle(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        method, target, _ = lines[0].split(" ", 2)
        headers = {}
        for line in lines[1:]:
            if ":" in line:
                name, value = line.split(":", 1)
                headers[name.strip().lower()] = value.strip()
        self.requests.append((method, target))
        given = headers.get("proxy-authorization")
        if self._expected is not None and given != self._expected:
            self.refused += 1
            body = f"<html>407: bad credentials: {given}</html>".encode()
            writer.write(
                b"HTTP/1.1 407 Proxy Authentication Required\r\n"
                b'Proxy-Authenticate: Basic realm="test"\r\n'
                b"Content-Type: text/html\r\nConnection: close\r\n"
                + f"Content-Length: {len(body)}\r\n\r\n".encode()
                + body
            )
            await writer.drain()
            return
        if method == "CONNECT":
            port = int(target.rsplit(":", 1)[1])
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            await writer.drain()
        else:
            # Plain forwarding: "POST http://host:port/path HTTP/1.1".
            rest = target.split("://", 1)[1]
            hostport, _, path = rest.partition("/")
            port = int(hostport.rsplit(":", 1)[1]) if ":" in hostport else 80
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", port)
            kept = [
                line
                for line in lines[1:]
                if line and not line.lower().startswith(("proxy-", "connection:"))
            ]
            forwarded = [f"{method} /{path} HTTP/1.1", *kept, "Connection: close"]
            up_writer.write(("\r\n".join(forwarded) + "\r\n\r\n").encode("latin-1"))
            size = int(headers.get("content-length", "0"))
            if size:
                up_writer.write(await reader.readexactly(size))
            await up_writer.drain()
        try:
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        finally:
            up_writer.close()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while chunk := await reader.read(65536):
            writer.write(chunk)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.write_eof()
