"""Type-checked against the public API by mypy; never run.

If a public signature changes in a way that breaks callers, mypy fails here.
"""

from __future__ import annotations

from datetime import datetime, timezone

from trackasync import (
    Client,
    CloseReport,
    Delivery,
    DeliveryFailed,
    Event,
    FlushResult,
    Limits,
    MissingExtra,
    PrivateKey,
    PublicToken,
    Receipt,
    Retry,
    Stats,
    SyncClient,
    SyncDelivery,
    close_on_sigterm,
    otel_metrics,
    prometheus_metrics,
)
from trackasync.testing import (
    FakeTrackingAPI,
    RecordingTransport,
    StoredConsent,
    StoredEvent,
)


async def use_client() -> None:
    client = Client(
        "https://api.exponea.com",
        "token",
        auth=PrivateKey("key", "secret"),
        max_queue=100,
        overflow="drop_old",
        linger=0.1,
        mode="batch",
        max_in_flight=2,
        rate_limit=None,
        retry=Retry(attempts=3, timeout=10.0),
        limits=Limits(max_batch_commands=10),
        on_result=lambda delivery: None,
        transport=RecordingTransport(),
    )
    async with client:
        delivery: Delivery = await client.track(
            {"registered": "a"}, "purchase", {"x": 1}
        )
        receipt: Receipt = await delivery
        latency: float = receipt.latency
        now = client.track_nowait(
            {"registered": "a"}, "view", timestamp=datetime.now(timezone.utc)
        )
        failure: DeliveryFailed | None = now.exception() if now.done() else None
        waited: Receipt = await client.track_and_wait({"registered": "a"}, "view")
        update: Delivery = await client.update_customer({"registered": "a"}, {"t": 1})
        update2: Delivery = client.update_customer_nowait(
            {"registered": "a"}, {"t": 1}, update_timestamp=1700000000
        )
        flushed: FlushResult = await client.flush(timeout=1.0)
        server_time: float = await client.system_time()
        stats: Stats = client.stats()
        reasons: int = stats.failed["gave_up"]
    report: CloseReport = await client.aclose(timeout=1.0)
    kept: list[Delivery] = report.undelivered
    del latency, failure, waited, update, update2, flushed, server_time, reasons, kept


async def use_fake() -> None:
    async with FakeTrackingAPI() as api:
        async with Client(api.base_url, api.project_token, auth=api.auth) as client:
            client.track_nowait({"registered": "a"}, "view")
        public: PublicToken = api.public_auth
        count: int = api.event_count
        settings: dict[str, str] = api.environ
        arrived: list[StoredEvent] = await api.await_events(
            2, where=lambda e: e.event_type == "view", timeout=1.0
        )
        waited: list[StoredEvent] = api.wait_for_events(timeout=1.0)
        del public, count, settings, arrived, waited


def use_sync_client() -> None:
    with SyncClient(
        "https://api.exponea.com",
        "token",
        auth=PublicToken("token"),
        overflow="raise",
        queue_timeout=None,
        rate_budget="host",
        retry=Retry.none(),
        shutdown_timeout=5.0,
    ) as client:
        handle: SyncDelivery = client.track({"registered": "a"}, "view", {"x": 1})
        done: bool = handle.done()
        receipt: Receipt = handle.result(timeout=1.0)
        failure: DeliveryFailed | None = handle.exception(timeout=1.0)
        handle.add_done_callback(lambda h: None)
        update: SyncDelivery = client.update_customer(
            {"registered": "a"}, {"t": 1}, update_timestamp=1700000000
        )
        waited: Receipt = client.track_and_wait({"registered": "a"}, "v", timeout=2)
        flushed: FlushResult = client.flush(timeout=1.0)
        server_time: float = client.system_time(timeout=1.0)
        stats: Stats = client.stats()
    report: CloseReport = client.close(timeout=1.0)
    from_env: Client = Client.from_env(linger=0.1)
    sync_from_env: SyncClient = SyncClient.from_env(max_queue=10)
    # Every Client option but transport, dry run and await window included.
    dry = SyncClient(
        "https://api.exponea.com",
        "token",
        auth=PublicToken("token"),
        send=False,
        await_linger=0.0,
        proxy=None,
        trust_env=False,
    )
    kept: int = report.kept + stats.kept + stats.recovered
    last: str = report.last_errors.get("gave_up", "")
    del done, receipt, failure, update, waited, flushed, server_time, stats, report
    del from_env, sync_from_env, dry, kept, last


def use_close_on_sigterm(client: SyncClient) -> None:
    close_on_sigterm(client)
    close_on_sigterm(client, timeout=5.0)


def use_metrics(client: Client, sync: SyncClient) -> None:
    from opentelemetry.sdk.metrics import MeterProvider
    from prometheus_client import CollectorRegistry

    otel_metrics(client)
    otel_metrics(sync, meter_provider=MeterProvider(), name="worker")
    prometheus_metrics(client, name="web")
    prometheus_metrics(sync, registry=CollectorRegistry())
    error: ImportError = MissingExtra("pip install 'trackasync[otel]'")
    del error


async def use_consent_and_shaping() -> None:
    def redact(event: Event) -> Event | None:
        event.properties.pop("email", None)
        return None if event.event_type == "debug" else event

    async with Client(
        "https://api.exponea.com",
        "token",
        auth=PrivateKey("key", "secret"),
        default_properties={"app_version": "1.0"},
        before_send=redact,
    ) as client:
        accepted: Delivery = await client.consent(
            {"registered": "a"}, "accept", "newsletter", valid_until="unlimited"
        )
        rejected: Delivery = client.consent_nowait(
            {"registered": "a"}, "reject", "newsletter", properties={"m": "x"}
        )
        filtered: int = client.stats().filtered
    with SyncClient(
        "https://api.exponea.com",
        "token",
        auth=PublicToken("token"),
        before_send=redact,
    ) as sync:
        handle: SyncDelivery = sync.consent(
            {"registered": "a"}, "accept", "sms", valid_until=1_900_000_000
        )
    async with FakeTrackingAPI() as api:
        consents: list[StoredConsent] = api.consents
        in_force: StoredConsent | None = api.consent_in_force({"registered": "a"}, "x")
        ignored: int = api.not_consents
    del accepted, rejected, filtered, handle, consents, in_force, ignored
