"""How long the client holds the event loop: a 1 ms ticker's lag, and every step
of the loop timed, while events of three sizes are produced at a steady rate.

The fake server runs in another process, pinned to the other core; this
process (core 0) runs one event loop holding the client, a producer and a
ticker, as a web application sharing its loop with the client would:

- the **ticker** sleeps 1 ms in a loop and records how late each wake-up is:
  what a request handler on the same loop would see as added latency;
- **every step** of the loop (each callback ``asyncio`` runs, a task's step or
  a socket's read) is timed by wrapping ``asyncio.Handle._run``, in CPU time of
  the thread (``time.thread_time()``: a step preempted by another process on
  this shared machine is not the client holding the loop), and charged to
  its owner: a task's coroutine (the producer, the batcher, a sender worker)
  or the callback (aiohttp's socket reads and writes);
- the **producer** calls ``await client.track(...)`` on an absolute schedule:
  typical events (about 300 bytes) at ``--typical-rate``, 10 KB events at
  ``--large-rate`` and 776 KB events (51 values of 15,000 bytes, near the API's
  800 KB limit) at ``--huge-rate`` per second, each kind for ``--seconds``.

The client has default options (100 requests/s, 4 in flight, 0.5 s linger),
so it runs at the API's limit. Two settings of it in the same run:

- ``default``: the library as it is in the tree;
- ``before``: the settings of the earlier releases: ``max_batch_bytes`` of
  5,000,000 and, when the tree hands large bodies to aiohttp in pieces, bodies
  handed over whole again (``trackasync._transport.request_body`` replaced by
  the identity) — the baseline for the change.

plus ``idle``: the ticker alone, for the machine's own timer noise. The
producer's own steps (``track`` validating and encoding a 776 KB event) are
the call path, reported apart from the client's background work.

    python benchmarks/bench_loop_lag.py            # full run
    python benchmarks/bench_loop_lag.py --quick    # smoke run
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from _common import (
    CLIENT_CPU,
    TYPICAL_TYPE,
    FakeServerProcess,
    drain,
    fake_server,
    large_properties,
    pin,
    publish,
    typical_pool,
)

from trackasync import Client, Limits, PrivateKey

STEP_LIMIT_MS = 2.0
KINDS = ("typical", "10KB", "776KB")
SETTINGS = ("idle", "default", "before")


# -- timing every step of the loop ---------------------------------------------------


class StepClock:
    """Wraps ``asyncio.Handle._run`` to time each step and name its owner."""

    def __init__(self) -> None:
        self.steps: dict[str, list[float]] = defaultdict(list)
        self._original: Callable[..., Any] | None = None

    @staticmethod
    def owner(handle: Any) -> str:
        callback = handle._callback
        task = getattr(callback, "__self__", None)
        if isinstance(task, asyncio.Task):
            name = task.get_name()  # anyio names its tasks after the function
            if name.startswith("Task-"):
                coro = task.get_coro()
                name = getattr(coro, "__qualname__", None) or type(coro).__name__
            return f"task {name}"
        if task is not None:
            return f"{type(task).__name__}.{getattr(callback, '__name__', '?')}"
        return getattr(callback, "__qualname__", repr(callback))

    def start(self) -> None:
        original = asyncio.events.Handle._run
        self._original = original
        owner = self.owner
        # CPU time of this thread, not wall time: on a shared machine a step
        # can be preempted, and that is not time the client held the loop.
        clock = time.thread_time

        def timed(handle: Any) -> None:
            begin = clock()
            original(handle)
            self.steps[owner(handle)].append(clock() - begin)

        asyncio.events.Handle._run = timed  # type: ignore[method-assign]

    def stop(self) -> None:
        if self._original is not None:
            asyncio.events.Handle._run = self._original  # type: ignore[method-assign]
            self._original = None

    def take(self) -> dict[str, list[float]]:
        steps, self.steps = self.steps, defaultdict(list)
        return steps


def _quantile(ordered: list[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _lag_summary(lags: list[float]) -> dict[str, Any]:
    ordered = sorted(lags)
    return {
        "p50_ms": round(_quantile(ordered, 0.5) * 1e3, 3),
        "p99_ms": round(_quantile(ordered, 0.99) * 1e3, 3),
        "p999_ms": round(_quantile(ordered, 0.999) * 1e3, 3),
        "max_ms": round(ordered[-1] * 1e3, 3),
        "ticks": len(ordered),
    }


def _steps_summary(steps: dict[str, list[float]]) -> dict[str, Any]:
    """Per owner: step count, p99 and max in ms, and steps over the limit."""
    out = {}
    for name, values in steps.items():
        if name.startswith("task _ticker"):
            continue
        ordered = sorted(values)
        out[name] = {
            "steps": len(ordered),
            "p99_ms": round(_quantile(ordered, 0.99) * 1e3, 3),
            "max_ms": round(ordered[-1] * 1e3, 3),
            "over_limit": sum(1 for v in ordered if v * 1e3 > STEP_LIMIT_MS),
        }
    return dict(sorted(out.items(), key=lambda item: -item[1]["max_ms"]))


# -- the events ------------------------------------------------------------------


def _events(kind: str) -> list[tuple[dict[str, str], dict[str, Any]]]:
    if kind == "typical":
        return typical_pool()
    if kind == "10KB":
        base = large_properties()
        return [(ids, {**base, "n": i}) for i, (ids, _) in enumerate(typical_pool())]
    base = {f"part_{j:02d}": f"{j:02d} Keyboard TK " * 1_000 for j in range(51)}
    # A few distinct events are enough: the "n" property tells them apart.
    return [(ids, {**base, "n": i}) for i, (ids, _) in enumerate(typical_pool(50))]


def _rate(args: argparse.Namespace, kind: str) -> float:
    return {
        "typical": args.typical_rate,
        "10KB": args.large_rate,
        "776KB": args.huge_rate,
    }[kind]


# -- one run ---------------------------------------------------------------------


async def _ticker(lags: list[float], stop: asyncio.Event) -> None:
    clock = time.perf_counter
    while not stop.is_set():
        begin = clock()
        await asyncio.sleep(0.001)
        lags.append(clock() - begin - 0.001)


async def _one(
    server: FakeServerProcess,
    setting: str,
    kind: str,
    rate: float,
    seconds: float,
    clock: StepClock,
) -> dict[str, Any]:
    lags: list[float] = []
    stop = asyncio.Event()
    events = _events(kind)
    limits = Limits(max_batch_bytes=5_000_000) if setting == "before" else Limits()
    client = Client(
        server.base_url,
        server.project_token,
        auth=PrivateKey(server.key_id, server.secret),
        limits=limits,
    )
    produced = 0
    ticker = asyncio.create_task(_ticker(lags, stop))
    clock.take()
    start = time.perf_counter()
    async with client:
        if setting != "idle":
            track = client.track
            size = len(events)
            while True:
                now = time.perf_counter() - start
                if now >= seconds:
                    break
                due = int(now * rate) + 1
                while produced < due:
                    ids, props = events[produced % size]
                    await track(ids, TYPICAL_TYPE, props)
                    produced += 1
                await asyncio.sleep(
                    max(0.0, due / rate - (time.perf_counter() - start))
                )
            stats = await drain(client, timeout=120.0)
        else:
            await asyncio.sleep(seconds)
            stats = client.stats()
    elapsed = time.perf_counter() - start
    stop.set()
    await ticker
    steps = clock.take()
    return {
        "produced": produced,
        "offered_per_s": rate,
        "achieved_per_s": round(produced / min(elapsed, seconds), 1),
        "requests": stats.requests,
        "delivered": stats.delivered,
        "commands_per_request": round(stats.delivered / max(1, stats.requests), 2),
        "lag": _lag_summary(lags),
        "steps": _steps_summary(steps),
    }


def _max_step(steps: dict[str, Any], *, producer: bool) -> float:
    """The longest step of the client's own background work (or the producer's)."""
    best = 0.0
    for name, entry in steps.items():
        is_producer = name.startswith("task _all")
        if is_producer == producer:
            best = max(best, entry["max_ms"])
    return best


async def _all(args: argparse.Namespace, server: FakeServerProcess) -> dict:
    import trackasync._transport as transport_module

    # Untimed: the first client of a process imports anyio's backend and builds
    # aiohttp's session machinery, tens of ms that no later step pays.
    server.reset()
    await _one(server, "default", "typical", 1000.0, 0.2, StepClock())
    clock = StepClock()
    clock.start()
    results: dict[str, dict[str, Any]] = {}
    original_body = getattr(transport_module, "request_body", None)
    try:
        for round_no in range(args.rounds):
            for kind in args.kinds:
                for setting in SETTINGS:
                    if setting == "idle" and kind != args.kinds[0]:
                        continue
                    if setting == "before" and original_body is not None:
                        transport_module.request_body = lambda body: body  # type: ignore[assignment]
                    try:
                        server.reset()
                        run = await _one(
                            server,
                            setting,
                            kind,
                            _rate(args, kind),
                            args.seconds,
                            clock,
                        )
                    finally:
                        if original_body is not None:
                            transport_module.request_body = original_body  # type: ignore[assignment]
                    key = "idle" if setting == "idle" else f"{kind}/{setting}"
                    results.setdefault(key, {"rounds": []})["rounds"].append(run)
                    print(
                        f"round {round_no + 1} {key}: lag max "
                        f"{run['lag']['max_ms']:.2f} ms, client step max "
                        f"{_max_step(run['steps'], producer=False):.2f} ms",
                        file=sys.stderr,
                        flush=True,
                    )
    finally:
        clock.stop()
    return results


def run(args: argparse.Namespace) -> dict[str, Any]:
    pinned = pin(CLIENT_CPU)
    with fake_server() as server:
        results = asyncio.run(_all(args, server))
        server_pinned = server.pinned
    summary: dict[str, Any] = {}
    for key, data in results.items():
        rounds = data["rounds"]
        summary[key] = {
            "lag_max_ms": sorted(r["lag"]["max_ms"] for r in rounds),
            "lag_p99_ms": sorted(r["lag"]["p99_ms"] for r in rounds),
            "client_step_max_ms": sorted(
                _max_step(r["steps"], producer=False) for r in rounds
            ),
            "producer_step_max_ms": sorted(
                _max_step(r["steps"], producer=True) for r in rounds
            ),
            "client_steps_over_limit": sorted(
                sum(
                    entry["over_limit"]
                    for name, entry in r["steps"].items()
                    if not name.startswith("task _all")
                )
                for r in rounds
            ),
            "commands_per_request": [r["commands_per_request"] for r in rounds],
        }
    return {
        "settings": {
            "seconds": args.seconds,
            "rates_per_s": {kind: _rate(args, kind) for kind in KINDS},
            "rounds": args.rounds,
            "step_limit_ms": STEP_LIMIT_MS,
            "client": "default options (rate_limit 100/s, max_in_flight 4, linger "
            "0.5 s); 'before': Limits(max_batch_bytes=5_000_000) and bodies "
            "handed to aiohttp whole",
            "pinned_to_cpu": pinned,
            "server_pinned": server_pinned,
        },
        "summary": summary,
        "runs": results,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a fast smoke run")
    parser.add_argument("--seconds", type=float, default=5.0, help="per run")
    parser.add_argument("--typical-rate", type=float, default=5_000)
    parser.add_argument("--large-rate", type=float, default=2_000)
    parser.add_argument("--huge-rate", type=float, default=50)
    parser.add_argument("--kinds", nargs="+", choices=KINDS, default=list(KINDS))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", help="also write the JSON report to this file")
    args = parser.parse_args(argv)
    if args.quick:
        args.seconds, args.rounds = 1.5, 1
    return publish(args.out, lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
