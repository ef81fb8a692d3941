"""Memory: RSS per queued event, and the RSS of a default client full of 100 KB events.

A fresh child process (pinned to core 0) opens a client with **the client's
default options** (only the URL, token and credentials, and in one mode the
transport), while the API does not answer, and queues events with
``track_nowait`` until the queue refuses one (``QueueFull``) or ``--events``
were offered, yielding to the loop every 100 events as a producer would. It
reads its resident set size from ``/proc/self/statm`` before the first event
and after the last (each after a full ``gc.collect()``). The growth divided by
the number of commands the client then holds (queued and in flight) is the
cost of one queued event: its ``Delivery`` handle, its encoded body and its
queue slot.

Two ways of "not answering", each measured in its own fresh process:

- ``hang_transport``: a transport whose ``send`` never returns (no sockets);
- ``hung_server``: the real aiohttp transport and the fake server in another
  process, delaying every answer by an hour.

Either way the client sends its first ``max_in_flight`` requests, which hang,
and queues the rest. The events come from a pool of 1,000 distinct typical
events built before the first reading, as an application's own objects would
be: only what the client keeps is counted.

The baseline in the same run, ``bytes_list``, keeps the same number of events
encoded once by msgspec in a plain list: about the least memory any queue of
encoded events can take. Figures are medians over ``--rounds`` fresh processes
per mode.

The second baseline, ``handle_floor``, keeps each of those events as the least
any queue of trackasync's handles can hold: a ``Delivery`` (the object every
call returns) with an exact-size copy of its body, its own creation time and
its own sequence number, in a ``deque``. Nothing the client adds (over-allocated
bodies, its table, its indexes) is in it: a target below it cannot be met while
each call returns a handle.

``big_hung_server``: the same default client and hung server, fed the "big"
events of ``_common.big_pool`` (about 100 KB of JSON each) until the queue
refuses one; reported: the process's peak RSS (``ru_maxrss``, the interpreter
and imports included) and what the client holds. ``--big-rss-cap`` stops the
filling early (the report says so) to protect the machine.

Targets: at most 400 bytes of RSS per queued typical event (the worse of the
two modes), and a default client full of 100 KB events under 300 MB of peak
RSS (1 MB = 10**6 bytes).

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
    event_pool,
    fake_server,
    max_rss_bytes,
    pin,
    publish,
    python_child,
    rss_bytes,
    spread,
    stamp_of,
    typical_pool,
)

MODES = ("hang_transport", "hung_server")
BASELINE = "bytes_list"
HANDLES = "handle_floor"
BIG = "big_hung_server"
TARGET_BYTES = 400
TARGET_BIG_BYTES = 300_000_000
HANG_SECONDS = 3600.0


def default_max_queue() -> int:
    """The client's default queue size, read from its signature."""
    import inspect

    from trackasync import Client

    default = inspect.signature(Client).parameters["max_queue"].default
    return int(default)


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
    from trackasync import Client, PrivateKey, QueueFull

    big = args.worker == BIG
    pool = event_pool("big" if big else "typical")
    transport = HangTransport() if args.worker == "hang_transport" else None
    extra: dict[str, Any] = {}
    if transport is not None:
        extra["transport"] = transport
    if args.max_queue:
        extra["max_queue"] = args.max_queue
    # Default options otherwise: the queue, linger, in-flight, rate limit and
    # timeouts are the library's (the hang lasts far longer than the run).
    client = Client(
        args.url or "http://127.0.0.1:9",
        args.project_token or "bench-project",
        auth=PrivateKey(args.key_id or "key", args.secret or "secret"),
        **extra,
    )
    limit = args.events
    size = len(pool)
    cap = args.big_rss_cap * 2**20 if big else None
    capped = False
    refused = 0
    async with client:
        # Warm up the enqueue path once (codec caches, the background task) so
        # the first reading counts none of it; that one event stays held and
        # is left out. The aiohttp session and its connections (hung_server)
        # are only made once a batch leaves, so they are counted: a few hundred
        # KB at most.
        ids, props, stamp = pool[-1]
        warm = client.track_nowait(
            ids, "purchase", props, timestamp=stamp_of(stamp, 0, 1)
        )
        for _ in range(5):
            await asyncio.sleep(0)
        gc.collect()
        before = rss_bytes()
        held_before = client.stats().queued + client.stats().in_flight
        start = time.perf_counter()
        track_nowait = client.track_nowait
        offered = 0
        for i in range(limit):
            ids, props, stamp = pool[i % size]
            offered += 1
            try:
                if stamp is None:
                    track_nowait(ids, "purchase", props)
                else:
                    track_nowait(ids, "purchase", props, timestamp=stamp + i // size)
            except QueueFull:
                refused += 1
                break
            if i % 100 == 99:
                await asyncio.sleep(0)
                if cap is not None and rss_bytes() > cap:
                    capped = True
                    break
        enqueue_s = time.perf_counter() - start
        # Let the batcher hand its first batches to the (hanging) transport.
        for _ in range(20):
            await asyncio.sleep(0)
        await asyncio.sleep(0.05)
        gc.collect()
        after = rss_bytes()
        stats = client.stats()
        held = stats.queued + stats.in_flight - held_before
        sample = warm
        report = await client.aclose(timeout=0.5)
    body_bytes = len(sample.body)
    return {
        "mode": args.worker,
        "events": held,
        "offered": offered,
        "refused": refused,
        "dropped": stats.dropped,
        "stopped_at_rss_cap": capped,
        "rss_before_bytes": before,
        "rss_after_bytes": after,
        "max_rss_bytes": max_rss_bytes(),
        "bytes_per_event": (after - before) / max(1, held),
        "held_by_client": held,
        "queued": stats.queued,
        "in_flight": stats.in_flight,
        "requests_started": stats.requests,
        "enqueue_us_per_event": enqueue_s / max(1, offered) * 1e6,
        "encoded_body_bytes": body_bytes,
        "python_object_bytes": {
            "delivery": sys.getsizeof(sample),
            "body": sys.getsizeof(sample.body),
            "queue_slot": 8,
        },
        "closed_undelivered": len(report.undelivered),
    }


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
    return _baseline_result(
        args.worker,
        n,
        before,
        len(kept[-1]),
        {"body": sys.getsizeof(kept[-1]), "list_slot": 8},
    )


def _baseline_result(
    mode: str, n: int, before: int, body_bytes: int, objects: dict[str, int]
) -> dict[str, Any]:
    """A baseline's report, its ``n`` events still held (RSS is read here)."""
    after = rss_bytes()
    return {
        "mode": mode,
        "events": n,
        "rss_before_bytes": before,
        "rss_after_bytes": after,
        "max_rss_bytes": max_rss_bytes(),
        "bytes_per_event": (after - before) / n,
        "held_by_client": n,
        "queued": n,
        "in_flight": 0,
        "encoded_body_bytes": body_bytes,
        "python_object_bytes": objects,
    }


def _handle_floor(args: argparse.Namespace) -> dict[str, Any]:
    """The handle baseline: each event as a ``Delivery`` with an exact-size body."""
    from collections import deque

    import msgspec

    from trackasync._delivery import Delivery

    pool = typical_pool()
    encode_into = msgspec.json.Encoder().encode_into
    buffer = bytearray()
    now = time.time
    n = args.events
    size = len(pool)
    kept: deque[Delivery] = deque()
    gc.collect()
    before = rss_bytes()
    for i in range(n):
        ids, props = pool[i % size]
        stamp = now()
        encode_into(
            {
                "customer_ids": ids,
                "event_type": "purchase",
                "timestamp": stamp,
                "properties": props,
            },
            buffer,
        )
        # bytes(buffer) is an exact-size copy; seq above 256 is an int of its
        # own, as the client's sequence numbers are.
        kept.append(Delivery("customers/events", bytes(buffer), stamp, 1, 1_000 + i))
    gc.collect()
    sample = kept[-1]
    return _baseline_result(
        args.worker,
        n,
        before,
        len(sample.body),
        {
            "delivery": sys.getsizeof(sample),
            "body": sys.getsizeof(sample.body),
            "created": sys.getsizeof(sample.created),
            "seq": sys.getsizeof(sample.seq),
            "deque_slot": 8,
        },
    )


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
    elif args.worker == BASELINE:
        result = _bytes_list(args)
    elif args.worker == HANDLES:
        result = _handle_floor(args)
    else:
        result = asyncio.run(_fill(args))
    result["pinned"] = pinned
    print(json.dumps(result), flush=True)
    return 0


def orchestrate(args: argparse.Namespace) -> dict[str, Any]:
    queue = args.max_queue or default_max_queue()
    # Offer more than the queue takes: the fill stops at the first QueueFull.
    offer = args.events or queue + 1_000
    big_offer = args.big_events or queue + 1_000
    runs: dict[str, list[dict[str, Any]]] = {
        mode: [] for mode in (*MODES, BASELINE, HANDLES, BIG)
    }
    with fake_server(response_delay=HANG_SECONDS) as server:
        server_args = [
            "--url",
            server.base_url,
            "--project-token",
            server.project_token,
            "--key-id",
            server.key_id,
            "--secret",
            server.secret,
        ]
        for round_no in range(max(args.rounds, args.big_rounds)):
            for mode in runs:
                if mode == BIG and round_no >= args.big_rounds:
                    continue
                if mode != BIG and round_no >= args.rounds:
                    continue
                if mode in (BASELINE, HANDLES):
                    # As many events as the client held in this round's runs.
                    held = [r["held_by_client"] for m in MODES for r in runs[m][-1:]]
                    count = min(held) if held else offer
                else:
                    count = big_offer if mode == BIG else offer
                child = [__file__, "--worker", mode, "--events", str(count)]
                if args.max_queue:
                    child += ["--max-queue", str(args.max_queue)]
                if mode in ("hung_server", BIG):
                    child += server_args
                if mode == BIG:
                    child += ["--big-rss-cap", str(args.big_rss_cap)]
                runs[mode].append(python_child(child, cpu=CLIENT_CPU, timeout=300))
                server.reset()  # forget the hung requests' bodies
        server_stats = server.stats()
    bursts = _run_bursts(args) if args.bursts else None
    summary: dict[str, Any] = {}
    for mode, results in runs.items():
        if not results:
            continue
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
            "max_rss_mb": spread([r["max_rss_bytes"] for r in results], 1e-6, 1),
            "held_by_client": results[0]["held_by_client"],
            "in_flight": results[0]["in_flight"],
            "refused": results[0].get("refused", 0),
            "stopped_at_rss_cap": any(r.get("stopped_at_rss_cap") for r in results),
        }
    worst = max(summary[m]["bytes_per_event"]["median"] for m in MODES)
    targets: dict[str, Any] = {
        "bytes_per_queued_typical_event": {
            "what": "RSS growth per queued typical event, default client (worst "
            "mode, median)",
            "limit_bytes": TARGET_BYTES,
            "measured_bytes": worst,
            "met": worst <= TARGET_BYTES,
        }
    }
    if HANDLES in summary:
        floor = summary[HANDLES]["bytes_per_event"]["median"]
        targets["handle_floor"] = {
            "what": "information only: RSS per event of the handle baseline "
            "(a Delivery with an exact-size body, in a deque): the least any "
            "queue of handles can take",
            "measured_bytes": floor,
            "limit_below_floor": floor > TARGET_BYTES,
        }
    if BIG in summary:
        big = summary[BIG]
        peak = big["max_rss_mb"]["median"] * 1e6
        targets["peak_rss_default_client_big_events"] = {
            "what": "peak RSS of the process, a default client holding all the "
            "~100 KB events it takes (median)",
            "limit_mb": TARGET_BIG_BYTES / 1e6,
            "measured_mb": round(peak / 1e6, 1),
            "held_events": big["held_by_client"],
            "stopped_at_rss_cap": big["stopped_at_rss_cap"],
            "met": peak <= TARGET_BIG_BYTES and not big["stopped_at_rss_cap"],
        }
    return {
        "settings": {
            "offered_events": offer,
            "big_offered_events": big_offer,
            "max_queue": queue,
            "rounds": len(runs[MODES[0]]),
            "big_rounds": len(runs[BIG]),
            "client": "default options (max_queue "
            + (f"{args.max_queue}" if args.max_queue else "default")
            + "); producer: track_nowait in a loop, sleep(0) every 100 events, "
            "stopping at the first QueueFull",
            "server": "hung_server: fake server in a child process pinned to the "
            f"other core, answering after {HANG_SECONDS:.0f} s; it answered "
            f"{server_stats['requests']} requests in all",
        },
        "summary": summary,
        "targets": targets,
        "all_targets_met": all(t.get("met", True) for t in targets.values()),
        # Kept under its old name too, for readers of earlier reports.
        "target": targets["bytes_per_queued_typical_event"],
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
    parser.add_argument(
        "--events",
        type=int,
        default=None,
        help="typical events offered (default: the queue's size + 1,000)",
    )
    parser.add_argument(
        "--max-queue", type=int, default=None, help="default: the client's default"
    )
    parser.add_argument("--rounds", type=int, default=5, help="processes per mode")
    parser.add_argument(
        "--big-events",
        type=int,
        default=None,
        help="100 KB events offered (default: the queue's size + 1,000)",
    )
    parser.add_argument("--big-rounds", type=int, default=2)
    parser.add_argument(
        "--big-rss-cap",
        type=float,
        default=4096.0,
        help="MiB: stop filling big events past this RSS",
    )
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
        "--worker",
        choices=(*MODES, BASELINE, HANDLES, BIG, *BURST_MODES),
        help=argparse.SUPPRESS,
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
        args.rounds, args.big_rounds = 1, 1
        args.bursts, args.burst_events, args.burst_rounds = 3, 20_000, 1
    return publish(args.out, lambda: orchestrate(args))


if __name__ == "__main__":
    sys.exit(main())
