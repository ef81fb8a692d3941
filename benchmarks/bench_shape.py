"""Cost of ``default_properties`` and ``before_send`` on ``track_nowait``.

Times batches of ``--batch`` ``track_nowait`` calls of the typical event (8
properties) for each case below and reports the median cost per call over
``--samples`` batches, measured round-robin in the same process (the order
rotating every round) so the machine's noise hits all cases alike. As in
``bench_enqueue.py``, a null transport accepts everything, ``linger`` is an
hour and the pipeline is drained between batches (not timed); each timed
batch follows an untimed, drained one.

- ``no_check``: the body ``track_nowait`` had before these options existed
  (copied here, bound to an unset client): the baseline;
- ``unset``: ``track_nowait`` as it is, neither option set (its only extra
  work is one attribute test);
- ``default_properties``: three default properties merged into every event;
- ``before_send_identity``: a hook that returns the event unchanged;
- ``before_send_redact``: a hook that pops one property (the e-mail case);
- ``both``: three default properties and the redacting hook.

    python benchmarks/bench_shape.py            # full run
    python benchmarks/bench_shape.py --quick    # smoke run
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Callable
from typing import Any

from _common import (
    CLIENT_CPU,
    TYPICAL_TYPE,
    drain,
    emit,
    event_sizes,
    header,
    pin,
    spread as _spread,
)
from bench_enqueue import NullTransport

import trackasync
from trackasync._delivery import Delivery
from trackasync._timestamps import to_seconds

_get_running_loop = asyncio._get_running_loop
_time_ns = time.time_ns

DEFAULTS = {"app_version": "4.2.0", "environment": "production", "region": "eu-1"}


def _no_check(
    self: Any,
    customer_ids: Any,
    event_type: str,
    properties: Any = None,
    *,
    timestamp: object = None,
) -> Delivery:
    """``Client.track_nowait`` as it was before the shaping check: the baseline."""
    if self._life.open_loop is not _get_running_loop():
        self._ensure_open()
    now = _time_ns() // 1000 / 1_000_000
    delivery = Delivery(
        "customers/events",
        self._encode_event(
            customer_ids,
            event_type,
            properties,
            now if timestamp is None else to_seconds(timestamp, "timestamp"),
        ),
        now,
        self._owner,
    )
    self._offer(delivery)
    return delivery


def _identity(event: trackasync.Event) -> trackasync.Event | None:
    return event


def _redact(event: trackasync.Event) -> trackasync.Event | None:
    event.properties.pop("campaign", None)
    return event


CASES: dict[str, dict[str, Any]] = {
    "no_check": {},
    "unset": {},
    "default_properties": {"default_properties": DEFAULTS},
    "before_send_identity": {"before_send": _identity},
    "before_send_redact": {"before_send": _redact},
    "both": {"default_properties": DEFAULTS, "before_send": _redact},
}


async def _run(args: argparse.Namespace) -> dict[str, Any]:
    ids, event_type, props = event_sizes()["typical"]
    assert event_type == TYPICAL_TYPE
    clients: dict[str, trackasync.Client] = {}
    calls: dict[str, Callable[[], None]] = {}
    for name, options in CASES.items():
        client = trackasync.Client(
            "http://127.0.0.1:9",  # never contacted: the transport answers
            "bench",
            auth=trackasync.PrivateKey("k", "s"),
            transport=NullTransport(),  # type: ignore[arg-type]
            rate_limit=None,
            linger=3600.0,
            max_queue=max(10_000, 2 * args.batch),
            **options,
        )
        await client.__aenter__()
        clients[name] = client
        track = client.track_nowait
        if name == "no_check":
            track = _no_check.__get__(client)

        def batch(
            f: Callable[..., Any] = track, n: int = args.batch, t: str = event_type
        ) -> None:
            for _ in range(n):
                f(ids, t, props)

        calls[name] = batch
    timings: dict[str, list[float]] = {name: [] for name in CASES}
    order = list(CASES)
    deadline = time.perf_counter() + args.max_seconds
    rounds = 0
    while rounds < args.warmup + args.samples:
        rounds += 1
        shift = rounds % len(order)
        ordered = order[shift:] + order[:shift]
        if rounds % 2:
            ordered.reverse()
        for name in ordered:
            client = clients[name]
            calls[name]()  # untimed: a warm heap for the timed batch
            await drain(client)
            start = time.perf_counter()
            calls[name]()
            elapsed = time.perf_counter() - start
            await drain(client)
            if rounds > args.warmup:
                timings[name].append(elapsed / args.batch)
        if time.perf_counter() > deadline:
            break
    checks = {}
    for name, client in clients.items():
        stats = client.stats()
        checks[name] = {"enqueued": stats.enqueued, "delivered": stats.delivered}
        await client.aclose()
    base = sorted(timings["no_check"])[len(timings["no_check"]) // 2]
    per_call = {name: _spread(values, 1e6) for name, values in timings.items()}
    return {
        "settings": {
            "batch": args.batch,
            "samples": len(timings["no_check"]),
            "warmup": args.warmup,
            "pinned": args.pinned,
            "event": "typical (8 properties)",
            "default_properties": DEFAULTS,
        },
        "track_nowait_us": per_call,
        "vs_no_check_us": {
            name: round(v["median"] - base * 1e6, 3) for name, v in per_call.items()
        },
        "checks": checks,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a fast smoke run")
    parser.add_argument("--batch", type=int, default=1000, help="calls per timing")
    parser.add_argument("--samples", type=int, default=200, help="timings per case")
    parser.add_argument("--warmup", type=int, default=10, help="untimed rounds")
    parser.add_argument(
        "--max-seconds", type=float, default=240.0, help="stop sampling after this"
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
