"""Scripted faults, chaos and the rate limiter of the fake Tracking API."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from trackasync.testing._fake_api import CHAOS_KINDS, FakeTrackingAPI
from trackasync.testing._fake_faults import SlidingWindowLimiter


@pytest.fixture
async def api() -> AsyncIterator[FakeTrackingAPI]:
    async with FakeTrackingAPI() as server:
        yield server


@pytest.fixture
async def session(api: FakeTrackingAPI) -> AsyncIterator[aiohttp.ClientSession]:
    headers = {"Authorization": api.auth.header}
    async with aiohttp.ClientSession(api.base_url, headers=headers) as client:
        yield client


def batch_url(api: FakeTrackingAPI) -> str:
    return f"/track/v2/projects/{api.project_token}/batch"


def time_url(api: FakeTrackingAPI) -> str:
    return f"/track/v2/projects/{api.project_token}/system/time"


def one_event(timestamp: float = 1.0) -> dict[str, Any]:
    data = {
        "customer_ids": {"registered": "ann@example.com"},
        "event_type": "purchase",
        "timestamp": timestamp,
    }
    return {"commands": [{"name": "customers/events", "data": data}]}


async def send(
    session: aiohttp.ClientSession, api: FakeTrackingAPI, payload: Any = None
) -> aiohttp.ClientResponse:
    async with session.post(batch_url(api), json=payload or one_event()) as response:
        await response.read()
        return response


async def wait_for(condition: Any, timeout: float = 1.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.002)


# -- scripted errors ------------------------------------------------------------------


async def test_fail_next_answers_errors_then_recovers(
    api: FakeTrackingAPI, session: aiohttp.ClientSession
) -> None:
    """fail_next(2) fails two requests without storing, then all is normal."""
    api.fail_next(2)
    statuses = [(await send(session, api)).status for _ in range(3)]
    assert statuses == [500, 500, 200]
    assert api.event_count == 1
    assert [request.fault for request in api.requests] == ["500", "500", None]
    assert api.pending_faults == 0


async def test_injected_errors_have_a_default_envelope(
    api: FakeTrackingAPI, session: aiohttp.ClientSession
) -> None:
    """An injected 502 answers the errors-list envelope with an x-request-id."""
    api.fail_next(status=502)
    async with session.post(batch_url(api), json=one_event()) as response:
        body = await response.json()
    assert response.status == 502
    assert body == {
        "success": False,
        "errors": [
            {"code": 502, "description": "Bad Gateway", "message": "Bad Gateway"}
        ],
    }
    assert response.headers["x-request-id"]
    assert "Retry-After" not in response.headers


@pytest.mark.parametrize(
    ("retry_after", "header"),
    [(2, "2"), (0.5, "0.5"), ("Wed, 21 Oct 2015 07:28:00 GMT", None)],
)
async def test_fail_next_can_send_retry_after(
    api: FakeTrackingAPI,
    session: aiohttp.ClientSession,
    retry_after: float | str,
    header: str | None,
) -> None:
    """retry_after becomes a Retry-After header, in seconds or as a date."""
    api.fail_next(status=429, retry_after=retry_after)
    response = await send(session, api)
    assert response.status == 429
    assert response.headers["Retry-After"] == (header or retry_after)
    assert api.requests[-1].fault == "429+retry-after"


@pytest.mark.parametrize(
    ("body", "content_type", "raw"),
    [
        (
            {"success": False, "error": "nope"},
            "application/json",
            b'{"success":false,"error":"nope"}',
        ),
        ("no permission", "text/plain", b"no permission"),
        (b"<html>", "text/plain", b"<html>"),
    ],
)
async def test_fail_next_sends_a_custom_body(
    api: FakeTrackingAPI,
    session: aiohttp.ClientSession,
    body: Any,
    content_type: str,
    raw: bytes,
) -> None:
    """A custom body is JSON-encoded, or sent as plain text when str or bytes."""
    api.fail_next(status=403, body=body)
    async with session.post(batch_url(api), json=one_event()) as response:
        assert response.status == 403
        assert response.content_type == content_type
        assert await response.read() == raw


async def test_faults_can_target_one_route(
    api: FakeTrackingAPI, session: aiohttp.ClientSession
) -> None:
    """A fault for the batch route is not used up by a system/time request."""
    api.fail_next(status=503, route="batch")
    async with session.get(time_url(api)) as response:
        assert response.status == 200
    assert (await send(session, api)).status == 503
    with pytest.raises(ValueError, match="unknown route"):
        api.fail_next(route="events")


# -- drops and delays --------------------------------------------------------------


async def test_drop_before_store_loses_the_data(
    api: FakeTrackingAPI, session: aiohttp.ClientSession
) -> None:
    """drop_next closes the connection unanswered and stores nothing."""
    api.drop_next()
    with pytest.raises(aiohttp.ClientConnectionError):
        await send(session, api)
    assert api.event_count == 0
    [logged] = api.requests
    assert (logged.status, logged.fault, logged.commands) == (None, "drop", 0)
    assert (await send(session, api)).status == 200  # the next one is fine


async def test_drop_after_store_keeps_the_data(
    api: FakeTrackingAPI, session: aiohttp.ClientSession
) -> None:
    """drop_next(after_store=True) stores the commands, yet the client gets no answer."""
    api.drop_next(after_store=True)
    with pytest.raises(aiohttp.ClientConnectionError):
        await send(session, api)
    assert api.event_count == 1
    [logged] = api.requests
    assert (logged.status, logged.fault, logged.commands) == (None, "drop_after", 1)
    # The client's dedup-safe resend of the same payload is discarded.
    assert (await send(session, api)).status == 200
    assert (api.event_count, api.duplicates) == (1, 1)


async def test_delay_next_slows_answers(
    api: FakeTrackingAPI, session: aiohttp.ClientSession
) -> None:
    """delay_next holds the answer for the given time, then answers normally."""
    api.delay_next(1, 0.02)
    started = time.monotonic()
    assert (await send(session, api)).status == 200
    assert time.monotonic() - started >= 0.02
    assert api.requests[-1].fault == "delay"
    assert api.event_count == 1


async def test_response_delay_applies_to_every_request(
    api: FakeTrackingAPI, session: aiohttp.ClientSession
) -> None:
    """The response_delay attribute slows all requests until set back to 0."""
    api.response_delay = 0.01
    started = time.monotonic()
    await send(session, api, one_event(1))
    await send(session, api, one_event(2))
    assert time.monotonic() - started >= 0.02
    api.response_delay = 0.0
    assert api.event_count == 2


async def test_a_timed_out_request_may_still_be_stored(
    api: FakeTrackingAPI, session: aiohttp.ClientSession
) -> None:
    """When the client gives up on a slow answer, the server still stores the data."""
    # Wide margins: on a loaded machine a 30 ms delay could end before the
    # client's timeout got to run in the same loop.
    api.delay_next(1, 0.5)
    with pytest.raises(asyncio.TimeoutError):
        await session.post(
            batch_url(api), json=one_event(), timeout=aiohttp.ClientTimeout(total=0.01)
        )
    assert api.event_count == 0
    await wait_for(lambda: api.event_count == 1, timeout=10.0)


async def test_stopping_cuts_delays_short() -> None:
    """stop() cuts a long delay short and answers the in-flight request."""
    async with FakeTrackingAPI() as server:
        server.delay_next(1, 30)
        headers = {"Authorization": server.auth.header}
        async with aiohttp.ClientSession(server.base_url, headers=headers) as client:
            request = asyncio.ensure_future(
                client.post(batch_url(server), json=one_event())
            )
            await wait_for(lambda: server.pending_faults == 0)
            started = time.monotonic()
            await server.stop()
            assert time.monotonic() - started < 1
            # The delayed request was still answered during the graceful stop.
            response = await request
            assert response.status == 200
            response.release()


# -- rejections ---------------------------------------------------------------------


async def test_rejected_commands_fail_in_their_own_result(
    api: FakeTrackingAPI, session: aiohttp.ClientSession
) -> None:
    """reject_commands fails the chosen commands; the rest of the batch succeeds."""
    api.reject_commands(
        lambda name, data: data.get("event_type") == "refund", error="no refunds"
    )
    commands = [
        {"name": "customers/events", "command_id": str(i), "data": data}
        for i, data in enumerate(
            [
                {
                    "customer_ids": {"registered": "a"},
                    "event_type": "purchase",
                    "timestamp": 1,
                },
                {
                    "customer_ids": {"registered": "a"},
                    "event_type": "refund",
                    "timestamp": 2,
                },
            ]
        )
    ]
    async with session.post(batch_url(api), json={"commands": commands}) as response:
        body = await response.json()
    assert body["results"] == [
        {"success": True, "command_id": "0"},
        {"success": False, "command_id": "1", "errors": ["no refunds"]},
    ]
    assert [stored.event_type for stored in api.events] == ["purchase"]


async def test_rejections_apply_to_single_routes(
    api: FakeTrackingAPI, session: aiohttp.ClientSession
) -> None:
    """A rejected single-route command answers success false with the error."""
    api.reject_commands(lambda name, data: name == "customers")
    payload = {"customer_ids": {"registered": "a"}, "properties": {"x": 1}}
    path = f"/track/v2/projects/{api.project_token}/customers"
    async with session.post(path, json=payload) as response:
        assert response.status == 200
        assert await response.json() == {
            "success": False,
            "errors": ["Rejected by the fake server"],
        }
    assert api.customers == {}
    api.clear_faults()
    async with session.post(path, json=payload) as response:
        assert await response.json() == {"success": True}


# -- chaos ----------------------------------------------------------------------------


async def run_chaos(seed: int, requests: int = 40) -> list[str | None]:
    async with FakeTrackingAPI() as server:
        server.chaos(1.0, seed=seed, delay=0.001)
        headers = {"Authorization": server.auth.header}
        async with aiohttp.ClientSession(server.base_url, headers=headers) as client:
            for index in range(requests):
                with contextlib.suppress(aiohttp.ClientConnectionError):
                    await send(client, server, one_event(index))
        stored = server.event_count
        labels = [request.fault for request in server.requests]
        # Only normal answers, delays and drops after storing keep the data.
        assert stored == sum(label in ("delay", "drop_after") for label in labels)
        return labels


async def test_chaos_mixes_every_fault_kind_repeatably() -> None:
    """chaos(1.0) faults every request with all kinds, the same way for a seed."""
    labels = await run_chaos(seed=7)
    assert set(labels) == {
        "500",
        "502",
        "503",
        "429",
        "429+retry-after",
        "drop",
        "drop_after",
        "delay",
    }
    assert await run_chaos(seed=7) == labels


async def test_chaos_rate_and_kinds_are_respected(
    api: FakeTrackingAPI, session: aiohttp.ClientSession
) -> None:
    """A partial rate faults some requests, only of the chosen kinds; 0 turns it off."""
    api.chaos(0.5, seed=1, kinds=["503"])
    for index in range(30):
        await send(session, api, one_event(index))
    labels = [request.fault for request in api.requests]
    assert set(labels) == {"503", None}
    api.chaos(0)
    await send(session, api, one_event(99))
    assert api.requests[-1].fault is None


def test_chaos_arguments_are_checked(api: FakeTrackingAPI) -> None:
    """An out-of-range rate or an unknown kind raises ValueError."""
    with pytest.raises(ValueError, match="between 0 and 1"):
        api.chaos(1.5)
    with pytest.raises(ValueError, match="unknown chaos kind"):
        api.chaos(0.5, kinds=["418"])
    with pytest.raises(ValueError, match="at least one"):
        api.chaos(0.5, kinds=[])
    assert len(CHAOS_KINDS) == 8


async def test_scripted_faults_come_before_chaos(
    api: FakeTrackingAPI, session: aiohttp.ClientSession
) -> None:
    """A pending scripted fault wins over chaos for the next request."""
    api.chaos(1.0, seed=3, kinds=["503"])
    api.fail_next(status=500)
    assert (await send(session, api)).status == 500
    assert (await send(session, api)).status == 503


# -- rate limiting ----------------------------------------------------------------------


async def test_rate_limit_answers_429_and_drops_the_data() -> None:
    """Over the limit the API answers 429 and stores nothing."""
    async with FakeTrackingAPI(
        rate_limit=2, rate_window=60
    ) as server:  # 120 per window
        server.set_rate_limit(2, window=1)
        headers = {"Authorization": server.auth.header}
        async with aiohttp.ClientSession(server.base_url, headers=headers) as client:
            statuses = [
                (await send(client, server, one_event(i))).status for i in range(3)
            ]
            async with client.post(batch_url(server), json=one_event(9)) as response:
                body = await response.json()
                assert "Retry-After" not in response.headers
        assert statuses == [200, 200, 429]
        assert response.status == 429
        assert body == {"success": False, "error": "Rate limit exceeded"}
        assert [stored.timestamp for stored in server.events] == [0, 1]
        assert server.requests[-1].fault == "rate_limited"


async def test_rate_limit_can_send_retry_after() -> None:
    """With rate_limit_retry_after the 429 says when a slot frees, in whole seconds."""
    async with FakeTrackingAPI(
        rate_limit=1, rate_window=5, rate_limit_retry_after=True
    ) as server:
        headers = {"Authorization": server.auth.header}
        async with aiohttp.ClientSession(server.base_url, headers=headers) as client:
            statuses = []
            for index in range(6):
                response = await send(client, server, one_event(index))
                statuses.append(response.status)
        assert statuses == [200] * 5 + [429]
        assert response.headers["Retry-After"] in {"4", "5"}


async def test_rate_limit_can_be_turned_off(
    api: FakeTrackingAPI, session: aiohttp.ClientSession
) -> None:
    """set_rate_limit(None) lifts the limit, and reset() starts a fresh window."""
    api.set_rate_limit(1, window=1)
    assert [(await send(session, api, one_event(i))).status for i in range(2)] == [
        200,
        429,
    ]
    api.reset()
    assert (await send(session, api)).status == 200
    api.set_rate_limit(None)
    assert [(await send(session, api, one_event(i))).status for i in range(5)] == [
        200
    ] * 5


def test_sliding_window_frees_slots_as_time_passes() -> None:
    """The limiter admits capacity requests per window, counting only admitted ones."""
    limiter = SlidingWindowLimiter(rate=100, window=60)  # the real 6,000 per minute
    assert limiter.capacity == 6000
    small = SlidingWindowLimiter(rate=2, window=1)
    assert small.admit(10.0) is None
    assert small.admit(10.4) is None
    assert small.admit(10.5) == pytest.approx(0.5)
    assert small.admit(10.9) == pytest.approx(0.1)
    assert small.admit(11.0) is None  # the first hit left the window
    assert small.admit(11.1) == pytest.approx(0.3)  # 10.4 and 11.0 are in it
    assert small.admit(11.4) is None
    with pytest.raises(ValueError, match="positive"):
        SlidingWindowLimiter(rate=0, window=1)
