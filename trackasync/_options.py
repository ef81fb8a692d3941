"""Every option of both clients, declared once.

``Options`` is the one list: ``Client.__init__`` and ``SyncClient.__init__``
take exactly its fields as keywords (``SyncClient`` all but ``transport``), the
environment variables of ``from_env`` are derived from it (``_env.TUNING``
names the ones that can come from the environment), and a test checks that
every entry point agrees with it, names and defaults alike. It validates
everything at construction, so a bad setting raises ``ConfigError`` in the
caller's thread, before anything starts.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, TypedDict

from ._auth import PrivateKey, PublicToken
from ._config import Limits, Retry, _positive
from ._exceptions import ConfigError
from ._hooks import ResultHook
from ._network import Network, TLSOption
from ._ratelimit import DEFAULT_RATE_LIMIT
from ._shape import BeforeSend, check_default_properties
from ._table import OVERFLOW_POLICIES, Overflow
from ._transport import DEFAULT_CONNECT_TIMEOUT, DEFAULT_TIMEOUT

if TYPE_CHECKING:
    from ._transport import Transport

Mode = Literal["auto", "batch", "single"]
"""How commands travel.

``"auto"``: one command alone goes to its own route, two or more in one
``/batch`` request. ``"batch"``: always ``/batch``. ``"single"``: one request
per command, to ``/customers/events`` or ``/customers``.
"""

MODES: tuple[Mode, ...] = ("auto", "batch", "single")

Durability = Literal["durable", "interval"]
"""When a command given to a client with a ``spool`` is on disk.

``"durable"`` (the default): ``await track()``/``update_customer()`` and
``SyncClient.track()`` return only once the command is committed to the spool
(concurrent calls share one transaction); nothing they accepted is lost on a
crash or a power loss. ``"interval"``: commands are committed every
``spool_interval`` seconds and nobody waits; a crash or a power loss loses at
most the commands of the last interval. ``track_nowait`` never waits, whatever
the setting. Both use SQLite's WAL mode with ``synchronous=FULL``.
"""

DURABILITIES: tuple[Durability, ...] = ("durable", "interval")
DEFAULT_SPOOL_INTERVAL = 1.0
#: An hour of outage at the API's highest rate (100 requests/s of 50 commands)
#: of typical events (about 340 bytes each on disk): 6 GB; rounded up.
DEFAULT_SPOOL_MAX_BYTES = 8 * 1024**3

DEFAULT_MAX_QUEUE = 10_000
# Bytes of encoded commands the queue holds at most: 10,000 typical events take
# about 3 MB, so this bounds only big events (1,300 of 100 KB), keeping a
# default client's memory to a few hundred MB whatever its events weigh.
DEFAULT_MAX_QUEUE_BYTES = 128 * 1024**2
DEFAULT_QUEUE_TIMEOUT = 10.0
DEFAULT_LINGER = 0.5
DEFAULT_AWAIT_LINGER = 0.0
DEFAULT_MAX_IN_FLIGHT = 4
DEFAULT_SHUTDOWN_TIMEOUT = 10.0


@dataclass(frozen=True, kw_only=True, slots=True)
class Options:
    """The settings of one client; see each field."""

    #: The API's address, e.g. ``https://api.exponea.com`` (no path).
    base_url: str
    #: The project's token (the ``{projectToken}`` of every route).
    project_token: str
    #: ``PrivateKey(key_id, secret)`` or ``PublicToken(token)``.
    auth: PrivateKey | PublicToken
    #: Commands queued at most (not yet sent); past it, ``overflow`` decides.
    max_queue: int = DEFAULT_MAX_QUEUE
    #: Bytes of encoded commands queued at most (at least the largest command,
    #: ``limits.max_command_bytes``); past it, ``overflow`` decides.
    max_queue_bytes: int = DEFAULT_MAX_QUEUE_BYTES
    #: What a full queue does with a new command: see ``Overflow``.
    overflow: Overflow = "wait"
    #: Under "wait", how long a caller waits for room before ``QueueFull``
    #: (None: no limit).
    queue_timeout: float | None = DEFAULT_QUEUE_TIMEOUT
    #: Seconds a command may wait for others to share its request.
    linger: float = DEFAULT_LINGER
    #: Seconds a command that someone awaits waits for others to share its
    #: request. 0: it leaves at the loop's next turn, with every command queued
    #: by then (callers awaiting together still share one request).
    await_linger: float = DEFAULT_AWAIT_LINGER
    #: ``"auto"``, ``"batch"`` or ``"single"``: see ``Mode``.
    mode: Mode = "auto"
    #: Requests under way at once, retries included.
    max_in_flight: int = DEFAULT_MAX_IN_FLIGHT
    #: Requests per second at most (None: no pacing); halved on a 429.
    rate_limit: float | None = DEFAULT_RATE_LIMIT
    #: Share the rate limit with other processes: ``"host"`` (this host's
    #: processes), a file path, a ``redis://`` URL (a fleet behind one egress
    #: IP), or None/``"off"`` for this client alone.
    rate_budget: str | None = None
    #: How failed requests are retried (None: ``Retry()``, the defaults).
    retry: Retry | None = None
    #: Size and count limits checked at the call (None: ``Limits()``, the API's).
    limits: Limits | None = None
    #: Seconds for one whole request.
    timeout: float = DEFAULT_TIMEOUT
    #: Seconds to connect.
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    #: Seconds ``aclose()``/``close()`` wait for queued and in-flight commands.
    shutdown_timeout: float = DEFAULT_SHUTDOWN_TIMEOUT
    #: Called with each command's ``Delivery`` once it has its outcome, from the
    #: client's own task (sync or async; never inline in a call).
    on_result: ResultHook | None = None
    #: Where requests go (default: aiohttp). ``Client`` only.
    transport: Transport | None = None
    #: Allow plain ``http://`` to a host other than this machine.
    allow_http: bool = False
    #: False: a dry run that sends nothing (None: ``TRACKASYNC_SEND`` decides).
    send: bool | None = None
    #: An HTTP(S) proxy, ``http://[user:password@]host:port`` (None: none, or
    #: the environment's ``HTTPS_PROXY`` with ``trust_env``).
    proxy: str | None = None
    #: Follow ``HTTPS_PROXY``/``HTTP_PROXY``/``NO_PROXY`` from the environment.
    trust_env: bool = True
    #: TLS: an ``ssl.SSLContext``, or the path of a CA bundle to trust instead
    #: of the system's (None: the system's CAs).
    tls: TLSOption = None
    #: A directory where every accepted command is kept on disk until its
    #: outcome, and sent by the next run if this one ends first (None: memory
    #: only). Created 0700 if missing; one file per process.
    spool: str | os.PathLike[str] | None = None
    #: With a spool, when a command is on disk: see ``Durability``.
    durability: Durability = "durable"
    #: Under ``durability="interval"``, seconds between commits to the spool.
    spool_interval: float = DEFAULT_SPOOL_INTERVAL
    #: With a spool, the bytes of commands it holds at most beyond the queue in
    #: memory (commands that did not fit in memory, and those earlier runs
    #: left); past it, ``overflow`` decides, as for a full queue.
    spool_max_bytes: int = DEFAULT_SPOOL_MAX_BYTES
    #: Properties merged into every event (the call's own win on a shared
    #: name), before the size checks (None: none).
    default_properties: Mapping[str, Any] | None = None
    #: Called with each event (a ``trackasync.Event``) at the call, in the
    #: caller's thread; returns it, changed or not, or None to drop it.
    before_send: BeforeSend | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.auth, (PrivateKey, PublicToken)):
            raise ConfigError(
                "auth must be PrivateKey(key_id, secret) or PublicToken(token)"
            )
        if self.mode not in MODES:
            raise ConfigError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.overflow not in OVERFLOW_POLICIES:
            raise ConfigError(
                f"overflow must be one of {OVERFLOW_POLICIES}, got {self.overflow!r}"
            )
        for name in ("max_queue", "max_in_flight"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be an int >= 1, got {value!r}")
        _positive("linger", self.linger, allow_zero=True)
        _positive("await_linger", self.await_linger, allow_zero=True)
        _positive("timeout", self.timeout)
        _positive("connect_timeout", self.connect_timeout)
        _positive("shutdown_timeout", self.shutdown_timeout, allow_zero=True)
        if self.queue_timeout is not None:
            _positive("queue_timeout", self.queue_timeout, allow_zero=True)
        if self.rate_limit is not None:
            _positive("rate_limit", self.rate_limit)
        if self.on_result is not None and not callable(self.on_result):
            raise ConfigError("on_result must be callable")
        # Frozen: the defaults are filled in once, here.
        if self.retry is None:
            object.__setattr__(self, "retry", Retry())
        if self.limits is None:
            object.__setattr__(self, "limits", Limits())
        if not isinstance(self.retry, Retry):
            raise ConfigError("retry must be a trackasync.Retry")
        if not isinstance(self.limits, Limits):
            raise ConfigError("limits must be a trackasync.Limits")
        largest = self.limits.max_command_bytes
        if (
            isinstance(self.max_queue_bytes, bool)
            or not isinstance(self.max_queue_bytes, int)
            or self.max_queue_bytes < largest
        ):
            raise ConfigError(
                "max_queue_bytes must be an int of at least the largest command "
                f"(limits.max_command_bytes, {largest}), got {self.max_queue_bytes!r}"
            )
        if not isinstance(self.allow_http, bool):
            raise ConfigError("allow_http must be True or False")
        if self.send is not None and not isinstance(self.send, bool):
            raise ConfigError("send must be True, False or None")
        if self.spool is not None and not isinstance(self.spool, (str, os.PathLike)):
            raise ConfigError("spool must be a directory path or None")
        if self.spool == "":
            raise ConfigError("spool must be a directory path or None, not ''")
        if self.durability not in DURABILITIES:
            raise ConfigError(
                f"durability must be one of {DURABILITIES}, got {self.durability!r}"
            )
        _positive("spool_interval", self.spool_interval)
        if (
            isinstance(self.spool_max_bytes, bool)
            or not isinstance(self.spool_max_bytes, int)
            or self.spool_max_bytes < 0
        ):
            raise ConfigError(
                f"spool_max_bytes must be an int >= 0, got {self.spool_max_bytes!r}"
            )
        check_default_properties(self.default_properties)
        if self.before_send is not None and not callable(self.before_send):
            raise ConfigError("before_send must be callable")
        # Checked here, so that a bad proxy or TLS setting fails at construction
        # (ConfigError quotes no proxy URL: it can carry credentials).
        self.network()

    def network(self) -> Network:
        """The proxy and TLS settings, checked."""
        return Network.of(proxy=self.proxy, trust_env=self.trust_env, tls=self.tls)

    @property
    def the_retry(self) -> Retry:
        """``retry``, filled in."""
        assert self.retry is not None
        return self.retry

    @property
    def the_limits(self) -> Limits:
        """``limits``, filled in."""
        assert self.limits is not None
        return self.limits


#: The option names, in declaration order.
NAMES: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(Options))


def timeout_arg(name: str, value: object) -> float | None:
    """``None`` or a number of seconds >= 0 (infinity allowed), else ConfigError."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{name} must be a number of seconds or None")
    if math.isnan(value) or value < 0:
        raise ConfigError(f"{name} must be >= 0 seconds, got {value!r}")
    return float(value)


class SyncClientOptions(TypedDict, total=False):
    """The keyword options of ``SyncClient``: every ``Options`` field but the
    first three and ``transport`` (a transport is bound to one loop and one
    process, and cannot follow a fork)."""

    max_queue: int
    max_queue_bytes: int
    overflow: Overflow
    queue_timeout: float | None
    linger: float
    await_linger: float
    mode: Mode
    max_in_flight: int
    rate_limit: float | None
    rate_budget: str | None
    retry: Retry | None
    limits: Limits | None
    timeout: float
    connect_timeout: float
    shutdown_timeout: float
    on_result: ResultHook | None
    allow_http: bool
    send: bool | None
    proxy: str | None
    trust_env: bool
    tls: TLSOption
    spool: str | os.PathLike[str] | None
    durability: Durability
    spool_interval: float
    spool_max_bytes: int
    default_properties: Mapping[str, Any] | None
    before_send: BeforeSend | None


class EnvOptions(SyncClientOptions, total=False):
    """The keyword overrides ``from_env`` takes: every option, the address and
    credentials included (then not read from the environment)."""

    base_url: str
    project_token: str
    auth: PrivateKey | PublicToken
    transport: Transport | None


def check_names(names: object, where: str, allowed: tuple[str, ...] = NAMES) -> None:
    """``TypeError`` naming ``where`` (the call the user made) for an unknown
    keyword, as Python itself would word it."""
    for name in names:  # type: ignore[attr-defined]
        if name not in allowed:
            raise TypeError(f"{where}() got an unexpected keyword argument {name!r}")
