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

The realistic event (``realistic_pool()``: 1,000 events cycled, with capitals
in strings, an explicit float ``timestamp`` and a ``datetime`` property in one
event of a hundred) is measured beside them with the same cases, plus two
breakdown rows, each over the same pool in the same loop shape:

- ``codec_event``: ``Codec.event`` alone (validation and encoding, with the
  timestamp already converted), also for the three fixed sizes;
- ``to_seconds``: converting the explicit timestamps alone (for the fixed
  sizes, whose timestamp is the default, ``now()`` is the matching row).

``gc_collect``: the time of one full ``gc.collect()`` while the application
holds a backlog of ``--backlog`` delivered ``Delivery`` objects, against the
same collection without them (both medians of ``--gc-samples``), per delivery;
everything else alive is frozen (``gc.freeze()``) first, so the difference is
the backlog's alone, and ``tracked`` counts the deliveries the collector sees.

To compare two versions of the library in one run, point ``PYTHONPATH`` at an
export of the other one's ``trackasync/`` (``git archive``) and run the script
for each, back to back; the report's ``source`` says which copy it measured.

Target: ``track_nowait`` at most 2.5 µs (median) for the typical event.

    python benchmarks/bench_enqueue.py            # full run
    python benchmarks/bench_enqueue.py --quick    # smoke run
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import importlib
import importlib.util
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import msgspec
from _common import (
    CLIENT_CPU,
    TYPICAL_TYPE,
    drain,
    emit,
    event_sizes,
    header,
    median,
    pin,
    realistic_pool,
    spread,
)

import trackasync
from trackasync import Response

TARGET_TYPICAL_NOWAIT_US = 2.5


def _answers(response: Any = Response) -> tuple[Any, dict[int, Any]]:
    """The single-route answer and the batch answers for 1 to 50 commands."""
    batch = {
        n: response(
            200,
            msgspec.json.encode(
                {
                    "success": True,
                    "results": [
                        {"success": True, "command_id": str(i)} for i in range(n)
                    ],
                }
            ),
        )
        for n in range(1, 51)
    }
    return response(200, b'{"success": true}'), batch


_ok_single, _batch_answers = _answers()


class NullTransport:
    """Accepts every command at once, without sockets (answers precomputed).

    ``response`` is the library's ``Response`` class (another copy's, when a
    baseline library is measured beside the current one).
    """

    def __init__(self, response: Any = Response) -> None:
        self.requests = 0
        self._single, self._batch = (
            (_ok_single, _batch_answers) if response is Response else _answers(response)
        )

    async def send(self, request: trackasync.Request) -> Response:
        self.requests += 1
        if not request.url.endswith("/batch"):
            return self._single  # type: ignore[no-any-return]
        body = request.body or b""
        return self._batch[body.count(b'"command_id":')]  # type: ignore[no-any-return]

    async def aclose(self) -> None:
        pass


def _empty(ids: Any, event_type: Any, props: Any) -> None:
    return None


def _load_library(root: str, name: str = "trackasync_baseline") -> ModuleType:
    """Import the ``trackasync/`` package found in ``root`` as ``name``, beside
    the current one (the package uses only relative imports, so it can)."""
    init = Path(root) / "trackasync" / "__init__.py"
    spec = importlib.util.spec_from_file_location(
        name, init, submodule_search_locations=[str(init.parent)]
    )
    if spec is None or spec.loader is None:
        raise SystemExit(f"no trackasync package in {root}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _private(library: ModuleType, module: str) -> ModuleType:
    return importlib.import_module(f"{library.__name__}.{module}")


Case = tuple[str, str, str, Callable[[], Any]]  # library, size, name, timed call


def _cases(
    label: str,
    library: ModuleType,
    client: Any,
    encode: Callable[[Any], bytes],
    batch: int,
    sizes_bytes: dict[str, int],
) -> list[Case]:
    """Every timed case of one library: three fixed sizes and the realistic pool."""
    codec_event = _private(library, "_encoding").Codec(library.Limits()).event
    now = _private(library, "_timestamps").now
    to_seconds = _private(library, "_timestamps").to_seconds
    cases: list[Case] = []
    for size, (ids, event_type, props) in event_sizes().items():
        sizes_bytes[size] = len(client.track_nowait(ids, event_type, props).body)
        event = {
            "customer_ids": ids,
            "event_type": event_type,
            "timestamp": 1_780_000_000.123456,
            "properties": props,
        }

        def nowait(ids=ids, t=event_type, p=props, f=client.track_nowait) -> None:
            for _ in range(batch):
                f(ids, t, p)

        async def awaited(ids=ids, t=event_type, p=props, f=client.track) -> None:
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

        def codec(ids=ids, t=event_type, p=props, f=codec_event) -> None:
            for _ in range(batch):
                f(ids, t, p, 1_780_000_000.123456)

        def stamp(f=now) -> None:
            for _ in range(batch):
                f()

        cases += [
            (label, size, "track_nowait", nowait),
            (label, size, "await_track", awaited),
            (label, size, "msgspec_encode", floor),
            (label, size, "msgspec_build_encode", build),
            (label, size, "empty_call", empty),
            (label, size, "codec_event", codec),
            (label, size, "now", stamp),
        ]
    realistic = _realistic_cases(
        client, codec_event, to_seconds, encode, batch, sizes_bytes
    )
    return cases + [(label, *case) for case in realistic]


def _results(
    timings: dict[str, dict[str, list[float]]], sizes_bytes: dict[str, int]
) -> dict[str, Any]:
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
    return results


async def _run(args: argparse.Namespace) -> dict[str, Any]:
    libraries: dict[str, ModuleType] = {"current": trackasync}
    if args.baseline:
        libraries["baseline"] = _load_library(args.baseline)
    # First, while the process holds little else: see ``_gc_backlog``.
    gc_report = {
        label: _gc_backlog(library, args.backlog, args.gc_samples)
        for label, library in libraries.items()
    }
    encode = msgspec.json.Encoder().encode
    batch = args.batch
    timings: dict[str, dict[str, dict[str, list[float]]]] = {}
    sizes_bytes: dict[str, dict[str, int]] = {}
    clients: dict[str, Any] = {}
    cases: list[Case] = []
    async with contextlib.AsyncExitStack() as stack:
        for label, library in libraries.items():
            client = library.Client(
                "http://127.0.0.1:9",  # never contacted: the transport answers
                "bench-project",
                auth=library.PrivateKey("key", "secret"),
                transport=NullTransport(library.Response),
                rate_limit=None,
                linger=3600.0,
                max_queue=max(10_000, 2 * args.batch),
            )
            clients[label] = await stack.enter_async_context(client)
            sizes_bytes[label] = {}
            mine = _cases(label, library, client, encode, batch, sizes_bytes[label])
            cases += mine
            timings[label] = {}
            for _, size, name, _fn in mine:
                timings[label].setdefault(size, {})[name] = []
            await drain(client)

        deadline = time.perf_counter() + args.max_seconds
        rounds = 0
        groups: dict[tuple[str, str], list[Case]] = {}
        for case in cases:
            groups.setdefault((case[0], case[1]), []).append(case)
        group_order = list(groups)
        while rounds < args.warmup + args.samples:
            rounds += 1
            # Within each size, the order rotates every round: the first case
            # after another size meets a cold heap (new pages to fault in, for
            # the large event), and no case should always be that one. The
            # libraries alternate which goes first, so neither always follows
            # the other.
            ordered = []
            for key in group_order:
                group = groups[key]
                shift = rounds % len(group)
                ordered += group[shift:] + group[:shift]
            if rounds % 2:
                ordered.reverse()
            for label, size, name, fn in ordered:
                client = clients[label]
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
                    timings[label][size][name].append(elapsed / batch)
            if time.perf_counter() > deadline:
                break
        stats = clients["current"].stats()

    mine = timings["current"]
    typical = median(mine["typical"]["track_nowait"]) * 1e6
    realistic = median(mine["realistic"]["track_nowait"]) * 1e6
    report: dict[str, Any] = {
        "settings": {
            "batch": batch,
            "samples_per_case": len(mine["typical"]["track_nowait"]),
            "warmup_rounds": args.warmup,
            "rounds_run": rounds,
            "client": "rate_limit=None, linger=3600, null transport; "
            "drained with flush() between batches (untimed); each timed batch of "
            "track_nowait / await track follows an untimed one of the same call",
            "gc": "enabled" if gc.isenabled() else "disabled",
            "pinned_to_cpu": args.pinned,
            "baseline": args.baseline,
        },
        "results_us_per_call": _results(mine, sizes_bytes["current"]),
        "realistic_vs_typical_track_nowait": round(realistic / typical, 2),
    }
    if "baseline" in timings:
        base = timings["baseline"]
        report["baseline_us_per_call"] = _results(base, sizes_bytes["baseline"])
        # Same run, same rounds: the ratio of medians, current / baseline.
        report["current_vs_baseline"] = {
            size: {
                name: round(median(values) / median(base[size][name]), 3)
                for name, values in by_name.items()
            }
            for size, by_name in mine.items()
        }
    report["gc_collect"] = gc_report
    report["client_stats"] = {
        "enqueued": stats.enqueued,
        "delivered": stats.delivered,
        "requests": stats.requests,
    }
    report["target"] = {
        "what": "track_nowait median, typical event",
        "limit_us": TARGET_TYPICAL_NOWAIT_US,
        "measured_us": round(typical, 3),
        "met": typical <= TARGET_TYPICAL_NOWAIT_US,
    }
    return report


def _realistic_cases(
    client: Any,
    codec_event: Callable[..., bytes],
    to_seconds: Callable[[object, str], float],
    encode: Callable[[Any], bytes],
    batch: int,
    sizes_bytes: dict[str, int],
) -> list[tuple[str, str, Callable[[], Any]]]:
    """The realistic pool, cycled ``batch`` events per timing, every case in the
    same loop shape (one pool entry per call) so their figures compare."""
    pool = realistic_pool()
    cycle = [pool[i % len(pool)] for i in range(batch)]
    converted = [(ids, props, to_seconds(ts, "timestamp")) for ids, props, ts in cycle]
    events = [
        {
            "customer_ids": ids,
            "event_type": TYPICAL_TYPE,
            "timestamp": ts,
            "properties": props,
        }
        for ids, props, ts in converted
    ]
    sizes_bytes["realistic"] = round(
        sum(len(codec_event(i, TYPICAL_TYPE, p, t)) for i, p, t in converted)
        / len(converted)
    )
    t = TYPICAL_TYPE

    def nowait(f=client.track_nowait) -> None:
        for ids, props, ts in cycle:
            f(ids, t, props, timestamp=ts)

    async def awaited(f=client.track) -> None:
        for ids, props, ts in cycle:
            await f(ids, t, props, timestamp=ts)

    def floor() -> None:
        # msgspec writes datetimes itself (with their offset): the floor only.
        for event in events:
            encode(event)

    def empty() -> None:
        for ids, props, _ts in cycle:
            _empty(ids, t, props)

    def codec(f=codec_event) -> None:
        for ids, props, ts in converted:
            f(ids, t, props, ts)

    def seconds(f=to_seconds) -> None:
        for _ids, _props, ts in cycle:
            f(ts, "timestamp")

    return [
        ("realistic", "track_nowait", nowait),
        ("realistic", "await_track", awaited),
        ("realistic", "msgspec_encode", floor),
        ("realistic", "empty_call", empty),
        ("realistic", "codec_event", codec),
        ("realistic", "to_seconds", seconds),
    ]


def _gc_backlog(library: ModuleType, backlog: int, samples: int) -> dict[str, Any]:
    """Full collections with and without ``backlog`` delivered deliveries held,
    alternating, so the difference is what the backlog costs the collector."""
    body = b'{"customer_ids":{"registered":"ann"},"event_type":"view"}'
    delivery_module = _private(library, "_delivery")
    Delivery, Accepted = delivery_module.Delivery, delivery_module.Accepted
    accepted = Accepted(200, "req", 1.0)

    def held() -> list[Any]:
        deliveries = [Delivery("customers/events", body, 0.0) for _ in range(backlog)]
        for delivery in deliveries:
            delivery._settle(accepted)
        return deliveries

    def collect() -> float:
        start = time.perf_counter()
        gc.collect()
        return time.perf_counter() - start

    # Everything alive so far goes to the permanent generation, which
    # collections skip: what is left to collect is the backlog alone.
    gc.collect()
    gc.freeze()
    try:
        tracked = 0
        with_backlog: list[float] = []
        without: list[float] = []
        for _ in range(samples):
            deliveries = held()
            tracked = sum(gc.is_tracked(delivery) for delivery in deliveries)
            with_backlog.append(collect())
            del deliveries
            without.append(collect())
    finally:
        gc.unfreeze()
    extra = median(with_backlog) - median(without)
    return {
        "backlog": backlog,
        "tracked": tracked,
        "collect_ms_with_backlog": spread(with_backlog, 1e3),
        "collect_ms_without": spread(without, 1e3),
        "us_per_delivery": round(extra / backlog * 1e6, 4),
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
    parser.add_argument(
        "--backlog", type=int, default=100_000, help="delivered objects held, gc"
    )
    parser.add_argument(
        "--gc-samples", type=int, default=15, help="collections timed per case"
    )
    parser.add_argument(
        "--baseline",
        metavar="DIR",
        help="also measure the trackasync/ package in DIR, in the same run "
        "(e.g. git archive main trackasync | tar -x -C DIR)",
    )
    parser.add_argument("--cpu", type=int, default=CLIENT_CPU, help="core to pin to")
    parser.add_argument("--out", help="also write the JSON report to this file")
    args = parser.parse_args(argv)
    if args.quick:
        args.samples, args.warmup, args.max_seconds = 20, 3, 30.0
        args.backlog, args.gc_samples = 20_000, 5
    report = header()
    args.pinned = pin(args.cpu)
    report.update(asyncio.run(_run(args)))
    emit(report, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
