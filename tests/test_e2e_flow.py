"""End to end flow control: the rate limit, every overflow policy, and closing.

The real client and aiohttp transport run against FakeTrackingAPI on 127.0.0.1.
The overflow tests keep one slow request in flight (``max_in_flight=1``), so the
queue cannot drain while they fill it, and then check exactly which commands
the server stored and what ``stats()`` says.
"""

from __future__ import annotations

import time

import pytest

from trackasync import Client, Delivery, QueueFull, Retry
from trackasync.testing import FakeTrackingAPI

from .test_e2e import (
    IDS,
    client_for,
    failure_of,
    stats_add_up,
    stored_numbers,
    wait_until,
)

MAX_QUEUE = 5


async def test_client_rate_limit_keeps_under_the_server_limit() -> None:
    """30 single requests at rate_limit=20 take over a second and never meet a 429."""
    # The server admits 26 requests in any one-second window: a client that
    # ignored its own limit would send all 30 at once and get 429s.
    async with FakeTrackingAPI(rate_limit=26.0, rate_window=1.0) as api:
        client = client_for(api, mode="single", rate_limit=20.0)
        started = time.monotonic()
        async with client:
            deliveries = [client.track_nowait(IDS, "view", {"n": n}) for n in range(30)]
            await client.flush()
        elapsed = time.monotonic() - started
    assert all(d.delivered() for d in deliveries)
    # A burst of 5, then one request every 1/20 s: the 30th leaves at 1.25 s.
    assert 1.2 <= elapsed < 10.0  # the pace is the point; a loaded machine is slower
    assert [r.status for r in api.requests] == [200] * 30
    assert not [r for r in api.requests if r.fault == "rate_limited"]
    assert sorted(stored_numbers(api)) == list(range(30))
    stats = stats_add_up(client)
    assert (stats.requests, stats.rate_limited, stats.retries) == (30, 0, 0)


async def busy_client(
    api: FakeTrackingAPI, **options: object
) -> tuple[Client, Delivery]:
    """A client with room for 5 queued commands whose one request slot is busy."""
    client = client_for(api, max_queue=MAX_QUEUE, max_in_flight=1, **options)
    first = client.track_nowait(IDS, "view", {"n": 0})
    await wait_until(lambda: client.stats().in_flight == 1)
    return client, first


@pytest.mark.parametrize(
    ("overflow", "refused", "dropped", "stored"),
    [
        ("raise", [6, 7, 8], [], [0, 1, 2, 3, 4, 5]),
        ("drop_new", [], [6, 7, 8], [0, 1, 2, 3, 4, 5]),
        ("drop_old", [], [1, 2, 3], [0, 4, 5, 6, 7, 8]),
    ],
)
async def test_overflow_policy_decides_which_commands_are_kept(
    overflow: str, refused: list[int], dropped: list[int], stored: list[int]
) -> None:
    """A full queue refuses or drops exactly the commands its policy names."""
    async with FakeTrackingAPI(response_delay=0.05) as api:
        client, first = await busy_client(api, overflow=overflow)
        deliveries: dict[int, Delivery] = {0: first}
        raised: list[int] = []
        for n in range(1, 9):
            try:
                deliveries[n] = client.track_nowait(IDS, "view", {"n": n})
            except QueueFull:
                raised.append(n)
        assert raised == refused
        assert [n for n, d in deliveries.items() if d.done()] == dropped
        during = stats_add_up(client)
        assert (during.queued, during.in_flight) == (MAX_QUEUE, 1)
        assert during.enqueued == len(deliveries)
        await client.flush()
        await client.aclose()
        assert stored_numbers(api) == stored
    for n, delivery in deliveries.items():
        if n in dropped:
            failure = await failure_of(delivery)
            assert failure.reason == "dropped"
            assert failure.attempts == 0
        else:
            assert (await delivery).attempts == 1
    stats = stats_add_up(client)
    assert stats.enqueued == len(stored) + len(dropped)
    assert stats.delivered == len(stored)
    assert stats.dropped == len(dropped)
    assert (stats.queued, stats.in_flight) == (0, 0)


async def test_overflow_wait_holds_the_caller_until_there_is_room() -> None:
    """Under "wait" a caller blocks until the slow request ends, then all is stored."""
    async with FakeTrackingAPI(response_delay=0.05) as api:
        client, first = await busy_client(api, overflow="wait", queue_timeout=None)
        deliveries = [first]
        for n in range(1, 9):
            deliveries.append(await client.track(IDS, "view", {"n": n}))
            assert client.stats().queued <= MAX_QUEUE
            if n == MAX_QUEUE + 1:
                # Room only appeared once the in-flight request came back.
                assert first.delivered()
        # The nowait form never blocks: 9 and 10 fill the queue, 11 is refused.
        deliveries += [client.track_nowait(IDS, "view", {"n": n}) for n in (9, 10)]
        with pytest.raises(QueueFull):
            client.track_nowait(IDS, "view", {"n": 11})
        await client.flush()
        await client.aclose()
        held = stored_numbers(api)
    # 1-5 left together once the slot was free; 6-8 then 9-10 filled the queue.
    assert held == list(range(11))
    assert all(d.delivered() for d in deliveries)
    stats = stats_add_up(client)
    assert stats.enqueued == stats.delivered == len(held)
    assert sum(stats.failed.values()) == 0


async def test_overflow_wait_gives_up_after_queue_timeout() -> None:
    """Under "wait" a caller that finds no room within queue_timeout gets QueueFull."""
    async with FakeTrackingAPI(response_delay=0.25) as api:
        client, first = await busy_client(api, overflow="wait", queue_timeout=0.05)
        deliveries = [first]
        deliveries += [await client.track(IDS, "view", {"n": n}) for n in range(1, 6)]
        started = time.monotonic()
        with pytest.raises(QueueFull):
            await client.track(IDS, "view", {"n": 6})
        waited = time.monotonic() - started
        assert not first.done()
        assert stats_add_up(client).enqueued == MAX_QUEUE + 1
        await client.flush()
        await client.aclose()
        assert stored_numbers(api) == [0, 1, 2, 3, 4, 5]
    # Room comes back after 0.25 s: QueueFull at all shows the wait was not longer.
    assert waited >= 0.04
    assert all(d.delivered() for d in deliveries)
    stats = stats_add_up(client)
    assert (stats.enqueued, stats.delivered, sum(stats.failed.values())) == (6, 6, 0)


# -- closing ------------------------------------------------------------------------------


async def test_aclose_on_a_hung_server_returns_in_time_and_reports_closed() -> None:
    """aclose(timeout=0.3) on a server that never answers returns in about 0.3 s."""
    async with FakeTrackingAPI(response_delay=30.0) as api:
        client = client_for(api, mode="single", max_in_flight=2)
        deliveries = [client.track_nowait(IDS, "view", {"n": n}) for n in range(4)]
        await wait_until(lambda: client.stats().in_flight == 2)
        started = time.monotonic()
        report = await client.aclose(timeout=0.3)
        elapsed = time.monotonic() - started
        assert api.event_count == 0
    assert 0.25 <= elapsed < 5.0  # the server would hang for 30 s
    assert {id(d) for d in report.undelivered} == {id(d) for d in deliveries}
    assert len(report.undelivered) == 4
    for delivery in deliveries:
        assert (await failure_of(delivery)).reason == "closed"
    assert report.delivered == 0
    assert report.failed["closed"] == 4
    stats = stats_add_up(client)
    assert (stats.queued, stats.in_flight) == (0, 0)


async def test_aclose_gives_back_a_command_stuck_behind_a_delayed_request() -> None:
    """A delayed request and the command queued behind it both come back as closed."""
    async with FakeTrackingAPI() as api:
        client = client_for(api, max_in_flight=1)
        done = await client.track_and_wait(IDS, "view", {"n": 0})
        api.delay_next(1, 30.0)
        stuck = client.track_nowait(IDS, "view", {"n": 1})
        await wait_until(lambda: client.stats().in_flight == 1)
        behind = client.track_nowait(IDS, "view", {"n": 2})
        started = time.monotonic()
        report = await client.aclose(timeout=0.3)
        elapsed = time.monotonic() - started
        assert stored_numbers(api) == [0]
    assert done.attempts == 1
    assert 0.25 <= elapsed < 5.0  # the delayed request would take 30 s
    assert [id(d) for d in report.undelivered] in (
        [id(stuck), id(behind)],
        [id(behind), id(stuck)],
    )
    assert (await failure_of(stuck)).reason == "closed"
    assert (await failure_of(behind)).reason == "closed"
    assert report.delivered == 1
    assert dict(report.failed) == {
        "rejected": 0,
        "gave_up": 0,
        "dropped": 0,
        "closed": 2,
    }
    stats_add_up(client)


async def test_aclose_during_a_retry_wait_gives_the_command_back() -> None:
    """A command waiting to be retried when the client closes comes back as closed."""
    # The wait is the server's Retry-After, not a jittered backoff: a random
    # wait could end before the close and send the retry.
    patient = Retry(attempts=10, timeout=60.0, max_retry_after=30.0)
    async with FakeTrackingAPI() as api:
        api.fail_next(10, status=503, retry_after=30)
        client = client_for(api, retry=patient)
        delivery = client.track_nowait(IDS, "view", {"n": 1})
        await wait_until(lambda: len(api.requests) == 1)
        started = time.monotonic()
        report = await client.aclose(timeout=0.2)
        elapsed = time.monotonic() - started
    # The budget, then at most the documented grace steps (and a loaded machine).
    assert 0.15 <= elapsed < 10.0  # the retry would wait 30 s
    assert report.undelivered == [delivery]
    failure = await failure_of(delivery)
    assert failure.reason == "closed"
    assert failure.attempts == 1
    assert [r.status for r in api.requests] == [503]
    stats_add_up(client)


async def test_flush_with_a_timeout_counts_what_is_still_pending() -> None:
    """flush(timeout=) on a hung server returns in time, with the commands pending."""
    async with FakeTrackingAPI(response_delay=30.0) as api:
        client = client_for(api, linger=60.0)
        for n in range(3):
            client.track_nowait(IDS, "view", {"n": n})
        started = time.monotonic()
        result = await client.flush(timeout=0.1)
        elapsed = time.monotonic() - started
        assert (result.delivered, result.failed, result.pending) == (0, 0, 3)
        stats = stats_add_up(client)
        assert (stats.queued, stats.in_flight) == (0, 3)
        report = await client.aclose(timeout=0.1)
    assert 0.09 <= elapsed < 5.0  # the server would hang for 30 s
    assert len(report.undelivered) == 3


async def test_a_cancelled_aclose_still_delivers_through_aiohttp() -> None:
    """wait_for(aclose(5), 0.2) with 150 queued and 50 in flight on a slow server:
    the close goes on with real sockets, a later aclose() reports all 200
    delivered, and nothing is sent after it returns."""
    import asyncio

    async with FakeTrackingAPI(response_delay=0.3) as api:
        client = client_for(api, linger=60.0, max_in_flight=1)
        deliveries = [client.track_nowait(IDS, "view", {"n": n}) for n in range(200)]
        await client.flush(timeout=0.05)  # the first request leaves now
        assert (client.stats().queued, client.stats().in_flight) == (150, 50)
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(client.aclose(5), 0.2)
        report = await client.aclose()
        stored = len(api.events)
        await asyncio.sleep(0.4)
        assert len(api.events) == stored == 200
    assert report.delivered == 200
    assert all(d.delivered() for d in deliveries)
    stats_add_up(client)
