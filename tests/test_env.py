"""Configuration from TRACKASYNC_* environment variables."""

from __future__ import annotations

from typing import Any

import pytest

from trackasync import Client, ConfigError, PrivateKey, PublicToken, SyncClient
from trackasync._env import client_kwargs

BASE = {
    "TRACKASYNC_BASE_URL": "https://api.example.test",
    "TRACKASYNC_PROJECT_TOKEN": "project-1",
}
KEY = {"TRACKASYNC_KEY_ID": "kid", "TRACKASYNC_SECRET": "s3cr3t-value"}


def test_private_key_and_address() -> None:
    options = client_kwargs(environ={**BASE, **KEY})
    assert options == {
        "base_url": "https://api.example.test",
        "project_token": "project-1",
        "auth": PrivateKey("kid", "s3cr3t-value"),
    }


def test_public_token() -> None:
    options = client_kwargs(environ={**BASE, "TRACKASYNC_PUBLIC_TOKEN": "pub"})
    assert options["auth"] == PublicToken("pub")


def test_tuning_options_are_parsed() -> None:
    env = {
        **BASE,
        **KEY,
        "TRACKASYNC_MAX_QUEUE": "500",
        "TRACKASYNC_OVERFLOW": "drop_old",
        "TRACKASYNC_QUEUE_TIMEOUT": "none",
        "TRACKASYNC_LINGER": "0.25",
        "TRACKASYNC_RATE_LIMIT": "off",
        "TRACKASYNC_ALLOW_HTTP": "yes",
        "TRACKASYNC_SHUTDOWN_TIMEOUT": "3",
    }
    options = client_kwargs(environ=env)
    assert options["max_queue"] == 500
    assert options["overflow"] == "drop_old"
    assert options["queue_timeout"] is None
    assert options["linger"] == 0.25
    assert options["rate_limit"] is None
    assert options["allow_http"] is True
    assert options["shutdown_timeout"] == 3.0


def test_explicit_arguments_win() -> None:
    options = client_kwargs(
        {"linger": 1.0, "auth": PublicToken("x"), "base_url": "https://other.test"},
        environ={**BASE, "TRACKASYNC_LINGER": "5"},
    )
    assert options["linger"] == 1.0
    assert options["base_url"] == "https://other.test"
    assert options["auth"] == PublicToken("x")


@pytest.mark.parametrize(
    ("env", "named"),
    [
        (KEY, "TRACKASYNC_BASE_URL"),
        ({**KEY, "TRACKASYNC_BASE_URL": "https://a.test"}, "TRACKASYNC_PROJECT_TOKEN"),
        (BASE, "TRACKASYNC_KEY_ID"),
        ({**BASE, "TRACKASYNC_KEY_ID": "kid"}, "TRACKASYNC_SECRET"),
        ({**BASE, "TRACKASYNC_SECRET": "s3cr3t-value"}, "TRACKASYNC_KEY_ID"),
        (
            {**BASE, **KEY, "TRACKASYNC_PUBLIC_TOKEN": "pub-t0ken"},
            "TRACKASYNC_PUBLIC_TOKEN",
        ),
        ({**BASE, **KEY, "TRACKASYNC_LINGER": "soon"}, "TRACKASYNC_LINGER"),
        ({**BASE, **KEY, "TRACKASYNC_MAX_QUEUE": "1.5"}, "TRACKASYNC_MAX_QUEUE"),
        ({**BASE, **KEY, "TRACKASYNC_ALLOW_HTTP": "maybe"}, "TRACKASYNC_ALLOW_HTTP"),
        ({**BASE, **KEY, "TRACKASYNC_TIMEOUT": "nan"}, "TRACKASYNC_TIMEOUT"),
    ],
)
def test_missing_or_contradictory_settings_name_the_variable(
    env: dict[str, str], named: str
) -> None:
    with pytest.raises(ConfigError, match=named) as info:
        client_kwargs(environ=env)
    assert "s3cr3t-value" not in str(info.value)
    assert "pub-t0ken" not in str(info.value)


def test_empty_variables_count_as_unset() -> None:
    with pytest.raises(ConfigError, match="TRACKASYNC_BASE_URL"):
        client_kwargs(environ={**KEY, **BASE, "TRACKASYNC_BASE_URL": ""})


@pytest.mark.parametrize("cls", [Client, SyncClient])
def test_from_env_builds_a_client(monkeypatch: pytest.MonkeyPatch, cls: Any) -> None:
    for name, value in {**BASE, **KEY, "TRACKASYNC_MAX_QUEUE": "7"}.items():
        monkeypatch.setenv(name, value)
    client = cls.from_env(linger=0.0)
    assert "project-1" in repr(client)
    assert "s3cr3t-value" not in repr(client)
    assert client.stats().enqueued == 0
    if isinstance(client, SyncClient):
        client.close()
    monkeypatch.setenv("TRACKASYNC_OVERFLOW", "sometimes")
    with pytest.raises(ConfigError, match="overflow"):
        cls.from_env()
