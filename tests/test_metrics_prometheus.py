"""Metrics for the real prometheus_client, scraped over HTTP from its own server."""

from __future__ import annotations

import asyncio
import contextlib
import os
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest, start_http_server
from prometheus_client.parser import text_string_to_metric_families

import trackasync
from trackasync import SyncClient
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

#: The expected short names (see _metrics_kit.expected) as Prometheus spells them.
NAMES = {
    "trackasync_commands_enqueued_total": "commands.enqueued",
    "trackasync_commands_total": "commands",
    "trackasync_queue_commands": "queue.commands",
    "trackasync_in_flight_commands": "in_flight.commands",
    "trackasync_requests_total": "requests",
    "trackasync_retries_total": "retries",
    "trackasync_rate_limited_total": "rate_limited",
    "trackasync_sent_bytes_total": "sent",
    "trackasync_hooks_skipped_total": "hooks.skipped",
    "trackasync_commands_discarded_at_fork_total": "commands.discarded_at_fork",
    "trackasync_commands_kept_total": "commands.kept",
    "trackasync_commands_recovered_total": "commands.recovered",
    "trackasync_commands_filtered_total": "commands.filtered",
}
HISTOGRAMS = ("trackasync_request_duration_seconds", "trackasync_request_commands")


class Scrape:
    """One exposition, parsed: counters and gauges, histogram counts and sums."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.figures: Figures = {}
        self.counts: dict[str, Figures] = {}
        self.sums: dict[str, float] = {}
        self.types: dict[str, str] = {}
        for family in text_string_to_metric_families(text):
            self.types[family.name] = family.type
            for sample in family.samples:
                # An empty label is no label, to Prometheus.
                labels = frozenset((k, v) for k, v in sample.labels.items() if v)
                if sample.name in NAMES:
                    self.figures[NAMES[sample.name], labels] = sample.value
                elif sample.name.endswith("_count"):
                    series = self.counts.setdefault(family.name, {})
                    series["request", labels] = sample.value
                elif sample.name.endswith("_sum"):
                    self.sums[family.name] = (
                        self.sums.get(family.name, 0) + sample.value
                    )
                elif sample.name.endswith("_bucket"):
                    self._check_bucket(family.samples, sample)
                else:
                    raise AssertionError(f"unexpected sample {sample}")

    @staticmethod
    def _check_bucket(samples: list[Any], bucket: Any) -> None:
        # The +Inf bucket of a series holds its whole count.
        if bucket.labels["le"] != "+Inf":
            return
        labels = {k: v for k, v in bucket.labels.items() if k != "le"}
        (count,) = [
            s.value for s in samples if s.name.endswith("_count") and s.labels == labels
        ]
        assert bucket.value == count


@contextlib.contextmanager
def serving(registry: CollectorRegistry) -> Iterator[str]:
    """prometheus_client's own HTTP server on loopback, for ``registry``."""
    server, thread = start_http_server(0, addr="127.0.0.1", registry=registry)
    try:
        yield f"http://127.0.0.1:{server.server_port}/metrics"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def fetch(url: str) -> Scrape:
    with urllib.request.urlopen(url, timeout=10) as answer:
        return Scrape(answer.read().decode())


async def test_scraped_figures_equal_stats_after_a_faulty_run(
    fake_tracking_api: FakeTrackingAPI,
) -> None:
    """After 503s, a 429, a dropped connection, rejections and a give-up, a scrape
    over HTTP shows stats() figure for figure, and one histogram sample per
    request the fake saw."""
    api = fake_tracking_api
    registry = CollectorRegistry()
    with serving(registry) as url:
        async with client_for(api) as client:
            trackasync.prometheus_metrics(client, registry=registry, name="shop")
            deliveries = await faulty_run(api, client)
            stats = client.stats()
            scrape = await asyncio.to_thread(fetch, url)
    check_the_run_was_faulty(stats, api)
    assert scrape.figures == expected(stats, api, "shop")
    histogram = expected_histogram(api, "shop")
    for name in HISTOGRAMS:
        assert scrape.types[name] == "histogram"
        assert scrape.counts[name] == histogram
    assert sum(histogram.values()) == len(api.requests)
    assert scrape.sums["trackasync_request_commands"] == sum(
        d.attempts for d in deliveries
    )
    assert scrape.types["trackasync_queue_commands"] == "gauge"
    assert scrape.types["trackasync_commands"] == "counter"
    assert api.project_token not in scrape.text


def test_sync_client_figures_equal_stats() -> None:
    """The same for SyncClient, scraped while its loop runs in its own thread."""
    registry = CollectorRegistry()
    with (
        FakeTrackingAPI() as api,
        serving(registry) as url,
        SyncClient(api.base_url, api.project_token, **client_options(api)) as client,
    ):
        trackasync.prometheus_metrics(client, registry=registry)
        arm_faults(api)
        for n in range(1, 31):
            client.track(IDS, "purchase", {"n": n})
        client.flush(timeout=20)
        stats = client.stats()
        scrape = fetch(url)
    label = trackasync._metrics.client_label(client, None)
    assert stats.retries > 0
    assert stats.failed["rejected"] > 0
    assert stats.queued == stats.in_flight == 0
    assert scrape.figures == expected(stats, api, label)
    for name in HISTOGRAMS:
        assert scrape.counts[name] == expected_histogram(api, label)


async def test_several_clients_share_one_collector_per_registry(
    fake_tracking_api: FakeTrackingAPI,
) -> None:
    """Two clients on one registry: one family each, a series per client; a
    second registry gets its own collector."""
    api = fake_tracking_api
    registry, other = CollectorRegistry(), CollectorRegistry()
    async with client_for(api) as first, client_for(api) as second:
        trackasync.prometheus_metrics(first, registry=registry, name="a")
        trackasync.prometheus_metrics(second, registry=registry, name="b")
        trackasync.prometheus_metrics(second, registry=other, name="b")
        await first.track_and_wait(IDS, "purchase", {"n": 1})
        await second.track_and_wait(IDS, "purchase", {"n": 2})
        await second.track_and_wait(IDS, "purchase", {"n": 3})
        text = generate_latest(registry).decode()
        alone = Scrape(generate_latest(other).decode())
    assert text.count("# TYPE trackasync_commands_enqueued_total counter") == 1
    scrape = Scrape(text)
    enqueued = {
        dict(labels)["client"]: value
        for (name, labels), value in scrape.figures.items()
        if name == "commands.enqueued"
    }
    assert enqueued == {"a": 1, "b": 2}
    assert {
        dict(labels)["client"]
        for (name, labels), _ in alone.figures.items()
        if name == "commands.enqueued"
    } == {"b"}


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
# Forking while the fake's thread runs is the point; newer Pythons warn about it.
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_a_forked_child_reports_its_own_client() -> None:
    """After os.fork(), the child's collector shows the child's client from zero,
    requests included, while the parent's figures are untouched."""
    registry = CollectorRegistry()
    with FakeTrackingAPI() as api:
        client = client_for(api)
        trackasync.prometheus_metrics(client, registry=registry, name="app")
        loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(_send(client, range(1, 6)))
            before = Scrape(generate_latest(registry).decode())
            read, write = os.pipe()
            pid = os.fork()
            if pid == 0:  # the child: never returns into pytest
                os.close(read)
                os._exit(_child(client, registry, write))
            os.close(write)
            with os.fdopen(read, "rb") as pipe:
                child_text = pipe.read().decode()
            _, status = os.waitpid(pid, 0)
            after = Scrape(generate_latest(registry).decode())
            loop.run_until_complete(client.aclose())
        finally:
            loop.close()
        requests = len(api.requests)
    assert os.waitstatus_to_exitcode(status) == 0, child_text
    child = Scrape(child_text)
    label = frozenset({"client": "app"}.items())
    assert child.figures["commands.enqueued", label] == 2
    assert child.figures["commands", label | {("outcome", "delivered")}] == 2
    assert sum(child.counts["trackasync_request_duration_seconds"].values()) == 2
    assert before.figures["commands.enqueued", label] == 5
    assert sum(before.counts["trackasync_request_duration_seconds"].values()) == 5
    assert after.figures == before.figures
    assert requests == 7


async def _send(client: trackasync.Client, numbers: range | tuple[int, ...]) -> None:
    """One event at a time, each awaited: one request per event."""
    for n in numbers:
        await client.track_and_wait(IDS, "purchase", {"n": n})


def _child(client: trackasync.Client, registry: CollectorRegistry, out: int) -> int:
    """In the forked child: send two events, write the exposition to ``out``."""
    try:

        async def run() -> None:
            async with client:
                await _send(client, (6, 7))

        asyncio.run(run())
        text = generate_latest(registry)
        with os.fdopen(out, "wb") as pipe:
            pipe.write(text)
        return 0
    except BaseException:
        return 3


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_a_forked_sync_client_reports_its_new_inner_client() -> None:
    """A SyncClient in a forked child runs a new inner client: the collector
    follows it, from zero."""
    registry = CollectorRegistry()
    with FakeTrackingAPI() as api:
        client = SyncClient(api.base_url, api.project_token, **client_options(api))
        trackasync.prometheus_metrics(client, registry=registry, name="worker")
        for n in range(1, 4):
            client.track_and_wait(IDS, "purchase", {"n": n}, timeout=20)
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: never returns into pytest
            os.close(read)
            os._exit(_sync_child(client, registry, write))
        os.close(write)
        with os.fdopen(read, "rb") as pipe:
            child_text = pipe.read().decode()
        _, status = os.waitpid(pid, 0)
        parent = Scrape(generate_latest(registry).decode())
        client.close()
    assert os.waitstatus_to_exitcode(status) == 0, child_text
    child = Scrape(child_text)
    label = frozenset({"client": "worker"}.items())
    assert child.figures["commands.enqueued", label] == 2
    assert sum(child.counts["trackasync_request_commands"].values()) == 2
    assert parent.figures["commands.enqueued", label] == 3
    assert sum(parent.counts["trackasync_request_commands"].values()) == 3


def _sync_child(client: SyncClient, registry: CollectorRegistry, out: int) -> int:
    try:
        for n in (4, 5):
            client.track_and_wait(IDS, "purchase", {"n": n}, timeout=20)
        client.close()
        with os.fdopen(out, "wb") as pipe:
            pipe.write(generate_latest(registry))
        return 0
    except BaseException:
        return 3
