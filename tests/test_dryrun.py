"""Dry-run mode: validated, encoded and counted like a real send, and never sent."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import msgspec
import pytest

from trackasync import (
    AiohttpTransport,
    Client,
    ConfigError,
    InvalidEvent,
    PrivateKey,
    Request,
)
from trackasync._dryrun import (
    DRY_RUN_NOTICE,
    SEND_ENV,
    DryRunTransport,
    default_transport,
    resolve_send,
)
from trackasync.testing import RecordingTransport

# Nothing may be sent: a real send to this host could not even resolve it.
BASE_URL = "https://api.invalid"
IDS = {"registered": "ann@example.com"}


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any use of the aiohttp transport fails the test loudly."""

    async def refuse(self: AiohttpTransport, request: Request) -> Any:
        raise AssertionError(f"dry run sent a request to {request.url}")

    monkeypatch.setattr(AiohttpTransport, "send", refuse)
    monkeypatch.delenv(SEND_ENV, raising=False)


@pytest.fixture
async def make_client() -> AsyncIterator[Callable[..., Client]]:
    made: list[Client] = []

    def make(**options: Any) -> Client:
        options.setdefault("linger", 0.0)
        client = Client(BASE_URL, "project", auth=PrivateKey("k", "s"), **options)
        made.append(client)
        return client

    yield make
    for client in made:
        await client.aclose(timeout=1.0)


async def test_send_false_delivers_without_sending(
    make_client: Callable[..., Client],
) -> None:
    client = make_client(send=False)
    event = await client.track(IDS, "purchase", {"total": 9.99})
    receipt = await event
    assert receipt.status == 200
    assert receipt.attempts == 1
    assert receipt.request_id is not None
    assert receipt.request_id.startswith("dry-run-")
    update = await client.update_customer(IDS, {"tier": "gold"})
    assert (await update).request_id != receipt.request_id
    report = await client.aclose()
    stats = client.stats()
    assert stats.enqueued == stats.delivered == report.delivered == 2
    assert sum(stats.failed.values()) == 0
    # Each went alone on its own route: the bytes it would have sent are its body.
    assert stats.requests == 2
    assert stats.bytes_sent == len(update.body) + len(event.body)


async def test_batches_are_answered_per_command(
    make_client: Callable[..., Client],
) -> None:
    """120 commands: cut into batches, each command settled by its own result."""
    client = make_client(send=False, linger=10.0)
    deliveries = [client.track_nowait(IDS, "view", {"n": n}) for n in range(120)]
    result = await client.flush()
    assert (result.delivered, result.failed, result.pending) == (120, 0, 0)
    assert all(delivery.delivered() for delivery in deliveries)
    assert client.stats().requests == 3  # 50 + 50 + 20


async def test_validation_still_runs_at_the_call(
    make_client: Callable[..., Client],
) -> None:
    client = make_client(send=False)
    with pytest.raises(InvalidEvent):
        client.track_nowait({}, "purchase")
    with pytest.raises(InvalidEvent):
        client.track_nowait(IDS, "purchase", {"when": float("nan")}, timestamp=-1)
    assert client.stats().enqueued == 0


async def test_system_time_answers_locally(make_client: Callable[..., Client]) -> None:
    client = make_client(send=False)
    assert await client.system_time() > 1_700_000_000


async def test_repr_and_one_log_line_show_the_mode(
    make_client: Callable[..., Client], caplog: pytest.LogCaptureFixture
) -> None:
    client = make_client(send=False)
    assert "send=False" in repr(client)
    assert "send=False" not in repr(make_client())
    with caplog.at_level(logging.WARNING, logger="trackasync"):
        for _ in range(3):
            await client.track_and_wait(IDS, "purchase")
    notices = [
        r for r in caplog.records if r.getMessage() == "trackasync: " + DRY_RUN_NOTICE
    ]
    assert len(notices) == 1
    assert notices[0].levelno == logging.WARNING


@pytest.mark.parametrize("value", ["0", "false", "No", " off "])
async def test_the_environment_turns_sending_off(
    value: str,
    monkeypatch: pytest.MonkeyPatch,
    make_client: Callable[..., Client],
) -> None:
    monkeypatch.setenv(SEND_ENV, value)
    client = make_client()
    assert "send=False" in repr(client)
    receipt = await client.track_and_wait(IDS, "purchase")
    assert receipt.request_id is not None
    assert receipt.request_id.startswith("dry-run-")


async def test_an_explicit_option_wins_over_the_environment(
    monkeypatch: pytest.MonkeyPatch, make_client: Callable[..., Client]
) -> None:
    monkeypatch.setenv(SEND_ENV, "0")
    assert "send=False" not in repr(make_client(send=True))
    monkeypatch.setenv(SEND_ENV, "1")
    assert "send=False" in repr(make_client(send=False))


async def test_a_given_transport_is_kept_under_the_environment(
    monkeypatch: pytest.MonkeyPatch, make_client: Callable[..., Client]
) -> None:
    """Tests that record requests keep working when the env var is set."""
    monkeypatch.setenv(SEND_ENV, "0")
    transport = RecordingTransport()
    client = make_client(transport=transport)
    await client.track_and_wait(IDS, "purchase")
    assert len(transport.requests) == 1


def test_send_false_with_a_transport_is_refused() -> None:
    with pytest.raises(ConfigError, match="either send=False or a transport"):
        Client(
            BASE_URL,
            "p",
            auth=PrivateKey("k", "s"),
            send=False,
            transport=RecordingTransport(),
        )


@pytest.mark.parametrize("value", ["2", "maybe", "dry"])
def test_a_garbled_environment_value_is_refused(
    value: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(SEND_ENV, value)
    with pytest.raises(ConfigError, match=SEND_ENV):
        Client(BASE_URL, "p", auth=PrivateKey("k", "s"))


@pytest.mark.parametrize("send", ["no", 0, 1])
def test_send_must_be_a_bool(send: object) -> None:
    with pytest.raises(ConfigError, match="send must be"):
        resolve_send(send, None, {})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("environ", "expected"),
    [({}, True), ({SEND_ENV: ""}, True), ({SEND_ENV: "yes"}, True)],
)
def test_resolve_send_defaults_to_sending(
    environ: dict[str, str], expected: bool
) -> None:
    assert resolve_send(None, None, environ) is expected


async def test_transport_echoes_command_ids_and_marks_answers() -> None:
    transport = DryRunTransport()
    body = msgspec.json.encode(
        {
            "commands": [
                {"name": "customers", "command_id": "a", "data": {"x": [1, {}]}},
                {"name": "customers/events", "data": {}},
            ]
        }
    )
    first = await transport.send(Request("POST", f"{BASE_URL}/batch", {}, body))
    assert first.status == 200
    assert msgspec.json.decode(first.body) == {
        "results": [{"success": True, "command_id": "a"}, {"success": True}],
        "success": True,
    }
    second = await transport.send(
        Request("POST", f"{BASE_URL}/customers/events", {}, b"{}")
    )
    assert msgspec.json.decode(second.body) == {"success": True}
    assert first.header("x-request-id") == "dry-run-000001"
    assert second.header("x-request-id") == "dry-run-000002"
    await transport.aclose()
    assert transport.closed


async def test_default_transport_follows_send() -> None:
    """What the client builds for itself, and must rebuild the same way."""
    dry = default_transport(False, 1.0, 1.0)
    assert isinstance(dry, DryRunTransport)
    real = default_transport(True, 1.0, 1.0)
    assert isinstance(real, AiohttpTransport)
    await real.aclose()
