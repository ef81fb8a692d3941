"""The pytest fixture and the command-line server of the fake Tracking API."""

from __future__ import annotations

import asyncio
import importlib.metadata
import importlib.util
import io
import signal
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest

import trackasync.testing.pytest_plugin as plugin
from trackasync.testing._fake_api import FakeTrackingAPI
from trackasync.testing._fake_serve import run_fake_server, serve

pytest_plugins = ["pytester"]

_USER_TESTS = """
import aiohttp
import pytest


async def test_fixture_serves(fake_tracking_api):
    api = fake_tracking_api
    path = f"/track/v2/projects/{api.project_token}/customers/events"
    data = {"customer_ids": {"registered": "u"}, "event_type": "e", "timestamp": 1}
    headers = {"Authorization": api.auth.header}
    async with aiohttp.ClientSession(api.base_url, headers=headers) as session:
        async with session.post(path, json=data) as response:
            assert response.status == 200
    assert api.event_count == 1


@pytest.mark.fake_tracking_api(project_token="custom", single_route_error_status=400)
async def test_marker_configures(fake_tracking_api):
    assert fake_tracking_api.project_token == "custom"
    assert fake_tracking_api.single_route_error_status == 400


async def test_each_test_gets_a_fresh_server(fake_tracking_api):
    assert fake_tracking_api.event_count == 0
"""


def _plugin_args() -> list[str]:
    # Installed, pytest loads the plugin through its entry point; from a source
    # checkout it has to be named.
    if importlib.metadata.entry_points(group="pytest11", name="trackasync"):
        return []
    return ["-p", "trackasync.testing.pytest_plugin"]


def test_the_fixture_works_for_users_in_auto_mode(pytester: pytest.Pytester) -> None:
    """A user's auto-mode tests get a running, marker-configurable fake server."""
    # From a source checkout this process already imported the plugin, so
    # pytest warns it cannot rewrite its asserts; nothing else may warn.
    pytester.makeini(
        "[pytest]\nasyncio_mode = auto\n"
        "asyncio_default_fixture_loop_scope = function\n"
        "filterwarnings =\n    error\n    ignore::pytest.PytestAssertRewriteWarning\n"
    )
    pytester.makepyfile(test_user=_USER_TESTS)
    # Hypothesis's plugin is slow to finish a session and irrelevant here.
    result = pytester.runpytest_inprocess(
        *_plugin_args(), "-p", "no:hypothesispytest", "--strict-markers", "-q"
    )
    result.assert_outcomes(passed=3)


def test_the_plugin_loads_without_pytest_asyncio(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Without pytest-asyncio the plugin imports fine and defines no fixture."""
    monkeypatch.setitem(sys.modules, "pytest_asyncio", None)  # makes imports fail
    spec = importlib.util.spec_from_file_location("_plugin_copy", plugin.__file__)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert hasattr(module, "pytest_configure")
    assert not hasattr(module, "fake_tracking_api")
    assert hasattr(plugin, "fake_tracking_api")


class _Console(io.StringIO):
    """Captured output that tells when the server says it is ready."""

    def __init__(self) -> None:
        super().__init__()
        self.ready = asyncio.Event()

    def write(self, text: str) -> int:
        if "Ctrl-C" in text:
            self.ready.set()
        return super().write(text)


async def test_run_fake_server_prints_how_to_connect() -> None:
    """The console server prints its URL and credentials, serves, and stops."""
    out = _Console()
    stop = asyncio.Event()
    api = FakeTrackingAPI()
    task = asyncio.ensure_future(run_fake_server(api, stop=stop, out=out))
    await out.ready.wait()
    banner = out.getvalue()
    for value in (
        api.base_url,
        api.project_token,
        api.key_id,
        api.secret,
        api.public_token,
    ):
        assert value in banner
    headers = {"Authorization": api.auth.header}
    async with (
        aiohttp.ClientSession(api.base_url, headers=headers) as session,
        session.get(f"/track/v2/projects/{api.project_token}/system/time") as response,
    ):
        assert response.status == 200
    stop.set()
    await task
    assert "Stopped: 1 requests, 0 events stored" in out.getvalue()


@pytest.mark.parametrize(
    "argv", [["--host", "0.0.0.0"], ["--chaos", "2"], ["--rate-limit", "0"]]
)
def test_serve_rejects_bad_options(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """Bad options make serve() return 2 with a message, without serving."""
    assert serve(argv) == 2
    assert "trackasync fake-server:" in capsys.readouterr().err


@pytest.mark.skipif(sys.platform == "win32", reason="needs POSIX signals")
def test_serve_runs_until_interrupted() -> None:
    """serve() in a process answers requests and exits 0 on Ctrl-C."""
    root = Path(__file__).resolve().parents[1]
    code = (
        # A background test runner may ignore SIGINT; a terminal would not.
        "import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
        "from trackasync.testing._fake_serve import serve; "
        "sys.exit(serve(['--port', '0', '--project-token', 'cli', '--seed', '1']))"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", code],
        cwd=root,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        first_line = process.stdout.readline()
        assert first_line.startswith(
            "Fake Bloomreach Tracking API listening on http://127.0.0.1:"
        )
        base_url = first_line.rsplit(" ", 1)[1].strip()
        while "Ctrl-C" not in process.stdout.readline():
            pass
        asyncio.run(_time_request(base_url))
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, err
    assert "Stopped: 1 requests" in out


async def _time_request(base_url: str) -> None:
    headers = {"Authorization": FakeTrackingAPI().auth.header}
    async with (
        aiohttp.ClientSession(base_url, headers=headers) as session,
        session.get("/track/v2/projects/cli/system/time") as response,
    ):
        assert response.status == 200
