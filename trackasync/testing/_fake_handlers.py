"""Route handlers of the fake Tracking API: auth, body parsing, commands, storing.

The handlers answer like the real API once a request got past the fault and rate
limit stage (see :class:`~trackasync.testing.FakeTrackingAPI`). Each returns its
response together with the number of commands it processed, for the request log.
"""

from __future__ import annotations

import base64
import binascii
import threading
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, cast

import msgspec
from aiohttp import web

from ._fake_faults import FaultPlan
from ._fake_store import FakeStore, ServerClock
from ._fake_validate import CustomerCommand, EventCommand, parse_customer, parse_event

__all__ = ["ROUTES", "TrackingHandlers", "basic_auth_header", "token_auth_header"]

ROUTES: Mapping[str, str] = MappingProxyType(
    {
        "customers_events": "customers/events",
        "customers": "customers",
        "batch": "batch",
        "system_time": "system/time",
    }
)
"""aiohttp route name -> route path under ``/track/v2/projects/{token}/``."""

_SUCCESS = b'{"success":true}'


def basic_auth_header(key_id: str, secret: str) -> str:
    """``Basic base64(key_id:secret)``, as RFC 7617 defines it.

    Computed here rather than with the client's ``PrivateKey``: a fake that
    reused the client's encoder would accept whatever that code produced, bug
    included.
    """
    token = base64.b64encode(f"{key_id}:{secret}".encode()).decode("ascii")
    return f"Basic {token}"


def token_auth_header(public_token: str) -> str:
    """``Token <public token>``, the public API token's header."""
    return f"Token {public_token}"


class _BatchCommand(msgspec.Struct):
    # Lenient on purpose: a wrong name or command_id fails only this command.
    # ``data`` stays raw so its size as sent is known without re-encoding.
    name: Any = None
    command_id: Any = None
    data: msgspec.Raw = msgspec.Raw()


class _BatchBody(msgspec.Struct):
    # Other top-level keys (sdk, sdk_version...) are ignored, like the real API.
    commands: list[_BatchCommand] | None = None


class TrackingHandlers:
    """The handlers; :class:`FakeTrackingAPI` provides the state they use."""

    _store: FakeStore
    _faults: FaultPlan
    _clock: ServerClock
    _project_token: str
    _key_id: str
    _secret: str
    _public_token: str
    single_route_error_status: int
    max_batch_commands: int
    too_many_commands_status: int

    def __init__(self, *, auth_headers: tuple[str, ...]) -> None:
        self._encoder = msgspec.json.Encoder()
        self._batch_decoder = msgspec.json.Decoder(_BatchBody)
        # The exact headers of the working credentials: the common case is a
        # set lookup, and only wrong headers get parsed.
        self._good_auth_headers = frozenset(auth_headers)
        # The server may run on its own thread (the pytest fixture does that)
        # while a test reads what it stored or scripts faults: every touch of
        # that state, on either side, holds this lock. Nothing awaits under it.
        # Reentrant: a test's reject_commands predicate runs under it and may
        # read the fake (say, api.customer(...)) to decide.
        self._lock = threading.RLock()

    def _json(
        self, status: int, payload: object, headers: dict[str, str] | None = None
    ) -> web.Response:
        return web.Response(
            status=status,
            body=self._encoder.encode(payload),
            content_type="application/json",
            headers=headers,
        )

    def _auth_error(self, status: int, error: str) -> web.Response:
        return self._json(status, {"success": False, "error": error})

    def _authenticate(self, request: web.Request) -> web.Response | None:
        """None when the credentials are good, else the error answer."""
        header = request.headers.get("Authorization")
        if header in self._good_auth_headers:
            return None
        if header is None:
            # Public tokens may come as a query parameter when no header can be set.
            token = request.query.get("access_token")
            if token is None:
                return self._auth_error(401, "Access key not provided")
            if token == self._public_token:
                return None
            return self._auth_error(401, "Access key not found")
        scheme, _, credentials = header.strip().partition(" ")
        scheme, credentials = scheme.lower(), credentials.strip()
        if scheme == "token" and credentials:
            if credentials == self._public_token:
                return None
            return self._auth_error(401, "Access key not found")
        if scheme != "basic":
            return self._auth_error(401, "Access key not provided")
        try:
            decoded = base64.b64decode(credentials, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return self._auth_error(401, "Access key not provided")
        key_id, colon, secret = decoded.partition(":")
        if not colon or not key_id:
            return self._auth_error(401, "Access key not provided")
        if key_id != self._key_id:
            return self._auth_error(401, "Access key not found")
        if secret != self._secret:
            return self._auth_error(403, "invalid secret")
        return None

    def _gate(self, request: web.Request) -> web.Response | None:
        """Authentication, then the project token: None when both are fine."""
        denied = self._authenticate(request)
        if denied is not None:
            return denied
        if request.match_info["token"] != self._project_token:
            return self._json(400, {"success": False, "error": "Invalid project id"})
        return None

    async def _read_body(self, request: web.Request) -> bytes | web.Response:
        """The raw body of an authorised request, or the answer that refuses it
        (credentials, project, or a compressed body)."""
        denied = self._gate(request)
        if denied is not None:
            return denied
        encoding = request.headers.get("Content-Encoding", "identity").lower()
        if encoding != "identity":
            # The real API cannot read compressed bodies and answers plain text.
            return web.Response(
                status=400,
                text="BadRequest: the server could not understand the request body",
            )
        return await request.read()

    def _bad_request(self, message: str, status: int = 400) -> web.Response:
        return self._json(status, {"success": False, "message": message})

    # -- commands -----------------------------------------------------------------

    def _apply(self, name: object, data: object, raw: bytes) -> list[str] | None:
        """Validate and store one write command; its errors, or None on success.

        ``raw`` is the command's data as sent, and ``data`` that decoded.
        """
        size = len(raw)
        parsed: EventCommand | CustomerCommand | list[str]
        if name == "customers/events":
            parsed = parse_event(data, size, self._encoder.encode)
        elif name == "customers":
            parsed = parse_customer(data, size, self._encoder.encode)
        elif isinstance(name, str):
            return [f"Unknown command {name!r}"]
        else:
            return ["Command name should be a string"]
        if isinstance(parsed, list):
            return parsed
        if self._faults.rejections:
            # The parsers only succeed on a JSON object.
            rejection = self._faults.rejection(str(name), cast("dict[str, Any]", data))
            if rejection is not None:
                return [rejection]
        if isinstance(parsed, EventCommand):
            timestamp = parsed.timestamp
            if timestamp is None:
                timestamp = self._clock.stamp()
            self._store.add_event(
                raw,
                parsed.customer_ids,
                parsed.event_type,
                timestamp,
                parsed.properties,
            )
        else:
            stamp = parsed.update_timestamp
            if stamp is None:
                stamp = self._clock.stamp()
            self._store.update_customer(parsed.customer_ids, parsed.properties, stamp)
        return None

    def _run_command(self, command: _BatchCommand) -> dict[str, Any]:
        name = command.name
        result: dict[str, Any]
        if name == "system/time":
            result = {"success": True, "time": self._clock.now()}
        else:
            # A copy, so a stored event does not keep the whole body alive.
            raw = bytes(command.data)
            try:
                data = msgspec.json.decode(raw) if raw else None
            except msgspec.DecodeError:  # well-formed, but e.g. a number out of range
                errors: list[str] | None = ["data is not valid JSON"]
            else:
                errors = self._apply(name, data, raw)
            result = (
                {"success": True}
                if errors is None
                else {"success": False, "errors": errors}
            )
        if command.command_id is not None:
            result["command_id"] = command.command_id
        return result

    # -- routes -------------------------------------------------------------------

    async def _single(
        self, request: web.Request, name: str
    ) -> tuple[web.Response, int]:
        body = await self._read_body(request)
        if isinstance(body, web.Response):
            return body, 0
        try:
            data = msgspec.json.decode(body)
        except msgspec.DecodeError:
            return self._bad_request("Invalid JSON"), 0
        with self._lock:
            errors = self._apply(name, data, body)
        if errors is None:
            return web.Response(body=_SUCCESS, content_type="application/json"), 1
        payload = {"success": False, "errors": errors}
        return self._json(self.single_route_error_status, payload), 1

    async def _handle_event(self, request: web.Request) -> tuple[web.Response, int]:
        """``POST customers/events``: track one event."""
        return await self._single(request, "customers/events")

    async def _handle_customer(self, request: web.Request) -> tuple[web.Response, int]:
        """``POST customers``: update one customer's properties."""
        return await self._single(request, "customers")

    async def _handle_time(self, request: web.Request) -> tuple[web.Response, int]:
        """``GET`` (or ``POST``) ``system/time``: the server's clock."""
        denied = self._gate(request)
        if denied is not None:
            return denied, 0
        return self._json(200, {"success": True, "time": self._clock.now()}), 0

    async def _handle_batch(self, request: web.Request) -> tuple[web.Response, int]:
        """``POST batch``: run up to ``max_batch_commands`` commands in order."""
        start_time = self._clock.now()
        body = await self._read_body(request)
        if isinstance(body, web.Response):
            return body, 0
        try:
            commands = self._batch_decoder.decode(body).commands
        except msgspec.DecodeError:  # also a command that is not an object
            return self._bad_request("Invalid JSON"), 0
        if not commands:
            return self._bad_request("No commands"), 0
        if len(commands) > self.max_batch_commands:
            message = (
                f"Too many commands: {len(commands)}, "
                f"the limit is {self.max_batch_commands}"
            )
            return self._bad_request(message, self.too_many_commands_status), 0
        with self._lock:
            results = [self._run_command(command) for command in commands]
        payload = {
            "results": results,
            "start_time": start_time,
            "end_time": self._clock.now(),
            "success": True,
        }
        return self._json(200, payload), len(commands)
