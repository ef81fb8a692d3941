"""The fake as a test double: its own auth check, surfaced test bugs, lookups."""

from __future__ import annotations

import asyncio
import base64
import json
import threading
import types
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from trackasync import Client, DeliveryFailed
from trackasync.testing import FakeTrackingAPI


@pytest.fixture
async def api() -> AsyncIterator[FakeTrackingAPI]:
    server = FakeTrackingAPI()
    await server.start()
    yield server
    await server.stop()


async def post(
    api: FakeTrackingAPI, route: str, payload: Any, authorization: str
) -> tuple[int, Any]:
    headers = {"Authorization": authorization}
    path = f"/track/v2/projects/{api.project_token}/{route}"
    async with (
        aiohttp.ClientSession(api.base_url, headers=headers) as session,
        session.post(path, json=payload) as response,
    ):
        return response.status, await response.json()


EVENT = {"customer_ids": {"registered": "ann"}, "event_type": "e", "timestamp": 1}


# -- authentication, computed without the client's code ---------------------------


async def test_basic_auth_is_checked_against_a_hand_built_header(
    api: FakeTrackingAPI,
) -> None:
    """RFC 7617 by hand: base64 of "key:secret", not the client's encoder."""
    good = "Basic " + base64.b64encode(b"test-key-id:test-secret").decode()
    assert good == "Basic dGVzdC1rZXktaWQ6dGVzdC1zZWNyZXQ="
    assert await post(api, "customers/events", EVENT, good) == (
        200,
        {"success": True},
    )
    wrong = "Basic " + base64.b64encode(b"test-key-id:test-secreT").decode()
    status, body = await post(api, "customers/events", EVENT, wrong)
    assert (status, body["error"]) == (403, "invalid secret")


async def test_token_auth_is_checked_against_a_hand_built_header(
    api: FakeTrackingAPI,
) -> None:
    assert await post(api, "customers/events", EVENT, "Token test-public-token") == (
        200,
        {"success": True},
    )


async def test_a_bug_in_the_clients_header_code_is_caught(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Had the fake reused PrivateKey's encoder, it would accept this bug."""
    broken = types.SimpleNamespace(
        # A plausible bug: the URL-safe alphabet, and the bytes in a wrong order.
        b64encode=lambda raw: base64.urlsafe_b64encode(raw[::-1])
    )
    monkeypatch.setattr("trackasync._auth.base64", broken)
    async with FakeTrackingAPI(key_id="k?>", secret="s~~") as api:
        status, _ = await post(api, "customers/events", EVENT, api.auth.header)
        assert status in (401, 403)
        assert api.event_count == 0


# -- a predicate that raises -------------------------------------------------------


async def test_a_raising_predicate_rejects_and_is_recorded(
    api: FakeTrackingAPI,
) -> None:
    """The customer update has no event_type: KeyError, kept, command rejected."""
    api.reject_commands(lambda name, data: data["event_type"] == "bad")
    update = {"customer_ids": {"registered": "ann"}, "properties": {"x": 1}}
    status, body = await post(api, "customers", update, api.auth.header)
    assert status == 200
    assert body == {
        "success": False,
        "errors": ["reject_commands predicate raised KeyError: 'event_type'"],
    }
    assert api.customer({"registered": "ann"}) is None
    [error] = api.errors
    assert isinstance(error, KeyError)
    # The traceback leads to the test's own lambda.
    assert error.__traceback__ is not None
    with pytest.raises(KeyError, match="event_type"):
        api.raise_errors()
    api.reset()
    assert api.errors == []
    api.raise_errors()  # nothing left to raise


async def _client_meets_a_raising_predicate() -> None:
    async with FakeTrackingAPI() as api:
        api.reject_commands(lambda name, data: data["event_type"] == "bad")
        async with Client(
            api.base_url, api.project_token, auth=api.auth, linger=0
        ) as client:
            delivery = await client.update_customer({"registered": "ann"}, {"x": 1})
            with pytest.raises(DeliveryFailed) as failure:
                await delivery
        # Rejected at once, not retried for a minute against a 500.
        assert (failure.value.reason, failure.value.attempts) == ("rejected", 1)
        assert "KeyError" in failure.value.errors[0]


async def test_async_with_fails_with_the_predicates_exception() -> None:
    """Leaving ``async with`` re-raises the original exception."""
    with pytest.raises(KeyError, match="event_type"):
        await _client_meets_a_raising_predicate()


async def _test_body_fails_after_a_predicate_error() -> None:
    async with FakeTrackingAPI() as api:
        api.reject_commands(lambda name, data: data["missing"])
        await post(api, "customers/events", EVENT, api.auth.header)
        assert api.errors
        raise ZeroDivisionError


async def test_async_with_keeps_the_tests_own_exception() -> None:
    """A failing test body is not masked by a recorded predicate error."""
    with pytest.raises(ZeroDivisionError):
        await _test_body_fails_after_a_predicate_error()


# -- reading from another thread ------------------------------------------------------


async def test_state_can_be_read_and_scripted_from_another_thread(
    api: FakeTrackingAPI,
) -> None:
    """Inspection and fault scripting hold the lock the handlers take."""
    stop = threading.Event()
    seen: list[int] = []
    problems: list[BaseException] = []

    def reader() -> None:
        try:
            while not stop.is_set():
                seen.append(len(api.events))
                api.requests  # noqa: B018
                api.customers  # noqa: B018
                api.delay_next(1, 0.0)
                api.clear_faults()
        except BaseException as exc:  # pragma: no cover - reported below
            problems.append(exc)

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        headers = {"Authorization": api.auth.header}
        path = f"/track/v2/projects/{api.project_token}/batch"
        async with aiohttp.ClientSession(api.base_url, headers=headers) as session:
            for index in range(30):
                commands = [
                    {"name": "customers/events", "data": {**EVENT, "timestamp": i}}
                    for i in range(index * 10, index * 10 + 10)
                ]
                async with session.post(path, json={"commands": commands}) as answer:
                    assert answer.status == 200
    finally:
        stop.set()
        await asyncio.to_thread(thread.join)
    assert problems == []
    assert api.event_count == 300
    assert seen == sorted(seen)


async def test_customer_lookup_by_plain_ids(api: FakeTrackingAPI) -> None:
    """``api.customer(ids)`` takes the mapping the client sent, in any order."""
    ids = {"registered": "ann@example.com", "cookie": "c-1"}
    update = {"customer_ids": ids, "properties": {"tier": "gold"}}
    assert (await post(api, "customers", update, api.auth.header))[0] == 200
    assert api.customer({"cookie": "c-1", "registered": "ann@example.com"}) == {
        "tier": "gold"
    }
    assert api.customer({"registered": "ann@example.com"}) is None
    assert api.customers == {
        (("cookie", "c-1"), ("registered", "ann@example.com")): {"tier": "gold"}
    }


# -- served from a thread, for sync code ------------------------------------------


def _post_sync(api: FakeTrackingAPI, route: str, payload: Any) -> tuple[int, Any]:
    request = urllib.request.Request(
        f"{api.base_url}/track/v2/projects/{api.project_token}/{route}",
        data=json.dumps(payload).encode(),
        headers={"Authorization": api.auth.header, "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        return response.status, json.loads(response.read())


def test_with_serves_from_a_thread_for_sync_code() -> None:
    """No event loop in this thread: the fake brings its own."""
    with FakeTrackingAPI() as api:
        assert _post_sync(api, "customers/events", EVENT) == (200, {"success": True})
        api.fail_next(1, status=503)
        with pytest.raises(urllib.error.HTTPError) as failure:
            _post_sync(api, "customers/events", EVENT)
        assert failure.value.code == 503
        failure.value.close()
        assert [event.event_type for event in api.events] == ["e"]
        threads = {thread.name for thread in threading.enumerate()}
        assert "trackasync-fake-api" in threads
    with pytest.raises(RuntimeError, match="not running"):
        api.base_url  # noqa: B018
    assert "trackasync-fake-api" not in {t.name for t in threading.enumerate()}
    assert api.event_count == 1  # the data outlives the server


def test_with_cannot_enter_twice() -> None:
    with FakeTrackingAPI() as api, pytest.raises(RuntimeError, match="already"):
        api.__enter__()


def test_with_raises_the_bind_error_and_leaves_no_thread() -> None:
    with FakeTrackingAPI() as first:
        port = int(first.base_url.rsplit(":", 1)[1])
        second = FakeTrackingAPI(port=port)
        with pytest.raises(OSError, match="address already in use"):
            second.__enter__()
    assert "trackasync-fake-api" not in {t.name for t in threading.enumerate()}


def _update_with_a_buggy_predicate() -> None:
    with FakeTrackingAPI() as api:
        api.reject_commands(lambda name, data: data["event_type"] == "x")
        update = {"customer_ids": {"registered": "ann"}, "properties": {"x": 1}}
        assert _post_sync(api, "customers", update)[0] == 200


def test_with_re_raises_a_predicate_error() -> None:
    with pytest.raises(KeyError, match="event_type"):
        _update_with_a_buggy_predicate()


def test_a_predicate_may_read_the_fake() -> None:
    """A predicate runs under the fake's lock; reading the fake must not deadlock.

    Served from a thread, so a deadlock would show as a timeout, not a hang.
    """
    with FakeTrackingAPI() as api:
        api.reject_commands(
            lambda name, data: (
                name == "customers" and api.customer(data["customer_ids"]) is None
            ),
            error="unknown customer",
        )
        api.reject_commands(lambda name, data: api.event_count >= 1)
        update = {"customer_ids": {"registered": "ann"}, "properties": {"x": 1}}
        assert _post_sync(api, "customers", update) == (
            200,
            {"success": False, "errors": ["unknown customer"]},
        )
        assert _post_sync(api, "customers/events", EVENT)[1] == {"success": True}
        second = {**EVENT, "timestamp": 2}
        assert _post_sync(api, "customers/events", second)[1]["errors"] == [
            "Rejected by the fake server"
        ]
        assert api.event_count == 1
