"""The metrics extras are optional: trackasync imports neither library, and says
which extra to install when one is missing."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from trackasync import MissingExtra
from trackasync._metrics import COMMANDS, DURATION, METRICS, _missing

README = Path(__file__).resolve().parents[1] / "README.md"


def run(code: str) -> str:
    """Run ``code`` in a fresh interpreter; its stdout."""
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_importing_trackasync_imports_neither_library() -> None:
    """With both libraries installed, ``import trackasync`` loads neither."""
    out = run(
        """
        import sys
        import opentelemetry, prometheus_client  # installed: the test extra
        for name in list(sys.modules):
            if name.startswith(("opentelemetry", "prometheus_client")):
                del sys.modules[name]
        import trackasync
        loaded = [
            name for name in sys.modules
            if name.startswith(("opentelemetry", "prometheus_client"))
        ]
        print(loaded)
        """
    )
    assert out.strip() == "[]"


def test_without_the_extras_the_wiring_names_the_extra_to_install() -> None:
    """With the libraries absent, trackasync imports and runs, and each wiring
    function raises MissingExtra (an ImportError) naming its extra."""
    out = run(
        """
        import sys
        # As if not installed: "import opentelemetry" raises ModuleNotFoundError.
        sys.modules["opentelemetry"] = None
        sys.modules["prometheus_client"] = None
        import trackasync
        client = trackasync.Client(
            "https://api.exponea.com", "t", auth=trackasync.PublicToken("p")
        )
        for wire in (trackasync.otel_metrics, trackasync.prometheus_metrics):
            try:
                wire(client, name="app")
            except trackasync.MissingExtra as exc:
                assert isinstance(exc, ImportError)
                assert isinstance(exc.__cause__, ModuleNotFoundError)
                print(exc)
            else:
                raise SystemExit("no error")
        """
    )
    assert out.splitlines() == [
        "opentelemetry is not installed: pip install 'trackasync[otel]'",
        "prometheus_client is not installed: pip install 'trackasync[prometheus]'",
    ]


def test_another_import_error_is_not_mistaken_for_a_missing_extra() -> None:
    """Only the extra's own library being absent becomes MissingExtra."""
    other = ModuleNotFoundError("No module named 'elsewhere'", name="elsewhere")
    with pytest.raises(ModuleNotFoundError) as raised:
        _missing(other, "opentelemetry", "otel")
    assert raised.value is other
    inner = ModuleNotFoundError("x", name="opentelemetry.metrics")
    with pytest.raises(MissingExtra, match=r"trackasync\[otel\]"):
        _missing(inner, "opentelemetry", "otel")


def test_the_readme_table_lists_every_metric() -> None:
    """Each metric's OpenTelemetry and Prometheus names are in the README's table,
    and the table has no row for a metric that does not exist."""
    text = README.read_text(encoding="utf-8")
    rows = re.findall(
        r"^\| `(trackasync\.[a-z_.]+)`<br>`(trackasync_[a-z_]+)` \|", text, re.M
    )
    names = [(m.otel, m.prometheus) for m in METRICS]
    names += [(h.otel, h.prometheus) for h in (DURATION, COMMANDS)]
    assert sorted(rows) == sorted(names)
