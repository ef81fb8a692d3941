"""The test kit's helpers: the fake's settings for an app, waiting, unclosed clients."""

from __future__ import annotations

import time

import pytest

from trackasync import Client, SyncClient
from trackasync.testing import FakeTrackingAPI

from .test_fake_plugin import _run, _sample_project

pytest_plugins = ["pytester"]


def test_environ_points_an_app_configured_from_the_environment_at_the_fake(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``api.environ`` is all ``from_env`` needs: the events arrive."""
    with FakeTrackingAPI() as api:
        for name, value in api.environ.items():
            monkeypatch.setenv(name, value)
        with SyncClient.from_env(linger=0) as client:
            client.track({"registered": "ann"}, "signup")
        assert [e.event_type for e in api.events] == ["signup"]
        assert api.environ["TRACKASYNC_KEY_ID"] == api.key_id


def test_wait_for_events_returns_once_the_app_sent_them() -> None:
    """No flush in the test: waiting is enough, and only matching events count."""
    with (
        FakeTrackingAPI() as api,
        SyncClient(
            api.base_url, api.project_token, auth=api.auth, linger=0.2
        ) as client,
    ):
        client.track({"registered": "ann"}, "view")
        client.track({"registered": "ann"}, "signup")
        [event] = api.wait_for_events(where=lambda e: e.event_type == "signup")
        assert event.customer_ids == {"registered": "ann"}
        assert len(api.wait_for_events(2)) == 2


def test_wait_for_events_says_what_did_arrive() -> None:
    """On timeout the failure lists the stored events and the requests seen."""
    with (
        FakeTrackingAPI() as api,
        SyncClient(api.base_url, api.project_token, auth=api.auth, linger=0) as client,
    ):
        client.track_and_wait({"registered": "ann"}, "view")
        started = time.monotonic()
        with pytest.raises(AssertionError) as caught:
            api.wait_for_events(where=lambda e: e.event_type == "signup", timeout=0.2)
        assert time.monotonic() - started < 10
    message = str(caught.value)
    assert "found 0" in message
    assert "'view' x1" in message
    assert "requests: 1" in message


@pytest.mark.parametrize("bad", [{"count": 0}, {"timeout": -1.0}])
def test_wait_for_events_refuses_bad_arguments(bad: dict[str, float]) -> None:
    """A count under 1 or a negative timeout is a ValueError at the call."""
    api = FakeTrackingAPI()
    with pytest.raises(ValueError, match=next(iter(bad))):
        api.wait_for_events(**bad)  # type: ignore[arg-type]


async def test_await_events_lets_the_app_run_meanwhile() -> None:
    """In an async test the client in the same loop keeps sending while it waits."""
    async with (
        FakeTrackingAPI() as api,
        Client(api.base_url, api.project_token, auth=api.auth, linger=0.2) as client,
    ):
        client.track_nowait({"registered": "ann"}, "signup")
        [event] = await api.await_events()
        assert event.event_type == "signup"
        with pytest.raises(AssertionError, match="found 1"):
            await api.await_events(2, timeout=0.1)


_LEFT_OPEN = """
from trackasync import Client, SyncClient


def test_left_a_sync_client_open(fake_tracking_api):
    api = fake_tracking_api
    client = SyncClient(api.base_url, api.project_token, auth=api.auth, linger=30)
    client.track({"registered": "ann"}, "signup")


async def test_left_an_async_client_open(fake_tracking_api):
    api = fake_tracking_api
    client = Client(api.base_url, api.project_token, auth=api.auth, linger=30)
    await client.track({"registered": "ann"}, "signup")
    test_left_an_async_client_open.client = client  # still alive at teardown


def test_closed_clients_are_fine(fake_tracking_api):
    api = fake_tracking_api
    with SyncClient(api.base_url, api.project_token, auth=api.auth) as client:
        client.track({"registered": "ann"}, "signup")
    SyncClient(api.base_url, api.project_token, auth=api.auth)  # never used
"""


def test_the_fixture_reports_a_client_left_open(pytester: pytest.Pytester) -> None:
    """Each test that left a client open errors at its own teardown, promptly."""
    _sample_project(pytester, "asyncio_mode = auto")
    pytester.makepyfile(test_open=_LEFT_OPEN)
    started = time.monotonic()
    result = _run(pytester, "-p", "no:randomly", "-W", "ignore::ResourceWarning")
    elapsed = time.monotonic() - started
    result.assert_outcomes(passed=3, errors=2)
    result.stdout.fnmatch_lines(
        [
            "*ERROR at teardown of test_left_a_sync_client_open*",
            "*test_left_a_sync_client_open left a trackasync client open:",
            "*a SyncClient was left open (1 command(s) still queued*",
            "*ERROR at teardown of test_left_an_async_client_open*",
            "*a Client was left open*",
        ]
    )
    # The SyncClient was closed at teardown: the run does not wait for it at
    # exit (its shutdown_timeout is 10 s by default).
    assert "still queued..." not in result.stdout.str()
    assert elapsed < 60
