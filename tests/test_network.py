"""Network options and the scrubber, without sockets: proxy URLs, the
environment's proxy settings, TLS options, credentials derived from headers."""

from __future__ import annotations

import base64
import ssl
from pathlib import Path

import pytest

from trackasync import Client, ConfigError, PrivateKey
from trackasync._env import client_kwargs
from trackasync._network import Network, env_proxy, parse_proxy
from trackasync._scrub import Scrubber, credentials_in, printable


def test_proxy_credentials_are_split_from_the_url() -> None:
    """user:password@ becomes a header apart; the URL keeps host and port."""
    proxy = parse_proxy("http://us%40er:p%3Ass@proxy.example:3128")
    assert proxy.url == "http://proxy.example:3128"
    assert (proxy.login, proxy.password) == ("us@er", "p:ss")
    assert proxy.header == "Basic " + base64.b64encode(b"us@er:p:ss").decode()
    assert "p:ss" not in repr(proxy)
    assert set(proxy.secrets) >= {"p:ss", "us@er:p:ss"}


@pytest.mark.parametrize(
    "value",
    [
        "socks5://u:hunter2-x@proxy:1080",
        "http://u:hunter2-x@proxy:99999",
        "http://u:hunter2-x@proxy:3128/path",
        "hunter2-x",
        "",
    ],
)
def test_bad_proxy_url_is_refused_without_quoting_it(value: str) -> None:
    """A malformed proxy URL: ConfigError at construction, naming no part of it."""
    with pytest.raises(ConfigError) as info:
        Client("https://api.example.test", "p", auth=PrivateKey("k", "s"), proxy=value)
    assert "hunter2-x" not in str(info.value)


def test_tls_option_is_checked(tmp_path: Path) -> None:
    """tls=: a context as is, a missing or unreadable file refused."""
    context = ssl.create_default_context()
    assert Network.of(tls=context).ssl_context is context
    with pytest.raises(ConfigError, match="no CA bundle file"):
        Network.of(tls=str(tmp_path / "missing.pem"))
    bad = tmp_path / "bad.pem"
    bad.write_text("not a certificate")
    with pytest.raises(ConfigError, match="not a PEM file"):
        Network.of(tls=bad)
    with pytest.raises(ConfigError, match="tls must be"):
        Network.of(tls=42)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="trust_env"):
        Network.of(trust_env="yes")  # type: ignore[arg-type]


def test_environment_proxy_rules(monkeypatch: pytest.MonkeyPatch) -> None:
    """HTTPS_PROXY for https, HTTP_PROXY for http, NO_PROXY exempts, loopback
    never goes to an environment proxy, and an explicit proxy wins."""
    for name in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTPS_PROXY", "http://secure-proxy:3128")
    monkeypatch.setenv("HTTP_PROXY", "http://plain-proxy:3128")
    https = env_proxy("https://api.exponea.com/track")
    assert https is not None
    assert https.url == "http://secure-proxy:3128"
    plain = env_proxy("http://api.exponea.com/track")
    assert plain is not None
    assert plain.url == "http://plain-proxy:3128"
    assert env_proxy("https://127.0.0.1:8443/x") is None
    assert env_proxy("https://localhost/x") is None
    monkeypatch.setenv("NO_PROXY", ".exponea.com")
    assert env_proxy("https://api.exponea.com/track") is None
    network = Network.of(proxy="http://mine:8080")
    chosen = network.proxy_for("https://api.exponea.com")
    assert chosen is not None
    assert chosen.url == "http://mine:8080"
    assert Network.of(trust_env=False).proxy_for("https://other.example") is None


def test_malformed_environment_proxy_is_ignored(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A broken HTTPS_PROXY belongs to the whole process: ignored, not fatal."""
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.setenv("HTTPS_PROXY", "socks5://proxy:1080")
    assert env_proxy("https://api.exponea.com") is None


def test_environment_variables_for_network_options(tmp_path: Path) -> None:
    """TRACKASYNC_PROXY, TRACKASYNC_TRUST_ENV and TRACKASYNC_TLS reach the client."""
    environ = {
        "TRACKASYNC_BASE_URL": "https://api.example.test",
        "TRACKASYNC_PROJECT_TOKEN": "p",
        "TRACKASYNC_PUBLIC_TOKEN": "token-1",
        "TRACKASYNC_PROXY": "http://u:pw-1234567@proxy:3128",
        "TRACKASYNC_TRUST_ENV": "false",
        "TRACKASYNC_TLS": str(tmp_path / "ca.pem"),
    }
    options = client_kwargs(environ=environ)
    assert options["proxy"] == "http://u:pw-1234567@proxy:3128"
    assert options["trust_env"] is False
    assert options["tls"] == str(tmp_path / "ca.pem")


def test_credentials_derived_from_headers() -> None:
    """Basic yields its base64, the pair and the secret; Token its token."""
    token = base64.b64encode(b"key-1:s3cret-value").decode()
    assert credentials_in(f"Basic {token}") == [
        token,
        "key-1:s3cret-value",
        "s3cret-value",
    ]
    assert credentials_in("Token abcdefgh123") == ["abcdefgh123"]
    scrub = Scrubber.for_headers({"authorization": f"Basic {token}"})
    text = f"echo: Basic {token} / key-1:s3cret-value / s3cret-value"
    assert scrub.text(text) == "echo: Basic *** / *** / ***"
    assert scrub.data(text.encode()) == b"echo: Basic *** / *** / ***"


def test_short_strings_are_not_scrubbed() -> None:
    """A credential shorter than 8 characters is not one the API issues; masking
    it would garble ordinary words."""
    assert Scrubber(["secret"]).text("invalid secret") == "invalid secret"


def test_printable_escapes_controls_and_is_idempotent() -> None:
    """CR, LF, ESC, C1 controls and line separators are shown escaped, once."""
    text = "a\r\nb\x1b[31mc\x9bd\u2028e\tf"
    once = printable(text)
    assert once == "a\\r\\nb\\x1b[31mc\\x9bd\\u2028e\\tf"
    assert printable(once) == once
    assert printable("plain, ünïcode") == "plain, ünïcode"
