"""What trackasync's pytest plugin costs a test run that never uses it.

A sample project with one trivial test is collected (``pytest --co -q``) in
fresh processes, round-robin over three setups, so the machine's noise hits
them alike:

- ``plugin``: as installed; pytest loads ``pytest_trackasync`` through the
  ``pytest11`` entry point;
- ``no_plugin``: the baseline, ``-p no:trackasync``;
- ``package_import``: the plugin disabled, and ``-p trackasync.testing`` loading
  the package instead: what a plugin inside the package would cost (importing
  any module of it imports the client, aiohttp and the fake server).

Also, in the same processes: whether ``aiohttp.web`` and ``trackasync._client``
were loaded by the time the test ran. Reported: median wall and CPU time
(user + system, which a loaded machine disturbs less) per process, and each
setup's median minus the baseline's.

    python benchmarks/bench_plugin.py            # 15 rounds
    python benchmarks/bench_plugin.py --quick    # 3 rounds
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import emit, header, median, spread

SETUPS: dict[str, list[str]] = {
    "plugin": [],
    "no_plugin": ["-p", "no:trackasync"],
    "package_import": ["-p", "no:trackasync", "-p", "trackasync.testing"],
}

_TEST = """
import sys


def test_modules():
    loaded = {name: name in sys.modules for name in ("aiohttp.web", "trackasync._client")}
    print("LOADED", loaded)
"""


def _run(
    project: Path, extra: list[str], collect_only: bool
) -> tuple[float, float, str]:
    command = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-s",
        "-p",
        "no:cacheprovider",
        # Hypothesis's plugin alone takes longer to import than all of this.
        "-p",
        "no:hypothesispytest",
        *(["--co"] if collect_only else []),
        *extra,
    ]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    result = subprocess.run(
        command, cwd=project, capture_output=True, text=True, check=True
    )
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, result.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--quick", action="store_true", help="3 rounds")
    parser.add_argument("--out", help="also write the JSON report here")
    args = parser.parse_args()
    rounds = 3 if args.quick else args.rounds
    wall: dict[str, list[float]] = {name: [] for name in SETUPS}
    cpu: dict[str, list[float]] = {name: [] for name in SETUPS}
    with tempfile.TemporaryDirectory() as directory:
        project = Path(directory)
        (project / "pytest.ini").write_text("[pytest]\n")
        (project / "test_sample.py").write_text(_TEST)
        for _ in range(rounds):
            for name, extra in SETUPS.items():
                seconds, used, _ = _run(project, extra, collect_only=True)
                wall[name].append(seconds)
                cpu[name].append(used)
        loaded = {
            name: _run(project, extra, collect_only=False)[2]
            .split("LOADED ", 1)[1]
            .split("\n", 1)[0]
            for name, extra in SETUPS.items()
        }
    report = {
        **header(),
        "rounds": rounds,
        "wall_seconds_per_collection": {n: spread(v) for n, v in wall.items()},
        "cpu_seconds_per_collection": {n: spread(v) for n, v in cpu.items()},
        "wall_median_minus_baseline_ms": _minus_baseline(wall),
        "cpu_median_minus_baseline_ms": _minus_baseline(cpu),
        "modules_loaded_in_the_test": loaded,
    }
    emit(report, args.out)


def _minus_baseline(samples: dict[str, list[float]]) -> dict[str, float]:
    base = median(samples["no_plugin"])
    return {n: round((median(v) - base) * 1000, 1) for n, v in samples.items()}


if __name__ == "__main__":
    main()
