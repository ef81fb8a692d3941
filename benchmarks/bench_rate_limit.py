"""The rate limit: commands per request and total time at 100 requests per second.

A client with the default settings (``rate_limit=100`` requests per second,
``max_in_flight=4``, ``linger=0.5``) is fed ``--events`` typical events by a
paced producer: ``await client.track(...)`` on an absolute schedule of
``--producer-rate`` events per second (5 events per millisecond at 5,000/s), so
the producer neither bursts nor drifts. The fake server runs in another process
(pinned to the other core) with its rate limiter at the real 6,000 requests per
minute (100/s over a sliding 60 s window): any 429 would show.

Reported: the average commands per request (the client's own count and the
server's count of accepted requests), the total time from the first event until
every event has its answer (``flush()``, then the client's counters polled
every millisecond), the producer's offered and achieved rates, and the 429s.
At 100 requests of 50 the client drains 5,000 events per second; a producer
offering more fills the queue (10,000) and is then held to that pace by
``await track()`` (backpressure), so its achieved rate is lower than offered. The ideal
time is ``events / 50 / 100`` seconds: full batches at exactly 100 per second.
Each producer rate runs ``--rounds`` times, round-robin; figures are medians.

Target: at least 49 commands per request on average.

    python benchmarks/bench_rate_limit.py            # full run
    python benchmarks/bench_rate_limit.py --quick    # smoke run
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from typing import Any

from _common import (
    CLIENT_CPU,
    FakeServerProcess,
    drain,
    fake_server,
    median,
    pin,
    publish,
    spread,
    typical_pool,
    wait_for_count,
)

from trackasync import Client, PrivateKey

TARGET_COMMANDS_PER_REQUEST = 49.0
RATE_LIMIT = 100.0
TICK = 0.001  # the producer's schedule step, seconds


async def _send(
    server: FakeServerProcess, events: int, producer_rate: float, timeout: float
) -> dict[str, Any]:
    pool = typical_pool()
    size = len(pool)
    client = Client(
        server.base_url,
        server.project_token,
        auth=PrivateKey(server.key_id, server.secret),
    )
    per_tick = producer_rate * TICK
    loop = asyncio.get_running_loop()
    async with client:
        track = client.track
        start = time.perf_counter()
        t0 = loop.time()
        sent = 0
        tick = 0
        while sent < events:
            tick += 1
            due = min(events, int(tick * per_tick))
            while sent < due:
                ids, props = pool[sent % size]
                await track(ids, "purchase", props)
                sent += 1
            if sent >= events:
                break
            delay = t0 + tick * TICK - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            if time.perf_counter() - start > timeout:
                raise RuntimeError(f"producer still running after {timeout} s")
        produced = time.perf_counter() - start
        stats = await drain(client, timeout)
        elapsed = time.perf_counter() - start
    return {
        "seconds": elapsed,
        "produce_seconds": produced,
        "producer_events_per_s": events / produced,
        "delivered": stats.delivered,
        "requests": stats.requests,
        "retries": stats.retries,
        "rate_limited": stats.rate_limited,
        "commands_per_request": stats.delivered / max(1, stats.requests),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    pinned = pin(CLIENT_CPU)
    rates = args.producer_rates
    runs: dict[float, list[dict[str, Any]]] = {rate: [] for rate in rates}
    deadline = time.monotonic() + args.max_seconds
    with fake_server(rate_limit=RATE_LIMIT, rate_window=args.rate_window) as server:
        for _ in range(args.rounds):
            for rate in rates:
                server.reset()  # also starts a fresh rate window
                result = asyncio.run(_send(server, args.events, rate, args.timeout))
                stats, _ = wait_for_count(server, args.events, timeout=5.0)
                result["server"] = {
                    "stored": stats["events"],
                    "duplicates": stats["duplicates"],
                    "statuses": stats["statuses"],
                    "rate_limited": stats["rate_limited"],
                    "commands_per_accepted_request": stats[
                        "commands_per_accepted_request"
                    ],
                }
                if stats["events"] != args.events:
                    raise RuntimeError(
                        f"producer {rate}/s: the server stored {stats['events']} "
                        f"events, expected {args.events}"
                    )
                runs[rate].append(result)
                print(
                    f"producer {rate:.0f}/s: {result['seconds']:.2f} s, "
                    f"{result['commands_per_request']:.2f} commands/request",
                    file=sys.stderr,
                    flush=True,
                )
            if time.monotonic() > deadline:
                break
        server_pinned = server.pinned
    ideal = args.events / 50 / RATE_LIMIT
    summary: dict[str, Any] = {}
    for rate, results in runs.items():
        summary[f"offered={rate:.0f}/s"] = {
            "commands_per_request": spread(
                [r["commands_per_request"] for r in results], 1, 2
            ),
            "server_commands_per_accepted_request": median(
                [r["server"]["commands_per_accepted_request"] for r in results]
            ),
            "total_seconds": spread([r["seconds"] for r in results]),
            "ideal_seconds": round(ideal, 2),
            "offered_events_per_s": rate,
            # Lower than offered once the queue is full: the producer then
            # waits in track() and runs at the speed of delivery (backpressure).
            "achieved_events_per_s": spread(
                [r["producer_events_per_s"] for r in results], digits=0
            ),
            "produce_seconds": spread([r["produce_seconds"] for r in results]),
            "requests": median([r["requests"] for r in results]),
            "http_429": sum(r["server"]["rate_limited"] for r in results),
        }
    worst = min(median([r["commands_per_request"] for r in rs]) for rs in runs.values())
    return {
        "settings": {
            "events": args.events,
            "rounds": len(runs[rates[0]]),
            "client": "defaults: rate_limit=100/s, max_in_flight=4, linger=0.5 s, "
            "max_queue=10,000; producer: await client.track(...) on an absolute "
            f"schedule in {TICK * 1000:g} ms steps",
            "server_rate_limit": f"{RATE_LIMIT:g} requests/s over a sliding "
            f"{args.rate_window:g} s window",
            "pinned_to_cpu": pinned,
            "server_pinned": server_pinned,
        },
        "summary": summary,
        "target": {
            "what": "average commands per request (the lowest median over the producer rates)",
            "limit": TARGET_COMMANDS_PER_REQUEST,
            "measured": round(worst, 2),
            "met": worst >= TARGET_COMMANDS_PER_REQUEST,
        },
        "runs": {f"{k:.0f}": v for k, v in runs.items()},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a fast smoke run")
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument(
        "--producer-rates",
        type=float,
        nargs="+",
        default=[5_000.0, 20_000.0],
        metavar="EVENTS_PER_S",
    )
    parser.add_argument("--rate-window", type=float, default=60.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=120.0, help="per run")
    parser.add_argument(
        "--max-seconds", type=float, default=600.0, help="no new round after this"
    )
    parser.add_argument("--out", help="also write the JSON report to this file")
    args = parser.parse_args(argv)
    if args.quick:
        args.events, args.rounds = 5_000, 1
    return publish(args.out, lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
