"""Enqueue cost: ``track_nowait`` and ``await track`` per event, against msgspec alone.

For a small (3 properties), a typical (8 properties, about 300 bytes of JSON) and
a large (about 10 KB) event, it times batches of ``--batch`` calls with
``time.perf_counter`` and reports the median cost per call over ``--samples``
batches. Between two batches the client's pipeline is drained (``flush()``,
not timed) through a null transport that accepts everything, so a batch times
the calls alone: with a long ``linger`` and a queue larger than a batch, no
request is built while the clock runs (the calls never yield to the event
loop). Each timed batch of a queueing call follows an untimed, drained batch
of the same call, so it reuses warm memory as a long-running producer does.
All cases are measured round-robin in the same process (the order within a
size rotating every round), so the machine's noise hits them alike.

Floors, in the same run:

- ``msgspec_encode``: one reused ``msgspec.json.Encoder`` encoding the same
  event dict (ids, type, timestamp, properties), already built: the floor.
- ``msgspec_build_encode``: building that dict with ``time.time()`` and then
  encoding it: what a minimal hand-written sender does per event.
- ``empty_call``: a Python function call with the same arguments that does
  nothing: the loop and call overhead included in every figure.

Target: ``track_nowait`` at most 2.5 µs (median) for the typical event.

    python benchmarks/bench_enqueue.py            # full run
    python benchmarks/bench_enqueue.py --quick    # smoke run
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import sys
import time
from collections.abc import Callable
from typing import Any

import msgspec
from _common import CLIENT_CPU, drain, emit, event_sizes, header, median, pin, spread

import trackasync
from trackasync import Client, PrivateKey, Response

TARGET_TYPICAL_NOWAIT_US = 2.5

_ok_single = Response(200, b'{"success": true}')
_batch_answers = {
    n: Response(
        200,
        msgspec.json.encode(
            {
                "success": True,
                "results": [{"success": True, "command_id": str(i)} for i in range(n)],
            }
        ),
    )
    for n in range(1, 51)
}


class NullTransport:
    """Accepts every command at once, without sockets (answers precomputed)."""

    def __init__(self) -> None:
        self.requests = 0

    async def send(self, request: trackasync.Request) -> Response:
        self.requests += 1
        if not request.url.endswith("/batch"):
            return _ok_single
        body = request.body or b""
        return _batch_answers[body.count(b'"command_id":')]

    async def aclose(self) -> None:
        pass


def _empty(ids: Any, event_type: Any, props: Any) -> None:
    return None


async def _run(args: argparse.Namespace) -> dict[str, Any]:
    sizes = event_sizes()
    encoder = msgspec.json.Encoder()
    encode = encoder.encode
    client = Client(
        "http://127.0.0.1:9",  # never contacted: the transport answers
        "bench-project",
        auth=PrivateKey("key", "secret"),
        transport=NullTransport(),
        rate_limit=None,
        linger=3600.0,
        max_queue=max(10_000, 2 * args.batch),
    )
    batch = args.batch
    timings: dict[str, dict[str, list[float]]] = {}
    sizes_bytes: dict[str, int] = {}
    async with client:
        cases: list[tuple[str, str, Callable[[], Any]]] = []
        for size, (ids, event_type, props) in sizes.items():
            body = client.track_nowait(ids, event_type, props).body
            sizes_bytes[size] = len(body)
            event = {
                "customer_ids": ids,
                "event_type": event_type,
                "timestamp": 1_780_000_000.123456,
                "properties": props,
            }
            track_nowait = client.track_nowait
            track = client.track

            def nowait(ids=ids, t=event_type, p=props, f=track_nowait) -> None:
                for _ in range(batch):
                    f(ids, t, p)

            async def awaited(ids=ids, t=event_type, p=props, f=track) -> None:
                for _ in range(batch):
                    await f(ids, t, p)

            def floor(event=event) -> None:
                for _ in range(batch):
                    encode(event)

            def build(ids=ids, t=event_type, p=props, now=time.time) -> None:
                for _ in range(batch):
                    encode(
                        {
                            "customer_ids": ids,
                            "event_type": t,
                            "timestamp": now(),
                            "properties": p,
                        }
                    )

            def empty(ids=ids, t=event_type, p=props) -> None:
                for _ in range(batch):
                    _empty(ids, t, p)

            cases += [
                (size, "track_nowait", nowait),
                (size, "await_track", awaited),
                (size, "msgspec_encode", floor),
                (size, "msgspec_build_encode", build),
                (size, "empty_call", empty),
            ]
            timings[size] = {name: [] for case, name, _ in cases if case == size}
        await drain(client)

        deadline = time.perf_counter() + args.max_seconds
        rounds = 0
        per_size = len(cases) // len(sizes)
        while rounds < args.warmup + args.samples:
            rounds += 1
            # Within each size, the order rotates every round: the first case
            # after another size meets a cold heap (new pages to fault in, for
            # the large event), and no case should always be that one.
            shift = rounds % per_size
            ordered = []
            for first in range(0, len(cases), per_size):
                group = cases[first : first + per_size]
                ordered += group[shift:] + group[:shift]
            for size, name, fn in ordered:
                queues = name in ("track_nowait", "await_track")
                if queues:
                    # An untimed batch first, drained: the timed one then meets
                    # a warm heap (its bodies reuse freed memory instead of
                    # faulting in new pages), as a long-running producer does.
                    # Without it, whichever call ran first after another case
                    # paid about 5 µs more per large event.
                    result = fn()
                    if asyncio.iscoroutine(result):
                        await result
                    await drain(client)
                start = time.perf_counter()
                result = fn()
                if asyncio.iscoroutine(result):
                    await result
                elapsed = time.perf_counter() - start
                if queues:
                    await drain(client)
                if rounds > args.warmup:
                    timings[size][name].append(elapsed / batch)
            if time.perf_counter() > deadline:
                break
        stats = client.stats()

    results: dict[str, Any] = {}
    for size, by_name in timings.items():
        floor_us = median(by_name["msgspec_encode"]) * 1e6
        entry: dict[str, Any] = {"encoded_bytes": sizes_bytes[size]}
        for name, values in by_name.items():
            entry[name] = {
                "us_per_call": spread(values, 1e6),
                "x_msgspec_encode": round(median(values) * 1e6 / floor_us, 2),
            }
        results[size] = entry
    typical = median(timings["typical"]["track_nowait"]) * 1e6
    return {
        "settings": {
            "batch": batch,
            "samples_per_case": len(timings["typical"]["track_nowait"]),
            "warmup_rounds": args.warmup,
            "rounds_run": rounds,
            "client": "rate_limit=None, linger=3600, null transport; "
            "drained with flush() between batches (untimed); each timed batch of "
            "track_nowait / await track follows an untimed one of the same call",
            "gc": "enabled" if gc.isenabled() else "disabled",
            "pinned_to_cpu": args.pinned,
        },
        "results_us_per_call": results,
        "client_stats": {
            "enqueued": stats.enqueued,
            "delivered": stats.delivered,
            "requests": stats.requests,
        },
        "target": {
            "what": "track_nowait median, typical event",
            "limit_us": TARGET_TYPICAL_NOWAIT_US,
            "measured_us": round(typical, 3),
            "met": typical <= TARGET_TYPICAL_NOWAIT_US,
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a fast smoke run")
    parser.add_argument("--batch", type=int, default=1000, help="calls per timing")
    parser.add_argument("--samples", type=int, default=400, help="timings per case")
    parser.add_argument("--warmup", type=int, default=20, help="untimed rounds")
    parser.add_argument(
        "--max-seconds", type=float, default=300.0, help="stop sampling after this"
    )
    parser.add_argument("--cpu", type=int, default=CLIENT_CPU, help="core to pin to")
    parser.add_argument("--out", help="also write the JSON report to this file")
    args = parser.parse_args(argv)
    if args.quick:
        args.samples, args.warmup, args.max_seconds = 20, 3, 30.0
    report = header()
    args.pinned = pin(args.cpu)
    report.update(asyncio.run(_run(args)))
    emit(report, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
