"""The shared rate budget: N worker processes of one host against a 100/s limit.

``--processes`` worker processes (default 4) each run a ``Client`` with the
default ``rate_limit=100`` and a producer that keeps its queue full
(``track_nowait``, polling every 5 ms while the queue is full), so each would
send as fast as its limiter lets it. The fake server runs in another process with its rate limiter at 100
requests per second over a sliding ``--rate-window``: by default the real
API's 60 s (6,000 requests a minute), which N processes pacing themselves alone
use up in 60/N seconds. The measured window (``--seconds``, 65 by default) is
longer than the rate window, so a figure above 100 requests per second cannot
last and shows as 429s. ``--rate-window 1`` is a much stricter test, where the
arrival jitter of requests from processes sharing 2 busy cores shows. Two
settings run round-robin in the same run:

- ``shared``: every worker passes ``rate_budget=<one file>`` (what
  ``rate_budget="host"`` does with a file keyed by the API's address);
- ``alone``: no shared budget (the default), each worker paces itself alone.

Reported, from the server's own counts: accepted requests per second over the
measured window (after a warm-up), the share of the 100/s limit that is, and
every 429 of the whole run (warm-up included). Figures are medians over
``--rounds``. The batches are capped at 10 commands so that 100 requests per
second cost little CPU: the processes share 2 cores with the server.

Target (shared): 0 responses 429, and at least 90 % of the limit.

    python benchmarks/bench_shared_budget.py            # full run
    python benchmarks/bench_shared_budget.py --quick    # smoke run
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import fake_server, median, publish, spread, typical_pool

from trackasync import Client, Limits, PrivateKey, QueueFull

LIMIT = 100.0
TARGET_SHARE = 0.90
BATCH = 10
WARMUP = 1.0


async def _worker(args: argparse.Namespace) -> dict[str, Any]:
    pool = typical_pool(200)
    budget = None if args.budget == "alone" else args.budget
    client = Client(
        args.base_url,
        args.project_token,
        auth=PrivateKey(args.key_id, args.secret),
        rate_budget=budget,
        limits=Limits(max_batch_commands=BATCH),
        max_queue=200,
        linger=0.05,
    )
    delay = args.start_at - time.time()
    if delay > 0:
        await asyncio.sleep(delay)
    stop = args.start_at + args.seconds
    sent = 0
    async with client:
        while time.time() < stop:
            ids, props = pool[sent % len(pool)]
            try:
                client.track_nowait(ids, "purchase", props)
            except QueueFull:
                # Full: the limiter holds the sender back. Poll rather than
                # wait in track(), so the producer stops on time even when
                # the API refuses everything (alone, once the window is used up).
                await asyncio.sleep(0.005)
                continue
            sent += 1
            if sent % 50 == 0:
                await asyncio.sleep(0)
        report = await client.aclose(timeout=1.0)
    stats = client.stats()
    return {
        "tracked": sent,
        "delivered": report.delivered,
        "requests": stats.requests,
        "rate_limited": stats.rate_limited,
    }


def _start_workers(
    args: argparse.Namespace, server: Any, budget: str, start_at: float
) -> list[subprocess.Popen[str]]:
    seconds = WARMUP + args.seconds + 0.5
    return [
        subprocess.Popen(
            [
                sys.executable,
                __file__,
                "--worker",
                "--base-url",
                server.base_url,
                "--project-token",
                server.project_token,
                "--key-id",
                server.key_id,
                "--secret",
                server.secret,
                "--budget",
                budget,
                "--start-at",
                repr(start_at),
                "--seconds",
                str(seconds),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(args.processes)
    ]


def _one_run(args: argparse.Namespace, server: Any, setting: str) -> dict[str, Any]:
    server.reset()  # also restarts the rate window
    with tempfile.TemporaryDirectory(prefix="trackasync-budget-") as tmp:
        budget = "alone" if setting == "alone" else str(Path(tmp) / "budget")
        # Start together, once every interpreter is up.
        start_at = time.time() + 2.0
        workers = _start_workers(args, server, budget, start_at)
        try:
            time.sleep(max(0.0, start_at + WARMUP - time.time()))
            before, t0 = server.stats(), time.perf_counter()
            time.sleep(args.seconds)
            after, t1 = server.stats(), time.perf_counter()
            outputs = [w.communicate(timeout=60) for w in workers]
        finally:
            for w in workers:
                if w.poll() is None:
                    w.kill()
                    w.wait()
        for w, (_, err) in zip(workers, outputs):
            if w.returncode != 0:
                raise RuntimeError(f"worker failed ({w.returncode}):\n{err}")
        final = server.stats()
    window = t1 - t0
    accepted = after["accepted_requests"] - before["accepted_requests"]
    return {
        "window_seconds": round(window, 3),
        "accepted_requests_per_s": accepted / window,
        "share_of_limit": accepted / window / LIMIT,
        "http_429_in_window": after["rate_limited"] - before["rate_limited"],
        "http_429_total": final["rate_limited"],
        "events_stored": final["events"],
        "workers": [json.loads(out.strip().splitlines()[-1]) for out, _ in outputs],
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    settings = ("shared", "alone")
    runs: dict[str, list[dict[str, Any]]] = {s: [] for s in settings}
    with fake_server(rate_limit=LIMIT, rate_window=args.rate_window) as server:
        for _ in range(args.rounds):
            for setting in settings:
                result = _one_run(args, server, setting)
                runs[setting].append(result)
                print(
                    f"{setting}: {result['accepted_requests_per_s']:.1f} requests/s "
                    f"accepted, 429s {result['http_429_total']}",
                    file=sys.stderr,
                    flush=True,
                )
        server_pinned = server.pinned
    summary = {
        setting: {
            "accepted_requests_per_s": spread(
                [r["accepted_requests_per_s"] for r in results], digits=1
            ),
            "share_of_limit": median([r["share_of_limit"] for r in results]),
            "http_429_total": [r["http_429_total"] for r in results],
            "http_429_in_window": [r["http_429_in_window"] for r in results],
        }
        for setting, results in runs.items()
    }
    shared = runs["shared"]
    worst_429 = max(r["http_429_total"] for r in shared)
    share = median([r["share_of_limit"] for r in shared])
    return {
        "settings": {
            "processes": args.processes,
            "seconds_measured": args.seconds,
            "warmup_seconds": WARMUP,
            "rounds": args.rounds,
            "client": f"defaults (rate_limit=100/s, max_in_flight=4) with "
            f"max_batch_commands={BATCH}, max_queue=200, linger=0.05; producer: "
            "await client.track(...) as fast as it is let",
            "server_rate_limit": f"{LIMIT:g} requests/s over a sliding "
            f"{args.rate_window:g} s window",
            "server_pinned": server_pinned,
        },
        "summary": summary,
        "target": {
            "what": "shared budget: no 429 in any run, and a median of at least "
            f"{TARGET_SHARE:.0%} of the limit in accepted requests per second",
            "measured": {"http_429_max": worst_429, "share_of_limit": round(share, 3)},
            "met": worst_429 == 0 and share >= TARGET_SHARE,
        },
        "runs": runs,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a fast smoke run")
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=65.0, help="measured window")
    parser.add_argument("--rate-window", type=float, default=60.0)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--out", help="also write the JSON report to this file")
    worker = parser.add_argument_group("worker process (internal)")
    worker.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    for name in ("--base-url", "--project-token", "--key-id", "--secret", "--budget"):
        worker.add_argument(name, help=argparse.SUPPRESS)
    worker.add_argument("--start-at", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(asyncio.run(_worker(args))), flush=True)
        return 0
    if args.quick:
        args.seconds, args.rounds, args.rate_window = 3.0, 1, 1.0
    return publish(args.out, lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
