"""A slow server: time until all events are stored, for max_in_flight 1, 4 and 16.

The fake server runs in another process (pinned to the other core) and waits
``--delay`` seconds (default 20 ms) before handling every request. A client with
``rate_limit=None`` and the given ``max_in_flight`` sends ``--events`` typical
events, produced with ``await client.track(...)`` (it returns at once while the
queue has room), then awaits ``flush()``. The time is measured from the first
call until every event has its answer (``flush()``, then the client's counters
polled every millisecond until nothing is outstanding); the
server is then asked how many events it stored, and a run that did not store
them all fails the benchmark.

The baseline in the same run is the floor sender (bare aiohttp + msgspec, see
``_reference.py``) posting the same events with the same number of requests in
flight, timed until its last answer. The ideal time is
``ceil(ceil(events / 50) / max_in_flight) * delay``: full batches of 50, each
slot always busy, a server that takes no time beyond its delay. Settings run
round-robin for ``--rounds`` rounds; figures are medians.

    python benchmarks/bench_slow_server.py            # full run
    python benchmarks/bench_slow_server.py --quick    # smoke run
"""

from __future__ import annotations

import argparse
import asyncio
import math
import sys
import time
from typing import Any

from _common import (
    CLIENT_CPU,
    FakeServerProcess,
    drain,
    event_pool,
    fake_server,
    median,
    pin,
    publish,
    spread,
    typical_pool,
    wait_for_count,
)
from _reference import send_reference

from trackasync import Client, PrivateKey

IN_FLIGHT = (1, 4, 16)


async def _send(
    server: FakeServerProcess, events: int, in_flight: int, timeout: float
) -> dict[str, Any]:
    pool = typical_pool()
    size = len(pool)
    client = Client(
        server.base_url,
        server.project_token,
        auth=PrivateKey(server.key_id, server.secret),
        rate_limit=None,
        max_in_flight=in_flight,
    )
    async with client:
        start = time.perf_counter()
        track = client.track
        for i in range(events):
            ids, props = pool[i % size]
            await track(ids, "purchase", props)
        produced = time.perf_counter() - start
        stats = await drain(client, timeout)
        elapsed = time.perf_counter() - start
    return {
        "seconds": elapsed,
        "produce_seconds": produced,
        "delivered": stats.delivered,
        "requests": stats.requests,
        "retries": stats.retries,
    }


async def _send_floor(
    server: FakeServerProcess, events: int, in_flight: int, timeout: float
) -> dict[str, Any]:
    start = time.perf_counter()
    result = await send_reference(
        base_url=server.base_url,
        project_token=server.project_token,
        key_id=server.key_id,
        secret=server.secret,
        pool=event_pool("typical"),
        events=events,
        in_flight=in_flight,
        use_msgspec=True,
        timeout=timeout,
    )
    result["seconds"] = time.perf_counter() - start
    return result


def run(args: argparse.Namespace) -> dict[str, Any]:
    pinned = pin(CLIENT_CPU)
    senders = {"trackasync": _send, "floor": _send_floor}
    runs: dict[tuple[str, int], list[dict[str, Any]]] = {
        (name, n): [] for n in IN_FLIGHT for name in senders
    }
    deadline = time.monotonic() + args.max_seconds
    with fake_server(response_delay=args.delay) as server:
        for round_no in range(args.rounds):
            for in_flight in IN_FLIGHT:
                names = list(senders)
                if round_no % 2:
                    names.reverse()
                for name in names:
                    server.reset()
                    result = asyncio.run(
                        senders[name](server, args.events, in_flight, args.timeout)
                    )
                    stats, _ = wait_for_count(server, args.events, timeout=5.0)
                    result["stored"] = stats["events"]
                    result["duplicates"] = stats["duplicates"]
                    if stats["events"] != args.events:
                        raise RuntimeError(
                            f"{name}, max_in_flight={in_flight}: the server stored "
                            f"{stats['events']} events, expected {args.events}"
                        )
                    runs[name, in_flight].append(result)
                    print(
                        f"{name} max_in_flight={in_flight}: {result['seconds']:.2f} s",
                        file=sys.stderr,
                        flush=True,
                    )
            if time.monotonic() > deadline:
                break
        server_pinned = server.pinned
    requests_ideal = math.ceil(args.events / 50)
    summary: dict[str, Any] = {}
    for in_flight in IN_FLIGHT:
        ideal = math.ceil(requests_ideal / in_flight) * args.delay
        seconds = [r["seconds"] for r in runs["trackasync", in_flight]]
        floor = [r["seconds"] for r in runs["floor", in_flight]]
        requests = median([r["requests"] for r in runs["trackasync", in_flight]])
        summary[f"max_in_flight={in_flight}"] = {
            "seconds_until_stored": spread(seconds),
            "events_per_s": spread([args.events / s for s in seconds], digits=0),
            "floor_seconds": spread(floor),
            "x_floor": round(median(seconds) / median(floor), 2),
            "ideal_seconds": round(ideal, 3),
            "x_ideal": round(median(seconds) / ideal, 2),
            "requests": requests,
            "commands_per_request": round(args.events / requests, 2),
        }
    return {
        "settings": {
            "events": args.events,
            "response_delay_s": args.delay,
            "rounds": len(runs["trackasync", IN_FLIGHT[0]]),
            "client": "rate_limit=None, default linger and queue; producer: "
            "await client.track(...) in a loop, then flush()",
            "floor": "bare aiohttp + msgspec, batches of 50, the same number of "
            "requests in flight, timed until its last answer",
            "pinned_to_cpu": pinned,
            "server_pinned": server_pinned,
        },
        "summary": summary,
        "runs": {f"{name} max_in_flight={n}": v for (name, n), v in runs.items()},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a fast smoke run")
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--delay", type=float, default=0.020, help="seconds per answer")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=120.0, help="per run")
    parser.add_argument(
        "--max-seconds", type=float, default=600.0, help="no new round after this"
    )
    parser.add_argument("--out", help="also write the JSON report to this file")
    args = parser.parse_args(argv)
    if args.quick:
        args.events, args.rounds = 2_000, 1
    return publish(args.out, lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
