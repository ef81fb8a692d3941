"""Test doubles for the ``Transport`` interface: no sockets, full control.

``MockTransport(handler)`` answers each request with whatever ``handler`` returns
(sync or async; raising ``TransportError`` simulates a dropped connection).
``RecordingTransport`` also keeps every request, and by default accepts every
command, the way an in-memory exporter keeps spans.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec

from .._transport import Request, Response

Handler = Callable[[Request], "Response | Awaitable[Response]"]

_encode = msgspec.json.Encoder().encode


def commands_of(request: Request) -> list[dict[str, Any]]:
    """The commands a request carries: a batch's list, or the single route's one.

    A single-route command is given the shape of a batch command, with ``name``
    taken from the URL and no ``command_id``.
    """
    data = msgspec.json.decode(request.body or b"{}")
    if request.url.endswith("/batch"):
        commands: list[dict[str, Any]] = data["commands"]
        return commands
    name = (
        "customers/events" if request.url.endswith("/customers/events") else "customers"
    )
    return [{"name": name, "data": data}]


def accept_all(request: Request) -> Response:
    """Answer the way the API does when it accepts every command."""
    if request.url.endswith("/system/time"):
        return Response(200, b'{"success": true, "time": 1700000000.5}')
    if not request.url.endswith("/batch"):
        return Response(200, b'{"success": true}')
    results = [
        {"success": True, "command_id": command.get("command_id")}
        for command in commands_of(request)
    ]
    return Response(200, _encode({"results": results, "success": True}))


class MockTransport:
    """A ``Transport`` whose answers come from ``handler``."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.closed = False

    async def send(self, request: Request) -> Response:
        """Ask the handler; await it if it returned an awaitable.

        The answer names its request, as the real transport's do, so the
        client scrubs the request's credentials from any text taken from it.
        """
        answer = self.handler(request)
        if inspect.isawaitable(answer):
            answer = await answer
        if answer.request is None:
            answer = dataclasses.replace(answer, request=request)
        return answer

    async def aclose(self) -> None:
        """Mark the transport closed."""
        self.closed = True


class RecordingTransport(MockTransport):
    """A ``MockTransport`` that keeps every request it was asked to send."""

    def __init__(self, handler: Handler = accept_all) -> None:
        super().__init__(handler)
        self.requests: list[Request] = []

    async def send(self, request: Request) -> Response:
        """Record the request, then answer it."""
        self.requests.append(request)
        return await super().send(request)

    @property
    def commands(self) -> list[dict[str, Any]]:
        """Every command sent, in order, retries included."""
        return [
            command for request in self.requests for command in commands_of(request)
        ]
