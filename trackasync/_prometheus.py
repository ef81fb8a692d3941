"""Client metrics for prometheus_client (the ``prometheus`` extra).

One collector per registry, reporting every client wired to it with a
``client`` label: a registry refuses two collectors of the same names, and a
scrape must show each metric family once.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterable

from prometheus_client import REGISTRY
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry
from prometheus_client.utils import floatToGoString

from ._metrics import COMMANDS, DURATION, HISTOGRAM_LABELS, METRICS, Wired
from ._requestlog import AnyClient, Buckets, RequestSeries


def _families() -> tuple[
    list[CounterMetricFamily | GaugeMetricFamily],
    HistogramMetricFamily,
    HistogramMetricFamily,
]:
    table: list[CounterMetricFamily | GaugeMetricFamily] = []
    for metric in METRICS:
        labels = ["client", *metric.labels]
        table.append(
            CounterMetricFamily(metric.prometheus, metric.description, labels=labels)
            if metric.kind == "counter"
            else GaugeMetricFamily(metric.prometheus, metric.description, labels=labels)
        )
    labels = ["client", *HISTOGRAM_LABELS]
    duration = HistogramMetricFamily(
        DURATION.prometheus, DURATION.description, labels=labels
    )
    commands = HistogramMetricFamily(
        COMMANDS.prometheus, COMMANDS.description, labels=labels
    )
    return table, duration, commands


def _le(bound: float) -> str:
    # prometheus_client's own spelling of a bound ("0.005", "1.0", "+Inf").
    text: str = floatToGoString(bound)  # type: ignore[no-untyped-call]
    return text


def _buckets(buckets: Buckets) -> list[tuple[str, float]]:
    return [(_le(bound), count) for bound, count in buckets.cumulative()]


def _histogram(
    family: HistogramMetricFamily, label: str, series: RequestSeries, buckets: Buckets
) -> None:
    family.add_metric(
        [label, series.route, series.status_class],
        _buckets(buckets),
        sum_value=buckets.sum,
    )


class TrackasyncCollector(Collector):
    """Reads each wired client's ``stats()`` and request log at every scrape."""

    def __init__(self) -> None:
        self.wired = Wired()

    def describe(self) -> Iterable[Metric]:
        # The names, so the registry refuses another collector that uses them.
        table, duration, commands = _families()
        return [*table, duration, commands]

    def collect(self) -> Iterable[Metric]:
        table, duration, commands = _families()
        for label, log, stats in self.wired.items():
            for metric, family in zip(METRICS, table):
                for values, value in metric.read(stats, log):
                    family.add_metric([label, *values], value)
            for series in log.series():
                _histogram(duration, label, series, series.duration)
                _histogram(commands, label, series, series.commands)
        return [*table, duration, commands]


_lock = threading.Lock()
# One collector per registry (weak: a dropped registry takes it along).
_collectors: weakref.WeakKeyDictionary[CollectorRegistry, TrackasyncCollector] = (
    weakref.WeakKeyDictionary()
)


def wire(client: AnyClient, label: str, registry: CollectorRegistry | None) -> None:
    """Report ``client`` as ``label`` to ``registry`` (default: the global one)."""
    if registry is None:
        registry = REGISTRY
    with _lock:
        collector = _collectors.get(registry)
        if collector is None:
            collector = TrackasyncCollector()
            registry.register(collector)
            _collectors[registry] = collector
    collector.wired.add(client, label)
