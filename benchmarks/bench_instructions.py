"""Instructions per ``track_nowait`` call, counted by valgrind: repeatable on a
busy machine, where timings are not.

It runs a small producer under ``valgrind --tool=callgrind`` twice, with
``--small`` and ``--large`` calls, and divides the difference in instructions by
the difference in calls, so that start-up and shutdown cancel out. The producer
queues the typical event (8 flat properties) or a purchase (a list, a nested
object, line items with prices, a datetime) with a long linger and ends with
``os._exit``, so only the intake is counted (no request, no close); the
collector is off, so a collection landing in one run and not the other cannot
skew it. Each copy of the library named with ``--library`` (a directory holding
a ``trackasync`` package, such as a ``git archive`` export of another commit) is
measured the same way, in the same run.

    python benchmarks/bench_instructions.py
    python benchmarks/bench_instructions.py --library /tmp/base --library .
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from _common import publish

_PRODUCER = """
import asyncio, gc, os, sys
gc.disable()
from trackasync import Client, PrivateKey
from trackasync.testing import RecordingTransport

import datetime

IDS = {"registered": "ann@example.com"}
EVENTS = {
    # The typical event: 8 flat properties.
    "typical": {"price": 12.5, "currency": "EUR", "product_id": "sku-1",
                "title": "A thing", "qty": 2, "category": "books",
                "in_stock": True, "rating": 4.5},
    # A purchase as shops send it: a list of strings, a nested object, line
    # items with prices, a datetime, capitals.
    "purchase": {"total_price": 61.97, "currency": "EUR", "Voucher": "WINTER-10",
                 "tags": ["gift", "express"],
                 "shipping": {"country": "SK", "method": "Courier", "cost": 4.99},
                 "items": [{"sku": "SKU-1", "name": "Mug", "price": 9.99, "qty": 2},
                           {"sku": "SKU-2", "name": "Teapot", "price": 42.0, "qty": 1}],
                 "ordered_at": datetime.datetime(2026, 12, 1, 12, 30,
                                                 tzinfo=datetime.timezone.utc)},
}
PROPS = EVENTS[sys.argv[2]]


async def main(calls: int) -> None:
    client = Client("https://api.example.test", "p", auth=PrivateKey("k", "s"),
                    transport=RecordingTransport(), linger=3600, rate_limit=None,
                    max_queue=calls + 10)
    client.track_nowait(IDS, "view", PROPS)
    track_nowait = client.track_nowait
    for _ in range(calls):
        track_nowait(IDS, "view", PROPS)
    os._exit(0)

asyncio.run(main(int(sys.argv[1])))
"""


def _instructions(library: Path, calls: int, event: str) -> int:
    env = {**os.environ, "PYTHONPATH": str(library), "PYTHONHASHSEED": "0"}
    done = subprocess.run(
        [
            "valgrind",
            "--tool=callgrind",
            "--callgrind-out-file=/dev/null",
            sys.executable,
            "-c",
            _PRODUCER,
            str(calls),
            event,
        ],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    found = re.search(r"Collected : (\d+)", done.stderr)
    if found is None:
        raise RuntimeError(f"valgrind said no total:\n{done.stderr[-2000:]}")
    return int(found.group(1))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--library", action="append", default=None)
    parser.add_argument("--small", type=int, default=2_000)
    parser.add_argument("--large", type=int, default=22_000)
    parser.add_argument(
        "--event", action="append", choices=("typical", "purchase"), default=None
    )
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        sys.exit("valgrind is not installed (apt-get install valgrind)")
    libraries = [Path(p).resolve() for p in (args.library or ["."])]

    def measure() -> dict[str, object]:
        results: dict[str, dict[str, int]] = {}
        for event in args.event or ["typical", "purchase"]:
            for library in libraries:
                small = _instructions(library, args.small, event)
                large = _instructions(library, args.large, event)
                per_call = round((large - small) / (args.large - args.small))
                results.setdefault(event, {})[str(library)] = per_call
        return {
            "what": "instructions per track_nowait call, by event (intake only)",
            "calls": [args.small, args.large],
            "instructions_per_call": results,
        }

    return publish(args.out, measure)


if __name__ == "__main__":
    sys.exit(main())
