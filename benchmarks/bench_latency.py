"""Latency of ``track_and_wait`` on loopback, at low and at high load.

The fake server runs in another process, pinned to the other core; this
process, pinned to core 0, opens a ``Client`` with **default options** (only
the URL, token and credentials are given: default ``linger``, ``max_in_flight``,
``rate_limit``, queue and ``mode``), so the figures are whatever the library in
the tree does by default. Re-run it after changing the pipeline.

Phases, each with a fresh client and typical events:

- ``floor_sequential``: the baseline in the same run. One bare aiohttp
  ``ClientSession`` posts one event at a time to the single-event route and
  waits for the answer: the round trip itself, with nothing batched.
- ``sequential``: one caller awaiting ``track_and_wait`` in a loop, so each call
  is alone in the queue (``--calls`` calls, or fewer if ``--phase-seconds``
  runs out first: with a 0.5 s linger, 300 calls take 150 s).
- ``concurrent``: ``--awaiters`` (20) callers doing the same at once, until
  ``--calls`` calls in all (or the time bound).
- ``high_load``: a producer calling ``await client.track(...)`` as fast as it
  can for ``--load-seconds`` while the same awaiters run; reported with the
  awaiters' latency: the mean commands per request over the phase (the client's
  own counters) and the producer's rate.

Low load means low: in the first three phases each caller pauses
``--interval`` seconds (0.05) between its calls, as a web handler serving a
request now and then would. Back to back (``--interval 0``), one caller sends
about 100 requests a second and meets the client's default rate limit (the
API's 100 requests/s per IP): its p50 is then the limiter's 10 ms spacing, not
the pipeline's latency.

Latency is ``time.perf_counter()`` around each awaited call; p50 and p99 over
all calls of the phase (``--rounds`` rounds pooled).

    python benchmarks/bench_latency.py            # full run
    python benchmarks/bench_latency.py --quick    # smoke run
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from typing import Any

import aiohttp
import msgspec
from _common import (
    CLIENT_CPU,
    TYPICAL_TYPE,
    FakeServerProcess,
    drain,
    fake_server,
    pin,
    publish,
    typical_pool,
)

from trackasync import Client, PrivateKey

AWAITERS = 20


def _percentiles(values: list[float]) -> dict[str, Any]:
    """p50, p99 and max of latencies in seconds, reported in milliseconds."""
    if not values:
        return {"n": 0}
    ordered = sorted(values)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    return {
        "p50_ms": round(at(0.50) * 1e3, 3),
        "p99_ms": round(at(0.99) * 1e3, 3),
        "max_ms": round(ordered[-1] * 1e3, 3),
        "mean_ms": round(sum(ordered) / len(ordered) * 1e3, 3),
        "n": len(ordered),
    }


def _client(server: FakeServerProcess) -> Client:
    return Client(
        server.base_url,
        server.project_token,
        auth=PrivateKey(server.key_id, server.secret),
    )


async def _floor(
    server: FakeServerProcess, calls: int, seconds: float, interval: float
) -> list[float]:
    pool = typical_pool()
    url = f"{server.base_url}/track/v2/projects/{server.project_token}/customers/events"
    headers = {
        "Authorization": PrivateKey(server.key_id, server.secret).header,
        "Content-Type": "application/json",
    }
    encode = msgspec.json.Encoder().encode
    latencies: list[float] = []
    deadline = time.monotonic() + seconds
    async with aiohttp.ClientSession() as session:
        for i in range(calls):
            ids, props = pool[i % len(pool)]
            start = time.perf_counter()
            body = encode(
                {
                    "customer_ids": ids,
                    "event_type": TYPICAL_TYPE,
                    "timestamp": time.time(),
                    "properties": props,
                }
            )
            async with session.post(url, data=body, headers=headers) as response:
                await response.read()
                if response.status != 200:
                    raise RuntimeError(f"floor: HTTP {response.status}")
            latencies.append(time.perf_counter() - start)
            if time.monotonic() > deadline:
                break
            if interval:
                await asyncio.sleep(interval)
    return latencies


async def _awaiter(
    client: Client,
    pool: list[tuple[dict[str, str], dict[str, Any]]],
    latencies: list[float],
    budget: list[int],
    stop: asyncio.Event,
    offset: int,
    interval: float = 0.0,
) -> None:
    i = offset
    while budget[0] > 0 and not stop.is_set():
        budget[0] -= 1
        ids, props = pool[i % len(pool)]
        i += AWAITERS
        start = time.perf_counter()
        await client.track_and_wait(ids, TYPICAL_TYPE, props)
        latencies.append(time.perf_counter() - start)
        if interval:
            await asyncio.sleep(interval)


async def _awaiting(
    server: FakeServerProcess,
    awaiters: int,
    calls: int,
    seconds: float,
    interval: float,
) -> dict[str, Any]:
    pool = typical_pool()
    latencies: list[float] = []
    stop = asyncio.Event()
    budget = [calls]
    async with _client(server) as client:
        tasks = [
            asyncio.create_task(
                _awaiter(client, pool, latencies, budget, stop, k, interval)
            )
            for k in range(awaiters)
        ]
        timer = asyncio.get_running_loop().call_later(seconds, stop.set)
        await asyncio.gather(*tasks)
        timer.cancel()
        stats = await drain(client)
    return {
        "latencies": latencies,
        "requests": stats.requests,
        "delivered": stats.delivered,
    }


async def _high_load(
    server: FakeServerProcess, awaiters: int, seconds: float
) -> dict[str, Any]:
    pool = typical_pool()
    awaited_pool = typical_pool(4000)[1000:]  # other cookies than the producer's
    latencies: list[float] = []
    stop = asyncio.Event()
    produced = 0

    async with _client(server) as client:

        async def producer() -> None:
            nonlocal produced
            track = client.track
            size = len(pool)
            while not stop.is_set():
                ids, props = pool[produced % size]
                await track(ids, TYPICAL_TYPE, props)
                produced += 1

        start = time.perf_counter()
        budget = [10**9]
        tasks = [asyncio.create_task(producer())]
        tasks += [
            asyncio.create_task(
                _awaiter(client, awaited_pool, latencies, budget, stop, k)
            )
            for k in range(awaiters)
        ]
        await asyncio.sleep(seconds)
        stop.set()
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - start
        stats = await drain(client, timeout=120.0)
    return {
        "latencies": latencies,
        "requests": stats.requests,
        "delivered": stats.delivered,
        "produced": produced,
        "elapsed_s": elapsed,
    }


async def _round(args: argparse.Namespace, server: FakeServerProcess) -> dict:
    out: dict[str, Any] = {}
    server.reset()
    out["floor_sequential"] = {
        "latencies": await _floor(server, args.calls, args.phase_seconds, args.interval)
    }
    server.reset()
    out["sequential"] = await _awaiting(
        server, 1, args.calls, args.phase_seconds, args.interval
    )
    server.reset()
    out["concurrent"] = await _awaiting(
        server, args.awaiters, args.calls, args.phase_seconds, args.interval
    )
    server.reset()
    out["high_load"] = await _high_load(server, args.awaiters, args.load_seconds)
    stats = server.stats()
    if stats["duplicates"]:
        raise RuntimeError(f"the server saw {stats['duplicates']} duplicates")
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    pinned = pin(CLIENT_CPU)
    pooled: dict[str, dict[str, Any]] = {}
    with fake_server() as server:
        for round_no in range(args.rounds):
            result = asyncio.run(_round(args, server))
            for phase, figures in result.items():
                into = pooled.setdefault(phase, {"latencies": [], "rounds": []})
                into["latencies"] += figures.pop("latencies")
                into["rounds"].append(figures)
            print(f"round {round_no + 1} done", file=sys.stderr, flush=True)
        server_pinned = server.pinned
    summary: dict[str, Any] = {}
    for phase, data in pooled.items():
        entry: dict[str, Any] = {"latency": _percentiles(data["latencies"])}
        rounds = data["rounds"]
        if rounds and "requests" in rounds[0]:
            delivered = sum(r["delivered"] for r in rounds)
            requests = sum(r["requests"] for r in rounds)
            entry["commands_per_request"] = round(delivered / max(1, requests), 2)
        if rounds and "produced" in rounds[0]:
            entry["producer_events_per_s"] = round(
                sum(r["produced"] for r in rounds) / sum(r["elapsed_s"] for r in rounds)
            )
        entry["rounds"] = rounds
        summary[phase] = entry
    return {
        "settings": {
            "client": "Client(url, token, auth=...) with default options",
            "calls": args.calls,
            "awaiters": args.awaiters,
            "interval": args.interval,
            "phase_seconds": args.phase_seconds,
            "load_seconds": args.load_seconds,
            "rounds": args.rounds,
            "pinned_to_cpu": pinned,
            "server_pinned": server_pinned,
        },
        "summary": summary,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a fast smoke run")
    parser.add_argument("--calls", type=int, default=300, help="calls per phase")
    parser.add_argument("--awaiters", type=int, default=AWAITERS)
    parser.add_argument(
        "--phase-seconds",
        type=float,
        default=40.0,
        help="no new call in a low-load phase after this",
    )
    parser.add_argument("--load-seconds", type=float, default=5.0)
    parser.add_argument(
        "--interval",
        type=float,
        default=0.05,
        help="seconds each low-load caller pauses between calls (0: back to back)",
    )
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--out", help="also write the JSON report to this file")
    args = parser.parse_args(argv)
    if args.quick:
        args.calls, args.phase_seconds, args.load_seconds = 40, 5.0, 2.0
    return publish(args.out, lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
