"""End to end retry rules: what is retried with which waits, and what is final at once.

Every test runs the real client and aiohttp transport against FakeTrackingAPI on
127.0.0.1 and checks both sides: the command's outcome and what the server holds.
"""

from __future__ import annotations

import asyncio
import time
from email.utils import formatdate
from http import HTTPStatus

import pytest

from trackasync import (
    APIError,
    AuthError,
    BadRequest,
    RateLimited,
    Retry,
    ServerError,
)
from trackasync.testing import FakeTrackingAPI

from .test_e2e import (
    IDS,
    client_for,
    failure_of,
    flagged,
    stats_add_up,
    stored_numbers,
)


class RetryClock:
    """The sender's and the client's (wall) clock, moved only by the sender's retry
    waits (which return at once): waits and deadlines are read exactly, on a
    loaded machine too, instead of from the wall clock."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        from trackasync import _client, _sender

        self.now = time.time()
        #: Every retry wait the sender asked for, in seconds.
        self.waits: list[float] = []
        monkeypatch.setattr(_sender, "_sleep", self._sleep)
        monkeypatch.setattr(_sender, "_time", self._time)
        monkeypatch.setattr(_client, "_time", self._time)
        monkeypatch.setattr(_client, "_time_ns", lambda: int(self.now * 1e9))

    def _time(self) -> float:
        return self.now

    async def _sleep(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)


# -- retried ---------------------------------------------------------------------------


@pytest.mark.parametrize("status", [500, 502, 503, 408])
async def test_server_errors_are_retried_and_delivered_once(
    fake_tracking_api: FakeTrackingAPI, status: int
) -> None:
    """A 5xx (or 408) answer is retried, and the event is stored exactly once."""
    api = fake_tracking_api
    api.fail_next(1, status=status)
    async with client_for(api) as client:
        receipt = await client.track_and_wait(IDS, "purchase", {"n": 1})
    assert receipt.attempts == 2
    assert receipt.status == 200
    assert receipt.request_id == api.requests[1].request_id
    assert [(r.status, r.fault) for r in api.requests] == [
        (status, str(status)),
        (200, None),
    ]
    assert stored_numbers(api) == [1]
    assert api.duplicates == 0
    stats = stats_add_up(client)
    assert (stats.requests, stats.retries, stats.delivered) == (2, 1, 1)


async def test_retries_run_out_and_the_command_gives_up(
    fake_tracking_api: FakeTrackingAPI,
) -> None:
    """A server that keeps failing makes the command give up after Retry.attempts."""
    api = fake_tracking_api
    api.fail_next(3, status=503)
    retry = Retry(attempts=3, timeout=10.0, wait_initial=0.0, wait_max=0.01)
    async with client_for(api, retry=retry) as client:
        failure = await failure_of(client.track_nowait(IDS, "purchase", {"n": 1}))
    assert failure.reason == "gave_up"
    assert failure.attempts == 3
    assert failure.status == 503
    assert isinstance(failure.error, ServerError)
    assert failure.request_id == api.requests[-1].request_id
    assert [r.status for r in api.requests] == [503, 503, 503]
    assert api.event_count == 0
    assert stats_add_up(client).failed["gave_up"] == 1


async def test_rate_limited_without_retry_after_is_retried(
    fake_tracking_api: FakeTrackingAPI,
) -> None:
    """429 without Retry-After is retried with backoff until the event is stored."""
    api = fake_tracking_api
    api.fail_next(2, status=429)
    async with client_for(api) as client:
        receipt = await client.track_and_wait(IDS, "purchase", {"n": 1})
    assert receipt.attempts == 3
    assert [r.status for r in api.requests] == [429, 429, 200]
    assert stored_numbers(api) == [1]
    stats = stats_add_up(client)
    assert (stats.rate_limited, stats.retries) == (2, 2)


@pytest.mark.parametrize("retry_after", ["0", "0.05"])
async def test_rate_limited_with_retry_after_waits_as_asked(
    fake_tracking_api: FakeTrackingAPI,
    retry_after: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """429 with Retry-After is retried after that many seconds, then stored once."""
    api = fake_tracking_api
    clock = RetryClock(monkeypatch)
    api.fail_next(1, status=429, retry_after=retry_after)
    async with client_for(api) as client:
        receipt = await client.track_and_wait(IDS, "purchase", {"n": 1})
    assert receipt.attempts == 2
    assert clock.waits == [float(retry_after)]
    assert [(r.status, r.fault) for r in api.requests] == [
        (429, "429+retry-after"),
        (200, None),
    ]
    assert stored_numbers(api) == [1]
    assert stats_add_up(client).rate_limited == 1


@pytest.mark.parametrize(
    "retry_after",
    ["30", formatdate(time.time() + 3600, usegmt=True)],
    ids=["seconds", "http-date"],
)
async def test_a_long_retry_after_is_capped_at_max_retry_after(
    fake_tracking_api: FakeTrackingAPI,
    retry_after: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A Retry-After far beyond max_retry_after (0.05 s) only waits the cap."""
    api = fake_tracking_api
    clock = RetryClock(monkeypatch)
    api.fail_next(1, status=429, retry_after=retry_after)
    async with client_for(api) as client:
        receipt = await asyncio.wait_for(
            client.track_and_wait(IDS, "purchase", {"n": 1}), 10.0
        )
    assert receipt.attempts == 2
    assert clock.waits == [0.05]
    assert stored_numbers(api) == [1]


async def test_a_long_retry_after_is_capped_with_the_rate_limiter_on(
    fake_tracking_api: FakeTrackingAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the default client-side rate limit, Retry-After is capped all the same."""
    api = fake_tracking_api
    clock = RetryClock(monkeypatch)
    api.fail_next(1, status=429, retry_after="30")
    client = client_for(api, rate_limit=100.0, shutdown_timeout=0.2)
    async with client:
        # The limiter's own pause is capped too: a 30 s one would time out here.
        receipt = await asyncio.wait_for(
            client.track_and_wait(IDS, "purchase", {"n": 1}), 10.0
        )
    assert receipt.attempts == 2
    assert clock.waits == [0.05]
    assert stored_numbers(api) == [1]


async def test_a_command_gives_up_when_the_retry_deadline_would_pass(
    fake_tracking_api: FakeTrackingAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Retries stop once the next one could not start within Retry.timeout."""
    api = fake_tracking_api
    clock = RetryClock(monkeypatch)
    api.fail_next(1_000, status=503)
    deadline = Retry(attempts=1_000, timeout=0.2, wait_initial=0.01, wait_max=0.02)
    async with client_for(api, retry=deadline) as client:
        failure = await failure_of(client.track_nowait(IDS, "purchase", {"n": 1}))
    assert failure.reason == "gave_up"
    assert "deadline" in str(failure)
    assert 1 < failure.attempts < 1_000
    assert failure.attempts == len(api.requests) == len(clock.waits) + 1
    # Every wait taken kept within the deadline; the next (at most 0.02 s) would
    # have passed it.
    assert 0.2 - 0.02 < sum(clock.waits) <= 0.2 + 1e-9
    assert api.event_count == 0


# -- final at once ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "error_type"),
    [
        (400, BadRequest),
        (401, AuthError),
        (403, AuthError),
        (404, BadRequest),
        (413, BadRequest),
        (422, BadRequest),
    ],
)
async def test_client_errors_are_rejected_at_once(
    fake_tracking_api: FakeTrackingAPI, status: int, error_type: type[APIError]
) -> None:
    """A 4xx answer (other than 408/429) rejects the command after one request."""
    api = fake_tracking_api
    api.fail_next(1, status=status)
    async with client_for(api) as client:
        failure = await failure_of(client.track_nowait(IDS, "purchase", {"n": 1}))
        # The server works again: nothing else was pending, nothing is resent.
        await client.flush()
    assert failure.reason == "rejected"
    assert failure.status == status
    assert failure.attempts == 1
    assert failure.errors == (HTTPStatus(status).phrase,)
    assert type(failure.error) is error_type
    assert [r.status for r in api.requests] == [status]
    assert api.event_count == 0
    stats = stats_add_up(client)
    assert (stats.rejected, stats.retries) == (1, 0)


@pytest.mark.parametrize(
    ("body", "errors"),
    [
        ({"success": False, "errors": ["Invalid JSON"]}, ("Invalid JSON",)),
        ({"success": False, "message": "No commands"}, ("No commands",)),
        ({"errors": {"_global": ["Project is disabled"]}}, ("Project is disabled",)),
        ("no permission to track", ("no permission to track",)),
    ],
    ids=["errors-list", "message", "global", "plain-text"],
)
async def test_rejection_carries_the_api_error_strings_of_any_body_shape(
    fake_tracking_api: FakeTrackingAPI, body: object, errors: tuple[str, ...]
) -> None:
    """The API's own strings reach DeliveryFailed.errors whatever the body's shape."""
    api = fake_tracking_api
    api.fail_next(1, status=400, body=body)
    async with client_for(api) as client:
        failure = await failure_of(client.track_nowait(IDS, "purchase", {"n": 1}))
    assert failure.reason == "rejected"
    assert failure.errors == errors
    assert api.event_count == 0


@pytest.mark.parametrize("status", [200, 400])
@pytest.mark.parametrize("kind", ["event", "customer"])
async def test_single_route_refusal_is_rejected_with_the_api_error(
    status: int, kind: str
) -> None:
    """A single-route command the API refuses is rejected at once, 200 or 400 alike."""
    async with FakeTrackingAPI(single_route_error_status=status) as api:
        api.reject_commands(flagged, error="Invalid customer id")
        async with client_for(api) as client:
            if kind == "event":
                good = client.track_nowait(IDS, "purchase", {"n": 1})
                await client.flush()
                bad = client.track_nowait(IDS, "purchase", {"n": 2, "reject": True})
            else:
                good = client.update_customer_nowait(IDS, {"tier": "gold"})
                await client.flush()
                bad = client.update_customer_nowait(IDS, {"tier": "x", "reject": True})
            failure = await failure_of(bad)
        route = "customers/events" if kind == "event" else "customers"
        assert [(r.route, r.status) for r in api.requests] == [
            (route, 200),
            (route, status),
        ]
        assert good.delivered()
        assert failure.reason == "rejected"
        assert failure.status == status
        assert failure.errors == ("Invalid customer id",)
        assert isinstance(failure.error, BadRequest)
        assert failure.attempts == 1
        if kind == "event":
            assert stored_numbers(api) == [1]
        else:
            assert api.customer(IDS) == {"tier": "gold"}


async def test_a_rate_limited_failure_reports_the_typed_error(
    fake_tracking_api: FakeTrackingAPI,
) -> None:
    """When 429s outlast the retries, the failure keeps RateLimited and its Retry-After."""
    api = fake_tracking_api
    api.fail_next(2, status=429, retry_after="0")
    retry = Retry(attempts=2, timeout=10.0, wait_initial=0.0, max_retry_after=0.0)
    async with client_for(api, retry=retry) as client:
        failure = await failure_of(client.track_nowait(IDS, "purchase", {"n": 1}))
    assert failure.reason == "gave_up"
    assert isinstance(failure.error, RateLimited)
    assert failure.error.retry_after == 0.0
    assert failure.status == 429
    assert api.event_count == 0
