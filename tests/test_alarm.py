"""A failing API is loud within seconds: the first failed request is a WARNING
at once, naming the host and the kind of failure; later ones are counted; the
close summary names the last error of each reason."""

from __future__ import annotations

import asyncio
import logging
import socket
import time

import pytest

from trackasync import Client, PrivateKey, Retry, SyncClient
from trackasync._alarm import Alarm, close_details
from trackasync._exceptions import RateLimited, TransportError

from .raw_server import RawServer, silent

IDS = {"registered": "ann@example.com"}
AUTH = PrivateKey("key-id", "secret-value-1")
# Retries far apart: the warning must come from the first failure, not a give-up.
SLOW_RETRY = Retry(attempts=10, wait_initial=30.0, wait_max=30.0, timeout=300.0)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def retry_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING and "will be retried" in r.getMessage()
    ]


async def wait_for(condition: object, seconds: float = 20.0) -> None:
    """Poll ``condition()`` (a generous bound: the point is "not 37 s")."""
    deadline = time.monotonic() + seconds
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "not within the bound"
        await asyncio.sleep(0.01)


async def test_connection_refused_warns_at_once_and_close_names_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Connection refused: a WARNING naming host, port and the refusal comes
    with the first failure, long before the command gives up; the close
    summary says what the undelivered commands were failing with."""
    caplog.set_level(logging.WARNING, logger="trackasync")
    port = closed_port()
    client = Client(
        f"http://127.0.0.1:{port}",
        "project",
        auth=AUTH,
        linger=0.0,
        rate_limit=None,
        retry=SLOW_RETRY,
    )
    async with client:
        for _ in range(3):
            client.track_nowait(IDS, "view")
        await wait_for(lambda: retry_warnings(caplog))
        # Nothing gave up yet: the next retry is up to 30 s away.
        assert client.stats().failed["gave_up"] == 0
        warning = retry_warnings(caplog)[0]
        assert warning.startswith("trackasync: 1 request(s) failed")
        assert f"connection refused by 127.0.0.1:{port}" in warning
        await client.aclose(timeout=0.2)
    summary = [r.getMessage() for r in caplog.records if "closed:" in r.getMessage()]
    assert summary == [
        "trackasync: closed: 0 delivered, 3 not delivered (3 closed); last errors: "
        f"closed: last failed request: connection refused by 127.0.0.1:{port}"
    ]


async def test_a_server_that_never_answers_warns_after_the_timeout(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """No answer within the request timeout: one WARNING saying so, at once."""
    caplog.set_level(logging.WARNING, logger="trackasync")
    async with RawServer(silent(60.0)) as server:
        client = Client(
            server.base_url,
            "project",
            auth=AUTH,
            linger=0.0,
            rate_limit=None,
            retry=SLOW_RETRY,
            timeout=0.3,
        )
        async with client:
            client.track_nowait(IDS, "view")
            await wait_for(lambda: retry_warnings(caplog))
            await client.aclose(timeout=0.1)
    assert "no answer from 127.0.0.1 within 0.3 s" in retry_warnings(caplog)[0]


async def test_repeated_failures_are_one_line_with_a_count(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Many failures in a row: the first is logged, the rest are counted into
    the next line, not one line each."""
    caplog.set_level(logging.WARNING, logger="trackasync")
    port = closed_port()
    client = Client(
        f"http://127.0.0.1:{port}",
        "project",
        auth=AUTH,
        linger=0.0,
        rate_limit=None,
        retry=Retry(attempts=6, wait_initial=0.0, wait_max=0.0),
    )
    async with client:
        delivery = client.track_nowait(IDS, "view")
        await client.flush()
        assert delivery.done()
        # Five failures were retried (the sixth gave up): one line so far.
        assert len(retry_warnings(caplog)) == 1


def test_alarm_counts_between_lines_and_skips_429() -> None:
    """The alarm logs the first failure, counts the next, and leaves 429 out."""
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    logger = logging.getLogger("trackasync")
    handler = Keep(logging.WARNING)
    logger.addHandler(handler)
    old = logger.level
    logger.setLevel(logging.WARNING)
    try:
        alarm = Alarm(interval=3600.0)
        alarm.failed(TransportError("connection refused by h:1"), 3)
        alarm.failed(TransportError("connection refused by h:1"), 2)
        alarm.failed(RateLimited("HTTP 429: slow down"), 2)
        assert [r.getMessage() for r in records] == [
            "trackasync: 1 request(s) failed and will be retried since the last "
            "warning; last: connection refused by h:1 (3 command(s) in it)"
        ]
        alarm.flush()
        assert len(records) == 2
        assert records[1].args[0] == 1  # type: ignore[index]
        assert alarm.last == "HTTP 429: slow down"
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old)


def test_close_details_names_each_reason() -> None:
    """The summary tail: one entry per reason that failed, the alarm's last
    failure standing for "closed"."""

    class Sender:
        alarm = Alarm()

    Sender.alarm.last = "DNS lookup failed for api.example.test"
    failed = {"rejected": 1, "gave_up": 0, "dropped": 0, "closed": 2}
    assert close_details(failed, {"rejected": "bad event"}, Sender()) == (
        "; last errors: rejected: bad event; closed: last failed request: DNS "
        "lookup failed for api.example.test"
    )
    assert close_details(failed, {}, None) == ""


def test_sync_client_warns_within_seconds(caplog: pytest.LogCaptureFixture) -> None:
    """SyncClient, API down: the WARNING comes at the first failure, not after
    a minute."""
    caplog.set_level(logging.WARNING, logger="trackasync")
    port = closed_port()
    client = SyncClient(
        f"http://127.0.0.1:{port}",
        "project",
        auth=AUTH,
        linger=0.0,
        rate_limit=None,
        retry=SLOW_RETRY,
    )
    try:
        client.track(IDS, "view")
        deadline = time.monotonic() + 20.0
        while not retry_warnings(caplog):
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert f"connection refused by 127.0.0.1:{port}" in retry_warnings(caplog)[0]
    finally:
        client.close(timeout=0.2)
