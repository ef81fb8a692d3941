"""The two ways of authenticating to the Tracking API.

Each turns into one ``Authorization`` header value, computed once. Neither ever
shows its secret in a ``repr`` or ``str``, nor in the ``ConfigError`` raised for
a malformed credential: the message names the fault, never the value.
"""

from __future__ import annotations

import base64

from ._exceptions import ConfigError


def _check(what: str, value: object, *, ascii_only: bool = False) -> None:
    """Refuse a credential that cannot travel in a header, without showing it.

    Control characters (CR, LF, NUL...) would be refused by aiohttp at every
    request, after the command was queued; here they fail at construction.
    """
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{what} must be a non-empty string")
    if any(ord(char) < 0x20 or ord(char) == 0x7F for char in value):
        raise ConfigError(f"{what} contains a control character (a line break?)")
    if not value.strip():
        raise ConfigError(f"{what} is only spaces")
    if value != value.strip():
        # A secret pasted with a stray space around it: the API would answer
        # 401 at every request, long after this call.
        raise ConfigError(f"{what} has leading or trailing spaces; remove them")
    if ascii_only and not value.isascii():
        raise ConfigError(f"{what} contains a non-ASCII character")


class PrivateKey:
    """A private API key: ``Authorization: Basic base64("<key_id>:<secret>")``."""

    __slots__ = ("_header", "key_id")

    def __init__(self, key_id: str, secret: str) -> None:
        if not key_id or not secret:
            raise ConfigError("PrivateKey needs a non-empty key_id and secret")
        _check("PrivateKey key_id", key_id)
        _check("PrivateKey secret", secret)
        if ":" in key_id:
            # Basic credentials split at the first colon: the API would read a
            # different key id.
            raise ConfigError("PrivateKey key_id must not contain ':'")
        self.key_id = key_id
        token = base64.b64encode(f"{key_id}:{secret}".encode()).decode("ascii")
        self._header = f"Basic {token}"

    @property
    def header(self) -> str:
        """The ``Authorization`` header value."""
        return self._header

    def __repr__(self) -> str:
        return f"PrivateKey(key_id={self.key_id!r}, secret='***')"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PrivateKey) and other._header == self._header

    def __hash__(self) -> int:
        return hash(self._header)


class PublicToken:
    """A public API token: ``Authorization: Token <token>``."""

    __slots__ = ("_header",)

    def __init__(self, token: str) -> None:
        if not token:
            raise ConfigError("PublicToken needs a non-empty token")
        # Sent as is in the header (no base64), so it must be plain ASCII.
        _check("PublicToken token", token, ascii_only=True)
        self._header = f"Token {token}"

    @property
    def header(self) -> str:
        """The ``Authorization`` header value."""
        return self._header

    def __repr__(self) -> str:
        return "PublicToken('***')"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PublicToken) and other._header == self._header

    def __hash__(self) -> int:
        return hash(self._header)


Auth = PrivateKey | PublicToken
