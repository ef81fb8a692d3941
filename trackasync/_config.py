"""Immutable, validated settings: the retry policy and the API's size limits."""

from __future__ import annotations

import ipaddress
import math
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

from ._exceptions import ConfigError

# Documented limits, read conservatively ("< 800 KB", "< 16 KB", "1 - 50 commands"):
# https://documentation.bloomreach.com/engagement/reference/add-event
# https://documentation.bloomreach.com/engagement/reference/batch-commands-2
DEFAULT_MAX_COMMAND_BYTES = 800_000
DEFAULT_MAX_VALUE_BYTES = 16_000
MAX_BATCH_COMMANDS = 50
# The API documents no cap on a whole batch body. Ours keeps every step of
# building and sending one short enough not to stall an event loop shared with
# an application (joining and writing 5 MB took 4 to 13 ms at a time), while 50
# events of up to 20 KB, or one of the largest allowed, still fit in a request.
DEFAULT_MAX_BATCH_BYTES = 1_000_000


def _positive(name: str, value: object, *, allow_zero: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{name} must be a number, got {type(value).__name__}")
    ok = value >= 0 if allow_zero else value > 0
    if not ok or math.isnan(value) or math.isinf(value):
        bound = ">= 0" if allow_zero else "> 0"
        raise ConfigError(f"{name} must be a finite number {bound}, got {value!r}")


@dataclass(frozen=True, kw_only=True, slots=True)
class Retry:
    """How failed requests are retried.

    Only requests that may succeed later are retried: 429, 5xx, 408, connection
    errors and timeouts. The wait before retry ``n`` (1-based) is drawn uniformly
    from ``[0, min(wait_max, wait_initial * wait_exp_base ** (n - 1))]`` (full
    jitter); a ``Retry-After`` from the API replaces it, capped at
    ``max_retry_after``. A command is given up ("gave_up") after ``attempts``
    requests, or when the next attempt could not start within ``timeout`` seconds
    of the call that queued it.
    """

    attempts: int = 10
    timeout: float = 300.0
    wait_initial: float = 0.5
    wait_max: float = 30.0
    wait_exp_base: float = 2.0
    max_retry_after: float = 60.0

    def __post_init__(self) -> None:
        if (
            not isinstance(self.attempts, int)
            or isinstance(self.attempts, bool)
            or self.attempts < 1
        ):
            raise ConfigError(f"attempts must be an int >= 1, got {self.attempts!r}")
        _positive("timeout", self.timeout)
        _positive("wait_initial", self.wait_initial, allow_zero=True)
        _positive("wait_max", self.wait_max, allow_zero=True)
        _positive("max_retry_after", self.max_retry_after, allow_zero=True)
        if not 1 <= self.wait_exp_base < math.inf:  # also refuses NaN
            raise ConfigError(
                f"wait_exp_base must be a finite number >= 1, got {self.wait_exp_base}"
            )

    @classmethod
    def none(cls) -> Retry:
        """A policy that never retries."""
        return cls(attempts=1)


@dataclass(frozen=True, kw_only=True, slots=True)
class Limits:
    """Size and count limits checked before anything is queued or sent.

    The defaults are the API's documented limits; lower them to be stricter.
    ``max_batch_commands`` cannot exceed the API's 50.
    """

    max_command_bytes: int = DEFAULT_MAX_COMMAND_BYTES
    max_value_bytes: int = DEFAULT_MAX_VALUE_BYTES
    max_batch_commands: int = MAX_BATCH_COMMANDS
    max_batch_bytes: int = DEFAULT_MAX_BATCH_BYTES

    def __post_init__(self) -> None:
        for name in ("max_command_bytes", "max_value_bytes", "max_batch_bytes"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 2:
                raise ConfigError(f"{name} must be an int >= 2, got {value!r}")
        count = self.max_batch_commands
        if (
            not isinstance(count, int)
            or isinstance(count, bool)
            or not 1 <= count <= MAX_BATCH_COMMANDS
        ):
            raise ConfigError(
                f"max_batch_commands must be between 1 and {MAX_BATCH_COMMANDS}, "
                f"got {self.max_batch_commands!r}"
            )
        if self.max_batch_bytes < self.max_command_bytes + 256:
            # One command of the largest allowed size must fit in a batch body
            # with its envelope, or it could never be sent.
            raise ConfigError(
                "max_batch_bytes must exceed max_command_bytes by at least 256 "
                "bytes (room for one full-size command and the batch envelope)"
            )


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine: plain http is safe only there."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# A base_url copied from the API's documentation often carries the route's
# prefix, even a whole project path: the client adds both itself.
_ROUTE_PREFIX = "/track/v2"


def api_base(base_url: str, project_token: str, allow_http: bool) -> str:
    """The root of the tracking routes for one project, validated.

    ``base_url`` is the API's root (``https://api.exponea.com``), optionally
    with a path prefix of a gateway. A trailing ``/track/v2`` (or
    ``/track/v2/projects/<this project>``) is cut off, as the client adds it.
    A URL with user info, a query or a fragment is refused: the credentials go
    in ``auth``, and every route would be built wrong. No message quotes the
    URL or the token: either could be a pasted secret.
    """
    if not isinstance(base_url, str) or not base_url:
        raise ConfigError(
            "base_url must be the API's URL, e.g. https://api.exponea.com"
        )
    try:
        parts = urlsplit(base_url.strip())
        parts.port  # noqa: B018  (a bad port raises here, not at the first request)
    except ValueError:
        raise ConfigError(
            "base_url is not a valid URL (is its port a number?); it should look "
            "like https://api.exponea.com"
        ) from None
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ConfigError(
            "base_url must be an http(s) URL with a host, e.g. "
            "https://api.exponea.com (is it the project token or a key? The "
            "value is not shown, in case it is a secret)"
        )
    if "@" in parts.netloc:
        raise ConfigError(
            "base_url must not contain user info (user:password@): pass the "
            "credentials as auth=PrivateKey(...) or PublicToken(...)"
        )
    if parts.query or parts.fragment or base_url.strip().endswith(("?", "#")):
        raise ConfigError(
            "base_url must not have a query (?...) or a fragment (#...): the "
            "client appends each route's path to it"
        )
    if parts.scheme == "http" and not allow_http and not is_loopback(parts.hostname):
        raise ConfigError(
            f"refusing plain http:// to {parts.hostname}: credentials would travel in "
            "clear text. Use https://, or pass allow_http=True if you mean it"
        )
    if not isinstance(project_token, str) or not project_token.strip():
        raise ConfigError("project_token must be a non-empty string")
    token = quote(project_token, safe="")
    path = parts.path.rstrip("/")
    cut = path.find(_ROUTE_PREFIX + "/projects/")
    if cut >= 0:
        rest = path[cut + len(_ROUTE_PREFIX + "/projects/") :].split("/")[0]
        if rest != token:
            raise ConfigError(
                "base_url names a project path (/track/v2/projects/...) that is "
                "not project_token's: pass the API's root as base_url, e.g. "
                "https://api.exponea.com, and the project token apart"
            )
        path = path[:cut]
    elif path.endswith(_ROUTE_PREFIX):
        path = path[: -len(_ROUTE_PREFIX)]
    root = f"{parts.scheme}://{parts.netloc}{path}"
    return f"{root}{_ROUTE_PREFIX}/projects/{token}"
