"""The tests' own Redis server: it starts from the dev extra's binary and stops."""

from __future__ import annotations

import socket

import pytest

from .redis_server import RedisServer


def _ping(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
        sock.sendall(b"PING\r\n")
        return sock.recv(16)


def test_a_started_server_answers_and_a_stopped_one_refuses() -> None:
    """The server answers PING on its loopback port, and is gone once stopped."""
    server = RedisServer()
    server.start()
    try:
        assert _ping(server.port).startswith(b"+PONG")
        assert server.url == f"redis://127.0.0.1:{server.port}/0"
    finally:
        server.cleanup()
    with pytest.raises(ConnectionRefusedError):
        _ping(server.port)
