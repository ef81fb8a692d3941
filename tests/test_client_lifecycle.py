"""Client lifecycle, overflow policies, input errors, shutdown and safety."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import pytest

from trackasync import (
    Client,
    ClientClosed,
    ClientState,
    ClientStateError,
    ConfigError,
    DeliveryFailed,
    InvalidEvent,
    PayloadTooLarge,
    PrivateKey,
    PublicToken,
    QueueFull,
    Response,
)
from trackasync.testing import RecordingTransport

from .conftest import BASE_URL, IDS, PROJECT, Gate
from .test_e2e import wait_until

MakeClient = Callable[..., Client]


async def test_starts_on_first_use_without_async_with(
    make_client: MakeClient, transport: RecordingTransport
) -> None:
    """A client used without ``async with`` starts on its first call."""
    client = make_client()
    receipt = await client.track_and_wait(IDS, "view")
    assert receipt.status == 200
    report = await client.aclose()
    assert report.delivered == 1
    assert report.undelivered == []
    assert transport.closed


async def test_opened_in_one_task_closed_in_another(make_client: MakeClient) -> None:
    """Opening and closing may happen in different tasks (fixtures, lifespans)."""
    client = make_client()
    await asyncio.get_running_loop().create_task(client.__aenter__())
    client.track_nowait(IDS, "view")
    report = await asyncio.get_running_loop().create_task(client.aclose())
    assert report.delivered == 1


def test_a_second_event_loop_is_refused() -> None:
    """A client bound to one loop raises a clear error when used from another."""
    client = Client(
        BASE_URL, PROJECT, auth=PublicToken("t"), transport=RecordingTransport()
    )

    async def use() -> None:
        client.track_nowait(IDS, "view")

    first = asyncio.new_event_loop()
    try:
        first.run_until_complete(use())
        with pytest.raises(ClientStateError, match="another event loop"):
            asyncio.run(use())

        async def close_elsewhere() -> None:
            await client.aclose()

        with pytest.raises(ClientStateError, match="another event loop"):
            asyncio.run(close_elsewhere())
        with pytest.raises(ClientStateError, match="another event loop"):
            asyncio.run(client.flush())
        report = first.run_until_complete(client.aclose())
        assert report.delivered == 1
    finally:
        first.close()


def test_a_loop_that_ends_unclosed_is_loud_and_loses_nothing_silently(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """asyncio.run returning with commands queued warns, settles them "closed",
    and a later aclose() from a new loop returns that true report."""
    client = Client(
        BASE_URL,
        PROJECT,
        auth=PublicToken("t"),
        transport=RecordingTransport(),
        linger=60.0,
    )
    deliveries = []

    async def use() -> None:
        deliveries.extend(client.track_nowait(IDS, "view") for _ in range(10))

    with pytest.warns(ResourceWarning, match="10 command"):
        asyncio.run(use())
    assert "10 command(s) queued or in flight" in caplog.text
    assert all(d.exception().reason == "closed" for d in deliveries)
    report = asyncio.run(client.aclose())
    assert report.failed["closed"] == 10
    assert report.undelivered == deliveries
    assert client.state is ClientState.CLOSED
    with pytest.raises(ClientClosed):
        asyncio.run(use())


def test_calls_outside_an_event_loop_are_refused() -> None:
    """track_nowait from plain sync code says it needs a running loop."""
    client = Client(
        BASE_URL, PROJECT, auth=PublicToken("t"), transport=RecordingTransport()
    )
    with pytest.raises(ClientStateError, match="running event loop"):
        client.track_nowait(IDS, "view")


async def test_closed_client_refuses_commands_and_reopening(
    make_client: MakeClient,
) -> None:
    """After aclose every call raises ClientClosed, and aclose is idempotent."""
    client = make_client()
    async with client:
        pass
    with pytest.raises(ClientClosed):
        client.track_nowait(IDS, "view")
    with pytest.raises(ClientClosed):
        await client.update_customer(IDS, {"a": 1})
    with pytest.raises(ClientClosed):
        await client.__aenter__()
    first = await client.aclose()
    assert await client.aclose() is first


async def test_invalid_input_raises_at_the_call_and_keeps_the_queue(
    make_client: MakeClient, transport: RecordingTransport
) -> None:
    """Bad input raises a typed error at once; what was queued still goes out."""
    async with make_client(linger=60.0) as client:
        queued = client.track_nowait(IDS, "view", {"n": 1})
        with pytest.raises(InvalidEvent, match="customer_ids"):
            client.track_nowait({}, "view")
        with pytest.raises(InvalidEvent, match="registered"):
            client.track_nowait({"registered": "null"}, "view")
        with pytest.raises(InvalidEvent, match="event_type"):
            await client.track(IDS, "")
        with pytest.raises(InvalidEvent, match="'when'"):
            client.track_nowait(IDS, "view", {"when": object()})
        with pytest.raises(InvalidEvent, match="milliseconds"):
            client.track_nowait(IDS, "view", timestamp=1_722_458_972_123)
        with pytest.raises(InvalidEvent, match="update_timestamp"):
            client.update_customer_nowait(IDS, {"a": 1}, update_timestamp=float("nan"))
        with pytest.raises(PayloadTooLarge) as caught:
            client.track_nowait(IDS, "view", {"blob": "x" * 20_000})
        assert caught.value.field == "blob"
        assert client.stats().queued == 1
        await client.flush()
    assert queued.delivered()
    assert len(transport.commands) == 1


async def test_overflow_raise(make_client: MakeClient) -> None:
    """overflow="raise": a full queue raises QueueFull and queues nothing."""
    gate = Gate()
    client = make_client(
        transport=RecordingTransport(gate), max_queue=2, overflow="raise", linger=60.0
    )
    async with client:
        client.track_nowait(IDS, "view")
        client.track_nowait(IDS, "view")
        with pytest.raises(QueueFull):
            client.track_nowait(IDS, "view")
        with pytest.raises(QueueFull):
            await client.track(IDS, "view")
        assert client.stats().enqueued == 2
        gate.open.set()


@pytest.mark.parametrize(("policy", "dropped_n"), [("drop_new", 2), ("drop_old", 0)])
async def test_overflow_drop_policies(
    make_client: MakeClient, policy: str, dropped_n: int
) -> None:
    """drop_new fails the new command, drop_old the oldest; both count the drop."""
    client = make_client(max_queue=2, overflow=policy, linger=60.0)
    async with client:
        deliveries = [client.track_nowait(IDS, "view", {"n": n}) for n in range(3)]
        dropped = deliveries[dropped_n]
        with pytest.raises(DeliveryFailed) as caught:
            await dropped
        assert caught.value.reason == "dropped"
        stats = client.stats()
        assert stats.dropped == 1
        assert stats.enqueued == 3
        assert stats.queued == 2
        await client.flush()
    kept = [d for d in deliveries if d is not dropped]
    assert all(d.delivered() for d in kept)


async def test_overflow_wait(make_client: MakeClient) -> None:
    """overflow="wait": track waits for room; track_nowait raises at once."""
    client = make_client(max_queue=1, overflow="wait", linger=60.0, queue_timeout=5.0)
    async with client:
        client.track_nowait(IDS, "view", {"n": 0})
        with pytest.raises(QueueFull):
            client.track_nowait(IDS, "view", {"n": 1})
        waiting = asyncio.ensure_future(client.track(IDS, "view", {"n": 2}))
        await asyncio.sleep(0)
        assert not waiting.done()
        await client.flush()  # frees the queue
        delivery = await asyncio.wait_for(waiting, 2.0)
        await client.flush()
        assert delivery.delivered()


async def test_overflow_wait_times_out(make_client: MakeClient) -> None:
    """A track that finds no room within queue_timeout raises QueueFull."""
    client = make_client(max_queue=1, overflow="wait", linger=60.0, queue_timeout=0.01)
    async with client:
        client.track_nowait(IDS, "view")
        with pytest.raises(QueueFull):
            await client.track(IDS, "view")
        assert client.stats().enqueued == 1


async def test_cancelled_awaiter_does_not_lose_the_command(
    make_client: MakeClient,
) -> None:
    """Cancelling a task that awaits a Delivery leaves the command to be delivered."""
    gate = Gate()
    client = make_client(transport=RecordingTransport(gate))
    async with client:
        delivery = client.track_nowait(IDS, "view")
        waiter = asyncio.ensure_future(delivery)
        for _ in range(3):  # the waiter starts awaiting
            await asyncio.sleep(0)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        gate.open.set()
        receipt = await delivery
    assert receipt.status == 200


async def test_aclose_against_a_server_that_never_answers(
    make_client: MakeClient,
) -> None:
    """aclose returns by its timeout and hands back every undelivered command."""
    gate = Gate()  # never opened
    client = make_client(
        transport=RecordingTransport(gate), max_in_flight=1, linger=60.0
    )
    deliveries = [client.track_nowait(IDS, "view", {"n": n}) for n in range(60)]
    flushing = asyncio.ensure_future(client.flush())
    await wait_until(lambda: client.stats().in_flight == 50)  # the first batch
    assert client.stats().queued == 10
    loop = asyncio.get_running_loop()
    started = loop.time()
    report = await client.aclose(timeout=0.2)
    assert loop.time() - started < 5.0  # generous: the server never answers
    assert report.delivered == 0
    assert report.failed["closed"] == 60
    assert sorted(d.data()["properties"]["n"] for d in report.undelivered) == list(
        range(60)
    )
    for delivery in deliveries:
        with pytest.raises(DeliveryFailed) as caught:
            await delivery
        assert caught.value.reason == "closed"
    flushed = await flushing
    assert (flushed.delivered, flushed.failed, flushed.pending) == (0, 60, 0)


async def test_aclose_timeout_is_respected(make_client: MakeClient) -> None:
    """aclose(timeout) with a hanging server takes about that long, not more."""
    client = make_client(transport=RecordingTransport(Gate()))
    client.track_nowait(IDS, "view")
    await wait_until(lambda: client.stats().in_flight == 1)
    loop = asyncio.get_running_loop()
    started = loop.time()
    report = await client.aclose(timeout=0.1)
    assert 0.09 <= loop.time() - started < 5.0  # generous: the server never answers
    assert len(report.undelivered) == 1
    stats = client.stats()
    assert stats.in_flight == 0
    assert stats.failed["closed"] == 1


async def test_aclose_delivers_what_is_queued(make_client: MakeClient) -> None:
    """Closing flushes the queue before it stops."""
    client = make_client(linger=60.0)
    async with client:
        deliveries = [client.track_nowait(IDS, "view") for _ in range(5)]
    assert all(d.delivered() for d in deliveries)


async def test_waiting_producers_are_released_on_close(make_client: MakeClient) -> None:
    """A track waiting for room raises ClientClosed when the client closes."""
    client = make_client(
        transport=RecordingTransport(Gate()),
        max_queue=1,
        linger=60.0,
        queue_timeout=None,
    )
    await client.__aenter__()
    client.track_nowait(IDS, "view")
    waiting = asyncio.ensure_future(client.track(IDS, "view"))
    await asyncio.sleep(0)
    await client.aclose(timeout=0.05)
    with pytest.raises(ClientClosed):
        await waiting


async def test_stats_add_up(make_client: MakeClient) -> None:
    """enqueued equals delivered plus failed plus queued plus in flight."""
    client = make_client(max_queue=3, overflow="drop_new", linger=60.0)
    async with client:
        for _ in range(5):
            client.track_nowait(IDS, "view")
        await client.flush()
        stats = client.stats()
    assert stats.enqueued == 5
    assert stats.delivered == 3
    assert stats.dropped == 2
    assert (
        stats.enqueued
        == stats.delivered + sum(stats.failed.values()) + stats.queued + stats.in_flight
    )
    assert stats.requests == 1
    assert stats.bytes_sent > 0


async def test_drops_are_logged_rate_limited(
    make_client: MakeClient, caplog: pytest.LogCaptureFixture
) -> None:
    """Many drops produce a warning with a count, not one line each: the first
    at once, the rest counted since then (here flushed by the close), and the
    close sums up what was not delivered."""
    caplog.set_level(logging.WARNING, logger="trackasync")
    client = make_client(max_queue=1, overflow="drop_new", linger=60.0)
    async with client:
        for _ in range(100):
            client.track_nowait(IDS, "view")
        drops = [
            r
            for r in caplog.records
            if r.getMessage().startswith("trackasync: queue full")
        ]
        assert [r.args[0] for r in drops] == [1]  # type: ignore[index]
    drops = [
        r for r in caplog.records if r.getMessage().startswith("trackasync: queue full")
    ]
    assert [r.args[0] for r in drops] == [1, 98]  # type: ignore[index]
    summary = [
        r for r in caplog.records if r.getMessage().startswith("trackasync: closed:")
    ]
    assert [r.getMessage() for r in summary] == [
        "trackasync: closed: 1 delivered, 99 not delivered (99 dropped); last "
        "errors: dropped: dropped by the overflow policy 'drop_new': the queue was "
        "full (1 commands)"
    ]


async def test_drop_count_is_reported_when_the_interval_ends(
    make_client: MakeClient,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Drops after the first line are logged with their count when the
    interval ends, without waiting for another drop or the close."""
    monkeypatch.setattr("trackasync._ledger.LOG_INTERVAL", 0.05)
    caplog.set_level(logging.WARNING, logger="trackasync")
    client = make_client(max_queue=1, overflow="drop_old", linger=60.0)
    async with client:
        for _ in range(17):
            client.track_nowait(IDS, "view")

        def drops() -> list[logging.LogRecord]:
            return [
                r
                for r in caplog.records
                if r.getMessage().startswith("trackasync: queue full")
            ]

        await wait_until(lambda: len(drops()) >= 2)
        assert [r.args[0] for r in drops()] == [1, 15]  # type: ignore[index]


def test_plain_http_is_refused_except_on_loopback() -> None:
    """http:// to a remote host needs allow_http=True; loopback is fine."""
    auth = PublicToken("t")
    with pytest.raises(ConfigError, match="allow_http"):
        Client("http://api.exponea.com", PROJECT, auth=auth)
    Client("http://127.0.0.1:8080", PROJECT, auth=auth)
    Client("http://localhost:8080", PROJECT, auth=auth)
    Client("http://[::1]:8080", PROJECT, auth=auth)
    Client("http://api.exponea.com", PROJECT, auth=auth, allow_http=True)
    with pytest.raises(ConfigError):
        Client("ftp://api.exponea.com", PROJECT, auth=auth)
    with pytest.raises(ConfigError):
        Client(BASE_URL, "", auth=auth)


@pytest.mark.parametrize(
    "options",
    [
        {"mode": "sometimes"},
        {"overflow": "explode"},
        {"max_queue": 0},
        {"max_in_flight": 0},
        {"linger": -1.0},
        {"rate_limit": 0.0},
        {"timeout": float("nan")},
        {"on_result": 42},
    ],
)
def test_bad_settings_raise_config_error(options: dict[str, object]) -> None:
    """Every setting is checked when the client is built."""
    with pytest.raises(ConfigError):
        Client(BASE_URL, PROJECT, auth=PublicToken("t"), **options)  # type: ignore[arg-type]


async def test_secrets_never_show(
    make_client: MakeClient, caplog: pytest.LogCaptureFixture
) -> None:
    """Neither reprs, nor logs, nor errors carry the secret or the auth header."""
    caplog.set_level(logging.DEBUG, logger="trackasync")
    key = PrivateKey("key-id", "s3cr3t-value")
    header = key.header
    transport = RecordingTransport(lambda request: Response(401, b'{"error": "nope"}'))
    client = Client(BASE_URL, PROJECT, auth=key, transport=transport, linger=0.0)
    async with client:
        with pytest.raises(DeliveryFailed) as caught:
            await client.track_and_wait(IDS, "view")
    texts = [
        repr(client),
        repr(key),
        repr(PublicToken("tok-secret")),
        str(caught.value),
        caplog.text,
    ]
    for text in texts:
        assert "s3cr3t-value" not in text
        assert header.split()[1] not in text
        assert "tok-secret" not in text
