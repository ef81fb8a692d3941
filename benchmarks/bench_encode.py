"""Encoding cost: ``Codec.event`` per event, against msgspec alone, by event kind.

For each event kind of ``_common.event_pool`` (typical, realistic, tags,
purchase, big) it times ``Codec.event`` (validation, the checks of property
values and sizes, and the encode) over the pool's events, and beside it the
baseline: one reused plain ``msgspec.json.Encoder`` encoding the same event as
a dict (ids, type, timestamp, properties), already built. Each sample times one
pass over the pool for every case, in an order that rotates every sample, so
the machine's noise hits them alike; the ratio of a sample is taken within it
and the report gives the medians.

``--library DIR`` also measures the ``trackasync/`` package in DIR (e.g. main's
``git archive main trackasync | tar -x -C DIR``), imported beside this one in
the same process, round-robin with it: a before/after in one run.

Memory: for each kind, the bytes that ``tracemalloc`` sees held by the bodies
of one pass over the pool, per body, against their length (``msgspec``'s
``encode`` returns over-allocated bytes objects; ``sys.getsizeof`` does not
show it, as it counts the length only).

Goal: a "big" event (about 100 KB, between the 16 KB value limit and the
800 KB command limit) costs at most 1.3 times its plain encode.

    python benchmarks/bench_encode.py [--quick] [--samples 200] [--library DIR]
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import msgspec
from _common import CLIENT_CPU, emit, event_pool, header, median, pin, spread
from bench_enqueue import _load_library

import trackasync

KINDS = ("typical", "realistic", "tags", "purchase", "big")
EVENT_TYPE = "purchase"
#: The typical pool takes the default timestamp ("now"); a fixed one here.
DEFAULT_STAMP = 1_764_547_200.0
BIG_GOAL = 1.3


Events = list[tuple[dict[str, str], dict[str, Any], float]]


def _events(kind: str) -> Events:
    return [
        (ids, props, DEFAULT_STAMP if stamp is None else stamp)
        for ids, props, stamp in event_pool(kind)
    ]


def _codec_pass(library: ModuleType, events: Events) -> Callable[[], Any]:
    codec = importlib.import_module(f"{library.__name__}._encoding").Codec
    event = codec(library.Limits()).event

    def one_pass() -> list[bytes]:
        return [event(ids, EVENT_TYPE, props, stamp) for ids, props, stamp in events]

    return one_pass


def _msgspec_pass(events: Events) -> Callable[[], Any]:
    encode = msgspec.json.Encoder().encode
    dicts = [
        {
            "customer_ids": ids,
            "event_type": EVENT_TYPE,
            "timestamp": stamp,
            "properties": props,
        }
        for ids, props, stamp in events
    ]

    def one_pass() -> list[bytes]:
        return [encode(event) for event in dicts]

    return one_pass


def _held_per_body(one_pass: Callable[[], list[bytes]]) -> dict[str, float]:
    """Bytes held per body (tracemalloc) against len and sys.getsizeof."""
    one_pass()  # warm: caches and buffers are not the bodies' memory
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        bodies = one_pass()
        held = tracemalloc.get_traced_memory()[0] - before - sys.getsizeof(bodies)
    finally:
        tracemalloc.stop()
    count = len(bodies)
    return {
        "len": round(sum(map(len, bodies)) / count, 1),
        "getsizeof": round(sum(map(sys.getsizeof, bodies)) / count, 1),
        "held": round(held / count, 1),
    }


def _measure(args: argparse.Namespace) -> dict[str, Any]:
    libraries: dict[str, ModuleType] = {"tree": trackasync}
    if args.library:
        libraries["base"] = _load_library(args.library)
    kinds: dict[str, Any] = {}
    for kind in args.kinds:
        deadline = time.monotonic() + args.max_seconds / len(args.kinds)
        events = _events(kind)
        cases: dict[str, Callable[[], Any]] = {"msgspec": _msgspec_pass(events)}
        for label, library in libraries.items():
            cases[label] = _codec_pass(library, events)
        # The same bytes from every codec: a before/after of the same work.
        bodies = {label: case() for label, case in cases.items() if label != "msgspec"}
        same = len({tuple(b) for b in bodies.values()}) == 1
        names = list(cases)
        times: dict[str, list[float]] = {name: [] for name in names}
        ratios: dict[str, list[float]] = {name: [] for name in libraries}
        for _ in range(args.warmup):
            for case in cases.values():
                case()
        for sample in range(args.samples):
            shift = sample % len(names)
            this: dict[str, float] = {}
            for name in names[shift:] + names[:shift]:
                start = time.perf_counter()
                cases[name]()
                this[name] = (time.perf_counter() - start) / len(events)
            for name, seconds in this.items():
                times[name].append(seconds)
            for label in libraries:
                ratios[label].append(this[label] / this["msgspec"])
            if time.monotonic() > deadline:
                break
        result: dict[str, Any] = {
            "events": len(events),
            "body_bytes_median": median([len(b) for b in bodies["tree"]]),
            "same_bytes_across_libraries": same,
            "us_per_event": {
                name: spread(values, 1e6) for name, values in times.items()
            },
            "ratio_to_msgspec": {
                label: spread(values, 1.0) for label, values in ratios.items()
            },
            "memory_per_body": {
                name: _held_per_body(case) for name, case in cases.items()
            },
        }
        if kind == "big":
            result["goal_ratio"] = BIG_GOAL
            result["goal_met"] = result["ratio_to_msgspec"]["tree"]["median"] <= (
                BIG_GOAL
            )
        kinds[kind] = result
    return {
        "pinned": args.pinned,
        "samples": args.samples,
        "libraries": {
            label: str(Path(library.__file__ or "").resolve().parent)
            for label, library in libraries.items()
        },
        "kinds": kinds,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a fast smoke run")
    parser.add_argument("--samples", type=int, default=200, help="passes per case")
    parser.add_argument("--warmup", type=int, default=5, help="untimed passes")
    parser.add_argument(
        "--max-seconds",
        type=float,
        default=300.0,
        help="stop sampling after this (shared out among the kinds)",
    )
    parser.add_argument(
        "--kinds", nargs="+", choices=KINDS, default=list(KINDS), help="event kinds"
    )
    parser.add_argument(
        "--library",
        metavar="DIR",
        help="also measure the trackasync/ package in DIR, in the same run "
        "(e.g. git archive main trackasync | tar -x -C DIR)",
    )
    parser.add_argument("--cpu", type=int, default=CLIENT_CPU, help="core to pin to")
    parser.add_argument("--out", help="also write the JSON report to this file")
    args = parser.parse_args(argv)
    if args.quick:
        args.samples, args.warmup, args.max_seconds = 15, 2, 30.0
    report = header()
    args.pinned = pin(args.cpu)
    report.update(_measure(args))
    emit(report, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
