"""Memory: RSS growth per queued event while the server does not answer.

A fresh child process (pinned to core 0) opens a client, queues ``--events``
typical events (8 properties, about 300 bytes of JSON) with ``track_nowait``
while nothing is answered, and reads its resident set size from
``/proc/self/statm`` before the first and after the last (each after a full
``gc.collect()``). The growth divided by the number of events is the cost of
one queued event: its ``Delivery`` handle, its encoded body and its queue slot.

Two ways of "not answering", each measured in its own fresh process:

- ``hang_transport``: a transport whose ``send`` never returns (no sockets);
- ``hung_server``: the real aiohttp transport and the fake server in another
  process, delaying every answer by an hour.

Either way the client sends its first ``max_in_flight`` batches (4 x 50 events),
which hang, and queues the rest (``max_queue`` 200,000, ``linger`` 3,600 s).
The events come from a pool of 1,000 distinct dicts built before the first
reading, as an application's own objects would be: only what the client keeps
is counted.

The baseline in the same run, ``bytes_list``, keeps the same events encoded
once by msgspec in a plain list: about the least memory any queue of encoded
events can take. Figures are medians over ``--rounds`` fresh processes per mode.

Target: at most 1 KB (1,024 bytes) per queued typical event.

    python benchmarks/bench_memory.py            # full run
    python benchmarks/bench_memory.py --quick    # smoke run
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import sys
import time
from typing import Any

from _common import (
    CLIENT_CPU,
    EVENT_KINDS,
    drain,
    fake_server,
    max_rss_bytes,
    pin,
    publish,
    python_child,
    rss_bytes,
    spread,
    typical_pool,
)

MODES = ("hang_transport", "hung_server")
BASELINE = "bytes_list"
TARGET_BYTES = 1024
HANG_SECONDS = 3600.0


class HangTransport:
    """A transport whose requests never get an answer (until cancelled)."""

    def __init__(self) -> None:
        self.started = 0

    async def send(self, request: Any) -> Any:
        self.started += 1
        await asyncio.sleep(HANG_SECONDS)
        raise RuntimeError("unreachable: the benchmark closes the client first")

    async def aclose(self) -> None:
        pass


async def _fill(args: argparse.Namespace) -> dict[str, Any]:
    from trackasync import Client, PrivateKey

    pool = typical_pool()
    transport = HangTransport() if args.worker == "hang_transport" else None
    client = Client(
        args.url or "http://127.0.0.1:9",
        args.project_token or "bench-project",
        auth=PrivateKey(args.key_id or "key", args.secret or "secret"),
        transport=transport,
        rate_limit=None,
        max_queue=2 * args.events,
        linger=3600.0,
        max_in_flight=4,
        timeout=HANG_SECONDS,
    )
    n = args.events
    size = len(pool)
    async with client:
        # Warm up the enqueue path once (codec caches, the background task) so
        # the first reading counts none of it; that one event stays queued and
        # is left out. The aiohttp session and its connections (hung_server)
        # are only made once a batch leaves, so they are counted: a few hundred
        # KB at most, a few bytes per event.
        warm = client.track_nowait(*_event(pool[0]))
        for _ in range(5):
            await asyncio.sleep(0)
        gc.collect()
        before = rss_bytes()
        queued_before = client.stats().queued + client.stats().in_flight
        start = time.perf_counter()
        track_nowait = client.track_nowait
        for i in range(n):
            ids, props = pool[i % size]
            track_nowait(ids, "purchase", props)
        enqueue_s = time.perf_counter() - start
        # Let the batcher hand its first batches to the (hanging) transport.
        for _ in range(20):
            await asyncio.sleep(0)
        await asyncio.sleep(0.05)
        gc.collect()
        after = rss_bytes()
        stats = client.stats()
        held = stats.queued + stats.in_flight - queued_before
        sample = warm
        report = await client.aclose(timeout=0.5)
    body_bytes = len(sample.body)
    return {
        "mode": args.worker,
        "events": n,
        "rss_before_bytes": before,
        "rss_after_bytes": after,
        "max_rss_bytes": max_rss_bytes(),
        "bytes_per_event": (after - before) / n,
        "held_by_client": held,
        "queued": stats.queued,
        "in_flight": stats.in_flight,
        "requests_started": stats.requests,
        "enqueue_us_per_event": enqueue_s / n * 1e6,
        "encoded_body_bytes": body_bytes,
        "python_object_bytes": {
            "delivery": sys.getsizeof(sample),
            "body": sys.getsizeof(sample.body),
            "queue_slot": 8,
        },
        "closed_undelivered": len(report.undelivered),
    }


def _event(entry: tuple[dict[str, str], dict[str, Any]]) -> tuple:
    ids, props = entry
    return ids, "purchase", props


def _bytes_list(args: argparse.Namespace) -> dict[str, Any]:
    """The baseline: the same events encoded once by msgspec, kept in a list."""
    import msgspec

    pool = typical_pool()
    encode = msgspec.json.Encoder().encode
    now = time.time
    n = args.events
    size = len(pool)
    kept: list[bytes] = []
    gc.collect()
    before = rss_bytes()
    for i in range(n):
        ids, props = pool[i % size]
        kept.append(
            encode(
                {
                    "customer_ids": ids,
                    "event_type": "purchase",
                    "timestamp": now(),
                    "properties": props,
                }
            )
        )
    gc.collect()
    after = rss_bytes()
    return {
        "mode": args.worker,
        "events": n,
        "rss_before_bytes": before,
        "rss_after_bytes": after,
        "max_rss_bytes": max_rss_bytes(),
        "bytes_per_event": (after - before) / n,
        "held_by_client": len(kept),
        "queued": len(kept),
        "in_flight": 0,
        "encoded_body_bytes": len(kept[-1]),
        "python_object_bytes": {"body": sys.getsizeof(kept[-1]), "list_slot": 8},
    }


def _settle_memory() -> dict[str, int]:
    """Collect, give freed heap back to the system, and read the process's state."""
    import ctypes

    gc.collect()
    with contextlib.suppress(OSError, AttributeError):  # not glibc
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    return {
        "rss_bytes": rss_bytes(),
        # Python's own live memory blocks and gc-tracked objects: if these stay
        # flat while RSS moves, nothing is being kept.
        "allocated_blocks": sys.getallocatedblocks(),
        "gc_objects": len(gc.get_objects()),
    }


async def _bursts(args: argparse.Namespace) -> dict[str, Any]:
    """Bursts of ``--events`` events to the fake server, each followed by a
    flush, a full collection and ``malloc_trim``; the state after each."""
    from _common import event_pool, produce
    from _reference import send_reference

    from trackasync import Client, PrivateKey

    pool = event_pool(args.event)
    after: list[dict[str, int]] = []
    if args.worker == "bursts_floor":
        for _ in range(args.bursts):
            await send_reference(
                base_url=args.url,
                project_token=args.project_token,
                key_id=args.key_id,
                secret=args.secret,
                pool=pool,
                events=args.events,
                in_flight=4,
                use_msgspec=True,
                timeout=120.0,
            )
            after.append(_settle_memory())
    else:
        client = Client(
            args.url,
            args.project_token,
            auth=PrivateKey(args.key_id, args.secret),
            rate_limit=None,
            max_in_flight=4,
        )
        async with client:
            for _ in range(args.bursts):
                await produce(client, pool, args.events, awaited=True)
                await drain(client, timeout=120.0)
                after.append(_settle_memory())
    return {"mode": args.worker, "events": args.events, "after_each_burst": after}


def worker(args: argparse.Namespace) -> int:
    pinned = pin(args.cpu)
    if args.worker.startswith("bursts_"):
        result = asyncio.run(_bursts(args))
    elif args.worker == "bytes_list":
        result = _bytes_list(args)
    else:
        result = asyncio.run(_fill(args))
    result["pinned"] = pinned
    print(json.dumps(result), flush=True)
    return 0


def orchestrate(args: argparse.Namespace) -> dict[str, Any]:
    runs: dict[str, list[dict[str, Any]]] = {mode: [] for mode in (*MODES, BASELINE)}
    with fake_server(response_delay=HANG_SECONDS) as server:
        for _ in range(args.rounds):
            for mode in runs:
                child = [__file__, "--worker", mode, "--events", str(args.events)]
                if mode == "hung_server":
                    child += [
                        "--url",
                        server.base_url,
                        "--project-token",
                        server.project_token,
                        "--key-id",
                        server.key_id,
                        "--secret",
                        server.secret,
                    ]
                runs[mode].append(python_child(child, cpu=CLIENT_CPU, timeout=120))
        server_stats = server.stats()
    bursts = _run_bursts(args) if args.bursts else None
    summary: dict[str, Any] = {}
    for mode, results in runs.items():
        summary[mode] = {
            "bytes_per_event": spread([r["bytes_per_event"] for r in results], 1, 1),
            "rss_growth_mib": spread(
                [r["rss_after_bytes"] - r["rss_before_bytes"] for r in results],
                2**-20,
                2,
            ),
            "rss_before_mib": spread(
                [r["rss_before_bytes"] for r in results], 2**-20, 1
            ),
            "held_by_client": results[0]["held_by_client"],
            "in_flight": results[0]["in_flight"],
        }
    worst = max(summary[m]["bytes_per_event"]["median"] for m in MODES)
    return {
        "settings": {
            "events": args.events,
            "rounds": len(runs[MODES[0]]),
            "client": "rate_limit=None, max_queue=2*events, linger=3600, "
            "max_in_flight=4; producer: track_nowait in a loop",
            "server": "hung_server: fake server in a child process pinned to the "
            f"other core, answering after {HANG_SECONDS:.0f} s; it answered "
            f"{server_stats['requests']} requests and stored "
            f"{server_stats['events']} events in all",
        },
        "summary": summary,
        "target": {
            "what": "RSS growth per queued typical event (worst mode, median)",
            "limit_bytes": TARGET_BYTES,
            "measured_bytes": worst,
            "met": worst <= TARGET_BYTES,
        },
        "runs": runs,
        **({"bursts": bursts} if bursts else {}),
    }


BURST_MODES = ("bursts_trackasync", "bursts_floor")


def _run_bursts(args: argparse.Namespace) -> dict[str, Any]:
    """Each mode in its own fresh process against a fresh, answering server."""
    runs: dict[str, list[dict[str, Any]]] = {mode: [] for mode in BURST_MODES}
    for _ in range(args.burst_rounds):
        for mode in BURST_MODES:
            with fake_server() as server:
                child = [
                    __file__,
                    "--worker",
                    mode,
                    "--events",
                    str(args.burst_events),
                    "--bursts",
                    str(args.bursts),
                    "--event",
                    args.event,
                    "--url",
                    server.base_url,
                    "--project-token",
                    server.project_token,
                    "--key-id",
                    server.key_id,
                    "--secret",
                    server.secret,
                ]
                runs[mode].append(python_child(child, cpu=CLIENT_CPU, timeout=900))
    summary: dict[str, Any] = {}
    # Growth from the end of the first burst (imports, pools and caches all
    # warm) to the end of the last, per burst after the first.
    steps = max(1, args.bursts - 1)
    for mode, results in runs.items():

        def growth(key: str, results: list[dict[str, Any]] = results) -> list[float]:
            return [
                (r["after_each_burst"][-1][key] - r["after_each_burst"][0][key]) / steps
                for r in results
            ]

        summary[mode] = {
            "rss_mib_per_burst": spread(growth("rss_bytes"), 2**-20, 2),
            "allocated_blocks_per_burst": spread(growth("allocated_blocks"), 1, 0),
            "gc_objects_per_burst": spread(growth("gc_objects"), 1, 0),
            "rss_mib_after_each_burst": [
                [round(b["rss_bytes"] / 2**20, 2) for b in r["after_each_burst"]]
                for r in results
            ],
        }
    return {
        "settings": {
            "bursts": args.bursts,
            "events_per_burst": args.burst_events,
            "event": args.event,
            "rounds": args.burst_rounds,
            "after_each_burst": "flush (drain), gc.collect(), malloc_trim(0)",
        },
        "summary": summary,
        "runs": runs,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a fast smoke run")
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=5, help="processes per mode")
    parser.add_argument(
        "--bursts",
        type=int,
        default=8,
        help="also: bursts of --burst-events to an answering server, RSS after "
        "each (0: skip)",
    )
    parser.add_argument("--burst-events", type=int, default=100_000)
    parser.add_argument("--burst-rounds", type=int, default=2)
    parser.add_argument("--event", choices=EVENT_KINDS, default="typical")
    parser.add_argument("--out", help="also write the JSON report to this file")
    parser.add_argument(
        "--worker", choices=(*MODES, BASELINE, *BURST_MODES), help=argparse.SUPPRESS
    )
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--project-token", help=argparse.SUPPRESS)
    parser.add_argument("--key-id", help=argparse.SUPPRESS)
    parser.add_argument("--secret", help=argparse.SUPPRESS)
    parser.add_argument("--cpu", type=int, default=CLIENT_CPU, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker(args)
    if args.quick:
        args.events, args.rounds = 20_000, 1
        args.bursts, args.burst_events, args.burst_rounds = 3, 20_000, 1
    return publish(args.out, lambda: orchestrate(args))


if __name__ == "__main__":
    sys.exit(main())
