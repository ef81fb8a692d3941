"""End to end through a real proxy on loopback and the fake API served over TLS
with a test CA: proxy=, trust_env=, tls= on Client, SyncClient and from_env."""

from __future__ import annotations

import logging
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trustme
from aiohttp import web

from trackasync import Client, DeliveryFailed, Retry, SyncClient, TransportError
from trackasync.testing import FakeTrackingAPI

from .proxy_server import ProxyServer

IDS = {"registered": "ann@example.com"}
ONCE = Retry(attempts=1)
PROXY_LOGIN = "proxy-user"
PROXY_PASSWORD = "proxy-pass-5ecret"


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def ca_file(ca: trustme.CA, tmp_path: Path) -> str:
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


@asynccontextmanager
async def tls_fake(
    ca: trustme.CA, *names: str
) -> AsyncIterator[tuple[FakeTrackingAPI, int]]:
    """The fake API's app served over TLS, with a certificate for ``names``."""
    api = FakeTrackingAPI()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(*names).configure_cert(context)
    runner = web.AppRunner(api.app, access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    try:
        yield api, int(runner.addresses[0][1])
    finally:
        await runner.cleanup()


def client_for(api: FakeTrackingAPI, base_url: str, **options: object) -> Client:
    options.setdefault("linger", 0.0)
    options.setdefault("rate_limit", None)
    options.setdefault("retry", ONCE)
    return Client(base_url, api.project_token, auth=api.auth, **options)  # type: ignore[arg-type]


async def test_tls_with_a_ca_bundle_path_delivers(ca: trustme.CA, ca_file: str) -> None:
    """tls= a CA bundle path: the fake's certificate from a private CA is trusted."""
    async with tls_fake(ca, "127.0.0.1") as (api, port):
        async with client_for(api, f"https://127.0.0.1:{port}", tls=ca_file) as client:
            await client.track_and_wait(IDS, "view")
        assert api.event_count == 1


async def test_tls_with_an_ssl_context_delivers(ca: trustme.CA) -> None:
    """tls= an SSLContext is used as given."""
    context = ssl.create_default_context()
    ca.configure_trust(context)
    async with tls_fake(ca, "127.0.0.1") as (api, port):
        async with client_for(api, f"https://127.0.0.1:{port}", tls=context) as client:
            await client.track_and_wait(IDS, "view")
        assert api.event_count == 1


async def test_private_ca_is_not_trusted_without_tls_option(ca: trustme.CA) -> None:
    """Without tls=, a certificate from an unknown CA fails as a TLS error, loudly."""
    async with tls_fake(ca, "127.0.0.1") as (api, port):
        client = client_for(api, f"https://127.0.0.1:{port}")
        async with client:
            with pytest.raises(TransportError) as info:
                await client.system_time()
    assert str(info.value).startswith(f"TLS handshake with 127.0.0.1:{port} failed")
    assert "certificate" in str(info.value)
    assert info.value.__context__ is None


async def test_certificate_for_another_name_is_refused(
    ca: trustme.CA, ca_file: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A certificate that does not match the host fails each request, names the
    mismatch, and the first failure is a WARNING at once."""
    caplog.set_level(logging.WARNING, logger="trackasync")
    async with tls_fake(ca, "api.example.test") as (api, port):
        client = client_for(
            api, f"https://127.0.0.1:{port}", tls=ca_file, retry=Retry(attempts=3)
        )
        async with client:
            with pytest.raises(TransportError) as info:
                await client.system_time()
            delivery = client.track_nowait(IDS, "view")
            with pytest.raises(DeliveryFailed):
                await delivery
        assert api.event_count == 0
    assert "TLS handshake" in str(info.value)
    assert "mismatch" in str(info.value).lower() or "not valid" in str(info.value)
    warnings = [
        r.getMessage() for r in caplog.records if "will be retried" in r.getMessage()
    ]
    assert warnings
    assert "TLS handshake with 127.0.0.1" in warnings[0]


async def test_https_through_a_proxy_with_credentials(
    ca: trustme.CA, ca_file: str
) -> None:
    """proxy= with user:password: the request tunnels through the proxy
    (CONNECT) with its credentials, and the event arrives."""
    async with (
        ProxyServer(login=PROXY_LOGIN, password=PROXY_PASSWORD) as proxy,
        tls_fake(ca, "api.example.test") as (api, port),
    ):
        url = f"http://{PROXY_LOGIN}:{PROXY_PASSWORD}@127.0.0.1:{proxy.port}"
        client = client_for(
            api, f"https://api.example.test:{port}", tls=ca_file, proxy=url
        )
        async with client:
            await client.track_and_wait(IDS, "view")
            assert PROXY_PASSWORD not in repr(client)
        assert api.event_count == 1
    assert proxy.requests == [("CONNECT", f"api.example.test:{port}")]
    assert proxy.refused == 0


async def test_plain_http_through_a_proxy_forwards() -> None:
    """An http:// base URL goes through the proxy as a forwarded request."""
    async with ProxyServer() as proxy, FakeTrackingAPI() as api:
        base = api.base_url
        async with client_for(api, base, proxy=proxy.url) as client:
            await client.track_and_wait(IDS, "view")
        assert api.event_count == 1
    assert len(proxy.requests) == 1
    method, target = proxy.requests[0]
    assert (method, target.startswith(base)) == ("POST", True)


async def test_proxy_refusing_with_407_is_named_and_scrubbed(
    ca: trustme.CA, ca_file: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A proxy answering 407 (wrong credentials): the error says the proxy
    refused and why, is retried as a transport failure, and no text shows the
    proxy credentials sent."""
    caplog.set_level(logging.DEBUG, logger="trackasync")
    wrong = "wrong-proxy-pass"
    async with (
        ProxyServer(login=PROXY_LOGIN, password=PROXY_PASSWORD) as proxy,
        tls_fake(ca, "api.example.test") as (api, port),
    ):
        client = client_for(
            api,
            f"https://api.example.test:{port}",
            tls=ca_file,
            proxy=f"http://{PROXY_LOGIN}:{wrong}@127.0.0.1:{proxy.port}",
            retry=Retry(attempts=2, wait_initial=0.0, wait_max=0.0),
        )
        async with client:
            with pytest.raises(TransportError) as info:
                await client.system_time()
            delivery = client.track_nowait(IDS, "view")
            with pytest.raises(DeliveryFailed) as failed:
                await delivery
        assert api.event_count == 0
    assert proxy.refused >= 2
    message = str(info.value)
    assert "proxy" in message
    assert "407" in message
    assert "credentials" in message
    assert failed.value.reason == "gave_up"
    texts = [message, str(failed.value), repr(failed.value), caplog.text]
    for text in texts:
        assert wrong not in text
        assert f"{PROXY_LOGIN}:{wrong}" not in text


async def test_proxy_not_listening_is_named(caplog: pytest.LogCaptureFixture) -> None:
    """A proxy that refuses connections: the error names the proxy, not the API."""
    async with ProxyServer() as proxy:
        port = proxy.port  # closed when the block ends: nothing listens there
    async with (
        FakeTrackingAPI() as api,
        client_for(api, api.base_url, proxy=f"http://127.0.0.1:{port}") as client,
    ):
        with pytest.raises(TransportError) as info:
            await client.system_time()
    assert str(info.value).startswith(
        f"could not connect to the proxy at 127.0.0.1:{port}"
    )


async def test_environment_proxy_is_followed_by_default(
    ca: trustme.CA, ca_file: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """HTTPS_PROXY is followed by default (trust_env=True), and not with
    trust_env=False."""
    async with ProxyServer() as proxy, tls_fake(ca, "api.example.test") as (api, port):
        monkeypatch.setenv("HTTPS_PROXY", proxy.url)
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        base = f"https://api.example.test:{port}"
        async with client_for(api, base, tls=ca_file) as client:
            await client.track_and_wait(IDS, "view")
        assert proxy.requests == [("CONNECT", f"api.example.test:{port}")]
        async with client_for(api, base, tls=ca_file, trust_env=False) as client:
            # Not through the proxy: api.example.test does not resolve.
            with pytest.raises(TransportError):
                await client.system_time()
        assert len(proxy.requests) == 1
        assert api.event_count == 1


def test_sync_client_from_env_through_proxy_and_private_ca(
    ca: trustme.CA, ca_file: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SyncClient.from_env reads TRACKASYNC_PROXY and TRACKASYNC_TLS."""
    import asyncio
    import threading

    ready = threading.Event()
    stop: asyncio.Event | None = None
    found: dict[str, object] = {}

    async def serve() -> None:
        nonlocal stop
        stop = asyncio.Event()
        async with (
            ProxyServer(login=PROXY_LOGIN, password=PROXY_PASSWORD) as proxy,
            tls_fake(ca, "api.example.test") as (api, port),
        ):
            found.update(
                proxy=proxy, api=api, port=port, loop=asyncio.get_running_loop()
            )
            ready.set()
            await stop.wait()

    thread = threading.Thread(target=asyncio.run, args=(serve(),))
    thread.start()
    try:
        assert ready.wait(10)
        proxy: ProxyServer = found["proxy"]  # type: ignore[assignment]
        api: FakeTrackingAPI = found["api"]  # type: ignore[assignment]
        monkeypatch.setenv(
            "TRACKASYNC_BASE_URL", f"https://api.example.test:{found['port']}"
        )
        monkeypatch.setenv("TRACKASYNC_PROJECT_TOKEN", api.project_token)
        monkeypatch.setenv("TRACKASYNC_KEY_ID", api.key_id)
        monkeypatch.setenv("TRACKASYNC_SECRET", api.secret)
        monkeypatch.setenv(
            "TRACKASYNC_PROXY",
            f"http://{PROXY_LOGIN}:{PROXY_PASSWORD}@127.0.0.1:{proxy.port}",
        )
        monkeypatch.setenv("TRACKASYNC_TLS", ca_file)
        with SyncClient.from_env(linger=0.0, rate_limit=None) as client:
            client.track_and_wait(IDS, "view", timeout=20)
        assert api.event_count == 1
        assert proxy.requests
        assert proxy.requests[0][0] == "CONNECT"
    finally:
        loop = found.get("loop")
        if loop is not None and stop is not None:
            loop.call_soon_threadsafe(stop.set)  # type: ignore[attr-defined]
        thread.join(10)
