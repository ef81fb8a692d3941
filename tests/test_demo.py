"""The ``trackasync`` command: the demo in-process and as a subprocess, and the CLI."""

from __future__ import annotations

import asyncio
import contextlib
import io
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from trackasync._cli import demo as _demo


def run_cli(*args: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
    """Run ``python -m trackasync ARGS`` in a fresh interpreter."""
    return subprocess.run(
        [sys.executable, "-m", "trackasync", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def run_demo(*argv: str) -> tuple[int, str]:
    """Run the demo in-process with its output collected; (exit code, output)."""
    out = io.StringIO()
    code = asyncio.run(_demo.run(_demo.parser().parse_args(list(argv)), out))
    return code, out.getvalue()


def test_demo_main_runs_in_process_and_exits_zero() -> None:
    """The demo's main() sends 2,000 commands through faults and its check passes."""
    assert _demo.main(["--count", "2000", "--quiet", "--seed", "11"]) == 0


def test_demo_summary_says_check_passed() -> None:
    """The in-process demo's summary counts what it sent and reports a passed check."""
    code, out = run_demo("--count", "1000", "--quiet", "--seed", "5")
    assert code == 0, out
    assert "commands sent        1000" in out
    assert "check passed" in out
    assert "check FAILED" not in out


def test_demo_check_fails_when_the_server_loses_data(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The reconciliation is real: a server that forgets what it stored fails it."""
    original = _demo._reconcile

    def forgetful(out: Any, plan: Any, api: Any) -> int:
        api.reset()  # every stored event and customer update is gone
        return original(out, plan, api)

    monkeypatch.setattr(_demo, "_reconcile", forgetful)
    code, out = run_demo("--count", "300", "--quiet", "--fault-rate", "0")
    assert code == 1
    assert "check FAILED" in out
    assert "check passed" not in out


def test_demo_main_writes_to_the_current_stdout() -> None:
    """main() writes its summary to sys.stdout as it is at the call, so it redirects."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = _demo.main(["--count", "100", "--quiet", "--fault-rate", "0"])
    assert code == 0
    assert "check passed" in out.getvalue()


def test_demo_runs_as_a_module_and_exits_zero() -> None:
    """``python -m trackasync demo --count 500 --quiet`` exits 0 with a passed check."""
    result = run_cli("demo", "--count", "500", "--quiet")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "commands sent        500" in result.stdout
    assert "check passed" in result.stdout


def test_help_exits_zero_and_lists_the_commands() -> None:
    """``trackasync --help`` prints the usage, naming both commands, and exits 0."""
    script = Path(sys.executable).with_name("trackasync")
    if not script.exists():
        pytest.skip("the trackasync console script is not installed next to python")
    result = subprocess.run(
        [str(script), "--help"], capture_output=True, text=True, timeout=30.0
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: trackasync")
    assert "demo" in result.stdout
    assert "fake-server" in result.stdout


def test_module_help_exits_zero() -> None:
    """``python -m trackasync --help`` prints the same usage and exits 0."""
    result = run_cli("--help", timeout=30.0)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: trackasync")


def test_unknown_command_exits_two() -> None:
    """An unknown command exits 2 and names the command on stderr."""
    result = run_cli("no-such-command", timeout=30.0)
    assert result.returncode == 2
    assert "unknown command 'no-such-command'" in result.stderr
