"""The pytest fixture and the command-line server of the fake Tracking API."""

from __future__ import annotations

import asyncio
import importlib.metadata
import io
import json
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import aiohttp
import pytest

from trackasync.testing._fake_api import FakeTrackingAPI
from trackasync.testing._fake_serve import run_fake_server, serve

pytest_plugins = ["pytester"]

# Each style of test gets its own pytest run of a small sample project, with
# nothing configured but what that style itself needs.

_CLIENT = """
from trackasync import Client


def client_for(api):
    return Client(api.base_url, api.project_token, auth=api.auth, linger=0)
"""

_SYNC_TESTS = """
import asyncio

import pytest

from helpers import client_for


def test_sync_test_drives_the_client_with_asyncio_run(fake_tracking_api):
    api = fake_tracking_api

    async def main():
        async with client_for(api) as client:
            await client.track_and_wait({"registered": "ann"}, "signup")

    asyncio.run(main())
    assert [event.event_type for event in api.events] == ["signup"]


@pytest.mark.fake_tracking_api(project_token="custom", single_route_error_status=400)
def test_marker_configures(fake_tracking_api):
    assert fake_tracking_api.project_token == "custom"
    assert fake_tracking_api.single_route_error_status == 400


def test_each_test_gets_a_fresh_server(fake_tracking_api):
    assert fake_tracking_api.event_count == 0
    assert fake_tracking_api.requests == []
"""

_ASYNC_TESTS = """
import pytest

from helpers import client_for

{module_marker}


async def test_async_test_sends_and_reads_back(fake_tracking_api):
    api = fake_tracking_api
    async with client_for(api) as client:
        await client.track_and_wait({{"registered": "ann"}}, "signup")
        await client.update_customer({{"registered": "ann"}}, {{"tier": "gold"}})
    assert [event.event_type for event in api.events] == ["signup"]
    assert api.customer({{"registered": "ann"}}) == {{"tier": "gold"}}


async def test_faults_scripted_from_the_test(fake_tracking_api):
    api = fake_tracking_api
    api.fail_next(1, status=503)
    async with client_for(api) as client:
        receipt = await client.track_and_wait({{"registered": "ann"}}, "retried")
    assert receipt.attempts == 2
    assert [request.status for request in api.requests] == [503, 200]


@pytest.mark.fake_tracking_api(project_token="custom")
async def test_marker_configures(fake_tracking_api):
    assert fake_tracking_api.project_token == "custom"
"""

_STYLES = {
    # style: (ini lines, module-level marker, plugins to disable)
    "asyncio-strict": (
        "asyncio_mode = strict",
        "pytestmark = pytest.mark.asyncio",
        [],
    ),
    "asyncio-auto": ("asyncio_mode = auto", "", []),
    "anyio": (
        "",
        "pytestmark = pytest.mark.anyio",
        # pytest-asyncio is not needed for anyio tests; prove it.
        ["-p", "no:asyncio"],
    ),
}


def _sample_project(
    pytester: pytest.Pytester, ini: str = "", *, pytest_asyncio: bool = True
) -> None:
    if pytest_asyncio:  # which pytest-asyncio itself warns about when unset
        ini += "\nasyncio_default_fixture_loop_scope = function"
    pytester.makeini(f"[pytest]\n{ini}\nfilterwarnings =\n    error\n")
    pytester.makepyfile(helpers=_CLIENT)
    pytester.syspathinsert()


def _run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    # A separate process: each style gets a fresh pytest, loading the plugin
    # through its installed entry point as a user's run would.
    assert importlib.metadata.entry_points(group="pytest11", name="trackasync")
    # Hypothesis's plugin is slow to finish a session and irrelevant here.
    return pytester.runpytest_subprocess(
        "-p", "no:hypothesispytest", "-p", "no:cacheprovider", "--strict-markers", *args
    )


def test_the_fixture_works_in_sync_tests(pytester: pytest.Pytester) -> None:
    """A sync test gets a running fake; no async plugin involved at all."""
    _sample_project(pytester, pytest_asyncio=False)
    pytester.makepyfile(test_user=_SYNC_TESTS)
    _run(pytester, "-p", "no:asyncio", "-p", "no:anyio").assert_outcomes(passed=3)


@pytest.mark.parametrize("style", sorted(_STYLES))
def test_the_fixture_works_in_async_tests(
    pytester: pytest.Pytester, style: str
) -> None:
    """pytest-asyncio in strict and auto mode, and anyio: the same fixture."""
    ini, module_marker, disable = _STYLES[style]
    _sample_project(pytester, ini, pytest_asyncio=not disable)
    pytester.makepyfile(test_user=_ASYNC_TESTS.format(module_marker=module_marker))
    _run(pytester, *disable).assert_outcomes(passed=3)


def test_the_plugin_imports_nothing_until_used(pytester: pytest.Pytester) -> None:
    """Loading the plugin leaves aiohttp and the client out of the test run."""
    _sample_project(pytester, pytest_asyncio=False)
    pytester.makepyfile(
        test_light="""
import sys

# Read at collection, once the plugin is loaded and before any test runs: the
# tests may run in any order (pytest-randomly shuffles them).
PLUGIN_LOADED = "pytest_trackasync" in sys.modules
HEAVY = sorted(
    name for name in sys.modules
    if name.split(".")[0] in ("trackasync", "aiohttp", "msgspec")
)


def test_nothing_heavy_was_imported():
    assert PLUGIN_LOADED
    assert HEAVY == []


def test_using_the_fixture_loads_it(fake_tracking_api):
    assert "aiohttp.web" in sys.modules
""",
    )
    result = _run(pytester, "-p", "no:anyio", "-p", "no:asyncio", "-v")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["*test_nothing_heavy_was_imported PASSED*"])


def test_fixture_listed_by_pytest_fixtures(pytester: pytest.Pytester) -> None:
    """The fixture stays discoverable: ``pytest --fixtures`` shows it."""
    _sample_project(pytester)
    pytester.makepyfile(test_empty="def test_nothing():\n    pass\n")
    result = _run(pytester, "--fixtures")
    result.stdout.fnmatch_lines(["fake_tracking_api*", "*running fake Tracking API*"])


def test_the_old_plugin_module_still_works(pytester: pytest.Pytester) -> None:
    """Environments whose entry point names the old module keep working."""
    _sample_project(pytester, pytest_asyncio=False)
    pytester.makepyfile(test_old=_SYNC_TESTS)
    result = _run(
        pytester,
        *("-p", "no:trackasync", "-p", "trackasync.testing.pytest_plugin"),
        *("-p", "no:asyncio", "-p", "no:anyio"),
    )
    result.assert_outcomes(passed=3)


def test_a_raising_predicate_fails_its_test(pytester: pytest.Pytester) -> None:
    """The predicate's own exception and line are reported, within seconds."""
    _sample_project(pytester, "asyncio_mode = auto")
    pytester.makepyfile(
        test_bug="""
from helpers import client_for


async def test_with_a_buggy_predicate(fake_tracking_api):
    api = fake_tracking_api
    api.reject_commands(lambda name, data: data["event_type"] == "bad")
    async with client_for(api) as client:
        client.update_customer_nowait({"registered": "ann"}, {"tier": "gold"})


def test_next_test_is_unaffected(fake_tracking_api):
    assert fake_tracking_api.errors == []
"""
    )
    result = _run(pytester)
    result.assert_outcomes(passed=2, errors=1)
    result.stdout.fnmatch_lines(
        [
            "*ERROR at teardown of test_with_a_buggy_predicate*",
            # fnmatch: "?" stands for the brackets, which it would read as a set.
            '>*api.reject_commands(lambda name, data: data?"event_type"? == "bad")',
            "E*KeyError: 'event_type'",
            "test_bug.py:6: KeyError",
        ]
    )


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
    ("argv", "flag"),
    [
        (["--host", "0.0.0.0"], "--allow-remote"),
        (["--host", "192.0.2.1"], "--allow-remote"),
        (["--chaos", "2"], "--chaos"),
        (["--rate-limit", "0"], "--rate-limit"),
        (["--rate-window", "-1"], "--rate-window"),
        (["--secret", ""], "--secret"),
        (["--port", "70000"], "--port"),
    ],
)
def test_serve_rejects_bad_options_naming_the_flag(
    argv: list[str], flag: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Bad options make serve() return 2 with a message in terms of its flags."""
    assert serve(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("trackasync fake-server: ")
    assert flag in err
    assert "=True" not in err
    assert "allow_remote" not in err


def test_serve_names_the_port_flag_when_the_port_is_taken(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with FakeTrackingAPI() as api:
        port = api.base_url.rsplit(":", 1)[1]
        assert serve(["--port", port]) == 1
    err = capsys.readouterr().err
    assert err.startswith("trackasync fake-server: ")
    assert "--port" in err


async def test_state_route_shows_what_was_stored() -> None:
    """GET /_fake/state: events, customers, duplicates, requests, errors as JSON."""
    async with FakeTrackingAPI() as api:
        api.reject_commands(lambda name, data: data["event_type"] == "x")
        headers = {"Authorization": api.auth.header}
        base = f"/track/v2/projects/{api.project_token}"
        event = {"customer_ids": {"registered": "ann"}, "event_type": "buy"}
        event["timestamp"] = 1.5
        update = {"customer_ids": {"registered": "ann"}, "properties": {"t": "g"}}
        async with aiohttp.ClientSession(api.base_url, headers=headers) as session:
            for route, body in [
                ("customers/events", event),
                ("customers/events", event),
                ("customers", update),
            ]:
                async with session.post(f"{base}/{route}", json=body) as response:
                    assert response.status == 200
            async with session.get("/_fake/state") as response:
                assert response.status == 200
                state = await response.json()
        errors = api.errors
        api.reset()  # so leaving the block does not re-raise the KeyError
    assert errors
    assert state["events"] == [
        {
            "customer_ids": {"registered": "ann"},
            "event_type": "buy",
            "timestamp": 1.5,
            "properties": {},
        }
    ]
    assert state["event_count"] == 1
    assert state["duplicates"] == 1
    assert state["customers"] == []  # the update met the raising predicate
    assert state["errors"] == ["KeyError: 'event_type'"]
    assert [entry["route"] for entry in state["requests"]] == [
        "customers/events",
        "customers/events",
        "customers",
    ]
    assert set(state["requests"][0]) == {
        "method",
        "path",
        "route",
        "status",
        "commands",
        "request_id",
        "fault",
    }


async def test_state_route_lists_customers_by_plain_ids() -> None:
    async with FakeTrackingAPI() as api:
        headers = {"Authorization": api.auth.header}
        ids = {"registered": "ann", "cookie": "c1"}
        update = {"customer_ids": ids, "properties": {"t": "g"}}
        path = f"/track/v2/projects/{api.project_token}/customers"
        async with aiohttp.ClientSession(api.base_url, headers=headers) as session:
            async with session.post(path, json=update) as response:
                assert response.status == 200
            async with session.get("/_fake/state") as response:
                state = await response.json()
    assert state["customers"] == [{"customer_ids": ids, "properties": {"t": "g"}}]
    # Reading the state is not a request the test made to the API.
    assert len(state["requests"]) == 1


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
        banner = [first_line]
        while "Ctrl-C" not in banner[-1]:
            banner.append(process.stdout.readline())
        assert f"  stored data    GET {base_url}/_fake/state\n" in banner
        asyncio.run(_time_request(base_url))
        # Another process (this one) can read what the server stored.
        with urllib.request.urlopen(f"{base_url}/_fake/state", timeout=10) as answer:
            state = json.loads(answer.read())
        assert [entry["route"] for entry in state["requests"]] == ["system/time"]
        assert state["events"] == []
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
