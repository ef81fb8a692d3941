"""Long randomised runs of the real client against a faulty FakeTrackingAPI.

The server fails about 30% of requests at random (5xx, 429 with and without
Retry-After, connections dropped before or after storing, slow answers) and
refuses a fixed subset of commands by their content. The main run sends 20,000
commands in batches; two shorter ones send one command per request, and overflow
a small queue. At the end the client's outcomes and the server's data must agree
exactly.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import msgspec
import pytest

from trackasync import Client, Delivery, Limits, Mode, Overflow, Retry
from trackasync.testing import FakeTrackingAPI

from .test_e2e import stats_add_up

CUSTOMERS = 37
UPDATE_SHARE = 0.2
REJECT_EVERY = 41
REJECTION = "Not authorized to add event of specified type"
EVENT_TYPES = ("view_item", "add_to_cart", "purchase", "session_start")
CHAOS_RETRY = Retry(
    attempts=50, timeout=120.0, wait_initial=0.0, wait_max=0.02, max_retry_after=0.02
)

_canonical = msgspec.json.Encoder(order="sorted").encode


def event_key(
    customer_ids: Mapping[str, str],
    event_type: str,
    timestamp: float,
    properties: Mapping[str, Any],
) -> bytes:
    """What identifies an event: customer, type, timestamp and typed properties."""
    return _canonical(
        (sorted(customer_ids.items()), event_type, float(timestamp), properties)
    )


def delivery_key(delivery: Delivery) -> bytes:
    data = delivery.data()
    return event_key(
        data["customer_ids"],
        data["event_type"],
        data["timestamp"],
        data.get("properties") or {},
    )


def flagged(name: str, data: Mapping[str, Any]) -> bool:
    """The server's verdict, from the command's content: retries get the same one."""
    return data.get("properties", {}).get("reject") is True


def customer_ids(customer: int) -> dict[str, str]:
    ids = {"registered": f"customer-{customer}@example.com"}
    if customer % 3 == 0:
        ids["cookie"] = f"cookie-{customer:04d}"
    return ids


@dataclass(frozen=True)
class Scenario:
    """One chaotic run: how the client sends and how much."""

    mode: Mode
    count: int
    async_hook: bool = False
    overflow: Overflow = "wait"
    max_queue: int = 10_000
    #: The producer lets the client run after this many commands.
    pause_every: int = 100


SCENARIOS = {
    "batches": Scenario("auto", 20_000),
    "single-routes": Scenario("single", 2_000, async_hook=True),
    "drop-old": Scenario(
        "auto", 5_000, overflow="drop_old", max_queue=100, pause_every=5
    ),
}


async def produce(client: Client, scenario: Scenario) -> list[Delivery]:
    """Queue the scenario's commands: events and customer updates, many customers."""
    rng = random.Random(7)
    waits = scenario.overflow == "wait"
    deliveries: list[Delivery] = []
    for n in range(scenario.count):
        ids = customer_ids(rng.randrange(CUSTOMERS))
        properties: dict[str, Any]
        if rng.random() < UPDATE_SHARE:
            properties = {f"u{n}": n}
            if n % REJECT_EVERY == 0:
                properties["reject"] = True
            if waits:
                delivery = await client.update_customer(ids, properties)
            else:
                delivery = client.update_customer_nowait(ids, properties)
        else:
            properties = {
                "n": n,
                "price": round(rng.uniform(1, 100), 2),
                "in_stock": rng.random() < 0.9,
            }
            if n % REJECT_EVERY == 0:
                properties["reject"] = True
            event_type = rng.choice(EVENT_TYPES)
            if waits:
                delivery = await client.track(ids, event_type, properties)
            else:
                delivery = client.track_nowait(ids, event_type, properties)
        deliveries.append(delivery)
        if n % scenario.pause_every == scenario.pause_every - 1:
            await asyncio.sleep(0)
    return deliveries


# Thousands of requests with faults: far more than the suite's 60 s guard against
# hangs on a loaded machine measuring coverage.
@pytest.mark.timeout(300)
@pytest.mark.parametrize("scenario", SCENARIOS.values(), ids=SCENARIOS.keys())
async def test_chaos_every_command_is_delivered_once_or_reported(
    scenario: Scenario,
) -> None:
    """Under 30% random faults every command ends delivered once or failed, reported."""
    hook_calls: Counter[int] = Counter()
    checked = 0

    def count_call(delivery: Delivery) -> None:
        nonlocal checked
        hook_calls[id(delivery)] += 1
        if len(hook_calls) % 97 == 0:
            # Mid-run, retries pending: the counters still add up.
            stats_add_up(client)
            checked += 1

    async def count_call_async(delivery: Delivery) -> None:
        await asyncio.sleep(0)
        count_call(delivery)

    count = scenario.count
    started = time.monotonic()
    async with FakeTrackingAPI() as api:
        api.chaos(0.3, seed=20240611 + count, delay=0.005, retry_after=0.01)
        api.reject_commands(flagged, error=REJECTION)
        client = Client(
            api.base_url,
            api.project_token,
            auth=api.auth,
            mode=scenario.mode,
            overflow=scenario.overflow,
            max_queue=scenario.max_queue,
            linger=0.02,
            # Small batches: more requests, so more of them meet a fault.
            limits=Limits(max_batch_commands=10),
            rate_limit=None,
            retry=CHAOS_RETRY,
            on_result=count_call_async if scenario.async_hook else count_call,
        )
        async with client:
            deliveries = await produce(client, scenario)
            await client.flush()
        report = await client.aclose()  # closed already: the same report again
        stored_events = api.events
        customers = api.customers
        faults = Counter(r.fault for r in api.requests if r.fault is not None)
        routes = {r.route for r in api.requests}
        requests = len(api.requests)
    elapsed = time.monotonic() - started

    # The run was really chaotic, and quick enough (a retry storm waiting on
    # full backoffs would take many minutes; a loaded machine takes 80 s).
    assert elapsed < 150.0
    assert sum(faults.values()) >= requests * 0.2
    assert {"500", "429", "429+retry-after", "drop", "drop_after", "delay"} <= set(
        faults
    )
    assert api.duplicates > 0
    if scenario.mode == "single":
        assert routes == {"customers/events", "customers"}
    else:
        assert "batch" in routes
    assert report.undelivered == []

    # Each command has exactly one outcome, seen once by the hook.
    assert len(deliveries) == count
    assert all(d.done() for d in deliveries)
    assert len(hook_calls) == count
    assert checked >= count // 97 - 1
    assert set(hook_calls.values()) == {1}
    assert hook_calls.keys() == {id(d) for d in deliveries}

    stored = Counter(
        event_key(e.customer_ids, e.event_type, e.timestamp, e.properties)
        for e in stored_events
    )
    assert set(stored.values()) == {1}, "an event was stored twice"

    # What may stop a command the server would accept: retries running out, and
    # (only under a dropping policy) the full queue.
    other_ends = {"gave_up"} | ({"dropped"} if scenario.overflow != "wait" else set())
    outcomes: Counter[str] = Counter()
    known_events: set[bytes] = set()
    ambiguous_stored = 0
    expected_properties: dict[tuple[tuple[str, str], ...], dict[str, int]] = {}
    maybe_properties: dict[tuple[tuple[str, str], ...], set[str]] = {}
    for delivery in deliveries:
        data = delivery.data()
        failure = None if delivery.delivered() else delivery.exception()
        outcome = "delivered" if failure is None else failure.reason
        outcomes[outcome] += 1
        if data["properties"].get("reject") is True:
            assert failure is not None
            assert outcome in {"rejected"} | other_ends, outcome
            if outcome == "rejected":
                assert failure.errors == (REJECTION,)
        else:
            assert outcome in {"delivered"} | other_ends, outcome
        customer = tuple(sorted(data["customer_ids"].items()))
        if delivery.kind == "customers":
            (name,) = (key for key in data["properties"] if key != "reject")
            if outcome == "delivered":
                expected_properties.setdefault(customer, {})[name] = int(name[1:])
            elif outcome == "gave_up":
                maybe_properties.setdefault(customer, set()).add(name)
            continue
        key = delivery_key(delivery)
        known_events.add(key)
        if outcome == "delivered":
            assert stored[key] == 1
        elif outcome == "gave_up":
            # The connection may have dropped after the server stored it.
            ambiguous_stored += stored[key]
        else:
            assert key not in stored, outcome

    if scenario.overflow == "wait":
        flagged_count = sum(
            1 for d in deliveries if d.data()["properties"].get("reject") is True
        )
        assert outcomes["rejected"] == flagged_count
        assert outcomes["delivered"] + outcomes["gave_up"] == count - flagged_count
    else:
        assert outcomes["dropped"] > 0
        assert outcomes["rejected"] > 0
    assert report.delivered == outcomes["delivered"]

    # Nothing is stored that no caller sent; what is stored is what was delivered.
    assert stored.keys() <= known_events
    delivered_events = sum(
        1 for d in deliveries if d.kind == "customers/events" and d.delivered()
    )
    assert len(stored_events) == delivered_events + ambiguous_stored

    # Customer updates: delivered ones applied, the others never, nothing else.
    for customer, properties in customers.items():
        expected = expected_properties.get(customer, {})
        extra = set(properties) - set(expected)
        assert extra <= maybe_properties.get(customer, set()), extra
        assert {name: properties.get(name) for name in expected} == expected
    assert set(expected_properties) <= set(customers)

    stats = stats_add_up(client)
    assert stats.enqueued == count
    assert (stats.queued, stats.in_flight) == (0, 0)
    assert stats.delivered == outcomes["delivered"]
    assert stats.rejected == outcomes["rejected"]
    assert stats.dropped == outcomes["dropped"]
    assert stats.failed["gave_up"] == outcomes["gave_up"]
    assert stats.failed["closed"] == 0
    assert stats.retries > 0
