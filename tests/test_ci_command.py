"""The README's test command is the one CI runs: the two cannot drift apart."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _test_command(text: str) -> list[str]:
    return [
        line
        for line in text.splitlines()
        if line.startswith("python3 -m venv") and "-m pytest" in line
    ]


def test_ci_runs_the_readmes_test_command() -> None:
    readme = _test_command((ROOT / "README.md").read_text(encoding="utf-8"))
    ci = _test_command((ROOT / ".ci" / "run").read_text(encoding="utf-8"))
    assert len(readme) == 1
    assert ci == readme
    # Coverage is measured (with its floor from pyproject.toml) in CI.
    assert "pytest --cov" in readme[0]
