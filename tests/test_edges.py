"""The client's edges: base_url checks, 404s that say what was asked for, log
lines that name the library and cannot be forged, credentials with stray
spaces, batch results' ``error`` strings, RequestTimeout, the LICENSE."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

import pytest

from trackasync import (
    BadRequest,
    Client,
    ConfigError,
    DeliveryFailed,
    PrivateKey,
    PublicToken,
    Request,
    RequestTimeout,
    Response,
)
from trackasync._config import api_base
from trackasync._results import error_for
from trackasync.testing import FakeTrackingAPI, MockTransport

ROOT = Path(__file__).resolve().parent.parent
IDS = {"registered": "ann@example.com"}


@pytest.mark.parametrize(
    "base_url",
    [
        "https://api.exponea.com",
        "https://api.exponea.com/",
        "https://api.exponea.com/track/v2",
        "https://api.exponea.com/track/v2/",
        "https://api.exponea.com/track/v2/projects/proj-1",
        "https://api.exponea.com/track/v2/projects/proj-1/customers/events",
    ],
)
def test_base_url_with_the_route_prefix_is_normalised(base_url: str) -> None:
    """A base URL copied with /track/v2 (or this project's path) is cut back
    to the API's root, never doubled."""
    assert (
        api_base(base_url, "proj-1", False)
        == "https://api.exponea.com/track/v2/projects/proj-1"
    )


def test_gateway_path_prefix_is_kept() -> None:
    """A path before /track/v2 (a gateway's) stays."""
    assert (
        api_base("https://gw.example/bloomreach/track/v2", "p", False)
        == "https://gw.example/bloomreach/track/v2/projects/p"
    )


def test_base_url_naming_another_project_is_refused() -> None:
    """/track/v2/projects/<other> with a different project_token: refused,
    quoting neither token."""
    with pytest.raises(ConfigError) as info:
        api_base("https://api.exponea.com/track/v2/projects/other-1", "proj-1", False)
    assert "other-1" not in str(info.value)
    assert "proj-1" not in str(info.value)


@pytest.mark.parametrize(
    ("base_url", "words"),
    [
        ("https://user:pa55word-x@api.exponea.com", "user info"),
        ("https://pa55word-x@api.exponea.com", "user info"),
        ("https://api.exponea.com/?token=pa55word-x", "query"),
        ("https://api.exponea.com/#pa55word-x", "fragment"),
        ("pa55word-x", "http(s) URL"),
        ("ftp://api.exponea.com/pa55word-x", "http(s) URL"),
        ("https://api.exponea.com:pa55word-x", "not a valid URL"),
    ],
)
def test_base_url_with_user_info_query_or_fragment_is_refused_unquoted(
    base_url: str, words: str
) -> None:
    """Such a base URL is refused at construction, and the message does not
    quote it (it could hold a pasted secret)."""
    with pytest.raises(ConfigError) as info:
        Client(base_url, "proj-1", auth=PrivateKey("key", "secret-1"))
    assert words in str(info.value)
    assert "pa55word-x" not in str(info.value)


async def test_404_names_status_method_and_path_without_the_token() -> None:
    """A wrong base URL: the 404 says the status and the path requested, with
    the project token masked, and nothing of the credentials."""
    async with FakeTrackingAPI() as api:
        client = Client(
            api.base_url + "/wrong",
            api.project_token,
            auth=api.auth,
            linger=0.0,
            rate_limit=None,
        )
        async with client:
            delivery = client.track_nowait(IDS, "view")
            with pytest.raises(DeliveryFailed) as info:
                await delivery
    message = str(info.value)
    assert "HTTP 404 for POST /wrong/track/v2/projects/***/customers/events" in message
    assert "The requested URL was not found on the server" in message
    assert api.project_token not in message
    assert api.secret not in message


def test_405_names_the_path_and_other_statuses_do_not() -> None:
    """Only "wrong path" statuses carry the path."""
    request = Request("GET", "https://h/track/v2/projects/p/system/time", {})
    assert str(error_for(Response(405, b"", request=request))).startswith(
        "HTTP 405 for GET /track/v2/projects/***/system/time:"
    )
    assert str(error_for(Response(400, b"", request=request))) == (
        "HTTP 400: no error message"
    )


@pytest.mark.parametrize(
    "make",
    [
        lambda v: PrivateKey("key", v),
        lambda v: PrivateKey(v, "secret-1"),
        lambda v: PublicToken(v),
    ],
)
@pytest.mark.parametrize("value", ["   ", " s3cret-x", "s3cret-x ", "s3cret-x\u00a0"])
def test_credentials_with_surrounding_spaces_are_refused_unshown(
    make: object, value: str
) -> None:
    """Only spaces, or spaces around: ConfigError at once, not a 401 later, and
    the value is not shown."""
    with pytest.raises(ConfigError) as info:
        make(value)  # type: ignore[operator]
    assert "s3cret-x" not in str(info.value)


async def test_batch_result_error_string_is_kept() -> None:
    """A failed batch result's ``error`` string (besides ``errors``) is the
    failure's text, not "command failed"."""

    def answer(request: Request) -> Response:
        return Response(
            200,
            b'{"success": true, "results": ['
            b'{"success": false, "command_id": "0", "error": "Event type is banned"},'
            b'{"success": false, "command_id": "1", "errors": ["no ids"],'
            b' "error": "and more"}]}',
        )

    client = Client(
        "https://api.example.test",
        "p",
        auth=PrivateKey("key", "secret-1"),
        transport=MockTransport(answer),
        mode="batch",
        linger=60.0,
        rate_limit=None,
    )
    async with client:
        first = client.track_nowait(IDS, "view")
        second = client.track_nowait(IDS, "view")
        await client.flush()
    with pytest.raises(DeliveryFailed) as info:
        await first
    assert info.value.errors == ("Event type is banned",)
    assert isinstance(info.value.error, BadRequest)
    with pytest.raises(DeliveryFailed) as info:
        await second
    assert info.value.errors == ("no ids", "and more")


def test_request_timeout_is_a_timeout_error() -> None:
    """``except TimeoutError`` catches the library's request timeout."""
    error = RequestTimeout("no answer from h within 1 s")
    assert isinstance(error, TimeoutError)
    with pytest.raises(TimeoutError):
        raise error
    assert str(error) == "no answer from h within 1 s"


def test_license_is_mit_and_shipped_in_the_wheel() -> None:
    """LICENSE exists, is the MIT text with the project's copyright line, and
    the build configuration names it as the wheel's license file."""
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License")
    assert "Copyright (c) 2026 the trackasync authors" in text
    # Read as text: tomllib is 3.11+, and the suite runs on 3.10 too.
    lines = (ROOT / "pyproject.toml").read_text().splitlines()
    assert 'license = "MIT"' in lines
    assert 'license-files = ["LICENSE"]' in lines


# -- log lines ---------------------------------------------------------------------


def _rendered(records: list[logging.LogRecord]) -> str:
    """The records as a plain ``%(levelname)s %(message)s`` handler writes them."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    for record in records:
        handler.handle(record)
    return out.getvalue()


async def test_log_lines_name_the_library_and_cannot_be_forged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An API error string with CR, LF and an escape sequence: each log line
    starts with "trackasync: ", stays one line, and carries no escape byte."""
    caplog.set_level(logging.DEBUG, logger="trackasync")
    forged = "bad event\r\nCRITICAL root: database wiped\x1b[2J\x9b31m"

    def answer(request: Request) -> Response:
        return Response(
            200, json.dumps({"success": False, "errors": [forged]}).encode()
        )

    client = Client(
        "https://api.example.test",
        "p",
        auth=PrivateKey("key", "secret-1"),
        transport=MockTransport(answer),
        mode="single",
        linger=0.0,
        rate_limit=None,
    )
    async with client:
        delivery = client.track_nowait(IDS, "view")
        with pytest.raises(DeliveryFailed) as info:
            await delivery
    records = [r for r in caplog.records if r.name == "trackasync"]
    assert records
    text = _rendered(records)
    lines = text.splitlines()
    assert len(lines) == len(records)
    for line in lines:
        assert line.split(" ", 1)[1].startswith("trackasync: "), line
        assert not line.startswith("CRITICAL")
    assert "\x1b" not in text
    assert "\x9b" not in text
    assert "bad event\\r\\nCRITICAL root: database wiped\\x1b[2J\\x9b31m" in text
    # The error itself carries the escaped text too.
    assert "\n" not in str(info.value)


def test_log_filter_leaves_other_loggers_and_numbers_alone() -> None:
    """Only the library's logger is filtered; %d arguments stay numbers."""
    assert not logging.getLogger().filters
    assert not logging.getLogger("trackasync.other").filters
    record = logging.LogRecord(
        "trackasync", logging.WARNING, __file__, 1, "%d lost: %s", (3, "a\nb"), None
    )
    assert logging.getLogger("trackasync").filter(record)
    assert record.getMessage() == "trackasync: 3 lost: a\\nb"
    assert record.args == (3, "a\\nb")


def test_sync_client_system_time_timeout_is_raised_not_waited_on() -> None:
    """A RequestTimeout is a TimeoutError: SyncClient must raise it, not take it
    for its own wait running out and wait again."""
    import socket
    import time

    from trackasync import SyncClient

    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)  # connections are accepted by the kernel, never answered
        port = listener.getsockname()[1]
        with SyncClient(
            f"http://127.0.0.1:{port}",
            "p",
            auth=PrivateKey("key", "secret-1"),
            timeout=0.3,
            rate_limit=None,
        ) as client:
            start = time.monotonic()
            with pytest.raises(RequestTimeout):
                client.system_time()
            assert time.monotonic() - start < 20.0
