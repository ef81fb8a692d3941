"""Routes, authentication, validation and storage of the fake Tracking API."""

from __future__ import annotations

import base64
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer

from trackasync._auth import PrivateKey, PublicToken
from trackasync.testing._fake_api import FakeTrackingAPI
from trackasync.testing._fake_validate import INVALID_ID_ERROR

Json = Any


@pytest.fixture
async def api() -> AsyncIterator[FakeTrackingAPI]:
    async with FakeTrackingAPI() as server:
        yield server


@pytest.fixture
async def session(api: FakeTrackingAPI) -> AsyncIterator[aiohttp.ClientSession]:
    headers = {"Authorization": api.auth.header}
    async with aiohttp.ClientSession(api.base_url, headers=headers) as client:
        yield client


def url(api: FakeTrackingAPI, route: str, project: str | None = None) -> str:
    return f"/track/v2/projects/{project or api.project_token}/{route}"


def event(
    ids: dict[str, Any] | None = None, event_type: Any = "purchase", **extra: Any
) -> dict[str, Any]:
    data: dict[str, Any] = {
        "customer_ids": {"registered": "ann@example.com"} if ids is None else ids,
        "event_type": event_type,
    }
    data.update(extra)
    return data


def cmd(name: str, data: Json = None, command_id: str | None = None) -> dict[str, Any]:
    command: dict[str, Any] = {"name": name}
    if data is not None:
        command["data"] = data
    if command_id is not None:
        command["command_id"] = command_id
    return command


async def post(
    session: aiohttp.ClientSession, path: str, payload: Json = None, **kwargs: Any
) -> tuple[int, Json]:
    async with session.post(path, json=payload, **kwargs) as response:
        return response.status, await response.json(content_type=None)


async def batch(
    session: aiohttp.ClientSession, api: FakeTrackingAPI, *commands: Json
) -> list[dict[str, Any]]:
    status, body = await post(session, url(api, "batch"), {"commands": list(commands)})
    assert status == 200, body
    assert body["success"] is True
    results: list[dict[str, Any]] = body["results"]
    return results


def basic(key_id: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{key_id}:{secret}".encode()).decode()


# -- authentication -------------------------------------------------------------


@pytest.mark.parametrize("kind", ["private", "public", "query"])
async def test_both_auth_schemes_are_accepted(api: FakeTrackingAPI, kind: str) -> None:
    """A Basic key, a Token header and an access_token parameter all work."""
    headers = {}
    params = {}
    if kind == "private":
        headers["Authorization"] = api.auth.header
    elif kind == "public":
        headers["Authorization"] = api.public_auth.header
    else:
        params["access_token"] = api.public_token
    async with (
        aiohttp.ClientSession(api.base_url) as client,
        client.get(url(api, "system/time"), headers=headers, params=params) as response,
    ):
        assert response.status == 200
        assert (await response.json())["success"] is True


@pytest.mark.parametrize(
    ("header", "status", "error"),
    [
        (None, 401, "Access key not provided"),
        ("", 401, "Access key not provided"),
        ("Basic", 401, "Access key not provided"),
        ("Basic !!not-base64!!", 401, "Access key not provided"),
        (
            "Basic " + base64.b64encode(b"no-colon").decode(),
            401,
            "Access key not provided",
        ),
        ("Bearer abc", 401, "Access key not provided"),
        (basic("someone-else", "test-secret"), 401, "Access key not found"),
        (basic("test-key-id", "wrong"), 403, "invalid secret"),
        ("Token not-the-token", 401, "Access key not found"),
    ],
)
async def test_auth_failures_use_the_documented_envelope(
    api: FakeTrackingAPI, header: str | None, status: int, error: str
) -> None:
    """Missing, garbled and wrong credentials get the API's status and message."""
    headers = {} if header is None else {"Authorization": header}
    async with (
        aiohttp.ClientSession(api.base_url) as client,
        client.post(url(api, "batch"), json={"commands": []}, headers=headers) as resp,
    ):
        assert resp.status == status
        assert await resp.json() == {"success": False, "error": error}
    assert api.requests[-1].status == status


async def test_unknown_project_token_is_400(
    api: FakeTrackingAPI, session: aiohttp.ClientSession
) -> None:
    """A project token other than the server's gets 400 Invalid project id."""
    status, body = await post(session, url(api, "batch", "nope"), {"commands": []})
    assert (status, body) == (400, {"success": False, "error": "Invalid project id"})


async def test_authentication_is_checked_before_the_project(
    api: FakeTrackingAPI,
) -> None:
    """Bad credentials on a wrong project get 401, so tokens cannot be probed."""
    async with (
        aiohttp.ClientSession(api.base_url) as client,
        client.get(url(api, "system/time", "nope")) as response,
    ):
        assert response.status == 401


async def test_custom_credentials_replace_the_defaults() -> None:
    """Keyword arguments set the project token and credentials that work."""
    async with FakeTrackingAPI(
        project_token="p", key_id="k", secret="s", public_token="t"
    ) as server:
        assert server.auth == PrivateKey("k", "s")
        assert server.public_auth == PublicToken("t")
        headers = {"Authorization": basic("k", "s")}
        async with (
            aiohttp.ClientSession(server.base_url, headers=headers) as client,
            client.get("/track/v2/projects/p/system/time") as response,
        ):
            assert response.status == 200


# -- system/time ------------------------------------------------------------------


@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_system_time_answers_the_server_clock(
    api: FakeTrackingAPI, session: aiohttp.ClientSession, method: str
) -> None:
    """system/time answers a float time by GET or POST, skewed by clock_offset."""
    api.clock_offset = 3600.0
    before = time.time() + 3600.0
    async with session.request(method, url(api, "system/time")) as response:
        body = await response.json()
    assert response.status == 200
    assert body["success"] is True
    assert isinstance(body["time"], float)
    assert before <= body["time"] <= time.time() + 3600.0


# -- batch envelope -------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [b"", b"not json", b"[]", b'{"commands": "x"}', b'{"commands": [1, {}]}'],
)
async def test_malformed_batches_are_invalid_json(
    api: FakeTrackingAPI, session: aiohttp.ClientSession, body: bytes
) -> None:
    """Unparsable bodies, non-objects and non-object commands get 400 Invalid JSON."""
    async with session.post(url(api, "batch"), data=body) as response:
        assert response.status == 400
        assert await response.json() == {"success": False, "message": "Invalid JSON"}


@pytest.mark.parametrize("payload", [{"commands": []}, {}, {"commands": None}])
async def test_a_batch_without_commands_is_rejected(
    api: FakeTrackingAPI, session: aiohttp.ClientSession, payload: Json
) -> None:
    """An empty or missing command list gets 400 No commands."""
    status, body = await post(session, url(api, "batch"), payload)
    assert (status, body) == (400, {"success": False, "message": "No commands"})


@pytest.mark.parametrize(("status", "expected"), [(None, 400), (413, 413)])
async def test_more_than_fifty_commands_are_refused(
    status: int | None, expected: int
) -> None:
    """51 commands get 400 (or the configured status) and nothing is stored."""
    options: dict[str, Any] = {}
    if status is not None:
        options["too_many_commands_status"] = status
    async with FakeTrackingAPI(**options) as server:
        headers = {"Authorization": server.auth.header}
        commands = [cmd("customers/events", event(timestamp=i)) for i in range(51)]
        async with aiohttp.ClientSession(server.base_url, headers=headers) as client:
            code, body = await post(
                client, url(server, "batch"), {"commands": commands}
            )
        assert code == expected
        assert body["success"] is False
        assert "Too many commands" in body["message"]
        assert server.event_count == 0


async def test_fifty_commands_and_extra_keys_are_accepted(
    api: FakeTrackingAPI, session: aiohttp.ClientSession
) -> None:
    """A full batch of 50 passes, and unknown top-level keys are ignored."""
    commands = [cmd("customers/events", event(timestamp=i)) for i in range(50)]
    payload = {"commands": commands, "sdk": "python", "sdk_version": "1"}
    status, body = await post(session, url(api, "batch"), payload)
    assert status == 200
    assert [result["success"] for result in body["results"]] == [True] * 50
    assert api.event_count == 50


async def test_batch_results_follow_request_order(
    api: FakeTrackingAPI, session: aiohttp.ClientSession
) -> None:
    """Results come one per command, in order, with command_id echoed and times."""
    before = time.time()
    status, body = await post(
        session,
        url(api, "batch"),
        {
            "commands": [
                cmd("system/time"),
                cmd("customers", {"customer_ids": {"registered": "a"}}, "c-1"),
                cmd("customers/events", event(timestamp=1.5), "c-2"),
                cmd("nope", {}, "c-3"),
                cmd(
                    "customers",
                    {"customer_ids": {"registered": "a"}, "properties": {"x": 1}},
                ),
            ]
        },
    )
    assert status == 200
    assert body["success"] is True
    time_result, invalid, ok, unknown, updated = body["results"]
    assert time_result["success"] is True
    assert isinstance(time_result["time"], float)
    assert "command_id" not in time_result
    assert invalid == {
        "success": False,
        "command_id": "c-1",
        "errors": ["properties should be a non-empty JSON object"],
    }
    assert ok == {"success": True, "command_id": "c-2"}
    assert unknown == {
        "success": False,
        "command_id": "c-3",
        "errors": ["Unknown command 'nope'"],
    }
    assert updated == {"success": True}
    start, end = body["start_time"], body["end_time"]
    assert isinstance(start, float)
    assert isinstance(end, float)
    assert before <= start <= end <= time.time()


# -- per-command validation -------------------------------------------------------


@pytest.mark.parametrize(
    "ids",
    [
        None,
        {},
        [],
        "ann",
        {"registered": "null"},
        {"registered": " UNDEFINED "},
        {"registered": ""},
        {"registered": "-_-"},
        {"registered": 42},
        {"registered": None},
        {"registered": "ann", "cookie": "null"},
    ],
)
async def test_invalid_customer_ids_are_rejected(
    api: FakeTrackingAPI, session: aiohttp.ClientSession, ids: Json
) -> None:
    """Empty ids or values without a letter or digit fail with the API's message."""
    data = event()
    if ids is None:
        del data["customer_ids"]
    else:
        data["customer_ids"] = ids
    [result] = await batch(session, api, cmd("customers/events", data))
    assert result == {"success": False, "errors": [INVALID_ID_ERROR]}
    assert api.event_count == 0


@pytest.mark.parametrize(
    ("name", "data", "error"),
    [
        ("customers/events", None, "data should be a JSON object"),
        ("customers/events", [1], "data should be a JSON object"),
        (
            "customers/events",
            event(event_type=""),
            "event_type should be a non-empty string",
        ),
        (
            "customers/events",
            event(event_type=3),
            "event_type should be a non-empty string",
        ),
        (
            "customers/events",
            event(properties=[1]),
            "properties should be a JSON object",
        ),
        (
            "customers/events",
            event(timestamp="2024-01-01"),
            "timestamp should be a number",
        ),
        ("customers/events", event(timestamp=True), "timestamp should be a number"),
        (
            "customers",
            {"customer_ids": {"registered": "a"}, "properties": {}},
            "non-empty",
        ),
        (
            "customers",
            {
                "customer_ids": {"registered": "a"},
                "properties": {"x": 1},
                "update_timestamp": "x",
            },
            "update_timestamp should be a number",
        ),
        (7, {}, "Command name should be a string"),
    ],
)
async def test_invalid_commands_fail_in_their_own_result(
    api: FakeTrackingAPI,
    session: aiohttp.ClientSession,
    name: Json,
    data: Json,
    error: str,
) -> None:
    """Each invalid field gives an error in the result and nothing is stored."""
    [result] = await batch(
        session, api, {"name": name, "data": data, "command_id": "x"}
    )
    assert result["success"] is False
    assert result["command_id"] == "x"
    assert any(error in message for message in result["errors"]), result
    assert api.event_count == 0
    assert api.customers == {}


async def test_events_may_omit_or_null_their_properties(
    api: FakeTrackingAPI, session: aiohttp.ClientSession
) -> None:
    """properties is optional for events; null counts as none."""
    results = await batch(
        session,
        api,
        cmd("customers/events", event(timestamp=1)),
        cmd("customers/events", event(timestamp=2, properties=None)),
    )
    assert [result["success"] for result in results] == [True, True]
    assert [stored.properties for stored in api.events] == [{}, {}]


@pytest.mark.parametrize(
    ("properties", "error"),
    [
        ({"big": "x" * 16_000}, "Property 'big' is too large"),
        ({f"p{i}": "x" * 15_000 for i in range(54)}, "Message is too large"),
    ],
)
async def test_size_limits_are_enforced(
    api: FakeTrackingAPI, session: aiohttp.ClientSession, properties: Json, error: str
) -> None:
    """A property value of 16,000 bytes or a command of 800,000 bytes fails."""
    [result] = await batch(
        session, api, cmd("customers/events", event(properties=properties))
    )
    assert result["success"] is False
    assert any(error in message for message in result["errors"]), result["errors"]
    assert api.event_count == 0


async def test_values_just_under_the_limits_pass(
    api: FakeTrackingAPI, session: aiohttp.ClientSession
) -> None:
    """A property value just under 16,000 encoded bytes is accepted."""
    properties = {"big": "x" * 15_997}  # 15,999 bytes with the quotes
    [result] = await batch(
        session, api, cmd("customers/events", event(properties=properties))
    )
    assert result == {"success": True}


# -- single routes ------------------------------------------------------------------


async def test_single_routes_store_and_answer_success(
    api: FakeTrackingAPI, session: aiohttp.ClientSession
) -> None:
    """customers/events and customers answer 200 {"success": true} and store."""
    status, body = await post(session, url(api, "customers/events"), event(timestamp=5))
    assert (status, body) == (200, {"success": True})
    update = {"customer_ids": {"registered": "ann@example.com"}, "properties": {"a": 1}}
    status, body = await post(session, url(api, "customers"), update)
    assert (status, body) == (200, {"success": True})
    assert api.events[0].timestamp == 5
    assert api.customer({"registered": "ann@example.com"}) == {"a": 1}
    assert [(r.route, r.status, r.commands) for r in api.requests] == [
        ("customers/events", 200, 1),
        ("customers", 200, 1),
    ]


@pytest.mark.parametrize(("switch", "expected"), [(None, 200), (400, 400)])
async def test_single_route_validation_status_is_switchable(
    switch: int | None, expected: int
) -> None:
    """Invalid single-route input gets 200 success false, or the configured status."""
    options: dict[str, Any] = {}
    if switch is not None:
        options["single_route_error_status"] = switch
    async with FakeTrackingAPI(**options) as server:
        headers = {"Authorization": server.auth.header}
        async with aiohttp.ClientSession(server.base_url, headers=headers) as client:
            status, body = await post(
                client,
                url(server, "customers/events"),
                event(ids={"registered": "null"}),
            )
    assert status == expected
    assert body == {"success": False, "errors": [INVALID_ID_ERROR]}


async def test_single_route_malformed_json_is_400(
    api: FakeTrackingAPI, session: aiohttp.ClientSession
) -> None:
    """A single route with an unparsable body gets 400 Invalid JSON."""
    async with session.post(url(api, "customers"), data=b"{") as response:
        assert response.status == 400
        assert await response.json() == {"success": False, "message": "Invalid JSON"}


async def test_compressed_bodies_are_refused(
    api: FakeTrackingAPI, session: aiohttp.ClientSession
) -> None:
    """A gzip request body gets the API's plain-text 400 and nothing is stored."""
    headers = {"Content-Encoding": "gzip", "Content-Type": "application/json"}
    async with session.post(url(api, "batch"), data=b"\x1f\x8b", headers=headers) as r:
        assert r.status == 400
        assert "BadRequest" in await r.text()
    assert api.event_count == 0


async def test_unknown_paths_get_a_json_404(
    api: FakeTrackingAPI, session: aiohttp.ClientSession
) -> None:
    """A wrong path gets 404 with the API's message, and is logged."""
    async with session.post(
        "/track/v2/projects/test-project/nope", json={}
    ) as response:
        assert response.status == 404
        body = await response.json()
    assert body["error"] == "The requested URL was not found on the server"
    assert api.requests[-1].route is None
    assert api.requests[-1].status == 404


async def test_every_answer_has_a_unique_request_id(
    api: FakeTrackingAPI, session: aiohttp.ClientSession
) -> None:
    """200, 400, 401, 404 and injected errors all carry distinct x-request-ids."""
    api.fail_next(1, status=503)
    ids = []
    for method, path, headers in [
        ("GET", url(api, "system/time"), {}),
        ("GET", url(api, "system/time"), {}),
        ("POST", url(api, "batch"), {}),
        ("GET", url(api, "system/time"), {"Authorization": "Token wrong"}),
        ("GET", "/elsewhere", {}),
    ]:
        async with session.request(method, path, headers=headers) as response:
            ids.append(response.headers["x-request-id"])
    assert len(set(ids)) == 5
    assert [request.request_id for request in api.requests] == ids


async def test_the_app_works_with_aiohttp_test_utilities() -> None:
    """api.app can be served by aiohttp's TestServer without starting the fake."""
    fake = FakeTrackingAPI()
    async with TestClient(TestServer(fake.app)) as client:
        response = await client.post(
            url(fake, "customers/events"),
            json=event(timestamp=1),
            headers={"Authorization": fake.auth.header},
        )
        assert response.status == 200
    assert fake.event_count == 1
    with pytest.raises(RuntimeError, match="not running"):
        _ = fake.base_url


# -- storage and dedup ----------------------------------------------------------------


async def test_identical_events_are_deduplicated(
    api: FakeTrackingAPI, session: aiohttp.ClientSession
) -> None:
    """The same customer, type, timestamp and properties are stored once."""
    data = event(timestamp=1722458972.123456, properties={"a": 1, "b": {"x": [1, 2]}})
    reordered = event(
        ids={"registered": "ann@example.com"},
        timestamp=1722458972.123456,
        properties={"b": {"x": [1, 2]}, "a": 1},
    )
    results = await batch(
        session, api, cmd("customers/events", data), cmd("customers/events", reordered)
    )
    assert results == [{"success": True}, {"success": True}]
    assert api.event_count == 1
    assert api.duplicates == 1


async def test_dedup_compares_property_types(
    api: FakeTrackingAPI, session: aiohttp.ClientSession
) -> None:
    """1, 1.0, true and "1" are different values, so none is a duplicate."""
    values = [1, 1.0, True, "1", 1]
    commands = [
        cmd("customers/events", event(timestamp=7, properties={"v": value}))
        for value in values
    ]
    await batch(session, api, *commands)
    stored = [stored_event.properties["v"] for stored_event in api.events]
    assert [(type(value), value) for value in stored] == [
        (int, 1),
        (float, 1.0),
        (bool, True),
        (str, "1"),
    ]
    assert api.duplicates == 1


@pytest.mark.parametrize(
    "other",
    [
        event(ids={"registered": "bob@example.com"}, timestamp=1),
        event(ids={"registered": "ann@example.com", "cookie": "c1"}, timestamp=1),
        event(event_type="view", timestamp=1),
        event(timestamp=1.000001),
    ],
)
async def test_events_that_differ_are_all_kept(
    api: FakeTrackingAPI, session: aiohttp.ClientSession, other: Json
) -> None:
    """Another customer, event type or timestamp makes a different event."""
    await batch(
        session,
        api,
        cmd("customers/events", event(timestamp=1)),
        cmd("customers/events", other),
    )
    assert api.event_count == 2
    assert api.duplicates == 0


async def test_integer_and_float_timestamps_are_the_same_time(
    api: FakeTrackingAPI, session: aiohttp.ClientSession
) -> None:
    """A timestamp of 1 and one of 1.0 are the same instant, so a duplicate."""
    await batch(
        session,
        api,
        cmd("customers/events", event(timestamp=1)),
        cmd("customers/events", event(timestamp=1.0)),
    )
    assert (api.event_count, api.duplicates) == (1, 1)


async def test_consent_events_are_never_deduplicated(
    api: FakeTrackingAPI, session: aiohttp.ClientSession
) -> None:
    """Identical consent events are all stored."""
    consent = event(event_type="consent", timestamp=3, properties={"action": "accept"})
    await batch(session, api, *[cmd("customers/events", consent)] * 3)
    assert (api.event_count, api.duplicates) == (3, 0)


async def test_events_without_timestamp_get_the_receipt_time(
    api: FakeTrackingAPI, session: aiohttp.ClientSession
) -> None:
    """A missing timestamp becomes the server time, so resends are new events."""
    before = time.time()
    await batch(
        session, api, cmd("customers/events", event()), cmd("customers/events", event())
    )
    first, second = api.events
    assert before <= first.timestamp < second.timestamp <= time.time()
    assert api.duplicates == 0


async def test_stored_events_expose_their_fields(
    api: FakeTrackingAPI, session: aiohttp.ClientSession
) -> None:
    """A stored event has customer_ids, event_type, timestamp, properties and key."""
    ids = {"registered": "ann@example.com", "cookie": "c1"}
    await batch(
        session,
        api,
        cmd("customers/events", event(ids, timestamp=9.5, properties={"p": 1})),
    )
    [stored] = api.events
    assert stored.customer_ids == ids
    assert stored.event_type == "purchase"
    assert stored.timestamp == 9.5
    assert stored.properties == {"p": 1}
    assert stored.customer == (("cookie", "c1"), ("registered", "ann@example.com"))


async def test_customer_properties_merge(
    api: FakeTrackingAPI, session: aiohttp.ClientSession
) -> None:
    """Updates of one customer merge property by property."""
    ids = {"registered": "ann@example.com"}
    await batch(
        session,
        api,
        cmd("customers", {"customer_ids": ids, "properties": {"a": 1, "b": 1}}),
        cmd("customers", {"customer_ids": ids, "properties": {"b": 2, "c": 2}}),
        cmd(
            "customers", {"customer_ids": {"registered": "bob"}, "properties": {"a": 0}}
        ),
    )
    assert api.customers == {
        (("registered", "ann@example.com"),): {"a": 1, "b": 2, "c": 2},
        (("registered", "bob"),): {"a": 0},
    }


async def test_update_timestamp_is_last_writer_wins(
    api: FakeTrackingAPI, session: aiohttp.ClientSession
) -> None:
    """A stale update_timestamp never overwrites a newer value, whatever the order."""
    ids = {"registered": "ann@example.com"}

    def update(properties: dict[str, Any], stamp: float | None) -> dict[str, Any]:
        data: dict[str, Any] = {"customer_ids": ids, "properties": properties}
        if stamp is not None:
            data["update_timestamp"] = stamp
        return cmd("customers", data)

    await batch(
        session,
        api,
        update({"tier": "gold", "name": "Ann"}, 200),
        update({"tier": "silver", "city": "Oslo"}, 100),  # stale for tier only
        update({"name": "Anne"}, 200),  # same time: not newer, so ignored
        update({"name": "Annie"}, 300),
    )
    assert api.customer(ids) == {"tier": "gold", "name": "Annie", "city": "Oslo"}


async def test_missing_update_timestamp_means_now(
    api: FakeTrackingAPI, session: aiohttp.ClientSession
) -> None:
    """An update without update_timestamp beats older stamps but not future ones."""
    ids = {"registered": "ann@example.com"}
    now = time.time()
    await batch(
        session,
        api,
        cmd("customers", {"customer_ids": ids, "properties": {"a": "now", "b": "now"}}),
        cmd(
            "customers",
            {
                "customer_ids": ids,
                "properties": {"a": "old"},
                "update_timestamp": now - 60,
            },
        ),
        cmd(
            "customers",
            {
                "customer_ids": ids,
                "properties": {"b": "future"},
                "update_timestamp": now + 60,
            },
        ),
    )
    assert api.customer(ids) == {"a": "now", "b": "future"}
    assert api.customer({"registered": "nobody"}) is None


async def test_reads_are_copies(
    api: FakeTrackingAPI, session: aiohttp.ClientSession
) -> None:
    """Mutating what the accessors return does not change the store."""
    ids = {"registered": "ann@example.com"}
    await batch(
        session,
        api,
        cmd("customers", {"customer_ids": ids, "properties": {"a": 1}}),
        cmd("customers/events", event(timestamp=1)),
    )
    api.customers[(("registered", "ann@example.com"),)]["a"] = 2
    api.events.clear()
    api.requests.clear()
    assert api.customer(ids) == {"a": 1}
    assert len(api.events) == api.event_count == 1
    assert len(api.requests) == 1


async def test_reset_forgets_everything(
    api: FakeTrackingAPI, session: aiohttp.ClientSession
) -> None:
    """reset() empties events, customers, duplicates, the log and pending faults."""
    ids = {"registered": "ann@example.com"}
    await batch(
        session,
        api,
        cmd("customers/events", event(timestamp=1)),
        cmd("customers/events", event(timestamp=1)),
        cmd("customers", {"customer_ids": ids, "properties": {"a": 1}}),
    )
    api.fail_next(3)
    api.reset()
    assert (api.events, api.customers, api.duplicates, api.requests) == ([], {}, 0, [])
    assert api.pending_faults == 0
    await batch(session, api, cmd("customers/events", event(timestamp=1)))
    assert api.event_count == 1  # the dedup memory was reset too


def test_binding_beyond_loopback_needs_consent() -> None:
    """A non-loopback host is refused unless allow_remote is given."""
    with pytest.raises(ValueError, match="allow_remote"):
        FakeTrackingAPI(host="0.0.0.0")
    FakeTrackingAPI(host="0.0.0.0", allow_remote=True)
    FakeTrackingAPI(host="::1")


async def test_localhost_binds_one_address() -> None:
    """host="localhost" gives a base_url that a client can reach."""
    async with (
        FakeTrackingAPI(host="localhost") as server,
        aiohttp.ClientSession(headers={"Authorization": server.auth.header}) as client,
        client.get(server.base_url + url(server, "system/time")) as response,
    ):
        assert server.base_url.startswith("http://127.0.0.1:")
        assert response.status == 200


async def test_a_server_cannot_start_twice(api: FakeTrackingAPI) -> None:
    """start() on a running server raises, and stop() is idempotent."""
    with pytest.raises(RuntimeError, match="already running"):
        await api.start()
    await api.stop()
    await api.stop()
