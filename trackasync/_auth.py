"""The two ways of authenticating to the Tracking API.

Each turns into one ``Authorization`` header value, computed once. Neither ever
shows its secret in a ``repr`` or ``str``.
"""

from __future__ import annotations

import base64

from ._exceptions import ConfigError


class PrivateKey:
    """A private API key: ``Authorization: Basic base64("<key_id>:<secret>")``."""

    __slots__ = ("_header", "key_id")

    def __init__(self, key_id: str, secret: str) -> None:
        if not key_id or not secret:
            raise ConfigError("PrivateKey needs a non-empty key_id and secret")
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
