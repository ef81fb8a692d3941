"""Metrics through the real OpenTelemetry SDK, read back with InMemoryMetricReader."""

from __future__ import annotations

import gc
import threading
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    Histogram,
    HistogramDataPoint,
    InMemoryMetricReader,
    NumberDataPoint,
    Sum,
)

import trackasync
import trackasync._requestlog
from trackasync import ConfigError, SyncClient
from trackasync.testing import FakeTrackingAPI

from ._metrics_kit import (
    IDS,
    Figures,
    arm_faults,
    check_the_run_was_faulty,
    client_for,
    client_options,
    expected,
    expected_histogram,
    faulty_run,
)

PREFIX = "trackasync."


def short(key: str) -> str:
    assert key.startswith(PREFIX), key
    return key[len(PREFIX) :]


class Read:
    """One collection of the reader: counters, histogram counts, and the raw points."""

    def __init__(self, reader: InMemoryMetricReader) -> None:
        self.figures: Figures = {}
        self.histograms: dict[str, Figures] = {}
        self.units: dict[str, str] = {}
        self.monotonic: dict[str, bool] = {}
        self.points: list[HistogramDataPoint] = []
        data = reader.get_metrics_data()
        # None: nothing to report at all.
        for resource in data.resource_metrics if data is not None else ():
            for scope in resource.scope_metrics:
                assert scope.scope.name == "trackasync"
                for metric in scope.metrics:
                    self._add(metric)

    def _add(self, metric: Any) -> None:
        name = short(metric.name)
        self.units[name] = metric.unit
        for point in metric.data.data_points:
            labels = frozenset((short(k), str(v)) for k, v in point.attributes.items())
            if isinstance(metric.data, Histogram):
                assert isinstance(point, HistogramDataPoint)
                self.points.append(point)
                series = self.histograms.setdefault(name, {})
                series["request", labels] = point.count
            else:
                assert isinstance(metric.data, Sum)
                assert isinstance(point, NumberDataPoint)
                self.monotonic[name] = metric.data.is_monotonic
                self.figures[name, labels] = point.value


@pytest.fixture
def reader() -> InMemoryMetricReader:
    return InMemoryMetricReader()


@pytest.fixture
def provider(reader: InMemoryMetricReader) -> Any:
    provider = MeterProvider(metric_readers=[reader])
    yield provider
    provider.shutdown()


async def test_exported_figures_equal_stats_after_a_faulty_run(
    fake_tracking_api: FakeTrackingAPI, reader: InMemoryMetricReader, provider: Any
) -> None:
    """After 503s, a 429, a dropped connection, rejections and a give-up, every
    figure equals stats() and each request the fake saw is in both histograms."""
    api = fake_tracking_api
    async with client_for(api) as client:
        trackasync.otel_metrics(client, meter_provider=provider, name="shop")
        deliveries = await faulty_run(api, client)
        stats = client.stats()
        read = Read(reader)
    check_the_run_was_faulty(stats, api)
    assert read.figures == expected(stats, api, "shop")
    histogram = expected_histogram(api, "shop")
    assert read.histograms["request.duration"] == histogram
    assert read.histograms["request.commands"] == histogram
    assert sum(histogram.values()) == len(api.requests)
    # Commands per request add up to every attempt of every command.
    commands = sum(p.sum for p in read.points if p.explicit_bounds[-1] == 50)
    assert commands == sum(d.attempts for d in deliveries)


async def test_names_units_and_kinds_follow_the_conventions(
    fake_tracking_api: FakeTrackingAPI, reader: InMemoryMetricReader, provider: Any
) -> None:
    """Units are {command}/{request}/s/By; gauges are non-monotonic sums."""
    async with client_for(fake_tracking_api) as client:
        trackasync.otel_metrics(client, meter_provider=provider)
        await client.track_and_wait(IDS, "purchase", {"n": 1})
        read = Read(reader)
    assert read.units == {
        "commands.enqueued": "{command}",
        "commands.kept": "{command}",
        "commands.recovered": "{command}",
        "commands.filtered": "{command}",
        "commands": "{command}",
        "queue.commands": "{command}",
        "in_flight.commands": "{command}",
        "requests": "{request}",
        "retries": "{request}",
        "rate_limited": "{request}",
        "sent": "By",
        "hooks.skipped": "{call}",
        "commands.discarded_at_fork": "{command}",
        "request.duration": "s",
        "request.commands": "{command}",
    }
    gauges = {name for name, monotonic in read.monotonic.items() if not monotonic}
    assert gauges == {"queue.commands", "in_flight.commands"}
    (point,) = [p for p in read.points if p.explicit_bounds[0] == 0.005]
    assert point.count == 1
    assert 0 < point.sum < 60


def test_sync_client_figures_equal_stats() -> None:
    """The same for SyncClient, collected from another thread than its loop's."""
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    with (
        FakeTrackingAPI() as api,
        SyncClient(api.base_url, api.project_token, **client_options(api)) as client,
    ):
        trackasync.otel_metrics(client, meter_provider=provider, name="worker")
        arm_faults(api)
        for n in range(1, 31):
            client.track(IDS, "purchase", {"n": n})
        client.flush(timeout=20)
        stats = client.stats()
        read = Read(reader)
    provider.shutdown()
    assert stats.retries > 0
    assert stats.failed["rejected"] > 0
    assert stats.queued == stats.in_flight == 0
    assert read.figures == expected(stats, api, "worker")
    assert read.histograms["request.duration"] == expected_histogram(api, "worker")


async def test_clients_are_told_apart_by_name_or_token_hash_never_the_token(
    fake_tracking_api: FakeTrackingAPI, reader: InMemoryMetricReader, provider: Any
) -> None:
    """Two clients on one provider: each its own series; the token appears nowhere."""
    api = fake_tracking_api
    async with client_for(api) as first, client_for(api) as second:
        trackasync.otel_metrics(first, meter_provider=provider)
        trackasync.otel_metrics(second, meter_provider=provider, name="second")
        # Wiring the same client again changes nothing.
        trackasync.otel_metrics(second, meter_provider=provider, name="second")
        await first.track_and_wait(IDS, "purchase", {"n": 1})
        for n in range(2, 5):
            await second.track_and_wait(IDS, "purchase", {"n": n})
        read = Read(reader)
    clients = {
        dict(labels)["client"]: value
        for (name, labels), value in read.figures.items()
        if name == "commands.enqueued"
    }
    assert len(clients) == 2
    assert clients.pop("second") == 3
    ((hashed, count),) = clients.items()
    assert count == 1
    assert hashed.startswith("project-")
    assert api.project_token not in hashed
    assert api.project_token not in repr(reader.get_metrics_data())
    # The same hash for every client of that project, so it is stable on dashboards.
    assert hashed == trackasync._metrics.client_label(first, None)


async def test_a_name_is_refused_while_its_client_is_open_then_taken_over(
    fake_tracking_api: FakeTrackingAPI, reader: InMemoryMetricReader, provider: Any
) -> None:
    """A second open client under a taken name raises; after the first closes, the
    new one takes the name and its figures replace the old ones."""
    api = fake_tracking_api
    old = client_for(api)
    trackasync.otel_metrics(old, meter_provider=provider, name="app")
    async with client_for(api) as new:
        with pytest.raises(ConfigError, match="'app'"):
            trackasync.otel_metrics(new, meter_provider=provider, name="app")
        with pytest.raises(ConfigError, match="already wired"):
            trackasync.otel_metrics(old, meter_provider=provider, name="other")
        await old.track_and_wait(IDS, "purchase", {"n": 1})
        await old.aclose()
        trackasync.otel_metrics(new, meter_provider=provider, name="app")
        await new.track_and_wait(IDS, "purchase", {"n": 2})
        await new.track_and_wait(IDS, "purchase", {"n": 3})
        read = Read(reader)
    enqueued = [v for (n, _), v in read.figures.items() if n == "commands.enqueued"]
    assert enqueued == [2]


async def test_a_collected_client_leaves_the_metrics(
    fake_tracking_api: FakeTrackingAPI, reader: InMemoryMetricReader, provider: Any
) -> None:
    """Wiring holds no reference to the client: once collected, it is not reported."""
    client = client_for(fake_tracking_api)
    trackasync.otel_metrics(client, meter_provider=provider, name="gone")
    await client.aclose()
    assert any(n == "commands" for n, _ in Read(reader).figures)
    del client
    gc.collect()
    assert Read(reader).figures == {}


def test_bad_names_and_non_clients_are_refused() -> None:
    """name must be a short printable string; the client a trackasync client."""
    provider = MeterProvider()
    client = trackasync.Client(
        "https://api.exponea.com", "t", auth=trackasync.PublicToken("p")
    )
    for name in ("", "x" * 65, "a\nb", 3):
        with pytest.raises(ConfigError, match="name"):
            trackasync.otel_metrics(client, meter_provider=provider, name=name)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="Client or SyncClient"):
        trackasync.otel_metrics(object(), meter_provider=provider)  # type: ignore[arg-type]


async def test_a_failing_histogram_does_not_break_delivery(
    fake_tracking_api: FakeTrackingAPI,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A metrics failure in the middle of a request (here: every request is
    aggregated in the sender) is logged once; commands are still delivered."""
    monkeypatch.setattr(trackasync._requestlog, "MAX_PENDING", 0)
    calls = threading.Event()

    def broken(route: str, sclass: str, seconds: float, commands: int) -> None:
        calls.set()
        raise RuntimeError("exporter bug")

    async with client_for(fake_tracking_api) as client:
        trackasync._requestlog.request_log(client).listen(broken)
        for n in range(1, 4):
            await client.track_and_wait(IDS, "purchase", {"n": n})
    assert calls.is_set()
    assert client.stats().delivered == 3
    failures = [r for r in caplog.records if "request metrics failed" in r.message]
    assert len(failures) == 1


async def test_requests_wait_for_the_collection_within_a_bound(
    fake_tracking_api: FakeTrackingAPI,
    reader: InMemoryMetricReader,
    provider: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Requests are recorded in the histograms when the SDK collects; when nothing
    collects, at most MAX_PENDING of them wait, and none is lost."""
    monkeypatch.setattr(trackasync._requestlog, "MAX_PENDING", 3)
    async with client_for(fake_tracking_api) as client:
        trackasync.otel_metrics(client, meter_provider=provider, name="app")
        log = trackasync._requestlog.request_log(client)
        for n in range(1, 8):
            await client.track_and_wait(IDS, "purchase", {"n": n})
            assert len(log._pending) <= 3
        # The fourth request aggregated four; the last three wait.
        assert len(log._pending) == 3
        read = Read(reader)
    assert len(log._pending) == 0
    assert sum(read.histograms["request.duration"].values()) == 7
    assert sum(read.histograms["request.commands"].values()) == 7
