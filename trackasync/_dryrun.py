"""Dry-run mode: ``Client(..., send=False)`` or ``TRACKASYNC_SEND=0``.

Everything before the network runs as usual (validation and encoding at the
call, queueing, batching, accounting); the last step is a transport that
answers every request the way the API answers success, without any I/O. So an
application keeps its code paths in development and tests, and ``stats()``
adds up: each command ends delivered, with a receipt whose ``request_id``
starts with :data:`DRY_RUN_REQUEST_PREFIX`.
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Mapping
from typing import Any

import msgspec

from ._exceptions import ConfigError
from ._network import Network
from ._transport import AiohttpTransport, Request, Response, Transport

__all__ = [
    "DRY_RUN_NOTICE",
    "DRY_RUN_REQUEST_PREFIX",
    "SEND_ENV",
    "DryRunTransport",
    "default_transport",
    "resolve_send",
]

SEND_ENV = "TRACKASYNC_SEND"
"""The environment variable that turns sending off for clients left at ``send=None``."""

DRY_RUN_REQUEST_PREFIX = "dry-run-"
"""How the ``request_id`` of a dry-run receipt starts: no real request had it."""

DRY_RUN_NOTICE = (
    "dry run (send=False or TRACKASYNC_SEND=0): commands are validated, encoded "
    "and counted as delivered, and nothing is sent"
)
"""Logged once, at WARNING, when a dry-run client starts."""

_OFF = frozenset({"0", "false", "no", "off"})
_ON = frozenset({"", "1", "true", "yes", "on"})

_JSON = {"Content-Type": "application/json"}


def resolve_send(
    send: bool | None,
    transport: Transport | None,
    environ: Mapping[str, str] | None = None,
) -> bool:
    """Whether a client sends: its ``send`` option, else ``TRACKASYNC_SEND``.

    An explicit ``send`` wins over the environment. A client given its own
    ``transport`` already says where requests go, so the environment does not
    replace it, and ``send=False`` together with a transport is refused as
    contradictory.
    """
    if send is not None:
        if not isinstance(send, bool):
            raise ConfigError(f"send must be True, False or None, got {send!r}")
        if not send and transport is not None:
            raise ConfigError(
                "send=False replaces the transport with one that sends nothing; "
                "pass either send=False or a transport, not both"
            )
        return send
    if transport is not None:
        return True
    value = (os.environ if environ is None else environ).get(SEND_ENV)
    if value is None:
        return True
    word = value.strip().lower()
    if word in _OFF:
        return False
    if word in _ON:
        return True
    raise ConfigError(
        f"{SEND_ENV} must be 0/false/no/off (dry run) or 1/true/yes/on, got {value!r}"
    )


def default_transport(
    send: bool,
    timeout: float,
    connect_timeout: float,
    network: Network | None = None,
) -> Transport:
    """The transport a client builds when it is given none.

    aiohttp when it sends (through ``network``'s proxy and TLS settings), else
    a :class:`DryRunTransport`. Whatever rebuilds a client's own transport (a
    fresh process after a fork, say) must call this again, or a dry-run client
    would start sending.
    """
    if send:
        return AiohttpTransport(
            timeout=timeout, connect_timeout=connect_timeout, network=network
        )
    return DryRunTransport()


class _Command(msgspec.Struct):
    # Only the id is read; the data is skipped without being decoded.
    command_id: Any = None


class _Batch(msgspec.Struct):
    commands: list[_Command] = []


class DryRunTransport:
    """A ``Transport`` that accepts every command and never touches the network.

    Answers have the API's success shapes: ``{"success": true}`` for the
    single routes, one successful result per command (its ``command_id``
    echoed) for ``/batch``, and the local clock for ``system/time``. Each has
    an ``x-request-id`` of ``dry-run-NNNNNN``.
    """

    def __init__(self) -> None:
        self._ids = itertools.count(1)
        self._decode_batch = msgspec.json.Decoder(_Batch).decode
        self._encode = msgspec.json.Encoder().encode
        self.closed = False

    async def send(self, request: Request) -> Response:
        """Answer ``request`` as the API answers success."""
        headers = {
            **_JSON,
            "x-request-id": f"{DRY_RUN_REQUEST_PREFIX}{next(self._ids):06d}",
        }
        url = request.url
        if url.endswith("/system/time"):
            body = self._encode({"success": True, "time": time.time()})
        elif url.endswith("/batch"):
            commands = self._decode_batch(request.body or b"{}").commands
            results = [
                {"success": True}
                if command.command_id is None
                else {"success": True, "command_id": command.command_id}
                for command in commands
            ]
            body = self._encode({"results": results, "success": True})
        else:
            body = b'{"success":true}'
        return Response(200, body, headers)

    async def aclose(self) -> None:
        """Nothing to release."""
        self.closed = True
