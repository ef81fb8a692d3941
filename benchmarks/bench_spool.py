"""The spool against the memory-only client, in the same run.

Events per second and client CPU per event (user + system CPU of the whole
process, the spool's writer thread included, over the calls and the flush that
follows them), each case run for a client without a spool (the baseline) and
with one, alternately, ``--rounds`` times, on in-process transports:

- ``track_nowait`` under ``durability="interval"``, with an API that accepts
  everything at once (``healthy``: the calls and the flush that delivers them;
  commands delivered before the next commit are never written) and with one
  that never answers (``down``: every command goes to disk; events/s is the
  calls' rate, and the CPU counts until the writer has written them all);
- ``await track`` under ``durability="durable"`` from 1, 10 and 100 concurrent
  producers, API healthy and down;
- ``SyncClient.track`` (durable) from 1 and 8 threads, API healthy (``send=False``).

Also: the group commit's transaction sizes (commands inserted per commit and
rows written per commit, means) and the disk bytes per event (the spool file
and its WAL, after ``--events`` typical events with the API down, with the
count of commands found in the file).

Goals (the report's ``goals`` says, for each, whether it is met):
``track_nowait`` with the spool at most 1.5x the memory-only client's CPU per
event, API healthy and down; durable ``await track`` with 100 producers at
least 20,000 events/s, API healthy and down.

The spool directory is a new one under ``--dir`` (default: the system's
temporary directory, on disk); each commit of the durable setting waits for
an fsync, so its figures depend on the disk.

    python benchmarks/bench_spool.py            # full run
    python benchmarks/bench_spool.py --quick    # smoke run
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import shutil
import sqlite3
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from _common import (
    TYPICAL_IDS,
    TYPICAL_PROPERTIES,
    TYPICAL_TYPE,
    cpu_seconds,
    median,
    publish,
)

from trackasync import Client, Delivery, PrivateKey, Request, Response, SyncClient
from trackasync._spool import SqliteLog
from trackasync._spool_read import summary
from trackasync.testing import accept_all

AUTH = PrivateKey("key", "secret")
BASE = "https://api.example.test"


class Healthy:
    """Accepts every request at once."""

    async def send(self, request: Request) -> Response:
        return accept_all(request)

    async def aclose(self) -> None:
        pass


class Down:
    """Never answers (until closed): every command stays pending."""

    def __init__(self) -> None:
        self._never = asyncio.Event()

    async def send(self, request: Request) -> Response:
        await self._never.wait()
        return accept_all(request)

    async def aclose(self) -> None:
        pass


def _client(spool: Path | None, api: str, durability: str, events: int) -> Client:
    return Client(
        BASE,
        "project",
        auth=AUTH,
        transport=Healthy() if api == "healthy" else Down(),
        rate_limit=None,
        max_queue=events + 1000,
        spool=spool,
        durability=durability,  # type: ignore[arg-type]
    )


def _log(client: Client) -> SqliteLog | None:
    log = client._pipeline.table.log
    return log if isinstance(log, SqliteLog) else None


async def _nowait(client: Client, events: int) -> Delivery:
    track = client.track_nowait
    for i in range(events):
        last = track(TYPICAL_IDS, TYPICAL_TYPE, TYPICAL_PROPERTIES)
        if i % 100 == 99:
            await asyncio.sleep(0)
    return last


async def _awaited(client: Client, events: int, producers: int) -> None:
    async def produce(count: int) -> None:
        track = client.track
        for _ in range(count):
            await track(TYPICAL_IDS, TYPICAL_TYPE, TYPICAL_PROPERTIES)

    await asyncio.gather(*(produce(events // producers) for _ in range(producers)))


def run_async(
    case: str, spool: Path | None, api: str, events: int, producers: int
) -> dict[str, Any]:
    async def main() -> dict[str, Any]:
        durability = "interval" if case == "track_nowait" else "durable"
        client = _client(spool, api, durability, events)
        async with client:
            await client.flush()  # started
            log = _log(client)
            while log is not None and not log.opened:
                # The spool's file created and the directory scanned: the
                # steady state is measured, not the start.
                await asyncio.sleep(0.001)
            # The previous run's garbage (a memory-only client closed with
            # the API down leaves its commands failed, tracked by the garbage
            # collector) is collected here, not charged to this run.
            gc.collect()
            start, cpu = time.perf_counter(), cpu_seconds()
            last = None
            if case == "track_nowait":
                last = await _nowait(client, events)
            else:
                await _awaited(client, events, producers)
            calls = time.perf_counter() - start
            log = _log(client)
            if api == "healthy":
                await client.flush()
            elif log is not None:
                # The API is down: every command is written, later under
                # "interval"; the writer's work counts too. Waited for in a
                # thread that the commit itself wakes, not by polling from
                # the loop: on this machine every wake-up of an idle loop
                # costs about 0.1 ms of CPU, which would be charged to the
                # spool (20 polls of 50 ms in an interval of 1 s: ~0.1 us per
                # event of 20,000).
                if last is not None:
                    await asyncio.to_thread(log.wait_durable, last, 60.0)
                while log.inserted < events and log.failure is None:
                    await asyncio.sleep(0.05)
            wall, used = time.perf_counter() - start, cpu_seconds() - cpu
            if api == "down":
                wall = calls  # the calls' rate; the CPU covers the writes
            figures = {
                "events_per_s": events / wall,
                "cpu_us_per_event": used / events * 1e6,
                "commits": 0 if log is None else log.commits,
                "inserted": 0 if log is None else log.inserted,
                "groups": 0 if log is None else log.groups,
            }
            await client.aclose(timeout=0.05 if api == "down" else 10.0)
        return figures

    return asyncio.run(main())


def run_sync(spool: Path | None, events: int, threads: int) -> dict[str, Any]:
    client = SyncClient(BASE, "project", auth=AUTH, send=False, spool=spool)
    client.track(TYPICAL_IDS, TYPICAL_TYPE, TYPICAL_PROPERTIES)  # started
    per = events // threads

    def work() -> None:
        for _ in range(per):
            client.track(TYPICAL_IDS, TYPICAL_TYPE, TYPICAL_PROPERTIES)

    workers = [threading.Thread(target=work) for _ in range(threads)]
    gc.collect()  # the previous run's garbage: see run_async
    start, cpu = time.perf_counter(), cpu_seconds()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    client.flush()
    wall, used = time.perf_counter() - start, cpu_seconds() - cpu
    client.close()
    return {
        "events_per_s": per * threads / wall,
        "cpu_us_per_event": used / (per * threads) * 1e6,
    }


def disk_bytes(root: Path, events: int) -> dict[str, Any]:
    """Bytes on disk per event with the API down (every command written)."""
    spool = root / "disk"

    async def main() -> dict[str, Any]:
        client = _client(spool, "down", "interval", events)
        async with client:
            await _nowait(client, events)
            log = _log(client)
            assert log is not None
            await client._pipeline.table.log.aclose()  # commit, close the file
            files = [p for p in spool.iterdir() if ".spool" in p.name]
            size = sum(p.stat().st_size for p in files)
            held = 0
            for path in files:
                if path.suffix == ".spool":
                    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
                    held += summary(conn)[0]
                    conn.close()
            body = len(client._pipeline.table.oldest().body)  # type: ignore[union-attr]
            await client.aclose(timeout=0.05)
        return {
            "events": events,
            "commands_in_file": held,
            "file_bytes": size,
            "bytes_per_event": round(size / events, 1),
            "body_bytes_per_event": body,
        }

    return asyncio.run(main())


def _progress(key: str, variant: str, figures: dict[str, Any]) -> None:
    rate, cpu = figures["events_per_s"], figures["cpu_us_per_event"]
    sys.stderr.write(f"{key:32} {variant:7} {rate:10.0f} ev/s {cpu:8.2f} us/ev\n")


def measure(args: argparse.Namespace) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="bench-spool-", dir=args.dir))
    cases: list[tuple[str, str, int, int]] = [
        ("track_nowait", "healthy", args.events, 1),
        ("track_nowait", "down", args.events, 1),
    ]
    for producers in (1, 10, 100):
        n = (
            args.events
            if producers == 100
            else args.events // (20 if producers == 1 else 4)
        )
        cases.append((f"await_track_{producers}", "healthy", n, producers))
        cases.append((f"await_track_{producers}", "down", n, producers))
    results: dict[str, dict[str, list[dict[str, Any]]]] = {}
    try:
        for r in range(args.rounds):
            for case, api, n, producers in cases:
                key = f"{case}/{api}"
                for variant in ("memory", "spool"):
                    spool = root / f"{r}-{case}-{api}" if variant == "spool" else None
                    kind = "track_nowait" if case == "track_nowait" else "await"
                    figures = run_async(kind, spool, api, n, producers)
                    _progress(key, variant, figures)
                    results.setdefault(key, {}).setdefault(variant, []).append(figures)
                    if spool is not None:
                        shutil.rmtree(spool, ignore_errors=True)
            for threads in (1, 8):
                key = f"sync_track_{threads}_threads/healthy"
                n = args.events // (20 if threads == 1 else 5)
                for variant in ("memory", "spool"):
                    spool = root / f"{r}-sync-{threads}" if variant == "spool" else None
                    figures = run_sync(spool, n, threads)
                    _progress(key, variant, figures)
                    results.setdefault(key, {}).setdefault(variant, []).append(figures)
        disk = disk_bytes(root, args.events)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    summary: dict[str, Any] = {}
    for key, variants in results.items():
        row: dict[str, Any] = {}
        for variant, runs in variants.items():
            row[variant] = {
                "events_per_s": round(median([f["events_per_s"] for f in runs])),
                "cpu_us_per_event": round(
                    median([f["cpu_us_per_event"] for f in runs]), 2
                ),
            }
            if variant == "spool" and "commits" in runs[0]:
                commits = sum(f["commits"] for f in runs)
                inserted = sum(f["inserted"] for f in runs)
                groups = sum(f["groups"] for f in runs)
                row[variant]["commits"] = commits
                row[variant]["written"] = inserted
                # Transaction sizes: commands per commit, and rows (groups)
                # per commit.
                row[variant]["commands_per_commit"] = (
                    round(inserted / commits, 1) if commits else 0
                )
                row[variant]["groups_per_commit"] = (
                    round(groups / commits, 2) if commits else 0
                )
        row["cpu_ratio"] = round(
            row["spool"]["cpu_us_per_event"] / row["memory"]["cpu_us_per_event"], 2
        )
        summary[key] = row
    nowait = summary["track_nowait/healthy"]["cpu_ratio"]
    nowait_down = summary["track_nowait/down"]["cpu_ratio"]
    durable = summary["await_track_100/healthy"]["spool"]["events_per_s"]
    durable_down = summary["await_track_100/down"]["spool"]["events_per_s"]
    return {
        "command": " ".join([sys.executable, *sys.argv]),
        "spool_dir": str(args.dir or tempfile.gettempdir()),
        "rounds": args.rounds,
        "results": summary,
        "disk": disk,
        "goals": {
            "track_nowait_cpu_ratio": {
                "goal": "track_nowait with the spool (interval) costs at most "
                "1.5x the memory-only client's CPU per event, API healthy and down",
                "limit": 1.5,
                "healthy": nowait,
                "down": nowait_down,
                "met": max(nowait, nowait_down) <= 1.5,
            },
            "durable_100_producers_events_per_s": {
                "goal": "durable await track() from 100 concurrent producers "
                "reaches at least 20,000 events/s, API healthy and down",
                "limit": 20000,
                "healthy": durable,
                "down": durable_down,
                "met": min(durable, durable_down) >= 20000,
            },
        },
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=40_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--dir", default=None, help="where the spool directories go")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    if args.quick:
        args.events, args.rounds = 4000, 1
    os.environ.setdefault("TRACKASYNC_SEND", "1")
    return publish(args.out, lambda: measure(args))


if __name__ == "__main__":
    sys.exit(main())
