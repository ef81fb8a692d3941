"""Client metrics through OpenTelemetry (the ``otel`` extra: opentelemetry-api).

One set of instruments per meter provider, shared by every client wired to it:
an instrument name can be created once per meter, so each callback reports all
the provider's clients, told apart by the ``trackasync.client`` attribute.

The histograms are recorded per request, but not in the client's event loop:
the SDK's ``record()`` costs several microseconds, ten times what the sender's
own bookkeeping of a request does. The sender queues each request in the
client's ``RequestLog``; the requests are recorded when the SDK collects, from
the first thing a collection runs, the observable instruments' callbacks (the
SDK runs those before it reads the synchronous instruments).
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Iterable

from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Histogram, MeterProvider, Observation

from ._metrics import (
    COMMANDS,
    DURATION,
    HISTOGRAM_LABELS,
    METRICS,
    HistogramSpec,
    Metric,
    Wired,
)
from ._requestlog import AnyClient, Listener
from ._version import VERSION

#: The attribute names: every label of the table, in the library's namespace.
PREFIX = "trackasync."

Attributes = dict[str, str]


def attributes(
    label: str, names: tuple[str, ...], values: tuple[str, ...]
) -> Attributes:
    """The attributes of one observation; an empty value is left out."""
    out = {PREFIX + "client": label}
    out.update({PREFIX + n: v for n, v in zip(names, values) if v})
    return out


class _Exporter:
    """The instruments of one meter provider and the clients they report."""

    def __init__(self, provider: MeterProvider) -> None:
        self.wired = Wired()
        meter = provider.get_meter("trackasync", VERSION)
        for metric in METRICS:
            create = (
                meter.create_observable_counter
                if metric.kind == "counter"
                else meter.create_observable_up_down_counter
            )
            create(
                metric.otel,
                callbacks=[self._callback(metric)],
                unit=metric.unit,
                description=metric.description,
            )
        self.duration = self._histogram(meter, DURATION)
        self.commands = self._histogram(meter, COMMANDS)

    def drain(self) -> None:
        """Record every request queued in the clients' logs in the histograms."""
        for log in self.wired.logs():
            log.aggregate()

    @staticmethod
    def _histogram(meter: metrics.Meter, spec: HistogramSpec) -> Histogram:
        return meter.create_histogram(
            spec.otel,
            unit=spec.unit,
            description=spec.description,
            explicit_bucket_boundaries_advisory=list(spec.bounds),
        )

    def _callback(
        self, metric: Metric
    ) -> Callable[[CallbackOptions], Iterable[Observation]]:
        wired, drain = self.wired, self.drain

        def observe(options: CallbackOptions) -> Iterable[Observation]:
            # Before the SDK reads the histograms (see the module's docstring).
            drain()
            return [
                Observation(value, attributes(label, metric.labels, values))
                for label, log, stats in wired.items()
                for values, value in metric.read(stats, log)
            ]

        return observe

    def listener(self, label: str) -> Listener:
        """Records each request of the client called ``label`` in the histograms."""
        duration, commands = self.duration, self.commands
        cache: dict[tuple[str, str], Attributes] = {}

        def record(route: str, sclass: str, seconds: float, count: int) -> None:
            attrs = cache.get((route, sclass))
            if attrs is None:
                attrs = cache[route, sclass] = attributes(
                    label, HISTOGRAM_LABELS, (route, sclass)
                )
            duration.record(seconds, attrs)
            commands.record(count, attrs)

        return record


_lock = threading.Lock()
# Per provider: its instruments exist once. Weak: a provider dropped by the
# application takes its exporter with it.
_exporters: weakref.WeakKeyDictionary[MeterProvider, _Exporter] = (
    weakref.WeakKeyDictionary()
)


def wire(client: AnyClient, label: str, provider: MeterProvider | None) -> None:
    """Report ``client`` as ``label`` through ``provider`` (default: the global one)."""
    if provider is None:
        provider = metrics.get_meter_provider()
    with _lock:
        exporter = _exporters.get(provider)
        if exporter is None:
            exporter = _exporters[provider] = _Exporter(provider)
    log, new = exporter.wired.add(client, label)
    if new:
        log.listen(exporter.listener(label))
