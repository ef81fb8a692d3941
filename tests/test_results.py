"""Tests for ``trackasync._results``: error envelopes, typed errors, batch results."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from trackasync._exceptions import (
    APIError,
    AuthError,
    BadRequest,
    RateLimited,
    ServerError,
)
from trackasync._results import (
    BatchAnswer,
    CommandResult,
    batch_answer,
    body_errors,
    error_for,
    errors_of,
    match_results,
    request_id,
    single_accepted,
)
from trackasync._transport import Response


def response(status: int, body: Any = b"", **headers: str) -> Response:
    """A Response whose body is ``body`` (bytes as is, anything else as JSON)."""
    raw = body if isinstance(body, bytes) else msgspec.json.encode(body)
    return Response(status=status, body=raw, headers=headers)


# -- error envelopes -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            {"success": False, "errors": ["At least one valid id should be specified"]},
            ["At least one valid id should be specified"],
        ),
        ({"success": False, "errors": ["a", "b"]}, ["a", "b"]),
        ({"success": False, "message": "No commands"}, ["No commands"]),
        ({"success": False, "error": "Invalid project id"}, ["Invalid project id"]),
        ({"errors": {"_global": ["Not authorized"]}}, ["Not authorized"]),
        (
            {
                "errors": [
                    {"code": 404, "description": "Not found", "message": "No such"},
                    {"code": 500, "description": "Broken"},
                ],
                "success": False,
            },
            ["No such", "Broken"],
        ),
        ({"errors": {"code": 404, "description": "Not Found"}}, ["Not Found"]),
        ({"errors": [404, "x"]}, ["404", "x"]),
        ({"success": False, "errors": []}, []),
        ({"success": False, "message": None, "errors": [None, "", True]}, []),
        ({"success": True}, []),
        ("plain JSON string", ["plain JSON string"]),
        (["a", ["b"]], ["a", "b"]),
        (None, []),
    ],
)
def test_error_envelopes_are_flattened(body: Any, expected: list[str]) -> None:
    """Every documented error shape yields its error strings, in order."""
    raw = msgspec.json.encode(body)
    assert body_errors(raw) == expected
    assert errors_of(msgspec.json.decode(raw)) == expected


def test_non_json_body_is_kept_as_text() -> None:
    """A plain-text body becomes one error string, trimmed."""
    assert body_errors(b"  no permission to do that\n") == ["no permission to do that"]
    assert body_errors(b"<html>BadRequest</html>") == ["<html>BadRequest</html>"]


def test_long_non_json_body_is_cut() -> None:
    """Plain-text bodies are cut to 500 characters."""
    assert body_errors(b"x" * 2000) == ["x" * 500]


def test_non_utf8_body_is_replaced_not_raised() -> None:
    """Undecodable bytes are replaced, never raised."""
    assert body_errors(b"\xff\xfe oops") == ["\ufffd\ufffd oops"]


@pytest.mark.parametrize("body", [b"", b"   ", b"\n"])
def test_empty_body_has_no_errors(body: bytes) -> None:
    """An empty or blank body gives no error strings."""
    assert body_errors(body) == []


# -- error_for -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (400, BadRequest),
        (404, BadRequest),
        (413, BadRequest),
        (200, BadRequest),
        (401, AuthError),
        (403, AuthError),
        (500, ServerError),
        (502, ServerError),
        (503, ServerError),
        (504, ServerError),
        (429, RateLimited),
    ],
)
def test_error_for_maps_status_to_class(status: int, cls: type[APIError]) -> None:
    """Each status gets its error class, with status, errors and body attached."""
    body = {"success": False, "errors": ["nope"]}
    error = error_for(response(status, body))
    assert type(error) is cls
    assert isinstance(error, APIError)
    assert error.status == status
    assert error.errors == ("nope",)
    assert error.body == msgspec.json.encode(body)
    assert str(error) == f"HTTP {status}: nope"


def test_error_for_408_is_a_plain_api_error() -> None:
    """408 is an APIError, neither permanent BadRequest nor ServerError."""
    error = error_for(response(408, b""))
    assert type(error) is APIError
    assert error.status == 408
    assert str(error) == "HTTP 408: no error message"


def test_error_for_joins_several_errors() -> None:
    """Several error strings are joined into the message."""
    error = error_for(response(400, {"errors": ["one", "two"]}))
    assert str(error) == "HTTP 400: one; two"


@pytest.mark.parametrize(
    ("header", "expected"), [("12", 12.0), ("0.5", 0.5), ("soon", None), (None, None)]
)
def test_rate_limited_reads_retry_after(
    header: str | None, expected: float | None
) -> None:
    """A 429's Retry-After header becomes RateLimited.retry_after."""
    headers = {} if header is None else {"Retry-After": header}
    error = error_for(response(429, {"success": False}, **headers))
    assert isinstance(error, RateLimited)
    assert error.retry_after == expected


def test_retry_after_is_ignored_outside_429() -> None:
    """Only a 429 carries retry_after; a 503 with the header is a ServerError."""
    error = error_for(response(503, b"", **{"Retry-After": "5"}))
    assert type(error) is ServerError
    assert not hasattr(error, "retry_after")


@pytest.mark.parametrize("name", ["x-request-id", "X-Request-Id", "X-REQUEST-ID"])
def test_request_id_is_read_case_insensitively(name: str) -> None:
    """x-request-id is found whatever the header's case, and put on errors."""
    answer = response(400, b"", **{name: "req-42"})
    assert request_id(answer) == "req-42"
    assert error_for(answer).request_id == "req-42"
    limited = error_for(response(429, b"", **{name: "req-43"}))
    assert limited.request_id == "req-43"


def test_request_id_missing_is_none() -> None:
    """Without the header there is no request id."""
    assert request_id(response(200, b"")) is None
    assert error_for(response(500, b"")).request_id is None


# -- single routes -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "accepted"),
    [
        (b'{"success": true}', True),
        (b'{"errors": [], "success": true}', True),
        (b'{"success":false,"errors":["Invalid customer_id"]}', False),
        (b'{"success": false}', False),
        (b'{"success": true, "note": "false alarm"}', True),
        (b"", True),
        (b"ok", True),
        (b"false", True),
        (b"[false]", True),
        (b'{"success": "false"}', True),
        (b"{not json but false", True),
    ],
)
def test_single_accepted(body: bytes, accepted: bool) -> None:
    """Only an explicit "success": false refuses a command on a single route."""
    assert single_accepted(response(200, body)) is accepted


# -- batch answers -------------------------------------------------------------------


def test_batch_answer_typed() -> None:
    """A well-formed batch answer decodes with every result field."""
    body = {
        "results": [
            {"success": True, "time": 1722458972.7475},
            {"success": True, "command_id": "1"},
            {"success": False, "command_id": "2", "errors": ["At least one id"]},
        ],
        "start_time": 1722458972.7475243,
        "end_time": 1722458972.7502902,
        "success": True,
    }
    answer = batch_answer(response(200, body))
    assert isinstance(answer, BatchAnswer)
    assert answer.success is True
    assert answer.results == [
        CommandResult(success=True, time=1722458972.7475),
        CommandResult(success=True, command_id="1"),
        CommandResult(success=False, command_id="2", errors=["At least one id"]),
    ]


def test_batch_answer_with_batch_level_error() -> None:
    """A batch-level failure keeps its message and has no results."""
    answer = batch_answer(response(400, {"success": False, "message": "No commands"}))
    assert answer is not None
    assert answer.success is False
    assert answer.results is None
    assert answer.message == "No commands"


def test_batch_answer_with_odd_results_reads_what_it_can() -> None:
    """Unreadable result entries become failures; readable ones are kept."""
    body = {
        "success": True,
        "results": [
            {"success": True, "command_id": "0"},
            "garbage",
            {"success": "yes", "command_id": "2"},
            None,
            {"success": False, "command_id": "4", "errors": ["bad"]},
            {"success": True, "time": "noon"},
        ],
        "error": "partial",
    }
    answer = batch_answer(response(200, body))
    assert answer is not None
    assert answer.success is True
    assert answer.error == "partial"
    assert answer.results is not None
    unreadable = CommandResult(success=False, errors=["unreadable result"])
    assert answer.results == [
        CommandResult(success=True, command_id="0"),
        unreadable,
        unreadable,
        unreadable,
        CommandResult(success=False, command_id="4", errors=["bad"]),
        unreadable,
    ]


def test_batch_answer_with_non_list_results() -> None:
    """A "results" that is not a list is read as no results at all."""
    answer = batch_answer(response(200, {"success": True, "results": {"0": 1}}))
    assert answer is not None
    assert answer.success is True
    assert answer.results is None


@pytest.mark.parametrize(
    "body", [b"", b"<html>oops</html>", b"[1, 2]", b'"ok"', b"null"]
)
def test_batch_answer_not_an_object_is_none(body: bytes) -> None:
    """A body that is not a JSON object is not a batch answer."""
    assert batch_answer(response(200, body)) is None


# -- matching results to commands ------------------------------------------------------


def ok(command_id: Any = None) -> CommandResult:
    return CommandResult(success=True, command_id=command_id)


def test_match_by_command_id_in_any_order() -> None:
    """Results carrying command ids are paired with those commands."""
    results = [ok("2"), ok("0"), ok("1")]
    assert match_results(results, 3) == [results[1], results[2], results[0]]


def test_match_int_command_ids() -> None:
    """Numeric command ids work as well as strings."""
    results = [ok(1), ok(0)]
    assert match_results(results, 2) == [results[1], results[0]]


def test_match_by_position_when_ids_are_missing() -> None:
    """Results without a command id are paired by their position."""
    results = [ok(), ok(), CommandResult(success=False, errors=["x"])]
    assert match_results(results, 3) == results


def test_missing_results_leave_none() -> None:
    """Commands with no result get None."""
    results = [ok("0"), ok("2")]
    assert match_results(results, 4) == [results[0], None, results[1], None]
    assert match_results([], 2) == [None, None]


def test_extra_results_are_ignored() -> None:
    """Results beyond the commands sent, or with out-of-range ids, are dropped."""
    results = [ok("0"), ok("1"), ok(), ok("7"), ok("-1")]
    assert match_results(results, 2) == [results[0], results[1]]


def test_duplicate_ids_keep_the_first() -> None:
    """A second result for the same command does not replace the first."""
    first = CommandResult(success=True, command_id="0")
    second = CommandResult(success=False, command_id="0", errors=["dup"])
    assert match_results([first, second], 2) == [first, None]


@pytest.mark.parametrize(
    "garbage",
    [
        "abc",
        "",
        "1.0",
        "0x1",
        "1_0",
        " 1",
        "+1",
        "\u0663",
        [0],
        {"id": 0},
        1.0,
        0.5,
        True,
        False,
    ],
)
def test_garbage_ids_match_nothing(garbage: Any) -> None:
    """A result whose command_id is not one the client sent is not paired."""
    results = [ok(garbage), ok(garbage)]
    assert match_results(results, 12) == [None] * 12


def test_positional_result_does_not_displace_an_id_match() -> None:
    """An id-less result at a position already claimed by id is dropped."""
    claimed = ok("1")
    positional = ok()
    assert match_results([claimed, positional], 2) == [None, claimed]
