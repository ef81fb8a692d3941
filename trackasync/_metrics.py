"""What the metrics exporters share, with no metrics library imported.

The counters come from ``stats()``, read when the exporter is collected, so
nothing is done per event. The one figure ``stats()`` does not keep is per
request: its route, status class, duration and size. For those, a client
with metrics wired gets one ``RequestLog``, fed by the sender once per request
(``Counters.observers``: an append, nothing more, in the client's loop) and
aggregated by the exporters when they read.

``otel_metrics`` and ``prometheus_metrics`` import their library only when
called, so ``import trackasync`` imports neither.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import weakref
from bisect import bisect_left
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, NoReturn
from urllib.parse import unquote

from ._client import Client, ClientState
from ._exceptions import ConfigError, MissingExtra
from ._stats import Counters, Stats
from ._sync import SyncClient

if TYPE_CHECKING:
    from opentelemetry.metrics import MeterProvider
    from prometheus_client.registry import CollectorRegistry

logger = logging.getLogger("trackasync")

AnyClient = Client | SyncClient

#: Request duration buckets, in seconds: OpenTelemetry's advice for HTTP
#: client durations.
DURATION_BUCKETS: tuple[float, ...] = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.075,
    0.1,
    0.25,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    7.5,
    10.0,
)
#: Commands per request buckets (a batch holds at most 50).
COMMAND_BUCKETS: tuple[float, ...] = (1, 2, 5, 10, 20, 30, 40, 50)

_NAME_MAX = 64


# Looked up once per request: cheaper than formatting.
_CLASSES = {status: f"{status // 100}xx" for status in range(100, 600)}


def status_class(status: int | None) -> str:
    """``"2xx"``... ``"5xx"``, or ``"error"`` for a request without an answer."""
    return _CLASSES.get(status, "error")  # type: ignore[arg-type]


class Buckets:
    """A fixed-bucket histogram: per-bucket counts, a sum and a count."""

    __slots__ = ("bounds", "count", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        # One more than the bounds: the last counts what is above them all.
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        # bisect_left: a value equal to a bound falls in that bound's bucket
        # ("le", less than or equal, as Prometheus and OpenTelemetry count).
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value
        self.count += 1

    def copy(self) -> Buckets:
        other = Buckets(self.bounds)
        other.counts = list(self.counts)
        other.sum = self.sum
        other.count = self.count
        return other

    def cumulative(self) -> list[tuple[float, int]]:
        """(upper bound, observations at or below it), ending with +inf."""
        total = 0
        out: list[tuple[float, int]] = []
        for bound, count in zip((*self.bounds, float("inf")), self.counts):
            total += count
            out.append((bound, total))
        return out


@dataclass(frozen=True, slots=True)
class RequestSeries:
    """The requests of one route and status class: durations and sizes."""

    route: str
    status_class: str
    duration: Buckets
    commands: Buckets


#: Called for each request with (route, status class, seconds, commands).
Listener = Callable[[str, str, float, int], None]


#: Requests a log holds unaggregated before the sender's own call aggregates
#: them (when nothing reads the metrics for that long).
MAX_PENDING = 10_000


class RequestLog:
    """Per-request figures of one client, fed by its sender, read by exporters.

    The sender only appends each request to a queue (a deque: thread-safe, and
    the cheapest thing it can do in the client's loop). The exporters, in their
    own threads (a scrape, the SDK's reader), aggregate the queue when they
    read: into the buckets, and through the listeners (the OpenTelemetry
    histograms), under a lock so that each read is whole. A bound keeps the
    queue small when nothing reads.
    """

    def __init__(self, client: AnyClient) -> None:
        self._client = weakref.ref(client)
        self._lock = threading.Lock()
        self._pending: deque[tuple[str, int | None, float, int]] = deque()
        self._series: dict[tuple[str, str], RequestSeries] = {}
        self._listeners: list[Listener] = []
        self._counters: Counters | None = None
        self._failing = False
        self.attach()

    def client(self) -> AnyClient | None:
        """The client, or None once it was garbage-collected."""
        return self._client()

    def stats(self) -> Stats | None:
        client = self._client()
        return None if client is None else client.stats()

    def closed(self) -> bool:
        """Whether the client is gone or closed (its name may be taken over)."""
        client = self._client()
        if client is None:
            return True
        if isinstance(client, SyncClient):
            return client._closed
        return client.state is ClientState.CLOSED

    def listen(self, listener: Listener) -> None:
        """Also call ``listener`` for each request (an OpenTelemetry histogram),
        when the requests are aggregated."""
        with self._lock:
            self._listeners.append(listener)

    def attach(self) -> None:
        """Observe the client's current counters (new ones after a fork)."""
        client = self._client()
        if client is None:
            return
        counters = _counters_of(client)
        if counters is self._counters:
            return
        if self.observe not in counters.observers:
            counters.observers.append(self.observe)
        self._counters = counters

    def reset(self) -> None:
        """Forget every request: a forked child starts from zero, as stats() do."""
        self._lock = threading.Lock()  # the parent's may have been held
        self._pending.clear()
        self._series = {}
        self._counters = None
        self.attach()

    def observe(
        self,
        route: str,
        status: int | None,
        seconds: float,
        commands: int,
        body_bytes: int,
    ) -> None:
        """One request: the sender's observer (``Counters.observers``)."""
        pending = self._pending
        pending.append((route, status, seconds, commands))
        if len(pending) > MAX_PENDING:
            self.aggregate()

    def aggregate(self) -> None:
        """Move the queued requests into the buckets and to the listeners."""
        pending = self._pending
        with self._lock:
            listeners = self._listeners
            while pending:
                try:
                    route, status, seconds, commands = pending.popleft()
                except IndexError:  # taken by the loop's own aggregate()
                    return
                sclass = status_class(status)
                series = self._series.get((route, sclass))
                if series is None:
                    series = self._series[route, sclass] = RequestSeries(
                        route,
                        sclass,
                        Buckets(DURATION_BUCKETS),
                        Buckets(COMMAND_BUCKETS),
                    )
                series.duration.observe(seconds)
                series.commands.observe(commands)
                for listener in listeners:
                    try:
                        listener(route, sclass, seconds, commands)
                    except Exception:
                        # Metrics must never break delivery (this may run in
                        # the sender) nor a scrape. Say it once, not per request.
                        if not self._failing:
                            self._failing = True
                            logger.exception(
                                "trackasync: recording request metrics failed"
                            )

    def series(self) -> list[RequestSeries]:
        """A consistent copy of every route and status class seen so far."""
        # A safety net: the fork hook re-attaches, this catches anything else
        # that gave the client new counters.
        self.attach()
        self.aggregate()
        with self._lock:
            return [
                RequestSeries(
                    s.route, s.status_class, s.duration.copy(), s.commands.copy()
                )
                for s in self._series.values()
            ]


def _counters_of(client: AnyClient) -> Counters:
    # Read each time: a client gets new counters in a forked child, and a
    # SyncClient a new inner client.
    inner = client._client if isinstance(client, SyncClient) else client
    return inner._counters


# One log per client, whatever exporters it is wired to (weak: a log never
# keeps a client alive).
_logs: weakref.WeakKeyDictionary[Any, RequestLog] = weakref.WeakKeyDictionary()
_fork_hook = False


def request_log(client: AnyClient) -> RequestLog:
    """The client's ``RequestLog``, created and attached on first use."""
    global _fork_hook
    log = _logs.get(client)
    if log is None:
        log = _logs[client] = RequestLog(client)
    if not _fork_hook and hasattr(os, "register_at_fork"):
        # Registered after trackasync._fork's hook (registered at import), so it
        # runs after it in the child: the clients have their new counters then.
        os.register_at_fork(after_in_child=_after_fork_in_child)
        _fork_hook = True
    return log


def _after_fork_in_child() -> None:
    for log in list(_logs.values()):
        try:
            log.reset()
        except Exception:
            logger.exception("trackasync: resetting request metrics after fork failed")


def client_label(client: object, name: str | None) -> str:
    """The ``client`` attribute: ``name``, or a hash of the project token.

    Never the token itself: metrics travel to places credentials must not.
    """
    if not isinstance(client, (Client, SyncClient)):
        raise ConfigError(
            f"metrics need a trackasync Client or SyncClient, got {type(client).__name__}"
        )
    if name is not None:
        if (
            not isinstance(name, str)
            or not name
            or len(name) > _NAME_MAX
            or not name.isprintable()
        ):
            raise ConfigError(
                f"name must be a printable string of 1 to {_NAME_MAX} characters"
            )
        return name
    if isinstance(client, SyncClient):
        token = client._args[1]
    else:
        # The client keeps the token only in its base URL, quoted, last.
        token = unquote(client._base.rpartition("/")[2])
    digest = hashlib.sha256(token.encode()).hexdigest()
    return f"project-{digest[:12]}"


class Wired:
    """The clients one exporter reports, by label."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._logs: dict[str, RequestLog] = {}

    def add(self, client: AnyClient, label: str) -> tuple[RequestLog, bool]:
        """Add ``client`` under ``label``; returns its log and whether it is new.

        A label taken by another client that is still open is refused; one
        whose client is closed or gone is taken over (its series end).
        """
        log = request_log(client)
        with self._lock:
            for other, known in self._logs.items():
                if known is log:
                    if other == label:
                        return log, False
                    raise ConfigError(
                        f"this client is already wired under the name {other!r}"
                    )
            taken = self._logs.get(label)
            if taken is not None and not taken.closed():
                raise ConfigError(
                    f"another open client is wired under the name {label!r}; "
                    "give each client its own name="
                )
            self._logs[label] = log
        return log, True

    def logs(self) -> list[RequestLog]:
        with self._lock:
            return list(self._logs.values())

    def items(self) -> Iterator[tuple[str, RequestLog, Stats]]:
        """Each client still alive, with a stats() snapshot taken now."""
        with self._lock:
            entries = list(self._logs.items())
        for label, log in entries:
            stats = log.stats()
            if stats is None:
                with self._lock:
                    if self._logs.get(label) is log:
                        del self._logs[label]
                continue
            yield label, log, stats


# -- the metrics: one table, read by both exporters and the README -------------

Kind = Literal["counter", "gauge"]


@dataclass(frozen=True, slots=True)
class Metric:
    """One metric read from ``stats()`` (or the request log) at collection."""

    otel: str
    prometheus: str
    kind: Kind
    unit: str
    description: str
    labels: tuple[str, ...]
    read: Callable[[Stats, RequestLog], list[tuple[tuple[str, ...], float]]]


def _outcomes(stats: Stats, log: RequestLog) -> list[tuple[tuple[str, ...], float]]:
    # Every reason stats() has, not a fixed list: new reasons show up as they come.
    rows: list[tuple[tuple[str, ...], float]] = [(("delivered", ""), stats.delivered)]
    rows += [(("failed", reason), n) for reason, n in stats.failed.items()]
    return rows


def _requests(stats: Stats, log: RequestLog) -> list[tuple[tuple[str, ...], float]]:
    return [((s.route, s.status_class), s.duration.count) for s in log.series()]


def _field(
    name: str,
) -> Callable[[Stats, RequestLog], list[tuple[tuple[str, ...], float]]]:
    def read(stats: Stats, log: RequestLog) -> list[tuple[tuple[str, ...], float]]:
        return [((), getattr(stats, name))]

    return read


METRICS: tuple[Metric, ...] = (
    Metric(
        "trackasync.commands.enqueued",
        "trackasync_commands_enqueued_total",
        "counter",
        "{command}",
        "Commands accepted into the queue.",
        (),
        _field("enqueued"),
    ),
    Metric(
        "trackasync.commands",
        "trackasync_commands_total",
        "counter",
        "{command}",
        "Commands with an outcome: delivered, or failed for a reason.",
        ("outcome", "reason"),
        _outcomes,
    ),
    Metric(
        "trackasync.queue.commands",
        "trackasync_queue_commands",
        "gauge",
        "{command}",
        "Commands waiting in the queue.",
        (),
        _field("queued"),
    ),
    Metric(
        "trackasync.in_flight.commands",
        "trackasync_in_flight_commands",
        "gauge",
        "{command}",
        "Commands in requests under way, retries included.",
        (),
        _field("in_flight"),
    ),
    Metric(
        "trackasync.requests",
        "trackasync_requests_total",
        "counter",
        "{request}",
        "Requests sent that got an answer or a transport error.",
        ("route", "status_class"),
        _requests,
    ),
    Metric(
        "trackasync.retries",
        "trackasync_retries_total",
        "counter",
        "{request}",
        "Requests that were retries of an earlier one.",
        (),
        _field("retries"),
    ),
    Metric(
        "trackasync.rate_limited",
        "trackasync_rate_limited_total",
        "counter",
        "{request}",
        "429 answers seen.",
        (),
        _field("rate_limited"),
    ),
    Metric(
        "trackasync.sent",
        "trackasync_sent_bytes_total",
        "counter",
        "By",
        "Request body bytes sent.",
        (),
        _field("bytes_sent"),
    ),
    Metric(
        "trackasync.hooks.skipped",
        "trackasync_hooks_skipped_total",
        "counter",
        "{call}",
        "on_result calls skipped because the hook's backlog was full.",
        (),
        _field("hooks_skipped"),
    ),
    Metric(
        "trackasync.commands.discarded_at_fork",
        "trackasync_commands_discarded_at_fork_total",
        "counter",
        "{command}",
        "In a forked child: inherited commands left to the parent to send.",
        (),
        _field("discarded_at_fork"),
    ),
)


@dataclass(frozen=True, slots=True)
class HistogramSpec:
    otel: str
    prometheus: str
    unit: str
    description: str
    bounds: tuple[float, ...]


DURATION = HistogramSpec(
    "trackasync.request.duration",
    "trackasync_request_duration_seconds",
    "s",
    "Duration of each request, from sending to the answer (or the error).",
    DURATION_BUCKETS,
)
COMMANDS = HistogramSpec(
    "trackasync.request.commands",
    "trackasync_request_commands",
    "{command}",
    "Commands carried by each request.",
    COMMAND_BUCKETS,
)
#: The attributes of both histograms (``client`` comes first everywhere).
HISTOGRAM_LABELS = ("route", "status_class")


# -- the public wiring functions -------------------------------------------------


def otel_metrics(
    client: Client | SyncClient,
    *,
    meter_provider: MeterProvider | None = None,
    name: str | None = None,
) -> None:
    """Report ``client``'s metrics through OpenTelemetry.

    Observable instruments read ``client.stats()`` when the SDK collects, and
    two histograms record each request (never each event). ``meter_provider``
    defaults to the global one. ``name`` sets the ``trackasync.client``
    attribute that tells clients apart (default: a hash of the project token).
    Needs ``pip install 'trackasync[otel]'``; see the README for every metric.
    """
    label = client_label(client, name)
    try:
        from ._otel import wire as wire_otel
    except ImportError as exc:
        _missing(exc, "opentelemetry", "otel")
    wire_otel(client, label, meter_provider)


def prometheus_metrics(
    client: Client | SyncClient,
    *,
    registry: CollectorRegistry | None = None,
    name: str | None = None,
) -> None:
    """Report ``client``'s metrics to ``prometheus_client``.

    Registers one collector per ``registry`` (default: the global
    ``prometheus_client.REGISTRY``) that reads ``client.stats()`` at each
    scrape. ``name`` sets the ``client`` label (default: a hash of the project
    token). Needs ``pip install 'trackasync[prometheus]'``; see the README
    for every metric, and for gunicorn's multiprocess mode.
    """
    label = client_label(client, name)
    try:
        from ._prometheus import wire as wire_prometheus
    except ImportError as exc:
        _missing(exc, "prometheus_client", "prometheus")
    wire_prometheus(client, label, registry)


def _missing(exc: ImportError, package: str, extra: str) -> NoReturn:
    if (exc.name or "").partition(".")[0] != package:
        raise exc
    raise MissingExtra(
        f"{package} is not installed: pip install 'trackasync[{extra}]'"
    ) from exc
