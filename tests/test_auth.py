"""Credentials: header values, hidden reprs, malformed values refused unseen."""

from __future__ import annotations

import base64

import pytest

from trackasync import ConfigError, PrivateKey, PublicToken


def test_headers() -> None:
    """Basic base64("key:secret") and "Token <token>"; the secret may hold ':'."""
    key = PrivateKey("key-id", "se:cret")
    assert key.header == "Basic " + base64.b64encode(b"key-id:se:cret").decode()
    assert PublicToken("tok").header == "Token tok"


@pytest.mark.parametrize(
    ("make", "fault"),
    [
        (lambda: PrivateKey("key", "s3cr3t\r\nX-Evil: 1"), "control character"),
        (lambda: PrivateKey("key\n", "s3cr3t-value"), "control character"),
        (lambda: PrivateKey("key", "s3cr3t\x00value"), "control character"),
        (lambda: PrivateKey("key:s3cr3t", "value"), "must not contain ':'"),
        (lambda: PublicToken("s3cr3t-token\r\n"), "control character"),
        (lambda: PublicToken("s3cr3t-t\x7foken"), "control character"),
        (lambda: PublicToken("s3cr3t-tökén"), "non-ASCII"),
        (lambda: PrivateKey("key", 123), "non-empty string"),  # type: ignore[arg-type]
    ],
)
def test_malformed_credentials_are_refused_without_showing_them(
    make: object, fault: str
) -> None:
    """A credential that cannot travel in a header is a ConfigError at once,
    and the message does not quote it."""
    with pytest.raises(ConfigError) as caught:
        make()  # type: ignore[operator]
    assert fault in str(caught.value)
    assert "s3cr3t" not in str(caught.value)
    assert "s3cr3t" not in repr(caught.value)


def test_non_ascii_private_key_is_fine() -> None:
    """Basic credentials are base64-encoded, so non-ASCII travels safely."""
    key = PrivateKey("clé", "sécret")
    assert key.header.isascii()
