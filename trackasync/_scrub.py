"""Keeping the client's own credentials and control characters out of any text.

Proxies and gateways echo a request's headers in their error pages, and some
APIs quote them back in error strings: an answer can carry the very
``Authorization`` header the client sent. Every text taken from an answer goes
through a :class:`Scrubber` before it reaches an exception, a log line or a
report, and through :func:`printable` before it reaches a log line.

The credentials are derived from what was sent, not from a list kept
elsewhere: a ``Basic`` header yields its base64 token, the ``key_id:secret``
pair it encodes and the secret; a ``Token`` header yields the token; proxy
credentials are added by the transport that used them.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable, Mapping

__all__ = ["MASK", "MIN_SECRET", "Scrubber", "credentials_in", "printable"]

#: What a credential is replaced with.
MASK = "***"

#: Shorter strings are not scrubbed: no credential the API issues is that
#: short, and masking a short word everywhere would garble ordinary messages.
MIN_SECRET = 8

# Headers whose values are credentials.
_CREDENTIAL_HEADERS = ("authorization", "proxy-authorization")

# C0 controls (CR, LF, ESC, NUL...), DEL and C1 controls (CSI 0x9b among them),
# plus the Unicode line and paragraph separators some log viewers break on.
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    if char == "\n":
        return "\\n"
    if char == "\r":
        return "\\r"
    if char == "\t":
        return "\\t"
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(text: str) -> str:
    """``text`` with line breaks and terminal escapes shown as ``\\n``, ``\\x1b``...

    A line break in an error string from the network must not start a forged
    line in the application's log, nor an escape sequence repaint its terminal.
    Idempotent: a backslash is left as it is.
    """
    if _UNPRINTABLE.search(text) is None:
        return text
    return _UNPRINTABLE.sub(_escape, text)


def credentials_in(header: str) -> list[str]:
    """The secrets one ``Authorization``/``Proxy-Authorization`` value carries."""
    scheme, _, value = header.strip().partition(" ")
    value = value.strip()
    if not value:
        return [header]
    found = [value]
    if scheme.lower() == "basic":
        try:
            pair = base64.b64decode(value, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return found
        found.append(pair)
        _, _, secret = pair.partition(":")
        if secret:
            found.append(secret)
    return found


class Scrubber:
    """Replaces each of a set of secrets with ``***`` in text and bytes.

    Built once per set of credentials; ``Scrubber.for_headers`` derives them
    from the headers a request carried.
    """

    __slots__ = ("_bytes", "_texts")

    def __init__(self, secrets: Iterable[str]) -> None:
        texts = {s for s in secrets if isinstance(s, str) and len(s) >= MIN_SECRET}
        # JSON encoders may write "/" as "\/" (base64 has slashes): scrub both.
        texts |= {s.replace("/", "\\/") for s in texts if "/" in s}
        # Longest first: the pair "id:secret" goes before the secret inside it,
        # so the mask does not leave the key id glued to a partial match.
        self._texts = tuple(sorted(texts, key=len, reverse=True))
        self._bytes = tuple(s.encode("utf-8") for s in self._texts)

    @classmethod
    def for_headers(
        cls, headers: Mapping[str, str], extra: Iterable[str] = ()
    ) -> Scrubber:
        """A scrubber for the credentials in ``headers``, plus ``extra``."""
        secrets = list(extra)
        for name, value in headers.items():
            if name.lower() in _CREDENTIAL_HEADERS:
                secrets.extend(credentials_in(value))
        return cls(secrets)

    def __bool__(self) -> bool:
        return bool(self._texts)

    @property
    def secrets(self) -> tuple[str, ...]:
        """What this scrubber masks (for a transport to pass on)."""
        return self._texts

    def text(self, text: str) -> str:
        """``text`` without any of the secrets."""
        for secret in self._texts:
            if secret in text:
                text = text.replace(secret, MASK)
        return text

    def data(self, data: bytes) -> bytes:
        """``data`` without any of the secrets (UTF-8)."""
        for secret in self._bytes:
            if secret in data:
                data = data.replace(secret, MASK.encode())
        return data

    def texts(self, texts: Iterable[str]) -> list[str]:
        """Each of ``texts`` scrubbed."""
        return [self.text(text) for text in texts]


#: Masks nothing: for answers whose request carried no credentials.
NOTHING = Scrubber(())
