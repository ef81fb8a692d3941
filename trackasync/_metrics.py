"""The metrics' table, the clients an exporter reports, and the wiring functions.

The counters come from ``stats()``, read when an exporter is collected, so
nothing is done per event; the request histograms come from each client's
``RequestLog`` (``_requestlog.py``). No metrics library is imported here:
``otel_metrics`` and ``prometheus_metrics`` import theirs only when called, so
``import trackasync`` imports neither.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, NoReturn

from ._client import Client
from ._exceptions import ConfigError, MissingExtra
from ._requestlog import (
    COMMAND_BUCKETS,
    DURATION_BUCKETS,
    AnyClient,
    RequestLog,
    request_log,
)
from ._stats import Stats
from ._sync import SyncClient

if TYPE_CHECKING:
    from opentelemetry.metrics import MeterProvider
    from prometheus_client.registry import CollectorRegistry

_NAME_MAX = 64


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
    inner = client._client if isinstance(client, SyncClient) else client
    token = inner._options.project_token
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
        "trackasync.commands.kept",
        "trackasync_commands_kept_total",
        "counter",
        "{command}",
        "Commands left in the spool at close, unsent, for the next run.",
        (),
        _field("kept"),
    ),
    Metric(
        "trackasync.commands.recovered",
        "trackasync_commands_recovered_total",
        "counter",
        "{command}",
        "Commands taken back from the spool of an earlier run.",
        (),
        _field("recovered"),
    ),
    Metric(
        "trackasync.commands.filtered",
        "trackasync_commands_filtered_total",
        "counter",
        "{command}",
        "Events before_send dropped at the call (never queued).",
        (),
        _field("filtered"),
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
