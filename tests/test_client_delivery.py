"""Client-level delivery: routes, batching, result matching, retries and hooks."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import msgspec
import pytest

from trackasync import (
    AuthError,
    BadRequest,
    Client,
    DeliveryFailed,
    Limits,
    RateLimited,
    Request,
    RequestTimeout,
    Response,
    Retry,
    ServerError,
    TransportError,
)
from trackasync.testing import RecordingTransport, accept_all, commands_of

from .conftest import IDS, NO_WAIT

MakeClient = Callable[..., Client]


def batch_answer(results: list[dict[str, Any]]) -> Response:
    return Response(200, msgspec.json.encode({"results": results, "success": True}))


async def test_single_command_uses_the_single_route(
    make_client: MakeClient, transport: RecordingTransport
) -> None:
    """In auto mode a flush holding one command posts it to its own route."""
    async with make_client() as client:
        receipt = await client.track_and_wait(IDS, "purchase", {"total": 9.5})
    assert receipt.status == 200
    assert receipt.attempts == 1
    (request,) = transport.requests
    assert request.url.endswith("/track/v2/projects/project-1/customers/events")
    assert request.headers["Authorization"].startswith("Basic ")
    assert request.headers["Content-Type"] == "application/json"
    body = msgspec.json.decode(request.body)
    assert body["customer_ids"] == IDS
    assert body["event_type"] == "purchase"
    assert body["properties"] == {"total": 9.5}


async def test_many_commands_go_in_batches_with_command_ids(
    make_client: MakeClient, transport: RecordingTransport
) -> None:
    """Queued commands travel together, each with its command_id, at most 50 a request."""
    async with make_client(linger=60.0) as client:
        deliveries = [client.track_nowait(IDS, "view", {"n": n}) for n in range(120)]
        deliveries.append(client.update_customer_nowait(IDS, {"tier": "gold"}))
        await client.flush()
    assert all(d.delivered() for d in deliveries)
    sizes = [len(commands_of(request)) for request in transport.requests]
    assert sizes == [50, 50, 21]
    assert all(r.url.endswith("/batch") for r in transport.requests)
    commands = transport.commands
    assert [c["command_id"] for c in commands[:3]] == ["0", "1", "2"]
    assert [c["data"]["properties"]["n"] for c in commands[:120]] == list(range(120))
    assert commands[-1]["name"] == "customers"
    assert commands[-1]["data"]["properties"] == {"tier": "gold"}


async def test_batch_is_cut_by_bytes(
    make_client: MakeClient, transport: RecordingTransport
) -> None:
    """No request body carries more command bytes than max_batch_bytes."""
    limits = Limits(max_command_bytes=1_000, max_value_bytes=900, max_batch_bytes=2_000)
    async with make_client(limits=limits, linger=60.0) as client:
        for n in range(10):
            client.track_nowait(IDS, "view", {"pad": "x" * 500, "n": n})
        await client.flush()
    assert len(transport.requests) > 1
    for request in transport.requests:
        data_bytes = sum(
            len(msgspec.json.encode(c["data"])) for c in commands_of(request)
        )
        assert data_bytes <= 2_000
    assert len(transport.commands) == 10


@pytest.mark.parametrize(
    ("mode", "route"), [("single", "/customers/events"), ("batch", "/batch")]
)
async def test_mode_forces_the_route(
    make_client: MakeClient, transport: RecordingTransport, mode: str, route: str
) -> None:
    """mode="single" posts each command alone; mode="batch" always uses /batch."""
    async with make_client(mode=mode, linger=60.0) as client:
        for n in range(3):
            client.track_nowait(IDS, "view", {"n": n})
        await client.flush()
    assert all(r.url.endswith(route) for r in transport.requests)
    assert len(transport.requests) == (3 if mode == "single" else 1)


async def test_linger_holds_commands_until_it_passes(
    make_client: MakeClient,
    transport: RecordingTransport,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A command waits up to linger for company, then leaves on its own."""
    # The linger is read on the client's and the batcher's (wall) clock, frozen
    # here: however slow the machine, nothing leaves before the test moves it.
    from trackasync import _batcher, _client

    clock = [time.time()]
    monkeypatch.setattr(_client, "_time_ns", lambda: int(clock[0] * 1e9))
    monkeypatch.setattr(_batcher, "_time", lambda: clock[0])
    async with make_client(linger=0.05) as client:
        delivery = client.track_nowait(IDS, "view")
        await asyncio.sleep(0.1)  # the batcher's timer fires: the clock says wait
        assert transport.requests == []
        clock[0] += 0.05
        await asyncio.wait_for(delivery, 5.0)
    assert len(transport.requests) == 1


async def test_results_are_matched_by_command_id(make_client: MakeClient) -> None:
    """Out-of-order results reach the command whose id they carry."""

    def answer(request: Request) -> Response:
        commands = commands_of(request)
        results = [
            {"success": c["data"]["properties"]["ok"], "command_id": c["command_id"]}
            | ({} if c["data"]["properties"]["ok"] else {"errors": ["bad one"]})
            for c in commands
        ]
        return batch_answer(list(reversed(results)))

    async with make_client(transport=RecordingTransport(answer), linger=60.0) as client:
        good = client.track_nowait(IDS, "view", {"ok": True})
        bad = client.track_nowait(IDS, "view", {"ok": False})
        await client.flush()
    assert good.delivered()
    with pytest.raises(DeliveryFailed) as caught:
        await bad
    assert caught.value.reason == "rejected"
    assert caught.value.errors == ("bad one",)
    assert isinstance(caught.value.error, BadRequest)
    assert caught.value.attempts == 1


async def test_results_without_ids_are_matched_by_position(
    make_client: MakeClient,
) -> None:
    """A result that lacks command_id belongs to the command at its position."""

    def answer(request: Request) -> Response:
        return batch_answer([{"success": True}, {"success": False, "errors": ["no"]}])

    async with make_client(transport=RecordingTransport(answer), linger=60.0) as client:
        first = client.track_nowait(IDS, "view")
        second = client.track_nowait(IDS, "view")
        await client.flush()
    assert first.delivered()
    assert second.exception() is not None
    assert second.exception().errors == ("no",)  # type: ignore[union-attr]


async def test_a_command_without_result_is_retried_alone(
    make_client: MakeClient,
) -> None:
    """A command missing from the results is not delivered: it is sent again."""
    transport = RecordingTransport()

    def answer(request: Request) -> Response:
        commands = commands_of(request)
        if len(transport.requests) == 1:
            return batch_answer(
                [{"success": True, "command_id": commands[0]["command_id"]}]
            )
        return accept_all(request)

    transport.handler = answer
    async with make_client(transport=transport, linger=60.0) as client:
        first = client.track_nowait(IDS, "view", {"n": 1})
        second = client.track_nowait(IDS, "view", {"n": 2})
        await client.flush()
    assert first.result().attempts == 1
    assert second.result().attempts == 2
    retried = commands_of(transport.requests[1])
    assert [c["data"]["properties"]["n"] for c in retried] == [2]
    assert client.stats().retries == 1


@pytest.mark.parametrize(
    "failure",
    [
        Response(500, b"oops"),
        Response(502),
        Response(503, b'{"errors": [{"message": "busy"}]}'),
        Response(429, b"", {"Retry-After": "0"}),
        Response(408),
        TransportError("connection reset"),
        RequestTimeout("too slow"),
    ],
    ids=["500", "502", "503", "429", "408", "reset", "timeout"],
)
async def test_retryable_failures_resend_the_same_bytes(
    make_client: MakeClient, failure: Response | Exception
) -> None:
    """429, 5xx, 408, dropped connections and timeouts are retried with the same body."""
    transport = RecordingTransport()

    def answer(request: Request) -> Response:
        if len(transport.requests) <= 2:
            if isinstance(failure, Exception):
                raise failure
            return failure
        return accept_all(request)

    transport.handler = answer
    async with make_client(transport=transport, linger=60.0) as client:
        deliveries = [client.track_nowait(IDS, "view", {"n": n}) for n in range(3)]
        await client.flush()
    assert [d.result().attempts for d in deliveries] == [3, 3, 3]
    bodies = [request.body for request in transport.requests]
    assert bodies[0] is bodies[1] is bodies[2]
    stats = client.stats()
    assert stats.requests == 3
    assert stats.retries == 2
    assert stats.delivered == 3
    assert stats.rate_limited == (2 if getattr(failure, "status", None) == 429 else 0)


@pytest.mark.parametrize(
    ("status", "body", "error_type", "errors"),
    [
        (
            400,
            b'{"success": false, "message": "Invalid JSON"}',
            BadRequest,
            ("Invalid JSON",),
        ),
        (
            401,
            b'{"success": false, "error": "Access key not provided"}',
            AuthError,
            ("Access key not provided",),
        ),
        (
            403,
            b'{"success": false, "error": "invalid secret"}',
            AuthError,
            ("invalid secret",),
        ),
        (
            404,
            b"The requested URL was not found on the server",
            BadRequest,
            ("The requested URL was not found on the server",),
        ),
        (413, b"", BadRequest, ()),
    ],
)
async def test_permanent_failures_are_not_retried(
    make_client: MakeClient,
    status: int,
    body: bytes,
    error_type: type[Exception],
    errors: tuple[str, ...],
) -> None:
    """4xx answers end the command at once, with the API's own error strings."""
    transport = RecordingTransport(
        lambda request: Response(status, body, {"x-request-id": "rid-9"})
    )
    async with make_client(transport=transport) as client:
        with pytest.raises(DeliveryFailed) as caught:
            await client.track_and_wait(IDS, "view")
    failure = caught.value
    assert failure.reason == "rejected"
    assert failure.status == status
    assert failure.errors == errors
    assert failure.request_id == "rid-9"
    assert isinstance(failure.error, error_type)
    assert len(transport.requests) == 1


async def test_single_route_success_false_is_final(make_client: MakeClient) -> None:
    """A 200 whose body says success: false is a rejection, not a retry."""
    body = (
        b'{"success": false, "errors": ["At least one valid id should be specified"]}'
    )
    transport = RecordingTransport(lambda request: Response(200, body))
    async with make_client(transport=transport) as client:
        with pytest.raises(DeliveryFailed) as caught:
            await client.track_and_wait(IDS, "view")
    assert caught.value.reason == "rejected"
    assert caught.value.errors == ("At least one valid id should be specified",)
    assert len(transport.requests) == 1


async def test_whole_batch_refused_on_200_is_final(make_client: MakeClient) -> None:
    """A batch answer with top-level success: false rejects every command in it."""
    transport = RecordingTransport(
        lambda request: Response(200, b'{"success": false, "message": "No commands"}')
    )
    async with make_client(transport=transport, linger=60.0) as client:
        deliveries = [client.track_nowait(IDS, "view") for _ in range(2)]
        await client.flush()
    assert [d.exception().reason for d in deliveries] == ["rejected", "rejected"]  # type: ignore[union-attr]
    assert deliveries[0].exception().errors == ("No commands",)  # type: ignore[union-attr]
    assert len(transport.requests) == 1


async def test_gives_up_after_the_attempts(make_client: MakeClient) -> None:
    """A command still failing after Retry.attempts requests ends as gave_up."""
    transport = RecordingTransport(lambda request: Response(503, b"down"))
    async with make_client(transport=transport) as client:
        with pytest.raises(DeliveryFailed) as caught:
            await client.track_and_wait(IDS, "view")
    failure = caught.value
    assert failure.reason == "gave_up"
    assert failure.attempts == NO_WAIT.attempts
    assert failure.status == 503
    assert isinstance(failure.error, ServerError)
    assert len(transport.requests) == NO_WAIT.attempts
    assert client.stats().failed["gave_up"] == 1


@pytest.fixture
def waits(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Retry waits, recorded instead of slept; the sender's clock moves by them.

    Rate-limit pauses are skipped too.
    """
    recorded: list[float] = []

    async def record(delay: float) -> None:
        recorded.append(delay)

    monkeypatch.setattr("trackasync._sender._time", lambda: time.time() + sum(recorded))

    async def skip(delay: float) -> None:
        pass

    monkeypatch.setattr("trackasync._sender._sleep", record)
    monkeypatch.setattr("trackasync._ratelimit._sleep", skip)
    return recorded


async def test_gives_up_when_the_deadline_would_pass(
    make_client: MakeClient, waits: list[float]
) -> None:
    """A retry that could not start before Retry.timeout is not attempted."""
    transport = RecordingTransport(
        lambda request: Response(429, b"", {"Retry-After": "30"})
    )
    policy = Retry(attempts=10, timeout=45.0, max_retry_after=60.0)
    async with make_client(transport=transport, retry=policy) as client:
        with pytest.raises(DeliveryFailed) as caught:
            await client.track_and_wait(IDS, "view")
    assert caught.value.reason == "gave_up"
    assert isinstance(caught.value.error, RateLimited)
    assert waits == [30.0]  # the second wait of 30 s would pass the 45 s deadline
    assert len(transport.requests) == 2


async def test_retry_after_is_honoured_and_capped(
    make_client: MakeClient, waits: list[float]
) -> None:
    """Retry-After replaces the backoff, up to Retry.max_retry_after."""
    answers = iter(
        [
            Response(429, b"", {"Retry-After": "2"}),
            Response(503, b"", {"retry-after": "500"}),
            Response(200, b'{"success": true}'),
        ]
    )
    transport = RecordingTransport(lambda request: next(answers))
    policy = Retry(attempts=5, timeout=600.0, max_retry_after=7.0)
    async with make_client(transport=transport, retry=policy) as client:
        receipt = await client.track_and_wait(IDS, "view")
    assert receipt.attempts == 3
    assert waits == [2.0, 7.0]


async def test_on_result_sees_each_command_once(make_client: MakeClient) -> None:
    """The sync hook is called once per command with its final outcome."""
    seen: list[tuple[str, bool]] = []

    def answer(request: Request) -> Response:
        return batch_answer(
            [
                {
                    "success": c["data"]["event_type"] == "good",
                    "command_id": c["command_id"],
                }
                for c in commands_of(request)
            ]
        )

    client = make_client(
        transport=RecordingTransport(answer),
        linger=60.0,
        on_result=lambda d: seen.append((d.data()["event_type"], d.delivered())),
    )
    async with client:
        client.track_nowait(IDS, "good")
        client.track_nowait(IDS, "bad")
        await client.flush()
    assert sorted(seen) == [("bad", False), ("good", True)]


async def test_async_hook_and_a_failing_hook_do_not_stop_the_pipeline(
    make_client: MakeClient, caplog: pytest.LogCaptureFixture
) -> None:
    """An async hook is awaited; a hook that raises is logged and delivery goes on."""
    seen: list[int] = []

    async def hook(delivery: Any) -> None:
        number = delivery.data()["properties"]["n"]
        seen.append(number)
        if number == 0:
            raise RuntimeError("hook bug")

    caplog.set_level(logging.ERROR, logger="trackasync")
    client = make_client(on_result=hook)
    async with client:
        first = await client.track_and_wait(IDS, "view", {"n": 0})
        second = await client.track_and_wait(IDS, "view", {"n": 1})
        await asyncio.sleep(0)
    assert first.status == second.status == 200
    assert sorted(seen) == [0, 1]
    assert "on_result hook raised" in caplog.text


async def test_timestamp_is_taken_at_the_call(
    make_client: MakeClient, transport: RecordingTransport
) -> None:
    """The default timestamp is the call's time, so a later send does not change it."""
    async with make_client(linger=0.05) as client:
        before = time.time()
        delivery = client.track_nowait(IDS, "view")
        after = time.time()
        await delivery
    stamp = msgspec.json.decode(transport.requests[0].body)["timestamp"]
    assert before - 1e-6 <= stamp <= after + 1e-6
    assert len(repr(stamp).split(".")[1]) <= 6


async def test_system_time_reads_the_server_clock(make_client: MakeClient) -> None:
    """system_time() returns the API's time as a float."""
    async with make_client() as client:
        assert await client.system_time() == 1700000000.5


async def test_system_time_raises_typed_errors(make_client: MakeClient) -> None:
    """A failed system/time request raises the typed error at once."""
    transport = RecordingTransport(
        lambda request: Response(401, b'{"error": "Access key not found"}')
    )
    async with make_client(transport=transport) as client:
        with pytest.raises(AuthError) as caught:
            await client.system_time()
    assert caught.value.errors == ("Access key not found",)


async def test_front_end_seam_builds_then_queues():
    """A command built off-loop by _event/_customer is handed over from another
    thread to the same table, and delivered."""
    from trackasync import Client, PublicToken
    from trackasync.testing import RecordingTransport

    transport = RecordingTransport()
    client = Client(
        "http://127.0.0.1:1",
        "p",
        auth=PublicToken("t"),
        transport=transport,
        linger=0,
    )
    event = client._event({"registered": "a"}, "view", {"x": 1}, 5)
    update = client._customer({"registered": "a"}, {"plan": "pro"}, None)
    assert event.data()["timestamp"] == 5
    assert not event.done()
    await client.__aenter__()
    table = client._pipeline.table
    await asyncio.to_thread(table.hand_over, event, None)
    await asyncio.to_thread(table.hand_over, update, None)
    assert (await event).status == 200
    assert (await update).status == 200
    await client.aclose()
