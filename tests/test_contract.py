"""Attribute limits by contract: the 2 KiB value cap and ASCII names."""

from __future__ import annotations

import logging

import pytest

from trackasync import (
    Client,
    ConfigError,
    Limits,
    PayloadTooLarge,
    PrivateKey,
    _contract,
)
from trackasync._env import client_kwargs

BASE = {
    "TRACKASYNC_BASE_URL": "https://api.example.test",
    "TRACKASYNC_PROJECT_TOKEN": "project-1",
    "TRACKASYNC_KEY_ID": "kid",
    "TRACKASYNC_SECRET": "s3cr3t-value",
}
IDS = {"registered": "ann@example.com"}


@pytest.fixture
def fresh_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    """The once-per-process flag, reset for this test only."""
    monkeypatch.setattr(_contract, "_non_ascii", _contract._Once())


def test_max_value_bytes_comes_from_the_environment() -> None:
    """TRACKASYNC_MAX_VALUE_BYTES=2048 gives Limits(max_value_bytes=2048);
    an explicit limits= wins over it."""
    options = client_kwargs(environ={**BASE, "TRACKASYNC_MAX_VALUE_BYTES": "2048"})
    assert options["limits"] == Limits(max_value_bytes=2048)
    mine = Limits(max_value_bytes=100)
    options = client_kwargs(
        {"limits": mine}, environ={**BASE, "TRACKASYNC_MAX_VALUE_BYTES": "2048"}
    )
    assert options["limits"] is mine
    assert "limits" not in client_kwargs(environ=BASE)


@pytest.mark.parametrize("raw", ["2k", "1", "-5"])
def test_a_bad_max_value_bytes_names_the_variable(raw: str) -> None:
    """A wrong value raises ConfigError naming the variable."""
    with pytest.raises(ConfigError, match="TRACKASYNC_MAX_VALUE_BYTES"):
        client_kwargs(environ={**BASE, "TRACKASYNC_MAX_VALUE_BYTES": raw})


async def test_a_2_kib_contract_refuses_a_larger_value_at_the_call(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With the 2 KiB cap from the environment, a 3,000-byte attribute raises
    PayloadTooLarge naming it, for events and customer updates alike."""
    for name, value in {**BASE, "TRACKASYNC_MAX_VALUE_BYTES": "2048"}.items():
        monkeypatch.setenv(name, value)
    async with Client.from_env(send=False) as client:
        client.track_nowait(IDS, "ok", {"note": "x" * 2000})
        with pytest.raises(PayloadTooLarge) as caught:
            client.track_nowait(IDS, "big", {"note": "x" * 3000})
        assert caught.value.field == "note"
        assert caught.value.limit == 2048
        with pytest.raises(PayloadTooLarge):
            client.update_customer_nowait(IDS, {"bio": "y" * 3000})


async def test_a_non_ascii_name_is_logged_once_per_process(
    fresh_warning: None, caplog: pytest.LogCaptureFixture
) -> None:
    """The first non-ASCII property name is logged once at WARNING; more
    events, other names and other clients add nothing."""
    caplog.set_level(logging.WARNING, logger="trackasync")
    auth = PrivateKey("k", "s")
    async with Client("https://api.example.test", "p", auth=auth, send=False) as a:
        a.track_nowait(IDS, "e", {"plain": 1})
        assert not [r for r in caplog.records if "not ASCII" in r.getMessage()]
        for _ in range(3):
            a.track_nowait(IDS, "e", {"größe": 42})
        a.update_customer_nowait(IDS, {"název": "x"})
        async with Client("https://api.example.test", "p", auth=auth, send=False) as b:
            b.track_nowait(IDS, "e", {"prénom": "Ann"})
    lines = [r for r in caplog.records if "not ASCII" in r.getMessage()]
    assert len(lines) == 1
    assert lines[0].levelno == logging.WARNING
    assert "gr\\xf6\\xdfe" in lines[0].getMessage()
