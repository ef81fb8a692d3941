"""How requests reach the API: an HTTP(S) proxy, the environment's proxy
settings, and which certificate authorities to trust.

``Network`` is the validated, immutable form of ``Client``'s ``proxy=``,
``trust_env=`` and ``tls=`` options; ``AiohttpTransport`` reads it. Proxy
credentials are secrets like the API's: no message quotes a proxy URL, and the
transport scrubs them from every text taken from an answer.

``trust_env`` is on by default, as in curl, requests and httpx: a service
behind a mandatory corporate proxy gets ``HTTPS_PROXY``/``HTTP_PROXY`` set by
its platform and expects every client to follow it. Unlike aiohttp's own
``trust_env``, the environment is read once per route, at its first request
(not in a thread at every request), ``.netrc`` is never read (an entry
for the API's host would make aiohttp refuse every request, which carries its
own ``Authorization``), and loopback addresses are
never sent to an environment proxy (a proxy cannot reach this machine's
loopback). An explicit ``proxy=`` wins over the environment.
"""

from __future__ import annotations

import base64
import os
import ssl
import urllib.request
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

from ._config import is_loopback
from ._exceptions import ConfigError

__all__ = ["Network", "Proxy", "env_proxy"]

#: What ``tls=`` takes: a context, or the path of a PEM file of CA certificates.
TLSOption = ssl.SSLContext | str | os.PathLike[str] | None


@dataclass(frozen=True, slots=True, repr=False)
class Proxy:
    """A proxy's URL without credentials, and the credentials apart."""

    url: str
    login: str | None = None
    password: str | None = None

    @property
    def header(self) -> str | None:
        """The ``Proxy-Authorization`` value, if the proxy has credentials."""
        if self.password is None:
            return None
        pair = f"{self.login or ''}:{self.password}".encode()
        return f"Basic {base64.b64encode(pair).decode('ascii')}"

    @property
    def secrets(self) -> tuple[str, ...]:
        """The texts that would give the credentials away: the password, the
        ``login:password`` pair and its base64 form (the header's value)."""
        header = self.header
        if header is None:
            return ()
        pair = f"{self.login or ''}:{self.password}"
        return (str(self.password), pair, header.partition(" ")[2])

    def __repr__(self) -> str:
        auth = "" if self.login is None else " with credentials"
        return f"Proxy({self.url!r}{auth})"


def parse_proxy(value: str, what: str = "proxy") -> Proxy:
    """A ``Proxy`` from ``http://[user:password@]host:port``; ConfigError quotes
    none of it (the URL may hold a password)."""
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{what} must be a proxy URL such as http://proxy:3128")
    try:
        parts = urlsplit(value.strip())
        port = parts.port
    except ValueError:
        raise ConfigError(f"{what} is not a valid URL (its port?)") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(
            f"{what} must be an http:// or https:// URL with a host, "
            "such as http://proxy.example:3128"
        )
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ConfigError(f"{what} must be scheme://host:port, without a path")
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    url = f"{parts.scheme}://{host}" + ("" if port is None else f":{port}")
    if parts.username is None and parts.password is None:
        return Proxy(url)
    return Proxy(url, unquote(parts.username or ""), unquote(parts.password or ""))


def _ssl_context(tls: object) -> ssl.SSLContext | None:
    if tls is None:
        return None
    if isinstance(tls, ssl.SSLContext):
        return tls
    if isinstance(tls, (str, os.PathLike)):
        path = os.fspath(tls)
        if not os.path.isfile(path):
            raise ConfigError(f"tls: no CA bundle file at {path!r}")
        try:
            # The system's CAs are replaced, not extended: a private CA file
            # says exactly whom to trust (as requests' and httpx's verify= do).
            return ssl.create_default_context(cafile=path)
        except (ssl.SSLError, ValueError, OSError):
            raise ConfigError(
                f"tls: {path!r} is not a PEM file of CA certificates"
            ) from None
    raise ConfigError(
        "tls must be an ssl.SSLContext or the path of a CA bundle (PEM), "
        f"got {type(tls).__name__}"
    )


@dataclass(frozen=True, slots=True)
class Network:
    """Validated network options; see the module docstring."""

    proxy: Proxy | None = None
    trust_env: bool = True
    ssl_context: ssl.SSLContext | None = field(default=None, repr=False)

    @classmethod
    def of(
        cls, *, proxy: str | None = None, trust_env: bool = True, tls: TLSOption = None
    ) -> Network:
        """Check ``Client``'s options and build the ``Network``."""
        if not isinstance(trust_env, bool):
            raise ConfigError(
                f"trust_env must be True or False, got {type(trust_env).__name__}"
            )
        return cls(
            proxy=None if proxy is None else parse_proxy(proxy),
            trust_env=trust_env,
            ssl_context=_ssl_context(tls),
        )

    def proxy_for(self, url: str) -> Proxy | None:
        """The proxy a request to ``url`` goes through, if any."""
        if self.proxy is not None:
            return self.proxy
        if self.trust_env:
            return env_proxy(url)
        return None


def env_proxy(url: str) -> Proxy | None:
    """The proxy ``HTTPS_PROXY``/``HTTP_PROXY``/``ALL_PROXY`` name for ``url``,
    unless ``NO_PROXY`` exempts its host or the host is a loopback address.

    A malformed variable is ignored rather than fatal: the environment belongs
    to the whole process, and other programs read it too.
    """
    parts = urlsplit(url)
    host = parts.hostname
    if not host or is_loopback(host):
        return None
    proxies = urllib.request.getproxies_environment()
    bypass = urllib.request.proxy_bypass_environment  # type: ignore[attr-defined]
    if bypass(host, proxies):
        return None
    value = proxies.get(parts.scheme) or proxies.get("all")
    if not value:
        return None
    try:
        return parse_proxy(value, f"{parts.scheme.upper()}_PROXY")
    except ConfigError:
        return None
