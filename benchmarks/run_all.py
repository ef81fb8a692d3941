"""Run every benchmark, keep each JSON report, and print a summary table.

    python benchmarks/run_all.py                 # full runs, about 5 minutes
    python benchmarks/run_all.py --quick         # smoke runs, under a minute
    python benchmarks/run_all.py --only enqueue e2e
    python benchmarks/run_all.py --snapshot      # measure HEAD, not the work tree

``--snapshot`` exports the committed ``trackasync/`` of HEAD to a temporary
directory and puts it first on ``PYTHONPATH`` for every script and child
process, so a run measures one commit even while the library is being edited;
the reports then name that commit.

Reports go to ``--out-dir`` (default ``benchmarks/results/``, or a temporary
directory with ``--quick``) as ``<name>.json``; the table
printed at the end (Markdown) is the one kept in ``benchmarks/README.md``.
``--table-only`` prints the table from the reports already there.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import SNAPSHOT_ENV

HERE = Path(__file__).resolve().parent
NAMES = (
    "enqueue",
    "encode",
    "e2e",
    "breakdown",
    "memory",
    "slow_server",
    "rate_limit",
    "latency",
    "loop_lag",
    "shared_budget",
    "budget_step",
    "sync_client",
    "metrics",
    "spool",
)


def _relative(path: Path, root: Path) -> str:
    """``path`` relative to the repository when it is inside it, for the report."""
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


#: The SyncClient's target, as a multiple of the async Client's CPU per event.
TARGET_SYNC = 1.15


def _yes(met: bool) -> str:
    return "met" if met else "**missed**"


def _median(entry: dict[str, Any]) -> float:
    return entry["median"]


def table(reports: dict[str, dict[str, Any]]) -> str:
    rows: list[tuple[str, str, str]] = []
    enq = reports.get("enqueue")
    if enq:
        res = enq["results_us_per_call"]
        for size in ("small", "typical", "large"):
            r = res[size]
            rows.append(
                (
                    f"enqueue, {size} event ({r['encoded_bytes']} B)",
                    f"track_nowait {_median(r['track_nowait']['us_per_call']):.2f} µs, "
                    f"await track {_median(r['await_track']['us_per_call']):.2f} µs, "
                    f"msgspec alone {_median(r['msgspec_encode']['us_per_call']):.2f} µs "
                    f"({r['track_nowait']['x_msgspec_encode']:.1f}x)",
                    (
                        f"≤ 2.5 µs: {_yes(enq['target']['met'])}"
                        if size == "typical"
                        else ""
                    ),
                )
            )
    e2e = reports.get("e2e")
    if e2e:
        n = e2e["settings"]["events"]
        # Reports before the realistic event had one summary, for the typical one.
        by_kind = (
            e2e["summary"]
            if "typical" in e2e["summary"] or ("realistic" in e2e["summary"])
            else {"typical": e2e["summary"]}
        )
        targets = (
            e2e["targets"]
            if set(e2e["targets"]) <= set(by_kind)
            else {"typical": e2e["targets"]}
        )
        for kind, s in by_kind.items():
            parts = [
                f"{name} {_median(s[name]['cpu_us_per_event']):.2f} µs CPU/event "
                f"({_median(s[name]['events_per_s']):,.0f} events/s, "
                f"peak RSS {_median(s[name]['max_rss_mib']):.1f} MiB)"
                for name in (
                    "trackasync",
                    "floor",
                    "json_dumps",
                    "trackasync_nowait",
                    "trackasync_unchecked",
                )
                if name in s
            ]
            rows.append((f"end to end, {n:,} {kind} events", "; ".join(parts), ""))
            t = targets[kind]
            floor = t["cpu_vs_floor"]
            rows.append(
                (
                    f"end to end, {kind} events: CPU ratios",
                    f"trackasync / floor {floor['measured']:.2f}; "
                    f"json_dumps / trackasync {t['cpu_vs_json_dumps']['measured']:.2f}; "
                    f"json_dumps / floor {t['floor_vs_json_dumps']['measured']:.2f}"
                    + (
                        "; no checks at all (ceiling) / floor "
                        f"{t['trackasync_unchecked_vs_floor']['measured']:.2f}"
                        if "trackasync_unchecked_vs_floor" in t
                        else ""
                    ),
                    f"≤ {floor.get('limit', 1.25):g}: {_yes(floor['met'])}; "
                    f"≥ 2: {_yes(t['cpu_vs_json_dumps']['met'])}",
                )
            )
    brk = reports.get("breakdown")
    if brk:
        s = brk["summary"]
        for suffix in ("", "/realistic"):
            if f"floor_no_http{suffix}" not in s:
                continue
            kind = "realistic" if suffix else "typical"
            wait = s[f"pipeline_null_transport/await_track{suffix}"]
            nowait = s[f"pipeline_null_transport/track_nowait{suffix}"]
            rows.append(
                (
                    f"breakdown: CPU per {kind} event without HTTP",
                    "trackasync pipeline (null transport) "
                    f"{_median(wait['cpu_us_per_event']):.2f} µs with await track, "
                    f"{_median(nowait['cpu_us_per_event']):.2f} µs with "
                    "track_nowait; floor "
                    f"{_median(s[f'floor_no_http{suffix}']['cpu_us_per_event']):.2f} µs",
                    "",
                )
            )
        if "per_request_from_slope" in s:

            def _us(entry: Any) -> float:
                return entry if isinstance(entry, (int, float)) else entry["median"]

            slope = _us(s["per_request_from_slope"]["cpu_us_per_request"])
            text = f"{slope:.0f} µs"
            if "per_request_from_slope/full_parse" in s:
                full = _us(s["per_request_from_slope/full_parse"]["cpu_us_per_request"])
                text += f"; with every answer parsed in full {full:.0f} µs"
            if "all_success_recogniser_gain" in s:
                gain = _us(s["all_success_recogniser_gain"]["cpu_us_per_request"])
                text += f"; recogniser's gain, paired: {gain:.0f} µs"
            rows.append(
                ("breakdown: pipeline's own CPU per request of 50 (slope)", text, "")
            )
        for in_flight in (1, 4):
            key = f"http_only/trackasync_transport/in_flight_{in_flight}"
            old = "http_only/trackasync_transport"
            if key not in s and (in_flight != 4 or old not in s):
                continue
            t = s.get(key) or s[old]
            b = (
                s.get(f"http_only/bare_session/in_flight_{in_flight}")
                or s["http_only/bare_session"]
            )
            rows.append(
                (
                    f"breakdown: HTTP only, per request of 50, {in_flight} in flight",
                    f"trackasync transport {_median(t['cpu_us_per_request']):.0f} µs "
                    f"({t['cpu_us_per_event']:.2f} µs/event), bare aiohttp session "
                    f"{_median(b['cpu_us_per_request']):.0f} µs "
                    f"({b['cpu_us_per_event']:.2f} µs/event)",
                    "",
                )
            )
    mem = reports.get("memory")
    if mem:
        s = mem["summary"]
        parts = [
            f"{mode}{' (baseline)' if mode in ('bytes_list', 'handle_floor') else ''}: "
            f"{_median(r['bytes_per_event']):.0f} B/event"
            for mode, r in s.items()
            if mode != "big_hung_server"
        ]
        target = mem["target"]
        held = s.get("hang_transport", {}).get("held_by_client")
        events = mem["settings"].get("events", held)
        rows.append(
            (
                f"memory, {events:,} queued typical events",
                ", ".join(parts),
                f"≤ {target['limit_bytes']:,} B: {_yes(target['met'])}",
            )
        )
        big = mem.get("targets", {}).get("peak_rss_default_client_big_events")
        if big:
            rows.append(
                (
                    "memory, default client full of ~100 KB events",
                    f"peak RSS {big['measured_mb']:,.1f} MB holding "
                    f"{big['held_events']:,} events"
                    + (
                        " (stopped at the RSS cap)" if big["stopped_at_rss_cap"] else ""
                    ),
                    f"≤ {big['limit_mb']:g} MB: {_yes(big['met'])}",
                )
            )
    if mem and "bursts" in mem:
        bs = mem["bursts"]
        parts = [
            f"{mode.removeprefix('bursts_')}: "
            f"{_median(r['rss_mib_per_burst']):+.2f} MiB RSS, "
            f"{_median(r['allocated_blocks_per_burst']):+.0f} blocks, "
            f"{_median(r['gc_objects_per_burst']):+.0f} objects"
            for mode, r in bs["summary"].items()
        ]
        rows.append(
            (
                f"memory after each burst of {bs['settings']['events_per_burst']:,} "
                "events (flushed, collected, trimmed), per burst after the first",
                "; ".join(parts),
                "",
            )
        )
    slow = reports.get("slow_server")
    if slow:
        st = slow["settings"]
        parts = [
            f"{key.split('=')[1]}: {_median(r['seconds_until_stored']):.2f} s "
            f"(floor {_median(r['floor_seconds']):.2f}, ideal {r['ideal_seconds']:.2f})"
            for key, r in slow["summary"].items()
        ]
        rows.append(
            (
                f"slow server ({st['response_delay_s'] * 1000:g} ms), "
                f"{st['events']:,} events, by max_in_flight",
                "; ".join(parts),
                "",
            )
        )
    rate = reports.get("rate_limit")
    if rate:
        rows.extend(
            (
                f"rate limit 100/s, {rate['settings']['events']:,} events, "
                f"producer offering {r['offered_events_per_s']:,.0f}/s "
                f"(achieved {_median(r['achieved_events_per_s']):,.0f}/s)",
                f"{_median(r['commands_per_request']):.2f} commands/request, "
                f"{_median(r['total_seconds']):.2f} s "
                f"(ideal {r['ideal_seconds']:.2f}), HTTP 429: {r['http_429']}",
                f"≥ 49: {_yes(rate['target']['met'])}",
            )
            for r in rate["summary"].values()
        )
    lat = reports.get("latency")
    if lat and "targets" in lat:
        s, t = lat["summary"], lat["targets"]
        linger = lat["settings"].get("await_linger")
        setting = "" if linger is None else f", await_linger={linger:g}"
        for count, key in (("1", "p50_1_caller"), ("20", "p50_20_callers")):
            bare, ours = s[f"bare_{count}"], s[f"awaited_{count}"]
            rows.append(
                (
                    f"track_and_wait latency, {count} caller(s){setting}",
                    f"p50 {ours['latency']['p50_ms']:.1f} ms (p99 "
                    f"{ours['latency']['p99_ms']:.1f}), bare request p50 "
                    f"{bare['latency']['p50_ms']:.1f} ms (p99 "
                    f"{bare['latency']['p99_ms']:.1f}): ratio {t[key]['measured']:.2f}; "
                    f"{ours.get('commands_per_request', 0):.2f} commands/request",
                    f"≤ {t[key]['limit']:g}: {_yes(t[key]['met'])}",
                )
            )
        if "producer" in s:
            r, c = s["producer"], t["commands_per_request_full_speed"]
            w = s.get("producer_with_awaiters")
            extra = ""
            if w:
                extra = (
                    f"; with 20 awaiters beside it {w['commands_per_request']:.2f}, "
                    f"their p50 {w['latency'].get('p50_ms', 0):.0f} ms"
                )
            rows.append(
                (
                    f"commands per request, track_nowait producer at full speed{setting}",
                    f"{r['commands_per_request']:.2f} (producer "
                    f"{r['producer_events_per_s']:,}/s){extra}",
                    f"≥ {c['limit']:g}: {_yes(c['met'])}",
                )
            )
    elif lat:  # a report from before the paired latency targets
        s = lat["summary"]
        for phase in ("floor_sequential", "sequential", "concurrent", "high_load"):
            if phase not in s:
                continue
            r = s[phase]
            extra = ""
            if "commands_per_request" in r:
                extra = f", {r['commands_per_request']:.2f} commands/request"
            if "producer_events_per_s" in r:
                extra += f", producer {r['producer_events_per_s']:,}/s"
            rows.append(
                (
                    f"track_and_wait latency, {phase.replace('_', ' ')}",
                    f"p50 {r['latency']['p50_ms']:.1f} ms, "
                    f"p99 {r['latency']['p99_ms']:.1f} ms "
                    f"({r['latency']['n']} calls){extra}",
                    "",
                )
            )
    lag = reports.get("loop_lag")
    if lag:
        limit = lag["settings"]["step_limit_ms"]
        for key, r in lag["summary"].items():
            client = statistics.median(r["client_step_max_ms"])
            rows.append(
                (
                    f"event loop, {key}",
                    f"longest client step {client:.2f} ms CPU, producer's "
                    f"{statistics.median(r['producer_step_max_ms']):.2f} ms; "
                    f"1 ms ticker lag p99 "
                    f"{statistics.median(r['lag_p99_ms']):.2f} ms, max "
                    f"{statistics.median(r['lag_max_ms']):.2f} ms",
                    f"≤ {limit:g} ms: {_yes(client <= limit)}" if key != "idle" else "",
                )
            )
    shared = reports.get("shared_budget")
    if shared:
        st = shared["settings"]
        parts = [
            f"{name}: {_median(r['accepted_requests_per_s']):.1f} requests/s "
            f"({r['share_of_limit']:.0%} of the limit), HTTP 429: "
            f"{sum(r['http_429_total'])} ({r['http_429_share']:.1%})"
            for name, r in shared["summary"].items()
        ]
        rows.append(
            (
                f"{st['processes']} processes in {st.get('groups', 1)} groups, "
                f"limit {st['server_rate_limit']}",
                "; ".join(parts),
                f"redis: < 1 % 429 and ≥ 90 %: {_yes(shared['target']['met'])}",
            )
        )
    step = reports.get("budget_step")
    if step:
        r = step["microseconds_per_step"]
        rows.append(
            (
                "rate budget step (file: one per request; redis: one per 4)",
                f"redis {_median(r['redis_step']):.0f} µs (PING "
                f"{_median(r['redis_ping']):.0f} µs), file "
                f"{_median(r['file_step']):.1f} µs, none "
                f"{_median(r['local_limiter']):.1f} µs",
                "",
            )
        )
    sync = reports.get("sync_client")
    if sync and "targets" in sync:
        for kind, cases in sync["summary"].items():
            base = _median(cases["async"]["cpu_us_per_event"])
            parts = [f"async Client {base:.2f} µs"]
            verdicts = []
            for case, entry in cases.items():
                if case == "async":
                    continue
                threads = int(case.removeprefix("sync_"))
                key = f"{kind}/{threads}_thread{'s' if threads > 1 else ''}"
                target = sync["targets"][key]
                parts.append(
                    f"SyncClient from {threads} thread(s) "
                    f"{_median(entry['cpu_us_per_event']):.2f} µs "
                    f"(paired ratio {target['measured']:.2f})"
                )
                verdicts.append(f"{threads}: {_yes(target['met'])}")
            rows.append(
                (
                    f"SyncClient vs Client, CPU per delivered {kind} event",
                    ", ".join(parts),
                    f"≤ {TARGET_SYNC:g}x, " + ", ".join(verdicts),
                )
            )
    elif sync:  # a report from before the CPU-per-event target
        r = sync["results_us_per_call"]
        rows.append(
            (
                "SyncClient.track vs Client.track_nowait, typical event",
                f"SyncClient.track {_median(r['sync_track']):.2f} µs, "
                f"track_nowait {_median(r['track_nowait']):.2f} µs "
                f"(paired difference +{sync['target']['measured']:.2f} µs)",
                f"≤ +{sync['target']['limit']:g} µs: {_yes(sync['target']['met'])}",
            )
        )
    met = reports.get("metrics")
    if met:
        calls, cpu = met["track_nowait_us_per_call"], met["pipeline_cpu_us_per_event"]
        ratios = met["ratios_wired_to_plain_median_per_round"]
        rows.append(
            (
                "metrics wired (OpenTelemetry SDK + prometheus_client) vs not, "
                "typical event",
                f"track_nowait {_median(calls['wired']):.2f} vs "
                f"{_median(calls['plain']):.2f} µs (paired ratio "
                f"{ratios['track_nowait']:.3f}); pipeline CPU "
                f"{_median(cpu['wired']):.2f} vs {_median(cpu['plain']):.2f} µs/event "
                f"(paired ratio {ratios['pipeline_cpu']:.3f})",
                f"track_nowait ≤ +{(met['target']['limit'] - 1) * 100:.0f} %: "
                f"{_yes(met['target']['met'])}",
            )
        )
    encode = reports.get("encode")
    if encode:
        for kind, result in encode["kinds"].items():
            ratio = result["ratio_to_msgspec"]["tree"]["median"]
            goal = result.get("goal_ratio")
            rows.append(
                (
                    f"encode at the call (`Codec.event`), {kind} event",
                    f"{_median(result['us_per_event']['tree']):.2f} µs, "
                    f"{ratio:.2f}x a plain msgspec encode",
                    "" if goal is None else f"≤ {goal:g}x: {_yes(ratio <= goal)}",
                )
            )
    spool = reports.get("spool")
    if spool:
        res, goals = spool["results"], spool["goals"]
        nowait, durable = (
            goals["track_nowait_cpu_ratio"],
            goals["durable_100_producers_events_per_s"],
        )
        for api in ("healthy", "down"):
            r = res[f"track_nowait/{api}"]
            rows.append(
                (
                    f"spool (interval), track_nowait, API {api}",
                    f"{r['spool']['cpu_us_per_event']:.2f} vs "
                    f"{r['memory']['cpu_us_per_event']:.2f} µs CPU/event "
                    f"without a spool ({r['cpu_ratio']:.2f}x); "
                    f"{r['spool']['commands_per_commit']:,.0f} commands per commit",
                    f"≤ {nowait['limit']:g}x: {_yes(r['cpu_ratio'] <= nowait['limit'])}",
                )
            )
        for api in ("healthy", "down"):
            r = res[f"await_track_100/{api}"]["spool"]
            rows.append(
                (
                    f"spool (durable), await track from 100 producers, API {api}",
                    f"{r['events_per_s']:,} events/s, {r['cpu_us_per_event']:.1f} µs "
                    f"CPU/event, {r['commands_per_commit']:,.1f} commands per commit",
                    f"≥ {durable['limit']:,}/s: "
                    f"{_yes(r['events_per_s'] >= durable['limit'])}",
                )
            )
        disk = spool["disk"]
        rows.append(
            (
                "spool on disk, API down",
                f"{disk['bytes_per_event']:.0f} bytes per event for a "
                f"{disk['body_bytes_per_event']}-byte body",
                "",
            )
        )
    lines = ["| benchmark | median result | target |", "|---|---|---|"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke runs only")
    parser.add_argument("--only", nargs="+", choices=NAMES, help="run just these")
    parser.add_argument("--out-dir", help="where the JSON reports go")
    parser.add_argument(
        "--table-only", action="store_true", help="print the table, run nothing"
    )
    parser.add_argument(
        "--snapshot",
        action="store_true",
        help="measure the library of the HEAD commit, not the working tree",
    )
    args = parser.parse_args(argv)
    root = HERE.parent
    env = dict(os.environ)
    snapshot_dir: Path | None = None
    if args.snapshot and not args.table_only:
        snapshot_dir, commit = _export_head(root)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(snapshot_dir), env.get("PYTHONPATH")) if p
        )
        env[SNAPSHOT_ENV] = commit
        print(f"== measuring trackasync of commit {commit}", file=sys.stderr)
    try:
        return _run(args, root, env)
    finally:
        if snapshot_dir is not None:
            shutil.rmtree(snapshot_dir, ignore_errors=True)


def _export_head(root: Path) -> tuple[Path, str]:
    """Extract HEAD's ``trackasync/`` into a new temporary directory."""
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"],
        cwd=root,
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout.strip()
    archive = subprocess.run(
        ["git", "archive", "--format=tar", "HEAD", "trackasync"],
        cwd=root,
        capture_output=True,
        check=True,
        timeout=60,
    ).stdout
    target = Path(tempfile.mkdtemp(prefix="trackasync-head-"))
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        if hasattr(tarfile, "data_filter"):  # 3.10.12+, 3.11.4+
            tar.extractall(target, filter="data")
        else:
            tar.extractall(target)  # our own commit's files
    return target, commit


def _run(args: argparse.Namespace, root: Path, env: dict[str, str]) -> int:
    if args.out_dir:
        out_dir = Path(args.out_dir).resolve()
    elif args.quick:  # smoke runs are not worth keeping
        out_dir = Path(tempfile.mkdtemp(prefix="trackasync-bench-"))
    else:
        out_dir = HERE / "results"
    out_dir.mkdir(parents=True, exist_ok=True)
    names = args.only or NAMES
    failed: list[str] = []
    if not args.table_only:
        for name in names:
            out = _relative(out_dir / f"{name}.json", root)
            script = _relative(HERE / f"bench_{name}.py", root)
            cmd = [sys.executable, script, "--out", out]
            if args.quick:
                cmd.append("--quick")
            print(f"== {' '.join(cmd)}", file=sys.stderr, flush=True)
            start = time.perf_counter()
            # Each script bounds its own run time; this is only a last resort.
            proc = subprocess.run(
                cmd, cwd=root, env=env, stdout=subprocess.DEVNULL, timeout=1800
            )
            took = time.perf_counter() - start
            print(f"== {name}: exit {proc.returncode}, {took:.0f} s", file=sys.stderr)
            if proc.returncode != 0:
                failed.append(name)
    reports = {}
    for name in NAMES:
        path = out_dir / f"{name}.json"
        if path.exists():
            reports[name] = json.loads(path.read_text())
    if reports:
        first = next(iter(reports.values()))
        machine = first["machine"]
        print(
            f"Machine: {machine['cpu_model']}, {machine['cpu_count']} cores, "
            f"Python {machine['python']}, {machine['platform']}; "
            f"first report dated {first['date']}."
        )
        print()
        print(table(reports))
        print()
        for name, report in reports.items():
            print(f"- {name}: `{report['command']}` ({report['date']})")
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
