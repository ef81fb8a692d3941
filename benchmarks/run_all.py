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
    "e2e",
    "breakdown",
    "memory",
    "slow_server",
    "rate_limit",
    "shared_budget",
    "sync_client",
)


def _relative(path: Path, root: Path) -> str:
    """``path`` relative to the repository when it is inside it, for the report."""
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


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
        s = e2e["summary"]
        n = e2e["settings"]["events"]
        for name in ("trackasync", "floor", "json_dumps", "trackasync_nowait"):
            if name not in s:
                continue
            r = s[name]
            rows.append(
                (
                    f"end to end, {n:,} events: {name}",
                    f"{_median(r['cpu_us_per_event']):.2f} µs CPU/event, "
                    f"{_median(r['wall_s']):.2f} s, "
                    f"{_median(r['events_per_s']):,.0f} events/s, "
                    f"peak RSS {_median(r['max_rss_mib']):.1f} MiB",
                    "",
                )
            )
        t = e2e["targets"]
        rows.append(
            (
                "end to end: CPU ratios",
                f"trackasync / floor {t['cpu_vs_floor']['measured']:.2f}; "
                f"json_dumps / trackasync {t['cpu_vs_json_dumps']['measured']:.2f}; "
                f"json_dumps / floor {t['floor_vs_json_dumps']['measured']:.2f}",
                f"≤ 1.25: {_yes(t['cpu_vs_floor']['met'])}; "
                f"≥ 2: {_yes(t['cpu_vs_json_dumps']['met'])}",
            )
        )
    brk = reports.get("breakdown")
    if brk:
        s = brk["summary"]
        rows.append(
            (
                "breakdown: CPU per event without HTTP",
                "trackasync pipeline (null transport) "
                f"{_median(s['pipeline_null_transport/await_track']['cpu_us_per_event']):.2f} µs "
                "with await track, "
                f"{_median(s['pipeline_null_transport/track_nowait']['cpu_us_per_event']):.2f} µs "
                "with track_nowait; floor "
                f"{_median(s['floor_no_http']['cpu_us_per_event']):.2f} µs",
                "",
            )
        )
        t = s["http_only/trackasync_transport"]
        b = s["http_only/bare_session"]
        rows.append(
            (
                "breakdown: HTTP only, per request of 50",
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
            f"{mode}{' (baseline)' if mode == 'bytes_list' else ''}: "
            f"{_median(r['bytes_per_event']):.0f} B/event"
            for mode, r in s.items()
        ]
        rows.append(
            (
                f"memory, {mem['settings']['events']:,} queued events",
                ", ".join(parts),
                f"≤ 1 KB: {_yes(mem['target']['met'])}",
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
    shared = reports.get("shared_budget")
    if shared:
        st = shared["settings"]
        parts = [
            f"{name}: {_median(r['accepted_requests_per_s']):.1f} requests/s "
            f"({r['share_of_limit']:.0%} of the limit), HTTP 429: "
            f"{sum(r['http_429_total'])}"
            for name, r in shared["summary"].items()
        ]
        rows.append(
            (
                f"{st['processes']} processes, one host, limit {st['server_rate_limit']}",
                "; ".join(parts),
                f"shared: no 429 and ≥ 90 %: {_yes(shared['target']['met'])}",
            )
        )
    sync = reports.get("sync_client")
    if sync:
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
