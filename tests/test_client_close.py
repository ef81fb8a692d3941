"""The lifecycle under a hostile world: cancelled closes, hooks that call back into
the client, slow and shielded hooks, bad arguments, lost loops, loud failures."""

from __future__ import annotations

import asyncio
import gc
import logging
import math
import time
import traceback
from collections.abc import Callable
from typing import Any

import anyio
import msgspec
import pytest

from trackasync import (
    Client,
    ClientState,
    ClientStateError,
    ConfigError,
    Delivery,
    DeliveryFailed,
    PrivateKey,
    Request,
    Response,
)
from trackasync._hooks import HOOK_CANCEL_GRACE
from trackasync._table import CommandTable as MemoryStore
from trackasync.testing import RecordingTransport, accept_all

from .conftest import BASE_URL, IDS, NO_WAIT, PROJECT, Gate

MakeClient = Callable[..., Client]


def unmanaged_client(
    transport: RecordingTransport | None = None, **options: Any
) -> Client:
    """A lingering client outside the fixture, for tests that end its loop
    themselves (the fixture would close it in the wrong loop)."""
    return Client(
        BASE_URL,
        PROJECT,
        auth=PrivateKey("key", "secret"),
        transport=transport or RecordingTransport(),
        linger=60.0,
        **options,
    )


def adds_up(client: Client) -> bool:
    stats = client.stats()
    return stats.enqueued == (
        stats.delivered + sum(stats.failed.values()) + stats.queued + stats.in_flight
    )


async def wait_until(check: Callable[[], bool], timeout: float = 5.0) -> None:
    """Poll ``check`` (state inside the client, with no event to wait on)."""
    with anyio.fail_after(timeout):
        while not check():  # noqa: ASYNC110
            await asyncio.sleep(0.001)


# -- aclose is safe to cancel -------------------------------------------------------


@pytest.mark.parametrize("cancel", ["wait_for", "cancel_scope", "task_cancel"])
async def test_cancelled_aclose_keeps_closing_and_a_later_aclose_is_true(
    make_client: MakeClient, cancel: str
) -> None:
    """150 queued and 50 in flight, aclose(5) cancelled after a moment: the close
    goes on in the background, nothing is reported early, and a later aclose()
    returns the true report once every command has its outcome."""
    gate = Gate()
    transport = RecordingTransport(gate)
    client = make_client(transport=transport, max_in_flight=1, linger=60.0)
    deliveries = [client.track_nowait(IDS, "view", {"n": n}) for n in range(200)]
    client._pipeline.batcher.flush()  # type: ignore[union-attr]
    await wait_until(lambda: client.stats().in_flight == 50)
    assert client.stats().queued == 150

    if cancel == "wait_for":
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(client.aclose(5), 0.05)
    elif cancel == "cancel_scope":
        with anyio.move_on_after(0.05):
            await client.aclose(5)
    else:
        task = asyncio.ensure_future(client.aclose(5))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    assert client.state is ClientState.CLOSING
    assert client._pipeline.report is None  # nothing cached while commands are pending
    assert adds_up(client)
    gate.open.set()
    report = await client.aclose()
    assert client.state is ClientState.CLOSED
    assert report.delivered == 200
    assert report.undelivered == []
    assert all(d.delivered() for d in deliveries)
    assert transport.closed
    assert await client.aclose() is report
    requests = len(transport.requests)
    await asyncio.sleep(0.05)
    assert len(transport.requests) == requests  # nothing sends after "closed"


async def test_a_cancelled_close_still_ends_within_its_budget(
    make_client: MakeClient,
) -> None:
    """Cancelled while the server never answers, the close still gives up at its
    budget: every command "closed", the session closed, no task left running."""
    gate = Gate()
    transport = RecordingTransport(gate)
    client = make_client(transport=transport, max_in_flight=2, linger=60.0)
    deliveries = [client.track_nowait(IDS, "view", {"n": n}) for n in range(120)]
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(client.aclose(0.3), 0.05)
    started = time.monotonic()
    report = await client.aclose()
    # Generous for a loaded machine: a close that waited would never end here.
    assert time.monotonic() - started < 0.3 + 2.0
    assert report.delivered == 0
    assert report.failed["closed"] == 120
    assert report.undelivered == deliveries
    assert all(d.exception().reason == "closed" for d in deliveries)  # type: ignore[union-attr]
    assert transport.closed
    assert gate.waiting == 0  # the requests under way were cancelled
    sender = client._pipeline.sender
    assert sender is not None
    assert not sender.workers
    assert client._pipeline.runner is not None
    assert client._pipeline.runner.done()


def test_ctrl_c_during_aclose_leaves_a_true_report() -> None:
    """The loop shutting down (asyncio.run cancelling everything, as on Ctrl-C)
    while aclose() waits: the close still settles every command."""
    gate = Gate()
    transport = RecordingTransport(gate)
    client = unmanaged_client(transport, rate_limit=None)
    deliveries: list[Delivery] = []

    async def main() -> None:
        deliveries.extend(client.track_nowait(IDS, "view") for _ in range(30))
        closing = asyncio.ensure_future(client.aclose(10))
        await asyncio.sleep(0.05)
        assert not closing.done()
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        asyncio.run(main())
    assert client.state is ClientState.CLOSED
    assert all(d.done() for d in deliveries)
    report = asyncio.run(client.aclose())
    assert report.delivered + report.failed["closed"] == 30
    assert transport.closed


# -- hooks that call back into the client ---------------------------------------------


async def test_async_hook_that_closes_the_client_does_not_deadlock(
    make_client: MakeClient,
) -> None:
    """An async on_result hook awaiting aclose() gets the report; so does the
    caller's own aclose(), and neither waits for the other forever."""
    reports: list[Any] = []

    async def hook(delivery: Delivery) -> None:
        reports.append(await client.aclose())

    client = make_client(on_result=hook)
    deliveries = [client.track_nowait(IDS, "view", {"n": n}) for n in range(5)]
    with anyio.fail_after(5):
        await client.flush()
        await wait_until(lambda: len(reports) >= 1)
        report = await client.aclose()
    assert report.delivered == 5
    assert all(r is report for r in reports)
    assert all(d.delivered() for d in deliveries)


async def test_async_hook_that_flushes_does_not_deadlock(
    make_client: MakeClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Hooks that flush, even when every hook slot is taken by one and the
    backlog is full, do not stall the pipeline that must settle their flush."""
    monkeypatch.setattr("trackasync._hooks.HOOK_BACKLOG", 4)
    monkeypatch.setattr("trackasync._hooks.HOOK_CONCURRENCY", 2)
    flushed: list[int] = []

    async def hook(delivery: Delivery) -> None:
        client.track_nowait(IDS, "follow-up")
        result = await client.flush()
        flushed.append(result.pending)

    client = make_client(on_result=hook, max_in_flight=1)
    for n in range(20):
        client.track_nowait(IDS, "view", {"n": n})
    with anyio.fail_after(5):
        await wait_until(lambda: len(flushed) >= 20)
        client._pipeline.hooks = None  # stop the chain of follow-ups before closing
    assert flushed[:20] == [0] * 20


async def test_sync_hook_runs_outside_the_callers_track_call(
    make_client: MakeClient,
) -> None:
    """drop_old, max_queue=2, a sync hook that queues a command: the hook never
    runs inside track_nowait, and the queue never holds more than 2."""
    sizes: list[int] = []
    inside_track = False

    def hook(delivery: Delivery) -> None:
        assert not inside_track
        sizes.append(len(client._table))
        if delivery.exception() is not None and len(sizes) < 10:
            client.track_nowait(IDS, "from-hook")
        sizes.append(len(client._table))

    client = make_client(on_result=hook, max_queue=2, overflow="drop_old", linger=60.0)
    async with client:
        for n in range(5):
            inside_track = True
            client.track_nowait(IDS, "view", {"n": n})
            inside_track = False
            assert len(client._table) <= 2
        await wait_until(lambda: len(sizes) >= 6)
        assert max(sizes) <= 2
        assert adds_up(client)


async def test_a_sync_hook_that_raises_is_logged_and_the_rest_go_on(
    make_client: MakeClient, caplog: pytest.LogCaptureFixture
) -> None:
    """A hook's exception is logged; the next outcomes still reach the hook."""
    seen: list[int] = []

    def hook(delivery: Delivery) -> None:
        n = delivery.data()["properties"]["n"]
        seen.append(n)
        if n == 1:
            raise RuntimeError("hook bug")

    client = make_client(on_result=hook)
    async with client:
        for n in range(4):
            client.track_nowait(IDS, "view", {"n": n})
        await client.flush()
        await wait_until(lambda: len(seen) == 4)
    assert sorted(seen) == [0, 1, 2, 3]
    assert "on_result hook raised" in caplog.text
    assert "hook bug" in caplog.text


# -- hooks at close, slow hooks, shielded hooks ------------------------------------------


async def test_async_hooks_for_closed_commands_run_within_the_budget(
    make_client: MakeClient,
) -> None:
    """A server that never answers: the 300 commands end "closed" and an async
    hook with an await in it still sees every one of them, within the budget."""
    seen: list[str] = []

    async def hook(delivery: Delivery) -> None:
        await asyncio.sleep(0)
        error = delivery.exception()
        seen.append("delivered" if error is None else error.reason)

    client = make_client(on_result=hook, transport=RecordingTransport(Gate()))
    for n in range(300):
        client.track_nowait(IDS, "view", {"n": n})
    started = time.monotonic()
    # The hooks get the last tenth of the budget: 0.3 s for 300 calls leaves a
    # loaded machine room (0.1 s did not, under coverage).
    report = await client.aclose(timeout=3.0)
    # Generous for a loaded machine: a close that waited would never end here.
    assert time.monotonic() - started < 3.0 + 2 * HOOK_CANCEL_GRACE + 1.0
    assert report.failed["closed"] == 300
    assert seen == ["closed"] * 300


async def test_slow_async_hooks_are_bounded(
    make_client: MakeClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A hook sleeping 5 s per call: hook tasks stay at the concurrency limit, the
    backlog's backpressure stops sending, and close skips (and counts) the rest."""
    monkeypatch.setattr("trackasync._hooks.HOOK_BACKLOG", 100)

    async def hook(delivery: Delivery) -> None:
        await asyncio.sleep(5)

    client = make_client(on_result=hook, max_queue=100_000)
    for n in range(2_000):
        client.track_nowait(IDS, "view", {"n": n})
    client._pipeline.batcher.flush()  # type: ignore[union-attr]
    await asyncio.sleep(0.3)
    hooks = client._pipeline.hooks
    assert hooks is not None
    assert len(hooks._active) <= 16
    assert len(asyncio.all_tasks()) < 40
    stats = client.stats()
    assert stats.delivered <= 100 + 16 + 50 * 4  # held back by the backlog
    assert stats.queued > 1_000
    started = time.monotonic()
    report = await client.aclose(timeout=0.5)
    # Under the hooks' 5 s, with room for a loaded machine.
    assert time.monotonic() - started < 0.5 + 2 * HOOK_CANCEL_GRACE + 1.5
    assert report.delivered + report.failed["closed"] == 2_000
    assert client.stats().hooks_skipped > 0
    assert not hooks._active


async def test_a_shielded_hook_cannot_stretch_aclose_past_its_margin(
    make_client: MakeClient, caplog: pytest.LogCaptureFixture
) -> None:
    """A hook that shields itself from cancellation is left behind after the
    documented grace: aclose(timeout) returns late by at most that much."""
    release = asyncio.Event()

    async def hook(delivery: Delivery) -> None:
        try:
            await release.wait()
        except asyncio.CancelledError:
            await release.wait()  # swallows the cancellation and goes on

    client = make_client(on_result=hook)
    client.track_nowait(IDS, "view")
    await client.flush()
    started = time.monotonic()
    await client.aclose(timeout=0.2)
    elapsed = time.monotonic() - started
    # Generous for a loaded machine: without the grace it would never return.
    assert elapsed < 0.2 + HOOK_CANCEL_GRACE + 1.0
    assert "ignored cancellation" in caplog.text
    release.set()
    await asyncio.sleep(0)


# -- arguments and misuse --------------------------------------------------------------


@pytest.mark.parametrize("bad", [math.nan, -1, "2", True, [1]])
async def test_bad_timeouts_are_refused_before_any_change(
    make_client: MakeClient, bad: Any
) -> None:
    """aclose() and flush() refuse a bad timeout with ConfigError, and the client
    stays open and usable."""
    client = make_client()
    async with client:
        delivery = client.track_nowait(IDS, "view")
        with pytest.raises(ConfigError, match="timeout"):
            await client.aclose(timeout=bad)
        with pytest.raises(ConfigError, match="timeout"):
            await client.flush(timeout=bad)
        assert client.state is ClientState.OPEN
        client.track_nowait(IDS, "view")
        await client.flush()
        assert delivery.delivered()


async def test_nested_async_with_is_refused(make_client: MakeClient) -> None:
    """Entering the same client twice raises; the outer block still works."""
    client = make_client()
    async with client:
        with pytest.raises(ClientStateError, match="already"):
            async with client:
                pass
        assert client.state is ClientState.OPEN
        await client.track_and_wait(IDS, "view")


def test_an_unclosed_client_collected_with_commands_warns(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A client whose loop was closed under it (without cancelling its tasks),
    then dropped with queued commands: a ResourceWarning and a WARNING line with
    the count when it is collected."""
    loop = asyncio.new_event_loop()

    async def use() -> None:
        client = unmanaged_client()
        for _ in range(10):
            client.track_nowait(IDS, "view")
        await asyncio.sleep(0.01)

    # Collected as soon as nothing refers to it (by reference count, or by the
    # collector if a cycle holds it): either way, it warns.
    def run_and_collect() -> None:
        loop.run_until_complete(use())
        loop.close()
        gc.collect()

    with pytest.warns(ResourceWarning, match="10 command"):
        run_and_collect()
    assert "garbage-collected unclosed with 10 command(s)" in caplog.text


# -- loud failures -----------------------------------------------------------------------


def answer(status: int, body: dict[str, Any]) -> Callable[[Request], Response]:
    def handler(request: Request) -> Response:
        return Response(status, msgspec.json.encode(body))

    return handler


async def test_a_wrong_secret_is_an_error_at_the_default_level(
    make_client: MakeClient, caplog: pytest.LogCaptureFixture
) -> None:
    """Every command refused with 403: one ERROR line that says the credentials
    or their permissions are wrong, with the count, and no secret."""
    caplog.set_level(logging.WARNING, logger="trackasync")
    transport = RecordingTransport(
        answer(403, {"success": False, "error": "Access key is not valid"})
    )
    client = make_client(transport=transport)
    async with client:
        for n in range(100):
            client.track_nowait(IDS, "view", {"n": n})
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors, caplog.text
    text = "\n".join(r.getMessage() for r in errors)
    assert "credentials" in text
    assert "Access key is not valid" in text
    assert sum(r.args[0] for r in errors) == 100  # type: ignore[index,misc]
    assert "secret" not in text.replace("credentials", "")


async def test_rejections_and_give_ups_are_warnings_with_counts(
    make_client: MakeClient, caplog: pytest.LogCaptureFixture
) -> None:
    """A refused command logs the API's own error strings; retries running out
    log the last error; the close sums it all up."""
    caplog.set_level(logging.WARNING, logger="trackasync")

    def handler(request: Request) -> Response:
        if b'"bad"' in (request.body or b""):
            return Response(
                200,
                msgspec.json.encode(
                    {"success": False, "errors": ["Event type is not allowed"]}
                ),
            )
        return Response(500, b'{"success": false, "error": "boom"}')

    client = make_client(transport=RecordingTransport(handler), mode="single")
    async with client:
        client.track_nowait(IDS, "bad")
        client.track_nowait(IDS, "view")
        await client.flush()
    messages = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert any(
        "rejected 1 command" in m and "Event type is not allowed" in m for m in messages
    ), messages
    assert any("gave up on 1 command" in m for m in messages), messages
    assert (
        "trackasync: closed: 0 delivered, 2 not delivered (1 rejected, 1 gave_up); "
        "last errors: "
        "rejected: Event type is not allowed; gave_up: boom" in messages
    ), messages


# -- prompt answers to awaiting callers ------------------------------------------------


async def test_an_awaited_command_does_not_wait_for_the_linger(
    make_client: MakeClient, transport: RecordingTransport
) -> None:
    """With linger=30, track_and_wait answers within milliseconds, concurrent
    awaiters share one request, and track_nowait alone keeps lingering."""
    client = make_client(linger=30.0)
    async with client:
        client.track_nowait(IDS, "quiet")
        await asyncio.sleep(0.05)
        assert transport.requests == []
        started = time.monotonic()
        receipts = await asyncio.gather(
            *(client.track_and_wait(IDS, "view", {"n": n}) for n in range(20))
        )
        assert time.monotonic() - started < 10.0  # far under the 30 s linger
        assert all(r.status == 200 for r in receipts)
        assert len(transport.requests) == 1
        assert len(transport.commands) == 21


# -- counters, errors ---------------------------------------------------------------------


async def test_stats_add_up_while_part_of_a_batch_waits_for_its_retry(
    make_client: MakeClient,
) -> None:
    """A batch answer with one result missing: the 49 accepted are delivered at
    once, and only the one waiting for its retry counts as in flight."""
    retry_gate = asyncio.Event()
    calls = 0

    async def handler(request: Request) -> Response:
        nonlocal calls
        calls += 1
        if calls == 1:
            answer_ = msgspec.json.decode(accept_all(request).body)
            answer_["results"].pop()
            return Response(200, msgspec.json.encode(answer_))
        await retry_gate.wait()
        return accept_all(request)

    client = make_client(transport=RecordingTransport(handler), linger=60.0)
    async with client:
        deliveries = [client.track_nowait(IDS, "view", {"n": n}) for n in range(50)]
        client._pipeline.batcher.flush()  # type: ignore[union-attr]
        await wait_until(lambda: calls == 2)
        stats = client.stats()
        assert (stats.delivered, stats.in_flight, stats.queued) == (49, 1, 0)
        assert adds_up(client)
        retry_gate.set()
        await deliveries[-1]
    assert adds_up(client)


async def test_delivery_failed_has_its_cause_and_a_traceback_that_does_not_grow(
    make_client: MakeClient,
) -> None:
    """__cause__ is the request's error, and awaiting the failed command again
    does not add frames to its traceback."""
    transport = RecordingTransport(answer(400, {"success": False, "message": "no"}))
    client = make_client(transport=transport)
    async with client:
        delivery = client.track_nowait(IDS, "view")
        sizes = []
        for _ in range(4):
            with pytest.raises(DeliveryFailed) as caught:
                await delivery
            sizes.append(len(traceback.extract_tb(caught.value.__traceback__)))
        assert caught.value.__cause__ is caught.value.error
        assert caught.value.error is not None
        assert caught.value.error.status == 400
    assert len(set(sizes)) == 1, sizes


async def test_update_customer_stamps_its_update_timestamp_at_the_call(
    make_client: MakeClient, transport: RecordingTransport
) -> None:
    """The default update_timestamp is the time of the call, not of the send."""
    client = make_client(linger=60.0)
    async with client:
        before = time.time()
        delivery = client.update_customer_nowait(IDS, {"plan": "pro"})
        after = time.time()
        await asyncio.sleep(0.2)
        await client.flush()
    assert delivery.delivered()
    stamp = transport.commands[0]["data"]["update_timestamp"]
    assert before - 1e-6 <= stamp <= after + 1e-6


async def test_the_batcher_survives_its_own_error(
    make_client: MakeClient,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An error inside the batcher's step is logged and the loop goes on: the
    commands stay queued and are delivered afterwards."""
    client = make_client(max_in_flight=1)
    real_take = MemoryStore.take
    failures = []

    def flaky_take(self: MemoryStore, max_count: int, max_bytes: int) -> Any:
        if not failures:
            failures.append(1)
            raise RuntimeError("batcher bug")
        return real_take(self, max_count, max_bytes)

    monkeypatch.setattr(MemoryStore, "take", flaky_take)
    async with client:
        delivery = client.track_nowait(IDS, "view")
        with anyio.fail_after(5):
            receipt = await delivery
    assert receipt.status == 200
    assert "batcher error; continuing" in caplog.text


async def test_retry_after_a_retryable_error_keeps_the_invariant_under_close(
    make_client: MakeClient,
) -> None:
    """500 then success, closed right away: the close waits for the retry."""
    calls = 0

    def handler(request: Request) -> Response:
        nonlocal calls
        calls += 1
        return accept_all(request) if calls > 1 else Response(500, b"{}")

    client = make_client(transport=RecordingTransport(handler), retry=NO_WAIT)
    delivery = client.track_nowait(IDS, "view")
    report = await client.aclose(timeout=5)
    assert delivery.delivered()
    assert report.delivered == 1
    assert calls == 2


def test_aclose_after_the_loop_was_closed_returns_the_true_report() -> None:
    """The loop closed without stopping the client: a later aclose() from a new
    loop settles the queued commands "closed" and reports them, no raw error."""
    loop = asyncio.new_event_loop()
    client = unmanaged_client()

    async def use() -> list[Delivery]:
        return [client.track_nowait(IDS, "view") for _ in range(10)]

    deliveries = loop.run_until_complete(use())
    loop.close()
    report = asyncio.run(client.aclose())
    assert report.failed["closed"] == 10
    assert report.undelivered == deliveries
    assert client.state is ClientState.CLOSED
    assert asyncio.run(client.aclose()) is report


async def test_the_first_awaited_command_of_a_new_client_does_not_linger(
    make_client: MakeClient, transport: RecordingTransport
) -> None:
    """track_and_wait as the very first call (the client opens inside it) is
    still sent at once, not after linger."""
    client = make_client(linger=30.0)
    with anyio.fail_after(2):
        receipt = await client.track_and_wait(IDS, "view")
    assert receipt.status == 200
    await client.aclose()


async def test_aclose_while_the_loop_abandons_the_client(
    make_client: MakeClient,
) -> None:
    """The runner cancelled from outside (as a shutting-down loop does) begins
    settling everything; an aclose() meanwhile waits for that and returns its
    report instead of starting a second close."""
    gate = Gate()
    client = make_client(transport=RecordingTransport(gate))
    deliveries = [client.track_nowait(IDS, "view", {"n": n}) for n in range(3)]
    await wait_until(lambda: gate.waiting == 1)  # a worker holds the request
    runner = client._pipeline.runner
    assert runner is not None

    async def abandon_then_close() -> Any:
        runner.cancel()
        await asyncio.sleep(0)  # it is now abandoning the client
        assert client.state is ClientState.CLOSING
        return await client.aclose()

    with pytest.warns(ResourceWarning, match="3 command"):
        report = await abandon_then_close()
    assert client._pipeline.closer is None
    assert report.failed["closed"] == 3
    assert report.undelivered == deliveries
