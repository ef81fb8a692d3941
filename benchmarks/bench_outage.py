"""What each overflow policy costs a web application while the Tracking API is down.

The application (``_outage_app.py``, aiohttp.web in a child process pinned to
core 1) tracks one typical event per HTTP request; the API is down (nothing
listens on its port, or with ``--outage hang`` it accepts and never answers)
and the client's queue is already full, as it is once an outage has lasted a
while (10,000 commands by default). This process (core 0) sends
``--concurrency`` requests at a time for ``--seconds`` seconds and records each
request's status and latency. Requests started before the end are waited for.

Policies (``_outage_app.POLICIES``):

- ``none``: the same app without tracking: the baseline of the same run;
- ``await_track_default``: ``await client.track(...)`` with the defaults
  (overflow "wait", queue_timeout 10 s), ``QueueFull`` not caught (the
  FastAPI example before this change);
- ``await_track_50ms_caught``: ``await client.track`` with queue_timeout
  0.05 s, ``QueueFull`` caught (the event is lost, the request goes on);
- ``nowait_wait_uncaught``: ``track_nowait`` with overflow "wait" (raises
  ``QueueFull`` at once when full), not caught (the aiohttp example before);
- ``nowait_drop_new`` / ``nowait_drop_old``: ``track_nowait`` with a drop
  policy: never waits, never raises; drops are counted and logged.

Figures per policy: requests/s, latency p50/p99/max, share of 5xx answers, how
many events the client dropped (counted in ``stats()`` and logged) and how many
calls raised ``QueueFull`` (lost as well, but invisible to the client's
counters). Policies run round-robin for ``--rounds``
rounds; figures are medians over rounds.

    python benchmarks/bench_outage.py            # full run
    python benchmarks/bench_outage.py --quick    # smoke run
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
from _common import CLIENT_CPU, SERVER_CPU, median, pin, publish

APP = Path(__file__).resolve().parent / "_outage_app.py"
POLICIES = (
    "none",
    "await_track_default",
    "await_track_50ms_caught",
    "nowait_wait_uncaught",
    "nowait_drop_new",
    "nowait_drop_old",
)


class App:
    """The application in a child process; stopped by closing its stdin."""

    def __init__(self, policy: str, outage: str, max_queue: int) -> None:
        self.process = subprocess.Popen(
            [
                sys.executable,
                str(APP),
                "--policy",
                policy,
                "--outage",
                outage,
                "--max-queue",
                str(max_queue),
                "--cpu",
                str(SERVER_CPU),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line.startswith("PORT "):
            self.stop()
            raise RuntimeError(f"the app did not start ({policy})")
        self.url = f"http://127.0.0.1:{int(line.split()[1])}"

    def stop(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


async def _load(url: str, concurrency: int, seconds: float) -> dict[str, Any]:
    latencies: list[float] = []
    statuses: list[int] = []
    timeout = aiohttp.ClientTimeout(total=60.0)
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        start = time.perf_counter()
        end = start + seconds

        async def worker() -> None:
            while time.perf_counter() < end:
                began = time.perf_counter()
                try:
                    async with session.post(f"{url}/event", data=b"{}") as answer:
                        await answer.read()
                        status = answer.status
                except (aiohttp.ClientError, asyncio.TimeoutError):
                    status = 599
                latencies.append(time.perf_counter() - began)
                statuses.append(status)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - start
        async with session.get(f"{url}/stats") as answer:
            stats = await answer.json() if answer.status == 200 else {}
    return {
        "requests": len(statuses),
        "requests_per_s": len(statuses) / elapsed,
        "p50_ms": _percentile(latencies, 0.50) * 1000,
        "p99_ms": _percentile(latencies, 0.99) * 1000,
        "max_ms": max(latencies) * 1000,
        "errors_5xx_share": sum(s >= 500 for s in statuses) / len(statuses),
        "dropped": stats.get("dropped", 0),
        "queue_full_raised": stats.get("queue_full", 0),
    }


def measure(args: argparse.Namespace) -> dict[str, Any]:
    pinned = pin(CLIENT_CPU)
    rounds: dict[str, list[dict[str, Any]]] = {p: [] for p in args.policies}
    policies = list(args.policies)
    for index in range(args.rounds):
        # Each round starts with another policy: none always goes first.
        shift = index % len(policies)
        for policy in policies[shift:] + policies[:shift]:
            app = App(policy, args.outage, args.max_queue)
            try:
                result = asyncio.run(_load(app.url, args.concurrency, args.seconds))
            finally:
                app.stop()
            rounds[policy].append(result)
            print(policy, {k: round(v, 3) for k, v in result.items()}, file=sys.stderr)
    figures: dict[str, Any] = {}
    for policy, results in rounds.items():
        figures[policy] = {
            key: round(median([r[key] for r in results]), 3) for key in results[0]
        }
    return {
        "benchmark": "outage",
        "pinned": pinned,
        "settings": {
            "outage": args.outage,
            "max_queue": args.max_queue,
            "concurrency": args.concurrency,
            "seconds": args.seconds,
            "rounds": args.rounds,
        },
        "policies": figures,
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="a smoke run")
    parser.add_argument("--outage", choices=("refused", "hang"), default="refused")
    parser.add_argument("--max-queue", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=12.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--policies", nargs="+", choices=POLICIES, default=POLICIES)
    parser.add_argument("--out", help="also write the JSON report here")
    args = parser.parse_args()
    if args.quick:
        args.seconds, args.rounds, args.concurrency = 2.0, 1, 10
    return publish(args.out, lambda: measure(args))


if __name__ == "__main__":
    sys.exit(main())
