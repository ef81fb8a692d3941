"""Where the client's CPU per event goes: the end-to-end figure taken apart.

Not a target of its own: it explains ``bench_e2e.py``. In one process pinned to
core 0, with the same typical events (a pool of 1,000, used cyclically):

1. ``pipeline_null_transport``: ``--events`` events through a ``Client`` whose
   transport answers at once without sockets (every command accepted):
   everything trackasync does per event except HTTP. Producer as in
   ``bench_e2e.py``: ``await client.track(...)``; and ``track_nowait`` with a
   yield every 100 events.
2. ``floor_no_http``: the floor sender's own work without HTTP: build the dict,
   encode it with msgspec, join 50 into a body, yield once per body.
3. ``http_only``: 2,000 prebuilt 50-command bodies posted to the fake server
   (in another process, pinned to the other core), 4 at a time, through
   trackasync's ``AiohttpTransport.send`` and through a bare
   ``ClientSession.post``: the HTTP cost per request, and per event (/50).
4. ``per_event_pieces``: the steps of one ``track_nowait`` call timed alone
   (µs), and ``per_request_pieces``: the pipeline's per-request steps timed
   alone, in µs per request of 50 commands. Both use trackasync's private
   modules and may need updating when those change.

CPU time is ``getrusage(RUSAGE_SELF)`` user + system; each figure is the median
of ``--rounds`` runs. ``--cprofile N`` also prints the N functions with the
most own time in run 1 (cProfile inflates per-call costs; read it for ranking).

    python benchmarks/bench_breakdown.py            # full run
    python benchmarks/bench_breakdown.py --quick    # smoke run
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import io
import pstats
import sys
import time
import timeit
from collections.abc import Iterator
from typing import Any

import msgspec
from _common import (
    CLIENT_CPU,
    EVENT_KINDS,
    TYPICAL_IDS,
    TYPICAL_PROPERTIES,
    cpu_seconds,
    drain,
    event_pool,
    fake_server,
    median,
    pin,
    post_bodies,
    produce,
    publish,
    spread,
    typical_pool,
)
from _reference import BATCH, floor_bodies
from bench_enqueue import NullTransport, _batch_answers

from trackasync import AiohttpTransport, Client, Limits, PrivateKey


async def _pipeline(
    events: int, producer: str, kind: str = "typical", batch: int = BATCH
) -> None:
    pool = event_pool(kind)
    client = Client(
        "http://127.0.0.1:9",
        "bench-project",
        auth=PrivateKey("key", "secret"),
        transport=NullTransport(),
        rate_limit=None,
        max_in_flight=4,
        limits=Limits(max_batch_commands=batch),
    )
    async with client:
        await produce(client, pool, events, awaited=producer == "await_track")
        delivered = (await drain(client)).delivered
    if delivered != events:
        raise RuntimeError(f"delivered {delivered} of {events}")


async def _floor_no_http(events: int, kind: str = "typical") -> None:
    """The floor sender's own work without HTTP: its bodies, a yield per body."""
    for _ in floor_bodies(event_pool(kind), events):
        await asyncio.sleep(0)


@contextlib.contextmanager
def _full_parse_only() -> Iterator[bool]:
    """Switch the sender's all-success recogniser off; yields False if it has none."""
    import trackasync._sender as sender

    original = getattr(sender, "batch_all_accepted", None)
    if original is None:
        yield False
        return
    sender.batch_all_accepted = lambda body, count: False  # type: ignore[attr-defined]
    try:
        yield True
    finally:
        sender.batch_all_accepted = original  # type: ignore[attr-defined]


def _cpu_per_event(run: Any, events: int) -> float:
    start = cpu_seconds()
    asyncio.run(run())
    return (cpu_seconds() - start) / events


def _batch_body(pool: list) -> bytes:
    encode = msgspec.json.Encoder().encode
    parts = [
        b'{"name":"customers/events","command_id":"%d","data":%s}'
        % (
            i,
            encode(
                {
                    "customer_ids": pool[i][0],
                    "event_type": "purchase",
                    "timestamp": 1_780_000_000.0 + i,
                    "properties": pool[i][1],
                }
            ),
        )
        for i in range(BATCH)
    ]
    return b'{"commands":[' + b",".join(parts) + b"]}"


async def _http(server: Any, requests: int, how: str, in_flight: int = 4) -> float:
    """CPU seconds to post ``requests`` prebuilt bodies, ``in_flight`` at a time."""
    pool = typical_pool()
    # Distinct bodies, so the server's deduplication keeps out of the way.
    bodies = []
    for r in range(requests):
        shifted = [(ids, {**props, "n": r}) for ids, props in pool[:BATCH]]
        bodies.append(_batch_body(shifted))
    transport = AiohttpTransport() if how == "trackasync_transport" else None
    return await post_bodies(server, bodies, transport, in_flight)


def _pieces() -> dict[str, float]:
    from trackasync._delivery import Accepted, Delivery
    from trackasync._ledger import Ledger
    from trackasync._results import batch_answer, match_results

    try:  # the all-success recogniser, where the library has one
        from trackasync._results import batch_all_accepted
    except ImportError:
        batch_all_accepted = None
    from trackasync._sender import batch_body
    from trackasync._stats import Counters

    body = b"x" * 295
    answer = _batch_answers[BATCH]
    decoded = batch_answer(answer)
    if decoded is None or decoded.results is None:
        raise RuntimeError("the canned batch answer did not decode")
    results = decoded.results

    def deliveries() -> list[Delivery]:
        return [Delivery("customers/events", body, 1.0) for _ in range(BATCH)]

    batch = deliveries()
    ledger = Ledger(Counters(), None)
    accepted = Accepted(200, None, 1.0)
    fresh = [deliveries() for _ in range(2000)]

    # The ledger's name for it in this copy of the library, or in a baseline's.
    settle = getattr(ledger, "delivered", None) or ledger.accepted  # type: ignore[attr-defined]

    def accept_fresh() -> None:
        settle(fresh.pop(), accepted)

    cases = {
        "50 x Delivery()": deliveries,
        "batch_body(50)": lambda: batch_body(batch),
        "decode batch answer (50 results)": lambda: batch_answer(answer),
        "match_results(50)": lambda: match_results(results, BATCH),
        "ledger.accepted(50)": accept_fresh,
    }
    if batch_all_accepted is not None:
        body_of_answer = answer.body
        if not batch_all_accepted(body_of_answer, BATCH):
            raise RuntimeError("the canned answer was not recognised as all-success")
        cases["batch_all_accepted(50)"] = lambda: batch_all_accepted(
            body_of_answer, BATCH
        )
    out = {}
    for name, fn in cases.items():
        number = 300
        best = min(timeit.repeat(fn, number=number, repeat=5))
        out[name] = round(best / number * 1e6, 2)
    return out


def _handoffs(requests: int = 20_000) -> dict[str, float]:
    """The event-loop hand-offs of one request, timed alone (µs per request).

    The same asyncio primitives the batcher and its workers use per request, in
    the same pattern, with no work in between: the producer's wake-up event, an
    in-flight semaphore of 4, the job queue to a pool of 4 workers, and the
    return of the slot. CPU time per request, best of 5.
    """

    async def cycle() -> float:
        wake = asyncio.Event()
        slots = asyncio.Semaphore(4)
        jobs: asyncio.Queue[int | None] = asyncio.Queue()

        async def worker() -> None:
            while True:
                job = await jobs.get()
                if job is None:
                    return
                slots.release()

        async def producer() -> None:
            for _ in range(requests):
                wake.set()
                await asyncio.sleep(0)  # the producer yields, as produce() does

        workers = [asyncio.create_task(worker()) for _ in range(4)]
        feeding = asyncio.create_task(producer())
        start = cpu_seconds()
        for job in range(requests):
            wake.clear()
            if not wake.is_set() and not feeding.done():
                await wake.wait()
            await slots.acquire()
            jobs.put_nowait(job)
        used = cpu_seconds() - start
        for _ in workers:
            jobs.put_nowait(None)
        await asyncio.gather(*workers, feeding)
        return used / requests

    best = min(asyncio.run(cycle()) for _ in range(5))
    return {"wake + slot + job queue + worker, per request": round(best * 1e6, 2)}


def _event_pieces() -> dict[str, float]:
    """The steps of one ``track_nowait`` call, timed alone, in µs."""
    import importlib

    # The command owner's module in this copy of the library, or in a baseline's.
    try:
        _owner = importlib.import_module("trackasync._table")
    except ImportError:
        _owner = importlib.import_module("trackasync._buffer")
    from trackasync._config import Limits
    from trackasync._delivery import Delivery
    from trackasync._encoding import Codec, _Event

    ids, props = dict(TYPICAL_IDS), dict(TYPICAL_PROPERTIES)
    codec = Codec(Limits())
    encode = msgspec.json.Encoder().encode
    stamp = 1_780_000_000.123456
    codec.event(ids, "purchase", props, stamp)  # learn the property names
    body = encode(_Event(ids, "purchase", stamp, props))
    time_ns, monotonic = time.time_ns, time.monotonic
    number = 20_000

    def new_queue() -> Any:
        # The in-memory command store, or the queue it replaced in a baseline
        # copy of the library (the same offer(), other wiring).
        owner_class = getattr(_owner, "CommandTable", None) or getattr(
            _owner, "MemoryStore", None
        )
        if owner_class is not None:
            from trackasync._ledger import Ledger
            from trackasync._stats import Counters

            return owner_class(
                number + 1,
                "wait",
                batch_count=50,
                batch_bytes=5_000_000,
                ledger=Ledger(Counters(), None),
            )
        return _owner.CommandBuffer(  # type: ignore[attr-defined]
            number + 1,
            "wait",
            batch_count=50,
            batch_bytes=5_000_000,
            on_ready=lambda: None,
            on_drop=lambda d: None,
        )

    def offer_batch() -> None:
        buffer = new_queue()
        deliveries = [Delivery("customers/events", body, 1.0)] * number
        offer = buffer.offer
        start = time.perf_counter()
        for delivery in deliveries:
            offer(delivery)
        timings.append((time.perf_counter() - start) / number)

    cases = {
        "codec.event (validate + encode)": lambda: codec.event(
            ids, "purchase", props, stamp
        ),
        "msgspec encode of the same struct": lambda: encode(
            _Event(ids, "purchase", stamp, props)
        ),
        "timestamp (time_ns() // 1000 / 1e6)": lambda: time_ns() // 1000 / 1_000_000,
        "time.monotonic()": monotonic,
        "Delivery()": lambda: Delivery("customers/events", body, 1.0),
    }
    out = {}
    for name, fn in cases.items():
        best = min(timeit.repeat(fn, number=number, repeat=5))
        out[name] = round(best / number * 1e6, 3)
    timings: list[float] = []
    for _ in range(5):
        offer_batch()
    out["queue offer()"] = round(min(timings) * 1e6, 3)
    return out


SLOPE_BATCH = 10


def _per_request(args: argparse.Namespace) -> dict[str, Any]:
    """The pipeline's own CPU per request, measured as a slope.

    The null-transport pipeline (``track_nowait`` producer, typical events) with
    requests of 50 and of 10 commands: per event it costs ``a + b / size``, so
    the per-request cost ``b`` is the difference over ``1/10 - 1/50``. The same
    pair again with the all-success recogniser switched off (every answer
    decoded and matched in full) gives its gain. The four runs of a round are
    back to back, their order rotating; slopes are taken per round and the
    median reported, since a difference of two noisy figures is noisier still.
    """
    n = args.slope_events
    cases = [(BATCH, False), (SLOPE_BATCH, False), (BATCH, True), (SLOPE_BATCH, True)]
    with _full_parse_only() as can_switch:
        pass
    if not can_switch:
        cases = cases[:2]
    per_round: dict[str, list[float]] = {"recognised": [], "full_parse": []}
    gain_at_50: list[float] = []
    for round_no in range(args.slope_rounds):
        shift = round_no % len(cases)
        measured: dict[tuple[int, bool], float] = {}
        for batch, full in cases[shift:] + cases[:shift]:
            if full:
                with _full_parse_only():
                    measured[batch, full] = _cpu_per_event(
                        lambda b=batch: _pipeline(n, "track_nowait", "typical", b),  # type: ignore[misc]
                        n,
                    )
            else:
                measured[batch, full] = _cpu_per_event(
                    lambda b=batch: _pipeline(n, "track_nowait", "typical", b),  # type: ignore[misc]
                    n,
                )
        scale = 1 / (1 / SLOPE_BATCH - 1 / BATCH)
        per_round["recognised"].append(
            (measured[SLOPE_BATCH, False] - measured[BATCH, False]) * scale
        )
        if can_switch:
            per_round["full_parse"].append(
                (measured[SLOPE_BATCH, True] - measured[BATCH, True]) * scale
            )
            gain_at_50.append((measured[BATCH, True] - measured[BATCH, False]) * BATCH)
    out: dict[str, Any] = {
        "per_request_from_slope": {
            "what": f"null-transport pipeline, requests of {BATCH} vs {SLOPE_BATCH}: "
            "CPU per request (median of per-round slopes)",
            "events": n,
            "cpu_us_per_request": spread(per_round["recognised"], 1e6, 1),
        }
    }
    if can_switch:
        out["per_request_from_slope/full_parse"] = {
            "what": "the same with every batch answer decoded and matched in full",
            "cpu_us_per_request": spread(per_round["full_parse"], 1e6, 1),
        }
        out["all_success_recogniser_gain"] = {
            "what": "CPU per request of 50 saved by the recogniser: the pipeline "
            "with requests of 50, full parse minus recognised, paired per round",
            "cpu_us_per_request": spread(gain_at_50, 1e6, 1),
        }
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    pinned = pin(CLIENT_CPU)
    n = args.events
    figures: dict[str, list[float]] = {}
    profile_text = None
    for round_no in range(args.rounds):
        if round_no == 0 and args.cprofile:
            profiler = cProfile.Profile()
            profiler.enable()
            asyncio.run(_pipeline(n, "await_track"))
            profiler.disable()
            stream = io.StringIO()
            stats = pstats.Stats(profiler, stream=stream)
            stats.sort_stats("tottime").print_stats(args.cprofile)
            profile_text = stream.getvalue()
        for kind in args.event_kinds:
            suffix = "" if kind == "typical" else f"/{kind}"
            for producer in ("await_track", "track_nowait"):
                figures.setdefault(
                    f"pipeline_null_transport/{producer}{suffix}", []
                ).append(
                    _cpu_per_event(
                        lambda p=producer, k=kind: _pipeline(n, p, k),
                        n,  # type: ignore[misc]
                    )
                )
            figures.setdefault(f"floor_no_http{suffix}", []).append(
                _cpu_per_event(lambda k=kind: _floor_no_http(n, k), n)  # type: ignore[misc]
            )
    http: dict[str, list[float]] = {}
    with fake_server() as server:
        for _ in range(args.rounds):
            for in_flight in (1, 4):
                for how in ("trackasync_transport", "bare_session"):
                    server.reset()
                    http.setdefault(f"{how}/in_flight_{in_flight}", []).append(
                        asyncio.run(_http(server, args.requests, how, in_flight))
                    )
    summary: dict[str, Any] = {
        name: {"cpu_us_per_event": spread(values, 1e6, 2)}
        for name, values in figures.items()
    }
    for how, values in http.items():
        summary[f"http_only/{how}"] = {
            "cpu_us_per_request": spread([v / args.requests for v in values], 1e6, 1),
            "cpu_us_per_event": round(median(values) / args.requests / BATCH * 1e6, 2),
        }
    summary.update(_per_request(args))
    report: dict[str, Any] = {
        "settings": {
            "events": n,
            "event_kinds": args.event_kinds,
            "http_requests": args.requests,
            "rounds": args.rounds,
            "pinned_to_cpu": pinned,
        },
        "summary": summary,
        "per_event_pieces_us": _event_pieces(),
        "per_request_pieces_us": {**_pieces(), **_handoffs()},
    }
    if profile_text is not None:
        report["cprofile_top"] = profile_text.splitlines()
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a fast smoke run")
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=2_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cprofile", type=int, default=0, metavar="N")
    parser.add_argument("--slope-events", type=int, default=50_000)
    parser.add_argument("--slope-rounds", type=int, default=9)
    parser.add_argument(
        "--event-kinds", nargs="+", choices=EVENT_KINDS, default=list(EVENT_KINDS)
    )
    parser.add_argument("--out", help="also write the JSON report to this file")
    args = parser.parse_args(argv)
    if args.quick:
        args.events, args.requests, args.rounds = 10_000, 200, 1
        args.slope_events, args.slope_rounds = 5_000, 1
    return publish(args.out, lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
