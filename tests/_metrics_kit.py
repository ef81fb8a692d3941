"""A faulty run against the fake API, and what the exporters must show after it.

The expected figures are written out here by hand from ``stats()`` and from the
requests the fake saw, not from the library's metric table, so a wrong name,
label or value in the exporters fails the tests.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from typing import Any

import anyio

from trackasync import Client, Delivery, DeliveryFailed, Retry, Stats
from trackasync.testing import FakeTrackingAPI

IDS = {"registered": "ann@example.com"}

#: Retries at once; six attempts, so six 500s in a row give up.
RETRY = Retry(
    attempts=6, timeout=60.0, wait_initial=0.0, wait_max=0.0, max_retry_after=0.0
)

Figures = dict[tuple[str, frozenset[tuple[str, str]]], float]


def client_options(api: FakeTrackingAPI) -> dict[str, Any]:
    return {
        "auth": api.auth,
        "linger": 0.0,
        "rate_limit": None,
        "retry": RETRY,
        "shutdown_timeout": 2.0,
    }


def client_for(api: FakeTrackingAPI, **options: Any) -> Client:
    return Client(api.base_url, api.project_token, **client_options(api), **options)


def every_seventh(name: str, data: Any) -> bool:
    """The fake's rejection rule: events whose ``n`` is a multiple of 7."""
    return name == "customers/events" and data["properties"]["n"] % 7 == 0


def arm_faults(api: FakeTrackingAPI) -> None:
    """503s, a 429, a dropped connection, and rejected commands."""
    api.reject_commands(every_seventh)
    api.fail_next(2, status=503)
    api.fail_next(1, status=429, retry_after=0)
    api.drop_next(1)


def status_class(status: int | None) -> str:
    return "error" if status is None else f"{status // 100}xx"


def seen(api: FakeTrackingAPI) -> Counter[tuple[str, str]]:
    """The requests the fake saw, by route and status class."""
    return Counter((str(r.route), status_class(r.status)) for r in api.requests)


def check_the_run_was_faulty(stats: Stats, api: FakeTrackingAPI) -> None:
    """The faults did happen, so the comparison covers more than the happy path."""
    classes = {sclass for _, sclass in seen(api)}
    assert {"2xx", "4xx", "5xx", "error"} <= classes, seen(api)
    assert stats.retries > 0
    assert stats.rate_limited == 1
    assert stats.failed["rejected"] > 0
    assert stats.failed["gave_up"] == 1
    assert stats.delivered > 0
    assert stats.requests == len(api.requests)


def expected(stats: Stats, api: FakeTrackingAPI, client: str) -> Figures:
    """Every counter and gauge, by short name and labels, as stats() and the fake say."""
    rows: Figures = {}

    def put(name: str, value: float, **labels: str) -> None:
        rows[name, frozenset({"client": client, **labels}.items())] = value

    put("commands.enqueued", stats.enqueued)
    put("commands", stats.delivered, outcome="delivered")
    for reason, count in stats.failed.items():
        put("commands", count, outcome="failed", reason=reason)
    put("queue.commands", stats.queued)
    put("in_flight.commands", stats.in_flight)
    for (route, sclass), count in seen(api).items():
        put("requests", count, route=route, status_class=sclass)
    put("retries", stats.retries)
    put("rate_limited", stats.rate_limited)
    put("sent", stats.bytes_sent)
    put("hooks.skipped", stats.hooks_skipped)
    put("commands.discarded_at_fork", stats.discarded_at_fork)
    put("commands.kept", stats.kept)
    put("commands.recovered", stats.recovered)
    put("commands.filtered", stats.filtered)
    return rows


def expected_histogram(api: FakeTrackingAPI, client: str) -> Figures:
    """Each histogram series' count: one per request the fake saw."""
    return {
        (
            "request",
            frozenset({"client": client, "route": r, "status_class": s}.items()),
        ): n
        for (r, s), n in seen(api).items()
    }


async def faulty_run(api: FakeTrackingAPI, client: Client) -> list[Delivery]:
    """40 events through the faults, then one that gives up; all settled."""
    arm_faults(api)
    deliveries = [client.track_nowait(IDS, "purchase", {"n": n}) for n in range(1, 41)]
    await settled(deliveries)
    api.fail_next(6, status=500)
    deliveries.append(await client.track(IDS, "purchase", {"n": 41}))
    await settled(deliveries)
    return deliveries


async def settled(deliveries: list[Delivery]) -> None:
    """Wait until every delivery has its outcome (within a generous bound)."""
    with anyio.fail_after(30):
        for delivery in deliveries:
            with contextlib.suppress(DeliveryFailed):
                await delivery
