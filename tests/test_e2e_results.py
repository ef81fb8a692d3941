"""End to end results: batches and their per-command outcomes, lost connections,
timeouts, and the data as the server stores it.

The real client and aiohttp transport run against FakeTrackingAPI on 127.0.0.1;
each test checks the commands' outcomes and what the server stored.
"""

from __future__ import annotations

import math
import time
from datetime import datetime, timedelta, timezone
from typing import Any

import msgspec
import pytest

from trackasync import AiohttpTransport, Request, Response, Retry, TransportError
from trackasync.testing import FakeTrackingAPI

from .test_e2e import (
    IDS,
    client_for,
    failure_of,
    flagged,
    stats_add_up,
    stored_numbers,
    wait_until,
)


class TapTransport(AiohttpTransport):
    """The default aiohttp transport, keeping every request and its answer."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[Request] = []
        self.exchanges: list[tuple[Request, Response]] = []

    async def send(self, request: Request) -> Response:
        self.sent.append(request)
        response = await super().send(request)
        self.exchanges.append((request, response))
        return response


# -- batches ----------------------------------------------------------------------


async def test_only_the_failing_commands_of_a_batch_are_rejected(
    fake_tracking_api: FakeTrackingAPI,
) -> None:
    """Per-command failures inside one batch reject just those commands."""
    api = fake_tracking_api
    api.reject_commands(flagged, error="Not authorized to add event of specified type")
    bad = {2, 5, 7}
    async with client_for(api, linger=60.0) as client:
        deliveries = [
            client.track_nowait(IDS, "view", {"n": n, "reject": n in bad})
            for n in range(10)
        ]
        update = client.update_customer_nowait(IDS, {"tier": "gold", "reject": True})
        await client.flush()
    assert [(r.route, r.status, r.commands) for r in api.requests] == [
        ("batch", 200, 11)
    ]
    for n, delivery in enumerate(deliveries):
        if n in bad:
            failure = await failure_of(delivery)
            assert failure.reason == "rejected"
            assert failure.errors == ("Not authorized to add event of specified type",)
            assert failure.status == 200
        else:
            assert (await delivery).attempts == 1
    assert (await failure_of(update)).reason == "rejected"
    assert api.customer(IDS) is None
    assert stored_numbers(api) == [n for n in range(10) if n not in bad]
    stats = stats_add_up(client)
    assert (stats.delivered, stats.rejected, stats.retries) == (7, 4, 0)


async def test_command_ids_are_echoed_and_matched_to_their_commands(
    fake_tracking_api: FakeTrackingAPI,
) -> None:
    """Each batch result carries the command_id sent, and decides that command only."""
    api = fake_tracking_api
    api.reject_commands(flagged)
    transport = TapTransport()
    bad = {1, 4}
    async with client_for(api, transport=transport, linger=60.0) as client:
        deliveries = [
            client.track_nowait(IDS, "view", {"n": n, "reject": n in bad})
            for n in range(6)
        ]
        await client.flush()
    ((request, response),) = transport.exchanges
    sent = msgspec.json.decode(request.body)["commands"]
    results = msgspec.json.decode(response.body)["results"]
    assert [c["command_id"] for c in sent] == [str(n) for n in range(6)]
    assert [r["command_id"] for r in results] == [str(n) for n in range(6)]
    for result, command in zip(results, sent):
        position = int(result["command_id"])
        assert command["data"]["properties"]["n"] == position
        assert deliveries[position].delivered() is result["success"]
        assert result["success"] is (position not in bad)
    assert stored_numbers(api) == [0, 2, 3, 5]


@pytest.mark.parametrize(
    "answer",
    [{"success": True, "results": []}, {"success": True}],
    ids=["empty-results", "no-results"],
)
async def test_a_batch_answer_without_results_is_retried(
    fake_tracking_api: FakeTrackingAPI, answer: dict[str, Any]
) -> None:
    """A 200 batch answer that names no result leaves nothing accepted: it is retried."""
    api = fake_tracking_api
    api.fail_next(1, status=200, body=answer)
    async with client_for(api, linger=60.0) as client:
        deliveries = [client.track_nowait(IDS, "view", {"n": n}) for n in range(3)]
        await client.flush()
    assert [(await d).attempts for d in deliveries] == [2, 2, 2]
    assert [r.route for r in api.requests] == ["batch", "batch"]
    assert stored_numbers(api) == [0, 1, 2]


# -- dropped connections ------------------------------------------------------------------


async def test_drop_after_store_is_retried_and_stored_once(
    fake_tracking_api: FakeTrackingAPI,
) -> None:
    """A connection lost after the server stored the event: retried, deduplicated."""
    api = fake_tracking_api
    api.drop_next(1, after_store=True)
    async with client_for(api) as client:
        receipt = await client.track_and_wait(IDS, "purchase", {"n": 1})
    assert receipt.attempts == 2
    assert [(r.status, r.fault) for r in api.requests] == [
        (None, "drop_after"),
        (200, None),
    ]
    assert stored_numbers(api) == [1]
    assert api.duplicates == 1
    assert stats_add_up(client).delivered == 1


async def test_drop_after_store_of_a_batch_is_stored_once_per_command(
    fake_tracking_api: FakeTrackingAPI,
) -> None:
    """A whole batch lost after storing is resent byte for byte, each event kept once."""
    api = fake_tracking_api
    api.drop_next(1, after_store=True)
    transport = TapTransport()
    async with client_for(api, transport=transport, linger=60.0) as client:
        deliveries = [client.track_nowait(IDS, "view", {"n": n}) for n in range(5)]
        update = client.update_customer_nowait(IDS, {"tier": "gold"})
        await client.flush()
    assert [(await d).attempts for d in deliveries] == [2] * 5
    assert (await update).attempts == 2
    assert [(r.route, r.commands) for r in api.requests] == [("batch", 6), ("batch", 6)]
    first, retried = transport.sent
    assert first.body is not None
    assert retried.body == first.body
    assert len(transport.exchanges) == 1
    assert stored_numbers(api) == [0, 1, 2, 3, 4]
    assert api.duplicates == 5
    assert api.customer(IDS) == {"tier": "gold"}


async def test_drop_before_store_is_retried_and_stored_once(
    fake_tracking_api: FakeTrackingAPI,
) -> None:
    """A connection lost before the server read the event: retried, stored once."""
    api = fake_tracking_api
    api.drop_next(1)
    async with client_for(api) as client:
        receipt = await client.track_and_wait(IDS, "purchase", {"n": 1})
    assert receipt.attempts == 2
    assert [(r.status, r.fault) for r in api.requests] == [(None, "drop"), (200, None)]
    assert stored_numbers(api) == [1]
    assert api.duplicates == 0


async def test_a_drop_after_store_with_no_retry_left_is_reported_yet_stored(
    fake_tracking_api: FakeTrackingAPI,
) -> None:
    """Without retries a drop after storing gives up, though the server has the event."""
    api = fake_tracking_api
    api.drop_next(1, after_store=True)
    async with client_for(api, retry=Retry.none()) as client:
        failure = await failure_of(client.track_nowait(IDS, "purchase", {"n": 1}))
    assert failure.reason == "gave_up"
    assert failure.attempts == 1
    assert failure.status is None
    assert isinstance(failure.error, TransportError)
    # The ambiguous case the delivery guarantee names: reported, and stored.
    assert stored_numbers(api) == [1]


async def test_a_timed_out_request_is_retried_and_its_late_copy_deduplicated(
    fake_tracking_api: FakeTrackingAPI,
) -> None:
    """A request that outlives the client's timeout is resent; the slow copy is absorbed."""
    api = fake_tracking_api
    # The resent copy must be answered within the timeout: 0.5 s leaves a loaded
    # machine room (0.1 s did not, once); the first copy outlives it threefold.
    api.delay_next(1, 1.5)
    async with client_for(api, timeout=0.5) as client:
        receipt = await client.track_and_wait(IDS, "purchase", {"n": 1})
        assert receipt.attempts == 2
        assert stored_numbers(api) == [1]
        # The first request is still being handled; once it is, it is a duplicate.
        await wait_until(lambda: len(api.requests) == 2, timeout=10.0)
    assert stored_numbers(api) == [1]
    assert api.duplicates == 1
    assert [r.fault for r in api.requests] == [None, "delay"]


# -- what the server stores -------------------------------------------------------------


async def test_a_long_queue_is_cut_into_batches_of_fifty(
    fake_tracking_api: FakeTrackingAPI,
) -> None:
    """120 queued commands travel as batches of 50, 50 and 20, all stored in order."""
    api = fake_tracking_api
    async with client_for(api, linger=60.0, max_in_flight=1) as client:
        for n in range(120):
            client.track_nowait(IDS, "view", {"n": n})
        result = await client.flush()
    assert (result.delivered, result.failed, result.pending) == (120, 0, 0)
    assert [(r.route, r.commands) for r in api.requests] == [
        ("batch", 50),
        ("batch", 50),
        ("batch", 20),
    ]
    assert stored_numbers(api) == list(range(120))


async def test_timestamps_reach_the_server_as_utc_seconds(
    fake_tracking_api: FakeTrackingAPI,
) -> None:
    """A datetime, an ISO string and a number all arrive as the same UNIX seconds."""
    api = fake_tracking_api
    moment = datetime(2024, 5, 1, 12, 0, 0, 250000, tzinfo=timezone.utc)
    expected = moment.timestamp()
    async with client_for(api, linger=60.0) as client:
        before = time.time()
        client.track_nowait(IDS, "view", {"n": 0})
        after = time.time()
        client.track_nowait(IDS, "view", {"n": 1}, timestamp=moment)
        client.track_nowait(
            IDS, "view", {"n": 2}, timestamp="2024-05-01T14:00:00.25+02:00"
        )
        client.track_nowait(IDS, "view", {"n": 3}, timestamp=expected)
        await client.flush()
    stamps = {e.properties["n"]: e.timestamp for e in api.events}
    assert before - 1e-6 <= stamps[0] <= after + 1e-6
    assert stamps[1] == stamps[2] == stamps[3] == expected


async def test_the_newest_customer_update_wins_whatever_the_arrival_order(
    fake_tracking_api: FakeTrackingAPI,
) -> None:
    """An older update_timestamp sent last does not overwrite a newer value."""
    api = fake_tracking_api
    async with client_for(api, mode="single", max_in_flight=1) as client:
        await (await client.update_customer(IDS, {"tier": "gold", "city": "Oslo"}))
        await (
            await client.update_customer(
                IDS, {"tier": "bronze", "email": "a@x.io"}, update_timestamp=1.0e9
            )
        )
    assert api.customer(IDS) == {"tier": "gold", "city": "Oslo", "email": "a@x.io"}


async def test_property_values_arrive_converted_as_documented(
    fake_tracking_api: FakeTrackingAPI,
) -> None:
    """Datetimes arrive in UTC with a Z, NaN and infinities as null, int keys as text."""
    api = fake_tracking_api
    when = datetime(2024, 5, 1, 14, 0, tzinfo=timezone(timedelta(hours=2)))
    properties = {
        "n": 1,
        "when": when,
        "nan": math.nan,
        "inf": -math.inf,
        "nested": {1: "one", "list": [1, 2.5, None, True]},
        "text": "žluťoučký kůň",
    }
    async with client_for(api) as client:
        await client.track_and_wait(IDS, "view", properties)
    (event,) = api.events
    assert event.properties == {
        "n": 1,
        "when": "2024-05-01T12:00:00Z",
        "nan": None,
        "inf": None,
        "nested": {"1": "one", "list": [1, 2.5, None, True]},
        "text": "žluťoučký kůň",
    }
