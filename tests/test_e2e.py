"""End to end over 127.0.0.1: the real client and transport against FakeTrackingAPI.

Shared helpers, authentication, routes by mode, ``system_time()`` and the pytest
fixture. Retry rules live in ``test_e2e_retry.py``, batch results, lost
connections and stored data in ``test_e2e_results.py``, rate limiting, overflow
and closing in ``test_e2e_flow.py``, and the long randomised runs in
``test_e2e_chaos.py``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest

from trackasync import (
    AuthError,
    BadRequest,
    Client,
    DeliveryFailed,
    PrivateKey,
    PublicToken,
    Retry,
    ServerError,
    Stats,
)
from trackasync.testing import FakeTrackingAPI

IDS = {"registered": "ann@example.com"}

#: Quick retries: a retry never waits more than a few hundredths of a second.
QUICK = Retry(
    attempts=5, timeout=10.0, wait_initial=0.0, wait_max=0.01, max_retry_after=0.05
)


def client_for(api: FakeTrackingAPI, **options: Any) -> Client:
    """A real client (default aiohttp transport) for ``api``, sending at once."""
    options.setdefault("auth", api.auth)
    options.setdefault("linger", 0.0)
    options.setdefault("rate_limit", None)
    options.setdefault("retry", QUICK)
    options.setdefault("shutdown_timeout", 2.0)
    return Client(api.base_url, api.project_token, **options)


def stats_add_up(client: Client) -> Stats:
    """The client's stats, after checking that every command is accounted for."""
    stats = client.stats()
    accounted = (
        stats.delivered + sum(stats.failed.values()) + stats.queued + stats.in_flight
    )
    assert stats.enqueued == accounted, stats
    return stats


def stored_numbers(api: FakeTrackingAPI) -> list[int]:
    """The ``n`` property of every event the server stored, in arrival order."""
    return [event.properties["n"] for event in api.events]


def flagged(name: str, data: Any) -> bool:
    """A rejection rule for the server: refuse commands with ``"reject": true``."""
    return data.get("properties", {}).get("reject") is True


async def wait_until(condition: Callable[[], bool], timeout: float = 2.0) -> None:
    """Poll ``condition`` until it holds; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.002)


async def failure_of(delivery: Any) -> DeliveryFailed:
    """Await a delivery that must fail, and return its failure."""
    with pytest.raises(DeliveryFailed) as caught:
        await delivery
    return caught.value


# -- authentication ---------------------------------------------------------------


@pytest.mark.parametrize("scheme", ["private", "public"])
async def test_both_auth_schemes_deliver_on_single_and_batch_routes(
    fake_tracking_api: FakeTrackingAPI, scheme: str
) -> None:
    """PrivateKey and PublicToken credentials both get events and updates stored."""
    api = fake_tracking_api
    auth = api.auth if scheme == "private" else api.public_auth
    async with client_for(api, auth=auth) as client:
        lone = await client.track_and_wait(IDS, "purchase", {"n": 0})
        update = await client.update_customer(IDS, {"tier": "gold"})
        await update
        many = [client.track_nowait(IDS, "view", {"n": n}) for n in range(1, 4)]
        await client.flush()
    assert lone.attempts == 1
    assert all(d.delivered() for d in many)
    assert sorted(stored_numbers(api)) == [0, 1, 2, 3]
    assert api.customer(IDS) == {"tier": "gold"}
    routes = {r.route for r in api.requests}
    assert routes == {"customers/events", "customers", "batch"}
    assert all(r.status == 200 for r in api.requests)


@pytest.mark.parametrize(
    ("make_auth", "status", "message"),
    [
        (lambda api: PrivateKey(api.key_id, "wrong-secret"), 403, "invalid secret"),
        (
            lambda api: PrivateKey("no-such-key", api.secret),
            401,
            "Access key not found",
        ),
        (lambda api: PublicToken("no-such-token"), 401, "Access key not found"),
    ],
    ids=["wrong-secret", "unknown-key-id", "unknown-public-token"],
)
async def test_bad_credentials_are_rejected_at_once_with_the_api_message(
    fake_tracking_api: FakeTrackingAPI,
    make_auth: Callable[[FakeTrackingAPI], Any],
    status: int,
    message: str,
) -> None:
    """Wrong credentials fail the command after one request with the API's own words."""
    api = fake_tracking_api
    async with client_for(api, auth=make_auth(api)) as client:
        delivery = await client.track(IDS, "purchase", {"n": 1})
        failure = await failure_of(delivery)
    assert failure.reason == "rejected"
    assert failure.status == status
    assert failure.errors == (message,)
    assert isinstance(failure.error, AuthError)
    assert failure.attempts == 1
    assert failure.request_id == api.requests[0].request_id
    assert [r.status for r in api.requests] == [status]
    assert api.event_count == 0
    stats = stats_add_up(client)
    assert stats.rejected == 1
    assert stats.retries == 0


async def test_unknown_project_token_is_rejected_with_invalid_project_id(
    fake_tracking_api: FakeTrackingAPI,
) -> None:
    """A project token the API does not know fails at once with "Invalid project id"."""
    api = fake_tracking_api
    client = Client(
        api.base_url,
        "no-such-project",
        auth=api.auth,
        linger=0.0,
        rate_limit=None,
        retry=QUICK,
    )
    async with client:
        delivery = client.track_nowait(IDS, "purchase", {"n": 1})
        failure = await failure_of(delivery)
    assert failure.reason == "rejected"
    assert failure.status == 400
    assert failure.errors == ("Invalid project id",)
    assert isinstance(failure.error, BadRequest)
    assert len(api.requests) == 1
    assert api.requests[0].path == "/track/v2/projects/no-such-project/customers/events"
    assert api.event_count == 0


async def test_a_wrong_base_path_is_rejected_with_the_not_found_message(
    fake_tracking_api: FakeTrackingAPI,
) -> None:
    """A base URL with a wrong path gets the server's own 404 and is not retried."""
    api = fake_tracking_api
    client = Client(
        f"{api.base_url}/wrong", api.project_token, auth=api.auth, linger=0.0
    )
    async with client:
        failure = await failure_of(client.track_nowait(IDS, "purchase", {"n": 1}))
    assert failure.reason == "rejected"
    assert failure.status == 404
    assert failure.errors == ("The requested URL was not found on the server",)
    assert [(r.route, r.status) for r in api.requests] == [(None, 404)]
    assert api.event_count == 0


# -- modes --------------------------------------------------------------------------


async def test_auto_mode_sends_a_lone_command_to_its_route_and_groups_to_batch(
    fake_tracking_api: FakeTrackingAPI,
) -> None:
    """In auto mode one command uses its own route and several share one /batch."""
    api = fake_tracking_api
    async with client_for(api, linger=60.0) as client:
        event = client.track_nowait(IDS, "view", {"n": 0})
        await client.flush()
        update = client.update_customer_nowait(IDS, {"tier": "silver"})
        await client.flush()
        group = [client.track_nowait(IDS, "view", {"n": n}) for n in range(1, 4)]
        group.append(client.update_customer_nowait(IDS, {"tier": "gold"}))
        await client.flush()
    assert event.delivered()
    assert update.delivered()
    assert all(d.delivered() for d in group)
    routes = [(r.route, r.commands) for r in api.requests]
    assert routes == [("customers/events", 1), ("customers", 1), ("batch", 4)]
    assert stored_numbers(api) == [0, 1, 2, 3]
    assert api.customer(IDS) == {"tier": "gold"}


async def test_batch_mode_sends_even_a_lone_command_to_batch(
    fake_tracking_api: FakeTrackingAPI,
) -> None:
    """In batch mode every request, even one of a single command, goes to /batch."""
    api = fake_tracking_api
    async with client_for(api, mode="batch", linger=60.0) as client:
        client.track_nowait(IDS, "view", {"n": 0})
        await client.flush()
        client.update_customer_nowait(IDS, {"tier": "gold"})
        await client.flush()
        for n in range(1, 4):
            client.track_nowait(IDS, "view", {"n": n})
        await client.flush()
    assert [(r.route, r.commands) for r in api.requests] == [
        ("batch", 1),
        ("batch", 1),
        ("batch", 3),
    ]
    assert stored_numbers(api) == [0, 1, 2, 3]
    assert api.customer(IDS) == {"tier": "gold"}


async def test_single_mode_sends_every_command_on_its_own_route(
    fake_tracking_api: FakeTrackingAPI,
) -> None:
    """In single mode each command travels alone, on its own route, never /batch."""
    api = fake_tracking_api
    async with client_for(api, mode="single", linger=60.0, max_in_flight=1) as client:
        deliveries = [client.track_nowait(IDS, "view", {"n": n}) for n in range(3)]
        deliveries.append(client.update_customer_nowait(IDS, {"tier": "gold"}))
        await client.flush()
    assert all(d.delivered() for d in deliveries)
    assert [(r.route, r.commands) for r in api.requests] == [
        ("customers/events", 1),
        ("customers/events", 1),
        ("customers/events", 1),
        ("customers", 1),
    ]
    assert stored_numbers(api) == [0, 1, 2]
    assert stats_add_up(client).requests == 4


# -- system_time ----------------------------------------------------------------------


async def test_system_time_returns_the_server_clock(
    fake_tracking_api: FakeTrackingAPI,
) -> None:
    """system_time() answers a float close to the local clock from the live server."""
    api = fake_tracking_api
    async with client_for(api) as client:
        before = time.time()
        server_time = await client.system_time()
        after = time.time()
    assert isinstance(server_time, float)
    assert before - 1.0 <= server_time <= after + 1.0
    assert [(r.method, r.route, r.status) for r in api.requests] == [
        ("GET", "system/time", 200)
    ]


@pytest.mark.fake_tracking_api(clock_offset=3600.0)
async def test_system_time_shows_a_skewed_server_clock(
    fake_tracking_api: FakeTrackingAPI,
) -> None:
    """A server clock an hour ahead shows up as such (fixture configured by marker)."""
    async with client_for(fake_tracking_api) as client:
        skew = await client.system_time() - time.time()
    assert 3599.0 <= skew <= 3601.0


async def test_system_time_raises_the_typed_error_for_bad_credentials(
    fake_tracking_api: FakeTrackingAPI,
) -> None:
    """system_time() with a wrong secret raises AuthError carrying 403 and the message."""
    api = fake_tracking_api
    auth = PrivateKey(api.key_id, "wrong-secret")
    async with client_for(api, auth=auth) as client:
        with pytest.raises(AuthError) as caught:
            await client.system_time()
    assert caught.value.status == 403
    assert caught.value.errors == ("invalid secret",)
    assert caught.value.request_id == api.requests[0].request_id


async def test_system_time_is_not_retried(fake_tracking_api: FakeTrackingAPI) -> None:
    """system_time() makes one request: a 503 raises ServerError, the next call works."""
    api = fake_tracking_api
    api.fail_next(1, status=503, route="system/time")
    async with client_for(api) as client:
        with pytest.raises(ServerError) as caught:
            await client.system_time()
        assert caught.value.status == 503
        assert abs(await client.system_time() - time.time()) < 1.0
    assert [r.status for r in api.requests] == [503, 200]
    assert client.stats().retries == 0


# -- the pytest fixture ----------------------------------------------------------------


@pytest.mark.fake_tracking_api(single_route_error_status=400, project_token="shop-1")
async def test_fixture_serves_a_configured_fake_api(
    fake_tracking_api: FakeTrackingAPI,
) -> None:
    """The plugin's fixture yields a running server configured by its marker."""
    api = fake_tracking_api
    assert api.project_token == "shop-1"
    assert api.base_url.startswith("http://127.0.0.1:")
    api.reject_commands(lambda name, data: True, error="Not allowed")
    async with client_for(api) as client:
        failure = await failure_of(client.track_nowait(IDS, "view", {"n": 1}))
    assert failure.status == 400
    assert failure.errors == ("Not allowed",)
    assert api.requests[0].path == "/track/v2/projects/shop-1/customers/events"
