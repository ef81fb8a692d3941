"""Metrics wired or not: ``track_nowait`` and the pipeline, in the same run.

Two clients in one event loop, on a null transport that accepts everything
without sockets (``bench_enqueue.NullTransport``): ``plain``, and ``wired``,
reported through both ``otel_metrics`` (a real OpenTelemetry SDK
``MeterProvider`` with an ``InMemoryMetricReader``) and ``prometheus_metrics``
(its own ``CollectorRegistry``). Round-robin over ``--rounds`` rounds, the
order rotating every round, each round measures for each client:

- ``track_nowait``: a batch of ``--batch`` typical events timed with
  ``time.perf_counter`` (long ``linger``, a queue larger than the batch: no
  request is built while the clock runs), then drained, not timed;
- ``pipeline``: the CPU time (``time.process_time``) of ``--batch`` typical
  events through ``track_nowait`` and the whole pipeline (``linger`` 0:
  batches of up to 50, each one request through the null transport, so the
  wired client records each request in both exporters) until drained.

After each round, the SDK collects and the registry is rendered, as a reader
and a scrape would do, outside the timed sections: that is where the requests
queued by the sender are aggregated and recorded in the SDK's histograms, in
the collecting thread (``collection``: the CPU of one collection of both
exporters, and the requests of both wired clients it took in).

Target: ``track_nowait`` with metrics wired within 2 % of without (the median
of the per-round ratios). The pipeline's figure is reported beside it.

    python benchmarks/bench_metrics.py            # full run
    python benchmarks/bench_metrics.py --quick    # smoke run
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import sys
import time
from typing import Any

from _common import (
    CLIENT_CPU,
    TYPICAL_IDS,
    TYPICAL_PROPERTIES,
    TYPICAL_TYPE,
    drain,
    median,
    pin,
    publish,
    spread,
)
from bench_enqueue import NullTransport
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from prometheus_client import CollectorRegistry, generate_latest

import trackasync
from trackasync import Client, PrivateKey

TARGET_RATIO = 1.02
CASES = ("plain", "wired")


def _client(linger: float, max_queue: int) -> Client:
    return Client(
        "https://api.example.test",
        "bench-project",
        auth=PrivateKey("key", "secret"),
        transport=NullTransport(),
        linger=linger,
        max_queue=max_queue,
        rate_limit=None,
    )


class Exporters:
    """Both exporters for a set of clients, and one collection of each."""

    def __init__(self) -> None:
        self.reader = InMemoryMetricReader()
        self.provider = MeterProvider(metric_readers=[self.reader])
        self.registry = CollectorRegistry()

    def wire(self, client: Client, name: str) -> None:
        trackasync.otel_metrics(client, meter_provider=self.provider, name=name)
        trackasync.prometheus_metrics(client, registry=self.registry, name=name)

    def collect(self) -> int:
        self.reader.get_metrics_data()
        return len(generate_latest(self.registry))


def run(args: argparse.Namespace) -> dict[str, Any]:
    pinned = pin(CLIENT_CPU)
    batch = args.batch
    ids, props = TYPICAL_IDS, TYPICAL_PROPERTIES
    exporters = Exporters()
    loop = asyncio.new_event_loop()
    # The call alone: long linger, so nothing is sent while the clock runs.
    callers = {case: _client(60.0, batch * 2) for case in CASES}
    # The pipeline: every batch of up to 50 is sent at once.
    pipelines = {case: _client(0.0, batch * 2) for case in CASES}
    exporters.wire(callers["wired"], "calls")
    exporters.wire(pipelines["wired"], "pipeline")
    calls: dict[str, list[float]] = {case: [] for case in CASES}
    cpu: dict[str, list[float]] = {case: [] for case in CASES}
    # CPU of one collection of both exporters, and the requests it took in.
    collections: list[tuple[float, int]] = []

    async def timed_calls(client: Client) -> float:
        track_nowait = client.track_nowait
        start = time.perf_counter()
        for _ in range(batch):
            track_nowait(ids, TYPICAL_TYPE, props)
        elapsed = time.perf_counter() - start
        await drain(client)
        return elapsed

    async def timed_pipeline(client: Client) -> float:
        track_nowait = client.track_nowait
        start = time.process_time()
        for i in range(batch):
            track_nowait(ids, TYPICAL_TYPE, props)
            if i % 50 == 49:
                await asyncio.sleep(0)  # let the batcher and sender run
        await drain(client)
        return time.process_time() - start

    async def enter() -> None:
        for client in (*callers.values(), *pipelines.values()):
            await client.__aenter__()

    loop.run_until_complete(enter())
    # Warm up every path before timing.
    for case in CASES:
        loop.run_until_complete(timed_calls(callers[case]))
        loop.run_until_complete(timed_pipeline(pipelines[case]))
    exporters.collect()
    gc.collect()
    for round_ in range(args.rounds):
        order = CASES if round_ % 2 == 0 else CASES[::-1]
        for case in order:
            calls[case].append(loop.run_until_complete(timed_calls(callers[case])))
            cpu[case].append(loop.run_until_complete(timed_pipeline(pipelines[case])))
            if case == "wired":
                before = (
                    pipelines["wired"].stats().requests
                    + callers["wired"].stats().requests
                )
                start = time.process_time()
                exporters.collect()
                collections.append((time.process_time() - start, before))
    stats = {case: pipelines[case].stats() for case in CASES}

    async def leave() -> None:
        for client in (*callers.values(), *pipelines.values()):
            await client.aclose(timeout=30)

    loop.run_until_complete(leave())
    loop.close()
    requests_seen = _requests_reported(exporters.reader, "pipeline")
    exporters.provider.shutdown()
    us = {case: [t / batch * 1e6 for t in calls[case]] for case in CASES}
    cpu_us = {case: [t / batch * 1e6 for t in cpu[case]] for case in CASES}
    # Per-round ratios: both cases of a round ran a moment apart, so the
    # machine's noise of the moment cancels out.
    # Requests each collection took in: those sent since the previous one.
    sent = [n for _, n in collections]
    took_in = [n - m for n, m in zip(sent[1:], sent)]
    collection_ms = [t * 1e3 for t, _ in collections[1:]]
    call_ratio = median([w / p for w, p in zip(us["wired"], us["plain"])])
    cpu_ratio = median([w / p for w, p in zip(cpu_us["wired"], cpu_us["plain"])])
    return {
        "settings": {
            "batch": batch,
            "rounds": args.rounds,
            "event": "typical (8 properties)",
            "pinned_to_cpu": pinned,
            "exporters": "OpenTelemetry SDK (InMemoryMetricReader) and "
            "prometheus_client (CollectorRegistry), both on the wired clients",
        },
        "track_nowait_us_per_call": {c: spread(us[c]) for c in CASES},
        "pipeline_cpu_us_per_event": {c: spread(cpu_us[c]) for c in CASES},
        "collection": {
            "cpu_ms": spread(collection_ms),
            "requests_taken_in": spread(took_in, digits=0),
        },
        "ratios_wired_to_plain_median_per_round": {
            "track_nowait": round(call_ratio, 4),
            "pipeline_cpu": round(cpu_ratio, 4),
        },
        "check": {
            "pipeline_requests": {c: stats[c].requests for c in CASES},
            "requests_in_otel_metrics": requests_seen,
        },
        "target": {
            "what": "track_nowait with metrics wired / without "
            "(median of per-round ratios)",
            "limit": TARGET_RATIO,
            "measured": round(call_ratio, 4),
            "met": call_ratio <= TARGET_RATIO,
        },
    }


def _requests_reported(reader: InMemoryMetricReader, client: str) -> int:
    """``trackasync.requests`` of ``client``, summed: a check that metrics flowed."""
    data = reader.get_metrics_data()
    if data is None:
        return 0
    return sum(
        int(point.value)
        for resource in data.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
        if metric.name == "trackasync.requests"
        for point in metric.data.data_points
        if point.attributes.get("trackasync.client") == client
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a fast smoke run")
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--out", help="also write the JSON report to this file")
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds = 10
    return publish(args.out, lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
