"""Latency of ``track_and_wait`` against a bare request per event, and batching
under a full-speed producer.

The fake server runs in another process, pinned to the other core; this
process, pinned to core 0, opens each ``Client`` with **default options** (only
the URL, token and credentials are given; ``--await-linger`` sets that one
option, so the default and 0 can be compared), so the figures are whatever
the library in the tree does by default. Each phase has a fresh client and a
freshly reset server, and sends events of ``--event`` (typical by default).

Latency phases, ``--rounds`` rounds of them in one run, the order rotating:

- ``bare_1`` (the baseline of ``awaited_1``): one caller posts one event at a
  time to the single-event route with a bare aiohttp ``ClientSession``
  (msgspec-encoded body) and waits for the answer: the round trip itself;
- ``awaited_1``: one caller awaiting ``track_and_wait`` in a loop;
- ``bare_20`` and ``awaited_20``: the same with ``--awaiters`` (20) callers at
  once (one session, or one client, shared by all).

Each caller pauses ``--interval`` seconds (0.05) between its calls, as a web
handler serving a request now and then would; a phase ends after ``--calls``
calls in all or ``--phase-seconds``. Latency is ``time.perf_counter()`` around
each awaited call, the request's encoding included; p50 and p99 over all
calls of a phase, pooled over the rounds.

Batching phases (after the latency rounds):

- ``producer``: one producer calling ``track_nowait`` at full speed for
  ``--load-seconds`` (yielding to the loop every 100 events, and awaiting
  ``track()`` for room when the queue is full); reported: the mean commands
  per request over the phase (the client's own counters, after every event
  has its outcome) and the producer's rate;
- ``producer_with_awaiters`` (information): the same while the 20 awaiting
  callers run back to back; their latency is the wait behind the full queue.

Targets: p50 of ``track_and_wait`` at most 1.2 times the bare request's, with
one caller and with 20; at least 49 commands per request (of 50) with the
producer at full speed.

    python benchmarks/bench_latency.py                     # full run
    python benchmarks/bench_latency.py --quick             # smoke run
    python benchmarks/bench_latency.py --await-linger 0    # against the default
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import msgspec
from _common import (
    CLIENT_CPU,
    EVENT_KINDS,
    TYPICAL_TYPE,
    FakeServerProcess,
    Pool,
    drain,
    event_pool,
    fake_server,
    median,
    pin,
    publish,
    spread,
    stamp_of,
)

from trackasync import Client, PrivateKey, QueueFull

AWAITERS = 20
TARGET_P50_RATIO = 1.2
TARGET_COMMANDS = 49.0

#: One awaited call: (customer_ids, properties, timestamp or None) -> awaitable.
Call = Callable[[dict[str, str], dict[str, Any], "float | None"], Awaitable[object]]


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


def _client(server: FakeServerProcess, await_linger: float | None) -> Client:
    extra: dict[str, Any] = {}
    if await_linger is not None:
        extra["await_linger"] = await_linger
    return Client(
        server.base_url,
        server.project_token,
        auth=PrivateKey(server.key_id, server.secret),
        **extra,
    )


def _awaited(client: Client) -> Call:
    """The client's awaited call: queue one event and wait for its outcome."""
    track_and_wait = client.track_and_wait

    def call(ids: dict[str, str], props: dict[str, Any], stamp: float | None) -> Any:
        if stamp is None:
            return track_and_wait(ids, TYPICAL_TYPE, props)
        return track_and_wait(ids, TYPICAL_TYPE, props, timestamp=stamp)

    return call


async def _callers(
    call: Call,
    pool: Pool,
    callers: int,
    calls: int,
    seconds: float,
    interval: float,
) -> list[float]:
    """``callers`` tasks awaiting ``call`` one event at a time until ``calls``
    calls in all or ``seconds``; the latency of each call."""
    latencies: list[float] = []
    size = len(pool)
    indexes = itertools.count()
    budget = [calls]
    deadline = time.monotonic() + seconds

    async def caller() -> None:
        while budget[0] > 0 and time.monotonic() < deadline:
            budget[0] -= 1
            i = next(indexes)
            ids, props, stamp = pool[i % size]
            start = time.perf_counter()
            await call(ids, props, stamp_of(stamp, i, size))
            latencies.append(time.perf_counter() - start)
            if interval:
                await asyncio.sleep(interval)

    await asyncio.gather(*(caller() for _ in range(callers)))
    return latencies


async def _bare(
    server: FakeServerProcess, pool: Pool, callers: int, args: argparse.Namespace
) -> dict[str, Any]:
    url = f"{server.base_url}/track/v2/projects/{server.project_token}/customers/events"
    headers = {
        "Authorization": PrivateKey(server.key_id, server.secret).header,
        "Content-Type": "application/json",
        "Accept": "application/json",
    }
    encode = msgspec.json.Encoder().encode
    now = time.time

    async with aiohttp.ClientSession() as session:

        async def call(
            ids: dict[str, str], props: dict[str, Any], stamp: float | None
        ) -> None:
            body = encode(
                {
                    "customer_ids": ids,
                    "event_type": TYPICAL_TYPE,
                    "timestamp": now() if stamp is None else stamp,
                    "properties": props,
                }
            )
            async with session.post(url, data=body, headers=headers) as response:
                await response.read()
                if response.status != 200:
                    raise RuntimeError(f"bare sender: HTTP {response.status}")

        latencies = await _callers(
            call, pool, callers, args.calls, args.phase_seconds, args.interval
        )
    return {"latencies": latencies, "requests": len(latencies)}


async def _awaiting(
    server: FakeServerProcess, pool: Pool, callers: int, args: argparse.Namespace
) -> dict[str, Any]:
    async with _client(server, args.await_linger) as client:
        latencies = await _callers(
            _awaited(client),
            pool,
            callers,
            args.calls,
            args.phase_seconds,
            args.interval,
        )
        stats = await drain(client)
    return {
        "latencies": latencies,
        "requests": stats.requests,
        "delivered": stats.delivered,
    }


async def _producer(
    server: FakeServerProcess, pool: Pool, awaiters: int, args: argparse.Namespace
) -> dict[str, Any]:
    """A ``track_nowait`` producer at full speed for ``--load-seconds``, with
    ``awaiters`` callers of ``track_and_wait`` beside it (back to back)."""
    # The awaiters' events are other customers' than the producer's.
    awaited_pool: Pool = [
        ({**ids, "registered": f"awaited-{k}@example.com"}, props, stamp)
        for k, (ids, props, stamp) in enumerate(pool)
    ]
    stop = asyncio.Event()
    produced = 0
    async with _client(server, args.await_linger) as client:

        async def producer() -> None:
            nonlocal produced
            track_nowait, track = client.track_nowait, client.track
            size = len(pool)
            i = 0
            while not stop.is_set():
                ids, props, stamp = pool[i % size]
                when = stamp_of(stamp, i, size)
                try:
                    if when is None:
                        track_nowait(ids, TYPICAL_TYPE, props)
                    else:
                        track_nowait(ids, TYPICAL_TYPE, props, timestamp=when)
                except QueueFull:
                    await track(ids, TYPICAL_TYPE, props, timestamp=when)
                i += 1
                if i % 100 == 0:
                    await asyncio.sleep(0)
            produced = i

        start = time.perf_counter()
        task = asyncio.create_task(producer())
        waiting = asyncio.create_task(
            _callers(
                _awaited(client), awaited_pool, awaiters, 10**9, args.load_seconds, 0.0
            )
        )
        await asyncio.sleep(args.load_seconds)
        stop.set()
        await task
        latencies = await waiting
        elapsed = time.perf_counter() - start
        stats = await drain(client, timeout=300.0)
    return {
        "latencies": latencies,
        "requests": stats.requests,
        "delivered": stats.delivered,
        "produced": produced,
        "elapsed_s": elapsed,
    }


LATENCY_PHASES = ("bare_1", "awaited_1", "bare_20", "awaited_20")


async def _latency_round(
    args: argparse.Namespace, server: FakeServerProcess, pool: Pool, shift: int
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for phase in LATENCY_PHASES[shift:] + LATENCY_PHASES[:shift]:
        kind, _, count = phase.partition("_")
        callers = 1 if count == "1" else args.awaiters
        server.reset()
        if kind == "bare":
            out[phase] = await _bare(server, pool, callers, args)
        else:
            out[phase] = await _awaiting(server, pool, callers, args)
        stats = server.stats()
        if stats["duplicates"]:
            raise RuntimeError(
                f"{phase}: the server saw {stats['duplicates']} duplicates"
            )
    return out


async def _batching(
    args: argparse.Namespace, server: FakeServerProcess, pool: Pool
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for phase, awaiters in (("producer", 0), ("producer_with_awaiters", args.awaiters)):
        server.reset()
        out[phase] = await _producer(server, pool, awaiters, args)
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    pinned = pin(CLIENT_CPU)
    pool = event_pool(args.event)
    pooled: dict[str, dict[str, Any]] = {}

    def keep(result: dict[str, Any]) -> None:
        for phase, figures in result.items():
            into = pooled.setdefault(phase, {"latencies": [], "rounds": []})
            into["latencies"] += figures.pop("latencies")
            into["rounds"].append(figures)

    per_round_p50: dict[str, list[float]] = {phase: [] for phase in LATENCY_PHASES}
    with fake_server() as server:
        for round_no in range(args.rounds):
            result = asyncio.run(
                _latency_round(args, server, pool, round_no % len(LATENCY_PHASES))
            )
            for phase in LATENCY_PHASES:
                per_round_p50[phase].append(
                    median(result[phase]["latencies"]) * 1e3
                    if result[phase]["latencies"]
                    else float("nan")
                )
            keep(result)
            print(f"latency round {round_no + 1} done", file=sys.stderr, flush=True)
        if args.load_seconds > 0:
            keep(asyncio.run(_batching(args, server, pool)))
            print("batching phases done", file=sys.stderr, flush=True)
        server_pinned = server.pinned
    summary: dict[str, Any] = {}
    for phase, data in pooled.items():
        entry: dict[str, Any] = {"latency": _percentiles(data["latencies"])}
        rounds = data["rounds"]
        if rounds and "delivered" in rounds[0]:
            delivered = sum(r["delivered"] for r in rounds)
            requests = sum(r["requests"] for r in rounds)
            entry["commands_per_request"] = round(delivered / max(1, requests), 2)
        if rounds and "produced" in rounds[0]:
            entry["producer_events_per_s"] = round(
                sum(r["produced"] for r in rounds) / sum(r["elapsed_s"] for r in rounds)
            )
        entry["rounds"] = rounds
        summary[phase] = entry
    targets: dict[str, Any] = {}
    for count in ("1", "20"):
        bare = summary[f"bare_{count}"]["latency"]
        ours = summary[f"awaited_{count}"]["latency"]
        ratio = ours["p50_ms"] / bare["p50_ms"]
        per_round = [
            a / b
            for a, b in zip(
                per_round_p50[f"awaited_{count}"], per_round_p50[f"bare_{count}"]
            )
        ]
        callers = 1 if count == "1" else args.awaiters
        targets[f"p50_{count}_caller{'s' if callers > 1 else ''}"] = {
            "what": f"track_and_wait p50 / a bare request's p50, {callers} "
            "caller(s), pooled over the rounds",
            "limit": TARGET_P50_RATIO,
            "measured": round(ratio, 3),
            "per_round": spread(per_round),
            "met": ratio <= TARGET_P50_RATIO,
        }
    if "producer" in summary:
        got = summary["producer"]["commands_per_request"]
        targets["commands_per_request_full_speed"] = {
            "what": "mean commands per request, track_nowait producer at full "
            "speed (of 50)",
            "limit": TARGET_COMMANDS,
            "measured": got,
            "met": got >= TARGET_COMMANDS,
        }
    return {
        "settings": {
            "client": "Client(url, token, auth=...) with default options"
            + (
                f", await_linger={args.await_linger:g}"
                if args.await_linger is not None
                else ""
            ),
            "await_linger": args.await_linger,
            "event": args.event,
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
        "targets": targets,
        "all_targets_met": all(t["met"] for t in targets.values()),
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
        help="no new call in a latency phase after this",
    )
    parser.add_argument(
        "--load-seconds",
        type=float,
        default=5.0,
        help="length of each producer phase (0: skip them)",
    )
    parser.add_argument(
        "--interval",
        type=float,
        default=0.05,
        help="seconds each caller pauses between its calls (0: back to back)",
    )
    parser.add_argument(
        "--await-linger",
        type=float,
        default=None,
        help="the client's await_linger (default: the library's default)",
    )
    parser.add_argument("--event", choices=EVENT_KINDS, default="typical")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", help="also write the JSON report to this file")
    args = parser.parse_args(argv)
    if args.quick:
        args.calls, args.phase_seconds, args.load_seconds = 40, 5.0, 2.0
        args.rounds = 1
    return publish(args.out, lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
