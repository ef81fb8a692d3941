"""Consent events: checked at the call, stamped in order, read by the fake."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from trackasync import Client, InvalidEvent, SyncClient
from trackasync._consent import ConsentClock
from trackasync.testing import FakeTrackingAPI

from .test_e2e import client_for

IDS = {"registered": "ann@example.com"}


@pytest.mark.parametrize(
    ("args", "field"),
    [
        (("Accept", "newsletter"), "action"),
        (("accepted", "newsletter"), "action"),
        (("accept", ""), "category"),
        (("accept", " newsletter"), "category"),
        (("accept", 7), "category"),
        (("accept", "newsletter", None), "valid_until"),
        (("accept", "newsletter", "Unlimited"), "valid_until"),
        (("reject", "newsletter", "forever"), "valid_until"),
        (("accept", "newsletter", True), "valid_until"),
        (("accept", "newsletter", float("nan")), "valid_until"),
        (("accept", "newsletter", -5), "valid_until"),
        (("accept", "newsletter", 0), "valid_until"),
        (("accept", "newsletter", 1_900_000_000_000), "valid_until"),  # ms
        (("accept", "newsletter", "next year"), "valid_until"),
    ],
)
async def test_bad_consent_fields_raise_invalid_event_at_the_call(
    args: tuple[Any, ...], field: str
) -> None:
    """A field the API would silently not read as a consent raises at the call."""
    action, category, *rest = args
    async with Client(
        "https://api.exponea.com", "t", auth=_auth(), send=False
    ) as client:
        with pytest.raises(InvalidEvent) as caught:
            client.consent_nowait(
                IDS, action, category, valid_until=rest[0] if rest else None
            )
        assert caught.value.field == field
        assert client.stats().enqueued == 0


async def test_consent_properties_may_not_override_the_consent_fields() -> None:
    """Extra properties cannot smuggle a different action past the checks."""
    async with Client(
        "https://api.exponea.com", "t", auth=_auth(), send=False
    ) as client:
        with pytest.raises(InvalidEvent):
            client.consent_nowait(
                IDS, "reject", "newsletter", properties={"action": "accept"}
            )


def _auth() -> Any:
    from trackasync import PrivateKey

    return PrivateKey("k", "s")


async def test_accept_then_reject_at_the_same_instant_the_reject_wins(
    fake_tracking_api: FakeTrackingAPI,
) -> None:
    """Both sent in one batch with the same timestamp asked for: the later call
    is stamped later, so it is the consent in force whatever the arrival order."""
    api = fake_tracking_api
    async with client_for(api, linger=0.05) as client:
        first = client.consent_nowait(
            IDS,
            "accept",
            "newsletter",
            valid_until="unlimited",
            timestamp=1_700_000_000,
        )
        second = await client.consent(
            IDS, "reject", "newsletter", timestamp=1_700_000_000
        )
        await first
        await second
    assert [c.action for c in api.consents] == ["accept", "reject"]
    stamps = [c.timestamp for c in api.consents]
    assert stamps[1] > stamps[0]
    in_force = api.consent_in_force(IDS, "newsletter")
    assert in_force is not None
    assert in_force.action == "reject"
    assert api.not_consents == 0


async def test_the_fake_counts_a_consent_it_cannot_read(
    fake_tracking_api: FakeTrackingAPI,
) -> None:
    """track() with a misspelt field stores an event that is no consent."""
    api = fake_tracking_api
    async with client_for(api) as client:
        await (
            await client.track(IDS, "consent", {"Action": "accept", "category": "x"})
        )
        await (await client.consent(IDS, "accept", "x", valid_until=1_900_000_000))
    assert api.not_consents == 1
    assert len(api.consents) == 1
    assert api.consents[0].valid_until == 1_900_000_000


async def test_a_resent_consent_is_stored_twice(
    fake_tracking_api: FakeTrackingAPI,
) -> None:
    """Consent events are never deduplicated: the same body twice is two records."""
    api = fake_tracking_api
    async with client_for(api) as client:
        delivery = await client.consent(IDS, "reject", "sms")
        await delivery
        # What an ambiguous retry does: the very same body again.
        again = client.track_nowait(
            IDS,
            "consent",
            delivery.data()["properties"],
            timestamp=delivery.data()["timestamp"],
        )
        await again
    assert len(api.consents) == 2
    assert api.duplicates == 0


def test_the_clock_is_strictly_increasing_per_key_from_many_threads() -> None:
    """Eight threads stamping the same customer and category at one instant
    get distinct, increasing stamps."""
    clock = ConsentClock()
    stamps: list[float] = []
    lock = threading.Lock()

    def worker() -> None:
        for _ in range(200):
            stamp = clock.stamp(IDS, "newsletter", 1_700_000_000.0)
            with lock:
                stamps.append(stamp)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(stamps)) == len(stamps) == 1600
    assert min(stamps) == 1_700_000_000.0
    # Six decimals at most: what the API keeps.
    assert all(round(s, 6) == s for s in stamps)


def test_the_clock_keys_each_id_and_category_apart() -> None:
    """Another category or another customer is not moved forward; a customer
    known by a second id too shares the first id's order."""
    clock = ConsentClock()
    assert clock.stamp(IDS, "a", 10.0) == 10.0
    assert clock.stamp(IDS, "b", 10.0) == 10.0
    assert clock.stamp({"registered": "bob"}, "a", 10.0) == 10.0
    both = {"registered": "ann@example.com", "cookie": "c1"}
    assert clock.stamp(both, "a", 10.0) == 10.000001
    assert clock.stamp({"cookie": "c1"}, "a", 5.0) == 10.000002


def test_a_forgotten_key_still_gets_a_later_stamp() -> None:
    """Past its bound the clock forgets the oldest keys but keeps their order."""
    clock = ConsentClock(max_keys=2)
    assert clock.stamp(IDS, "a", 50.0) == 50.0
    clock.stamp(IDS, "b", 1.0)
    clock.stamp(IDS, "c", 1.0)  # "a" is forgotten here
    assert clock.stamp(IDS, "a", 50.0) > 50.0


def test_bad_customer_ids_raise_invalid_event() -> None:
    """customer_ids that are not a mapping of strings raise InvalidEvent."""
    clock = ConsentClock()
    with pytest.raises(InvalidEvent):
        clock.stamp(["ann"], "a", 1.0)  # type: ignore[arg-type]
    with pytest.raises(InvalidEvent):
        clock.stamp({"registered": ["x"]}, "a", 1.0)  # type: ignore[dict-item]


def test_sync_client_consents_from_many_threads_keep_their_order() -> None:
    """SyncClient.consent from several threads: every consent distinct and read."""
    with FakeTrackingAPI() as api:
        client = SyncClient(api.base_url, api.project_token, auth=api.auth, linger=0.01)
        with client:
            with pytest.raises(InvalidEvent):
                client.consent(IDS, "accept", "newsletter")  # no valid_until

            def worker(n: int) -> None:
                for i in range(10):
                    action = "accept" if (n + i) % 2 else "reject"
                    client.consent(
                        IDS,
                        action,
                        "newsletter",
                        valid_until=2_000_000_000,
                        timestamp=1_700_000_000,
                    )

            threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            client.flush(timeout=10)
        consents = api.consents
        assert len(consents) == 40
        assert len({c.timestamp for c in consents}) == 40


async def test_the_fake_keeps_the_first_of_two_consents_with_one_timestamp(
    fake_tracking_api: FakeTrackingAPI,
) -> None:
    """Equal timestamps are ambiguous in the API: the fake resolves them
    against arrival order, so a client relying on that order is caught."""
    api = fake_tracking_api
    body = {"category": "news", "valid_until": "unlimited"}
    async with client_for(api) as client:
        await (
            await client.track(
                IDS, "consent", {"action": "accept", **body}, timestamp=1_700_000_000
            )
        )
        await (
            await client.track(
                IDS, "consent", {"action": "reject", **body}, timestamp=1_700_000_000
            )
        )
    in_force = api.consent_in_force(IDS, "news")
    assert in_force is not None
    assert in_force.action == "accept"
    assert api.consent_in_force(IDS, "other") is None


async def test_valid_until_takes_a_datetime_as_unix_seconds() -> None:
    """An aware datetime or ISO string is sent as UNIX seconds."""
    from datetime import datetime, timezone

    async with Client(
        "https://api.exponea.com", "t", auth=_auth(), send=False
    ) as client:
        until = datetime(2027, 1, 1, tzinfo=timezone.utc)
        d1 = client.consent_nowait(IDS, "accept", "news", valid_until=until)
        d2 = client.consent_nowait(
            IDS, "accept", "news", valid_until="2027-01-01T00:00:00Z"
        )
    assert d1.data()["properties"]["valid_until"] == 1798761600.0
    assert d2.data()["properties"]["valid_until"] == 1798761600.0
