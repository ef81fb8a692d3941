"""default_properties and before_send: events shaped at the call."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from trackasync import (
    Client,
    ConfigError,
    DeliveryFailed,
    Event,
    InvalidEvent,
    Limits,
    PayloadTooLarge,
    SyncClient,
)
from trackasync.testing import FakeTrackingAPI, RecordingTransport, commands_of

from .test_e2e import client_for

IDS = {"registered": "ann@example.com"}
BASE = "https://api.exponea.com"


def _client(**options: Any) -> tuple[Client, RecordingTransport]:
    transport = RecordingTransport()
    options.setdefault("linger", 0.0)
    client = Client(BASE, "t", auth=_auth(), transport=transport, **options)
    return client, transport


def _auth() -> Any:
    from trackasync import PrivateKey

    return PrivateKey("k", "s")


def _sent(transport: RecordingTransport) -> list[dict[str, Any]]:
    return [c["data"] for request in transport.requests for c in commands_of(request)]


def _invariant(client: Client) -> None:
    s = client.stats()
    assert s.enqueued + s.recovered == (
        s.delivered + sum(s.failed.values()) + s.kept + s.queued + s.in_flight
    ), s


async def test_default_properties_are_merged_and_the_calls_own_win(
    fake_tracking_api: FakeTrackingAPI,
) -> None:
    """Every event carries the defaults; a name the call sets keeps its value;
    the caller's dict is left as it was."""
    api = fake_tracking_api
    defaults = {"app_version": "1.2.3", "region": "eu"}
    async with client_for(api, default_properties=defaults) as client:
        mine = {"region": "us", "n": 1}
        await (await client.track(IDS, "a", mine))
        await client.track_nowait(IDS, "b")
        await (await client.consent(IDS, "reject", "sms"))
    assert mine == {"region": "us", "n": 1}
    props = [e.properties for e in api.events]
    assert props[0] == {"app_version": "1.2.3", "region": "us", "n": 1}
    assert props[1] == {"app_version": "1.2.3", "region": "eu"}
    assert props[2]["app_version"] == "1.2.3"
    assert props[2]["action"] == "reject"


async def test_default_properties_count_toward_the_size_checks() -> None:
    """A value too large in the defaults fails the call like one of its own."""
    client, _ = _client(
        default_properties={"blob": "x" * 3000}, limits=Limits(max_value_bytes=2048)
    )
    async with client:
        with pytest.raises(PayloadTooLarge) as caught:
            client.track_nowait(IDS, "a")
        assert caught.value.field == "blob"


@pytest.mark.parametrize("bad", [["not", "a", "mapping"], {1: "x"}, {"when": object()}])
def test_bad_default_properties_fail_at_construction(bad: Any) -> None:
    """Names must be strings and values JSON: ConfigError before anything runs."""
    with pytest.raises(ConfigError):
        Client(BASE, "t", auth=_auth(), default_properties=bad, send=False)


async def test_before_send_redacts_changes_and_drops() -> None:
    """The hook sees ids, type, merged properties and timestamp; what it
    returns is what is sent; None drops the event with reason "filtered"."""
    seen: list[tuple[dict[str, Any], float]] = []

    def hook(event: Event) -> Event | None:
        seen.append((dict(event.properties), event.timestamp))
        if event.event_type == "debug":
            return None
        event.properties.pop("email", None)
        event.customer_ids["cookie"] = "c1"
        return event

    client, transport = _client(before_send=hook, default_properties={"v": 1})
    async with client:
        mine = {"email": "ann@example.com", "page": "/"}
        kept = client.track_nowait(IDS, "view", mine, timestamp=1_700_000_000)
        dropped = client.track_nowait(IDS, "debug", {"x": 1})
        assert dropped.done()
        with pytest.raises(DeliveryFailed) as caught:
            await dropped
        assert caught.value.reason == "filtered"
        await kept
        _invariant(client)
        stats = client.stats()
        assert stats.filtered == 1
        assert stats.enqueued == 1
        assert sum(stats.failed.values()) == 0
    assert mine == {"email": "ann@example.com", "page": "/"}
    assert seen[0] == ({"v": 1, "email": "ann@example.com", "page": "/"}, 1.7e9)
    [data] = _sent(transport)
    assert data["properties"] == {"v": 1, "page": "/"}
    assert data["customer_ids"] == {**IDS, "cookie": "c1"}
    assert IDS == {"registered": "ann@example.com"}


async def test_an_exception_in_before_send_raises_at_the_call() -> None:
    """InvalidEvent chained to the hook's error, nothing queued, nothing lost
    in the background; the message does not quote the hook's text."""

    def hook(event: Event) -> Event | None:
        raise KeyError("secret-value")

    client, _ = _client(before_send=hook)
    async with client:
        with pytest.raises(InvalidEvent) as caught:
            client.track_nowait(IDS, "a")
        assert isinstance(caught.value.__cause__, KeyError)
        assert "secret-value" not in str(caught.value)
        with pytest.raises(InvalidEvent):
            await client.track(IDS, "a")
        assert client.stats().enqueued == 0


async def test_before_send_must_return_an_event_or_none() -> None:
    """A hook returning a dict is a mistake reported at the call."""
    client, _ = _client(before_send=lambda event: {"event_type": "x"})  # type: ignore[arg-type,return-value]
    async with client:
        with pytest.raises(InvalidEvent, match="before_send must return"):
            client.track_nowait(IDS, "a")


async def test_the_shaped_event_is_validated_again() -> None:
    """A hook that empties the ids or breaks a consent raises InvalidEvent."""

    def hook(event: Event) -> Event | None:
        event.properties.pop("valid_until", None)
        return event

    client, _ = _client(before_send=hook)
    async with client:
        with pytest.raises(InvalidEvent) as caught:
            client.consent_nowait(IDS, "accept", "email", valid_until="unlimited")
        assert caught.value.field == "valid_until"
        # A reject needs no valid_until: it goes through.
        client.consent_nowait(IDS, "reject", "email")


def test_sync_client_filters_and_counts() -> None:
    """SyncClient: the hook runs in the caller's thread; a dropped event's
    handle fails "filtered" at once and the invariant holds."""
    import threading

    threads: list[str] = []

    def hook(event: Event) -> Event | None:
        threads.append(threading.current_thread().name)
        return None if event.event_type == "drop" else event

    with FakeTrackingAPI() as api:
        with SyncClient(
            api.base_url,
            api.project_token,
            auth=api.auth,
            linger=0.0,
            before_send=hook,
        ) as client:
            handle = client.track(IDS, "drop")
            with pytest.raises(DeliveryFailed):
                handle.result(timeout=1)
            client.track_and_wait(IDS, "keep", timeout=10)
            stats = client.stats()
        assert stats.filtered == 1
        assert stats.delivered == 1
        assert stats.enqueued == 1
        assert stats.enqueued + stats.recovered == (
            stats.delivered
            + sum(stats.failed.values())
            + stats.kept
            + stats.queued
            + stats.in_flight
        )
        assert [e.event_type for e in api.events] == ["keep"]
    assert set(threads) == {threading.current_thread().name}


async def test_unset_options_leave_no_shaper() -> None:
    """Without either option the client keeps the direct path (and empty
    default_properties count as unset)."""
    client, _ = _client(default_properties={})
    assert client._shaper is None
    await client.aclose()


async def test_before_send_runs_in_the_callers_context() -> None:
    """A context variable the caller set is what the hook reads (a request id
    set by a web framework, say), and a timestamp it sets is converted."""
    import contextvars
    from datetime import datetime, timezone

    request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id")

    def hook(event: Event) -> Event | None:
        event.properties["request_id"] = request_id.get("none")
        event.timestamp = datetime(2026, 1, 1, tzinfo=timezone.utc)  # type: ignore[assignment]
        return event

    client, transport = _client(before_send=hook)
    async with client:

        async def handler(rid: str) -> None:
            request_id.set(rid)
            await client.track_nowait(IDS, "view")

        await asyncio.gather(handler("r1"), handler("r2"))
    sent = _sent(transport)
    assert sorted(d["properties"]["request_id"] for d in sent) == ["r1", "r2"]
    assert {d["timestamp"] for d in sent} == {1767225600.0}
