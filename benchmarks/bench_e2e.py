"""End to end: 100,000 events to the fake server in another process.

Three senders post the same 100,000 events to the same fake server (``_server.py``, pinned to the other
core), each in a fresh child process pinned to core 0, so their CPU time and
peak RSS are their own:

- ``trackasync``: ``Client(rate_limit=None, max_in_flight=4)``, default linger
  and queue, producing with ``await client.track(...)`` in a loop. That is what
  a high-throughput producer does: under the default overflow "wait" the call
  returns at once while the queue has room and waits for room when it is full,
  so the producer runs at the speed of delivery instead of failing with
  ``QueueFull`` (which ``track_nowait`` would raise here).
- ``floor``: bare aiohttp + msgspec. Each event dict (with ``time.time()`` as
  its timestamp) is encoded once with a reused ``msgspec.json.Encoder``, 50 of
  them are joined into a batch body, and one ``ClientSession`` posts it, with at
  most 4 requests in flight. No validation, no per-event handles, no retries,
  no parsing of the answer beyond its status.
- ``json_dumps``: the same, but ``json.dumps`` of the whole batch dict per
  request: the obvious hand-written sender.
- ``trackasync_nowait`` (for information, not a target): the same client fed
  by ``track_nowait`` in a loop that yields to the event loop every 100 events
  and falls back to ``await client.track(...)`` when ``QueueFull`` is raised.
- ``trackasync_unchecked`` (only with ``--ceiling``; for information, not a
  mode of the library): the ``trackasync`` sender with the library's input
  checks replaced, in that child process only, by the encode alone: no check of
  customer ids, property names or property values. It is the ceiling that
  faster checks could ever reach: what is left between it and the floor is the
  pipeline itself (handles, the queue, batching, result routing).

Every sender runs with every kind of event of ``_common.EVENT_KINDS``
(``--event-kinds``): the typical one (8 properties, about 300 bytes of JSON,
lower-case strings, the default timestamp), the realistic one (capitals, an
explicit float timestamp, a ``datetime`` in one event of a hundred), ``tags``
(the realistic one with two lists of strings) and ``purchase`` (capitalised
names, a list of strings, a nested object, line items with prices, a
``datetime``, half from returning customers). The reference senders send the
same bytes as trackasync: ``_reference.check_same_json`` compares them for
every kind before anything is timed, and the run stops if they differ.

Each child measures, from just before its client or session is created until
every request was answered and it is closed: wall time, events per second,
CPU time (``getrusage(RUSAGE_SELF)``, user + system) per event, and its peak RSS
(``ru_maxrss``). After each run the server is asked how many events it stored;
a run that did not store exactly the events sent fails the benchmark. After an
untimed warm-up run (``--warmup-events``), the senders run round-robin for
``--rounds`` rounds, the order rotating each round; figures are medians.

Targets, per event kind: trackasync's client CPU per delivered event at most
1.35 times the floor's, and at least 2 times lower than json_dumps'.

``--chart PATH`` also draws the results as an SVG (``_chart.py``): CPU per
event and events per second of trackasync, the floor and json_dumps, per kind.
``--from-report JSON`` redraws the chart of an earlier report without running.

    python benchmarks/bench_e2e.py            # full run: 100,000 events, 5 rounds
    python benchmarks/bench_e2e.py --quick    # smoke run
    python benchmarks/bench_e2e.py --out benchmarks/results/e2e.json --chart docs/perf.svg
    python benchmarks/bench_e2e.py --from-report benchmarks/results/e2e.json --chart docs/perf.svg
    python benchmarks/bench_e2e.py --ceiling --rounds 5   # also the unchecked ceiling
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from _chart import Panel, render
from _common import (
    CLIENT_CPU,
    EVENT_KINDS,
    Pool,
    cpu_seconds,
    drain,
    emit,
    event_pool,
    fake_server,
    header,
    max_rss_bytes,
    median,
    pin,
    produce,
    python_child,
    rss_bytes,
    spread,
)
from _reference import BATCH, check_same_json, send_reference

SENDERS = ("trackasync", "floor", "json_dumps", "trackasync_nowait")
#: Run only with ``--ceiling``: trackasync without its input checks.
UNCHECKED = "trackasync_unchecked"
TARGET_VS_FLOOR = 1.35
TARGET_VS_JSON = 2.0
IN_FLIGHT = 4


# -- the senders, each run in its own child process ------------------------------------


def _remove_checks() -> None:
    """Make ``Codec.event`` the encode alone, in this process only.

    The ceiling's measure: the same body (the pools need no settling, which
    ``check_same_json`` proves for the library as shipped) without any check of
    ids, names or values.
    """
    from trackasync import _encoding

    event_struct = _encoding._Event

    def event(
        self: Any, customer_ids: Any, event_type: str, properties: Any, stamp: float
    ) -> bytes:
        encoded: bytes = self._encode(
            event_struct(customer_ids, event_type, stamp, properties)
        )
        return encoded

    _encoding.Codec.event = event  # type: ignore[method-assign]


async def _send_trackasync(args: argparse.Namespace, pool: Pool) -> dict[str, Any]:
    from trackasync import Client, PrivateKey

    if args.worker == UNCHECKED:
        _remove_checks()

    n = args.events
    client = Client(
        args.url,
        args.project_token,
        auth=PrivateKey(args.key_id, args.secret),
        rate_limit=None,
        max_in_flight=IN_FLIGHT,
    )
    async with client:
        # The awaited call for "trackasync"; fire and forget for the nowait one.
        await produce(client, pool, n, awaited=args.worker != "trackasync_nowait")
        stats = await drain(client, args.timeout)
    return {
        "delivered": stats.delivered,
        "failed": dict(stats.failed),
        "requests": stats.requests,
        "retries": stats.retries,
        "commands_per_request": round(stats.delivered / max(1, stats.requests), 2),
    }


def worker(args: argparse.Namespace) -> int:
    """Run one sender and print its figures as one JSON line."""
    pinned = pin(args.cpu)
    import json

    pool = event_pool(args.event)
    rss_start = rss_bytes()
    cpu_start = cpu_seconds()
    start = time.perf_counter()
    if args.worker.startswith("trackasync"):
        extra = asyncio.run(_send_trackasync(args, pool))
    else:
        extra = asyncio.run(
            send_reference(
                base_url=args.url,
                project_token=args.project_token,
                key_id=args.key_id,
                secret=args.secret,
                pool=pool,
                events=args.events,
                in_flight=IN_FLIGHT,
                use_msgspec=args.worker == "floor",
                timeout=args.timeout,
            )
        )
    wall = time.perf_counter() - start
    cpu = cpu_seconds() - cpu_start
    result = {
        "sender": args.worker,
        "event": args.event,
        "pinned": pinned,
        "events": args.events,
        "wall_s": wall,
        "cpu_s": cpu,
        "rss_start_bytes": rss_start,
        "max_rss_bytes": max_rss_bytes(),
        **extra,
    }
    print(json.dumps(result), flush=True)
    return 0


# -- the orchestrator ------------------------------------------------------------------


def _proc_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of another process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def _summary(runs: dict[str, list[dict[str, Any]]], n: int) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for name, results in runs.items():
        summary[name] = {
            "wall_s": spread([r["wall_s"] for r in results]),
            "events_per_s": spread([n / r["wall_s"] for r in results], digits=0),
            "cpu_us_per_event": spread([r["cpu_s"] / n for r in results], 1e6),
            "max_rss_mib": spread([r["max_rss_bytes"] for r in results], 2**-20, 1),
            "rss_start_mib": spread([r["rss_start_bytes"] for r in results], 2**-20, 1),
            "commands_per_request": median(
                [r["commands_per_request"] for r in results]
            ),
            "server_cpu_us_per_event": spread(
                [r["server_cpu_s"] / n for r in results], 1e6
            ),
        }
    return summary


def _targets(
    runs: dict[str, list[dict[str, Any]]], summary: dict[str, Any]
) -> dict[str, Any]:
    cpu = {name: summary[name]["cpu_us_per_event"]["median"] for name in summary}
    vs_floor = cpu["trackasync"] / cpu["floor"]
    json_gain = cpu["json_dumps"] / cpu["trackasync"]
    # Per-round ratios too: each round's senders ran back to back.
    rounds_done = len(runs["trackasync"])
    per_round_floor = [
        runs["trackasync"][i]["cpu_s"] / runs["floor"][i]["cpu_s"]
        for i in range(rounds_done)
    ]
    per_round_json = [
        runs["json_dumps"][i]["cpu_s"] / runs["trackasync"][i]["cpu_s"]
        for i in range(rounds_done)
    ]
    ceiling = {}
    if UNCHECKED in cpu:
        ceiling["trackasync_unchecked_vs_floor"] = {
            "what": "information only: trackasync without its input checks "
            "(--ceiling), CPU per event / floor's",
            "measured": round(cpu[UNCHECKED] / cpu["floor"], 3),
            "per_round": spread(
                [
                    runs[UNCHECKED][i]["cpu_s"] / runs["floor"][i]["cpu_s"]
                    for i in range(rounds_done)
                ]
            ),
        }
    return {
        **ceiling,
        "cpu_vs_floor": {
            "what": "trackasync CPU per event / floor's (medians)",
            "limit": TARGET_VS_FLOOR,
            "measured": round(vs_floor, 3),
            "per_round": spread(per_round_floor),
            "met": vs_floor <= TARGET_VS_FLOOR,
        },
        "cpu_vs_json_dumps": {
            "what": "json_dumps CPU per event / trackasync's (medians)",
            "limit": TARGET_VS_JSON,
            "measured": round(json_gain, 3),
            "per_round": spread(per_round_json),
            "met": json_gain >= TARGET_VS_JSON,
        },
        "floor_vs_json_dumps": {
            "what": "json_dumps CPU per event / floor's: the best any sender "
            "could reach against the 2x target",
            "measured": round(cpu["json_dumps"] / cpu["floor"], 3),
        },
        "trackasync_nowait_vs_floor": {
            "what": "information only: the track_nowait producer's CPU per "
            "event / floor's",
            "measured": round(cpu["trackasync_nowait"] / cpu["floor"], 3),
        },
    }


def orchestrate(args: argparse.Namespace) -> dict[str, Any]:
    pin(CLIENT_CPU)
    kinds: list[str] = args.event_kinds
    # Same bytes on the wire from every sender, or the comparison means nothing.
    checked = {kind: asyncio.run(check_same_json(event_pool(kind))) for kind in kinds}
    senders = (*SENDERS, UNCHECKED) if args.ceiling else SENDERS
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {
        kind: {name: [] for name in senders} for kind in kinds
    }
    deadline = time.monotonic() + args.max_seconds
    with fake_server() as server:

        def child(name: str, events: int, kind: str = "typical") -> list[str]:
            return [
                __file__,
                "--worker",
                name,
                "--event",
                kind,
                "--url",
                server.base_url,
                "--project-token",
                server.project_token,
                "--key-id",
                server.key_id,
                "--secret",
                server.secret,
                "--events",
                str(events),
                "--timeout",
                str(args.timeout),
            ]

        if args.warmup_events:
            # An untimed run first, so that no sender meets a cold server.
            python_child(
                child("floor", args.warmup_events),
                cpu=CLIENT_CPU,
                timeout=args.timeout + 60,
            )
        for round_no in range(args.rounds):
            # Rotate the order so no sender always runs first after a reset.
            shift = round_no % len(senders)
            order = [
                (kind, name)
                for name in senders[shift:] + senders[:shift]
                for kind in kinds
            ]
            for kind, name in order:
                server.reset()
                server_cpu = _proc_cpu_seconds(server.info["pid"])
                result = python_child(
                    child(name, args.events, kind),
                    cpu=CLIENT_CPU,
                    timeout=args.timeout + 60,
                )
                result["server_cpu_s"] = round(
                    _proc_cpu_seconds(server.info["pid"]) - server_cpu, 3
                )
                stats = server.stats()
                result["server"] = {
                    key: stats[key]
                    for key in ("events", "duplicates", "statuses", "accepted_commands")
                }
                if stats["events"] != args.events or stats["duplicates"]:
                    raise RuntimeError(
                        f"{name}: the server stored {stats['events']} events "
                        f"({stats['duplicates']} duplicates), expected {args.events}"
                    )
                runs[kind][name].append(result)
                print(
                    f"round {round_no + 1} {kind} {name}: {result['wall_s']:.2f} s wall, "
                    f"{result['cpu_s'] / args.events * 1e6:.2f} us CPU/event",
                    file=sys.stderr,
                    flush=True,
                )
            if time.monotonic() > deadline:
                break
        server_pinned = server.pinned

    n = args.events
    summary = {kind: _summary(runs[kind], n) for kind in kinds}
    targets = {kind: _targets(runs[kind], summary[kind]) for kind in kinds}
    return {
        "settings": {
            "events": n,
            "event_kinds": kinds,
            "rounds": len(runs[kinds[0]]["trackasync"]),
            "warmup_events": args.warmup_events,
            "batch_commands": BATCH,
            "in_flight": IN_FLIGHT,
            "trackasync": "Client(rate_limit=None, max_in_flight=4), default linger "
            "0.5 s and max_queue 10,000, overflow 'wait'; producer: await "
            "client.track(...) in a loop",
            "trackasync_nowait": "the same client; producer: track_nowait(...), "
            "sleep(0) every 100 events, await track(...) on QueueFull",
            "trackasync_unchecked": "only with --ceiling: the trackasync sender "
            "with Codec.event replaced by the encode alone in its process",
            "server": "FakeTrackingAPI in a child process, no rate limit, "
            f"pinned to the other core: {server_pinned}",
            "same_json_checked_bytes": checked,
        },
        "summary": summary,
        "targets": targets,
        "all_targets_met": {
            name: all(targets[kind][name]["met"] for kind in kinds)
            for name in ("cpu_vs_floor", "cpu_vs_json_dumps")
        },
        "runs": runs,
    }


#: The senders drawn, with their names on the chart.
CHARTED = {
    "trackasync": "trackasync",
    "floor": "bare aiohttp + msgspec",
    "json_dumps": "aiohttp + json.dumps",
}


def write_chart(report: dict[str, Any], path: str) -> None:
    """Draw ``report``'s medians per kind: CPU per event and events per second."""
    summary: dict[str, Any] = report["summary"]
    kinds = list(summary)
    names = list(CHARTED)

    def values(figure: str) -> list[list[float | None]]:
        return [
            [
                summary[kind][name][figure]["median"] if name in summary[kind] else None
                for name in names
            ]
            for kind in kinds
        ]

    cpu = values("cpu_us_per_event")

    # Each sender's CPU as a multiple of the floor's, in the same run.
    def multiple(value: float | None, floor: float | None) -> str:
        return f"({value / floor:.2f}x)" if value and floor else ""

    notes = [
        [multiple(value, row[1]) if i != 1 else "" for i, value in enumerate(row)]
        for row in cpu
    ]
    settings = report["settings"]
    machine = report["machine"]
    source = report["source"]
    svg = render(
        title=f"{settings['events']:,} events to the fake Tracking API, "
        "client CPU and throughput",
        series=list(CHARTED.values()),
        panels=[
            Panel(
                "Client CPU per event, µs (lower is better; x the bare sender)",
                kinds,
                cpu,
                digits=2,
                notes=notes,
                marks=[row[1] * TARGET_VS_FLOOR if row[1] else None for row in cpu],
            ),
            Panel(
                "Events per second (higher is better)",
                kinds,
                values("events_per_s"),
                digits=0,
            ),
        ],
        mark_label=f"target: {TARGET_VS_FLOOR}x the bare sender's CPU",
        footer=[
            f"Medians of {settings['rounds']} round(s); each sender in its own "
            "process on one core, the fake API in another process on the other",
            f"core; {settings['batch_commands']} commands per request, "
            f"{settings['in_flight']} in flight. The same bytes from every sender.",
            f"{machine['cpu_model']}, {machine['cpu_count']} cores, Python "
            f"{machine['python']}; trackasync {source.get('trackasync', '?')} "
            f"({source.get('commit', '?')}), {report['date']}.",
            f"Measured by: {report['command']}",
        ],
    )
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(svg)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a fast smoke run")
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=5, help="runs of each sender")
    parser.add_argument(
        "--warmup-events", type=int, default=20_000, help="untimed run first"
    )
    parser.add_argument(
        "--timeout", type=float, default=120.0, help="seconds a run may take"
    )
    parser.add_argument(
        "--max-seconds", type=float, default=900.0, help="no new round after this"
    )
    parser.add_argument(
        "--event-kinds",
        nargs="+",
        choices=EVENT_KINDS,
        default=list(EVENT_KINDS),
        help="the kinds of event to send (all by default)",
    )
    parser.add_argument(
        "--ceiling",
        action="store_true",
        help="also run trackasync without its input checks (information only)",
    )
    parser.add_argument("--out", help="also write the JSON report to this file")
    parser.add_argument("--chart", help="also draw the results as SVG to this file")
    parser.add_argument(
        "--from-report",
        help="run nothing: draw --chart from this earlier JSON report",
    )
    # Used by the orchestrator to start a sender in a child process.
    parser.add_argument(
        "--worker", choices=(*SENDERS, UNCHECKED), help=argparse.SUPPRESS
    )
    parser.add_argument("--event", choices=EVENT_KINDS, help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--project-token", help=argparse.SUPPRESS)
    parser.add_argument("--key-id", help=argparse.SUPPRESS)
    parser.add_argument("--secret", help=argparse.SUPPRESS)
    parser.add_argument("--cpu", type=int, default=CLIENT_CPU, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker(args)
    if args.from_report:
        if not args.chart:
            parser.error("--from-report needs --chart")
        write_chart(json.loads(Path(args.from_report).read_text()), args.chart)
        return 0
    if args.quick:
        args.events, args.rounds, args.warmup_events = 10_000, 1, 2_000
    report = header()  # first, so its date and load are those of the start
    report.update(orchestrate(args))
    emit(report, args.out)
    if args.chart:
        write_chart(report, args.chart)
    return 0


if __name__ == "__main__":
    sys.exit(main())
