"""SyncClient against Client: CPU per delivered event, from 1 and from 8 threads.

One process, pinned to core 0 (its threads too: they inherit the pinning), the
fake server in another process on core 1. Both clients have the same options
(``rate_limit=None``, ``max_in_flight=4``, the default linger, queue and
overflow "wait") and send the same events (``--event-kinds``: the purchase and
the typical one) to the same server. Each sample sends ``--events`` events and
waits until every one has its outcome; its CPU time is the whole process's
(``getrusage(RUSAGE_SELF)``, user + system, every thread), from the first call
until the last outcome:

- ``async`` (the baseline): ``await client.track(...)`` in a loop, inside the
  client's event loop in the main thread; then ``flush()``;
- ``sync_1``: ``SyncClient.track(...)`` in a loop from one thread (the main
  one), the client's loop in its own background thread; then ``flush()``;
- ``sync_8``: the same from 8 threads at once, each sending an eighth of the
  events (released together by a barrier, created before the clock starts).

Both clients are opened once and warmed up; the server is reset before each
sample and must then hold exactly the events sent, with no duplicate (explicit
timestamps move on with every event sent in the run, so none repeats). The
cases run round-robin, the order rotating every round; the ratio of a round is
its SyncClient sample's CPU over its async sample's, and the figure is the
median of those per-round ratios (``--rounds``).

Target, per event kind and thread count: SyncClient CPU per event at most 1.15
times the async Client's.

    python benchmarks/bench_sync_client.py            # full run
    python benchmarks/bench_sync_client.py --quick    # smoke run
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import threading
import time
from typing import Any

from _common import (
    CLIENT_CPU,
    EVENT_KINDS,
    TYPICAL_TYPE,
    FakeServerProcess,
    Pool,
    cpu_seconds,
    drain,
    event_pool,
    fake_server,
    median,
    pin,
    publish,
    spread,
)

from trackasync import Client, PrivateKey, SyncClient

TARGET_RATIO = 1.15
THREADS = (1, 8)
CASES = ("async", *(f"sync_{n}" for n in THREADS))


def _options(server: FakeServerProcess) -> dict[str, Any]:
    return {
        "base_url": server.base_url,
        "project_token": server.project_token,
        "auth": PrivateKey(server.key_id, server.secret),
        "rate_limit": None,
        "max_in_flight": 4,
    }


def _event_at(pool: Pool, index: int) -> tuple[Any, Any, Any]:
    """The ``index``-th event of the run: (ids, properties, timestamp or None).

    An explicit timestamp moves on by one second each time the pool comes
    round, counted over the whole run, so no event repeats across samples.
    """
    ids, props, stamp = pool[index % len(pool)]
    return ids, props, None if stamp is None else stamp + index // len(pool)


def _sync_settled(sync: SyncClient, timeout: float) -> None:
    """``flush()``, then wait until every command taken in has an outcome."""
    deadline = time.monotonic() + timeout
    sync.flush(timeout=timeout)
    while True:
        stats = sync.stats()
        if stats.delivered + sum(stats.failed.values()) >= stats.enqueued:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"SyncClient still has work after {timeout} s")
        time.sleep(0.001)


def _sync_sample(
    sync: SyncClient, pool: Pool, first: int, events: int, threads: int
) -> float:
    """CPU seconds of ``events`` events sent through ``sync`` by ``threads``."""
    track = sync.track

    def send(start: int, stop: int, step: int) -> None:
        for index in range(start, stop, step):
            ids, props, stamp = _event_at(pool, index)
            if stamp is None:
                track(ids, TYPICAL_TYPE, props)
            else:
                track(ids, TYPICAL_TYPE, props, timestamp=stamp)

    if threads == 1:
        begin = cpu_seconds()
        send(first, first + events, 1)
        _sync_settled(sync, 120.0)
        return cpu_seconds() - begin
    barrier = threading.Barrier(threads + 1)
    errors: list[BaseException] = []

    def worker(k: int) -> None:
        barrier.wait()
        try:
            send(first + k, first + events, threads)
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    workers = [threading.Thread(target=worker, args=(k,)) for k in range(threads)]
    for thread in workers:
        thread.start()
    begin = cpu_seconds()
    barrier.wait()
    for thread in workers:
        thread.join()
    _sync_settled(sync, 120.0)
    used = cpu_seconds() - begin
    if errors:
        raise errors[0]
    return used


async def _async_sample(client: Client, pool: Pool, first: int, events: int) -> float:
    """CPU seconds of ``events`` events sent through ``client``'s ``await track``."""
    track = client.track
    begin = cpu_seconds()
    for index in range(first, first + events):
        ids, props, stamp = _event_at(pool, index)
        if stamp is None:
            await track(ids, TYPICAL_TYPE, props)
        else:
            await track(ids, TYPICAL_TYPE, props, timestamp=stamp)
    await drain(client, timeout=120.0)
    return cpu_seconds() - begin


def run(args: argparse.Namespace) -> dict[str, Any]:
    pinned = pin(CLIENT_CPU)
    kinds: list[str] = args.event_kinds
    n = args.events
    cpu: dict[str, dict[str, list[float]]] = {
        kind: {case: [] for case in CASES} for kind in kinds
    }
    wall: dict[str, dict[str, list[float]]] = {
        kind: {case: [] for case in CASES} for kind in kinds
    }
    counter = [0]  # events sent so far in the run: the next event's index
    deadline = time.monotonic() + args.max_seconds
    with fake_server() as server:
        options = _options(server)
        loop = asyncio.new_event_loop()
        client = Client(**options)
        loop.run_until_complete(client.__aenter__())
        sync = SyncClient(**options)
        pools = {kind: event_pool(kind) for kind in kinds}

        def sample(kind: str, case: str, events: int) -> tuple[float, float]:
            server.reset()
            first = counter[0]
            counter[0] += events
            start = time.perf_counter()
            if case == "async":
                used = loop.run_until_complete(
                    _async_sample(client, pools[kind], first, events)
                )
            else:
                threads = int(case.removeprefix("sync_"))
                used = _sync_sample(sync, pools[kind], first, events, threads)
            elapsed = time.perf_counter() - start
            stats = server.stats()
            if stats["events"] != events or stats["duplicates"]:
                raise RuntimeError(
                    f"{kind}/{case}: the server stored {stats['events']} events "
                    f"({stats['duplicates']} duplicates), expected {events}"
                )
            return used, elapsed

        # Warm up every path (threads, connections, codec caches) untimed.
        for kind in kinds:
            for case in CASES:
                sample(kind, case, min(n, 2_000))
        for round_no in range(args.rounds):
            shift = round_no % len(CASES)
            for kind in kinds:
                for case in CASES[shift:] + CASES[:shift]:
                    used, elapsed = sample(kind, case, n)
                    cpu[kind][case].append(used)
                    wall[kind][case].append(elapsed)
            print(
                f"round {round_no + 1}: "
                + "; ".join(
                    f"{kind} "
                    + ", ".join(
                        f"{case} {cpu[kind][case][-1] / n * 1e6:.2f} µs"
                        for case in CASES
                    )
                    for kind in kinds
                ),
                file=sys.stderr,
                flush=True,
            )
            if time.monotonic() > deadline:
                break
        report = sync.close(timeout=30)
        if report.undelivered:
            raise RuntimeError(f"{len(report.undelivered)} undelivered")
        loop.run_until_complete(client.aclose(timeout=30))
        loop.close()
        server_pinned = server.pinned
    summary: dict[str, Any] = {}
    targets: dict[str, Any] = {}
    for kind in kinds:
        summary[kind] = {
            case: {
                "cpu_us_per_event": spread(cpu[kind][case], 1e6 / n),
                "events_per_s": spread([n / w for w in wall[kind][case]], digits=0),
            }
            for case in CASES
        }
        for threads in THREADS:
            case = f"sync_{threads}"
            ratios = [s / a for s, a in zip(cpu[kind][case], cpu[kind]["async"])]
            measured = median(ratios)
            targets[f"{kind}/{threads}_thread{'s' if threads > 1 else ''}"] = {
                "what": f"SyncClient CPU per event from {threads} thread(s) / "
                "async Client's (median of per-round ratios)",
                "limit": TARGET_RATIO,
                "measured": round(measured, 3),
                "per_round": spread(ratios),
                "met": measured <= TARGET_RATIO,
            }
    return {
        "settings": {
            "events": n,
            "rounds": len(cpu[kinds[0]]["async"]),
            "event_kinds": kinds,
            "threads": list(THREADS),
            "clients": "Client and SyncClient with rate_limit=None, "
            "max_in_flight=4, default linger, queue and overflow ('wait')",
            "async": "await client.track(...) in a loop, then flush()",
            "sync": "SyncClient.track(...) from N threads, then flush()",
            "cpu": "the whole process (every thread), first call to last outcome",
            "pinned_to_cpu": pinned,
            "server_pinned": server_pinned,
        },
        "summary": summary,
        "targets": targets,
        "all_targets_met": all(t["met"] for t in targets.values()),
        "runs_cpu_s": cpu,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a fast smoke run")
    parser.add_argument("--events", type=int, default=20_000, help="per sample")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument(
        "--event-kinds",
        nargs="+",
        choices=EVENT_KINDS,
        default=["purchase", "typical"],
    )
    parser.add_argument(
        "--max-seconds", type=float, default=600.0, help="no new round after this"
    )
    parser.add_argument("--out", help="also write the JSON report to this file")
    args = parser.parse_args(argv)
    if args.quick:
        args.events, args.rounds = 4_000, 2
    return publish(args.out, lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
