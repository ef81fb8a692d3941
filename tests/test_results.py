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
    MAX_ERRORS,
    MAX_KEPT_BODY,
    MAX_TEXT,
    BatchAnswer,
    CommandResult,
    batch_answer,
    body_errors,
    error_for,
    errors_of,
    match_results,
    read_single,
    refusal_error,
    request_id,
    system_time_of,
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
    "body",
    [
        b'{"success": true}',
        b'{"errors": [], "success": true}',
        b'{"success": true, "note": "false alarm"}',
        b' {"success":true}\n',
    ],
)
def test_read_single_accepted(body: bytes) -> None:
    """A JSON object with "success": true is the only acceptance."""
    assert read_single(response(200, body)) is None


@pytest.mark.parametrize(
    ("body", "errors"),
    [
        (
            b'{"success":false,"errors":["Invalid customer_id"]}',
            ("Invalid customer_id",),
        ),
        (b'{"success": false}', ()),
        (b'{"success": false, "error": "no"}', ("no",)),
    ],
)
def test_read_single_refused(body: bytes, errors: tuple[str, ...]) -> None:
    """ "success": false is the API's refusal: a BadRequest with its errors."""
    error = read_single(response(200, body, **{"x-request-id": "r-1"}))
    assert type(error) is BadRequest
    assert error.errors == errors
    assert error.status == 200
    assert error.request_id == "r-1"
    assert error.body == body


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (b"", "not a readable JSON object, empty body"),
        (b"<html><body>502 Bad Gateway</body></html>", "not a readable JSON object"),
        (b'{"success": tr', "not a readable JSON object"),
        (b"ok", "not a readable JSON object"),
        (b"false", "not a readable JSON object"),
        (b"[false]", "not a readable JSON object"),
        (b"null", "not a readable JSON object"),
        (b'{"success": "false"}', 'no boolean "success"'),
        (b'{"success": "true"}', 'no boolean "success"'),
        (b'{"success": 1}', 'no boolean "success"'),
        (b'{"errors": ["Invalid customer_id"]}', 'no boolean "success"'),
        (b"{}", 'no boolean "success"'),
    ],
)
def test_read_single_unknown(body: bytes, why: str) -> None:
    """Anything else is unknown: a plain APIError (retried, never a refusal)
    whose message says why and quotes the start of the body."""
    error = read_single(response(200, body))
    assert type(error) is APIError
    assert error.status == 200
    assert error.errors == ()
    assert why in str(error)
    assert str(error).startswith("HTTP 200: not an answer of the API (")
    if body:
        assert repr(" ".join(body.decode().split())) in str(error)


def test_read_single_unknown_quotes_only_the_start_of_the_body() -> None:
    """An HTML page is quoted on one line, cut at 120 bytes."""
    page = b"<html>\n  <title>Proxy\n error</title>" + b"." * 5000
    message = str(read_single(response(200, page)))
    assert "<html> <title>Proxy error</title>" in message
    assert len(message) < 250


def test_read_single_cut_answer_is_unknown() -> None:
    """An answer cut at the transport's cap is unknown, even if the part read
    happens to be a valid success."""
    cut = Response(200, b'{"success": true}   ', {}, truncated=True)
    error = read_single(cut)
    assert type(error) is APIError
    assert "over the size cap" in str(error)


# -- system/time ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b'{"success": true, "time": 1533663283.8943756}', 1533663283.8943756),
        (b'{"errors": [], "success": true, "time": 1700000000}', 1700000000.0),
    ],
)
def test_system_time_of_reads_the_time(body: bytes, expected: float) -> None:
    """The documented answer gives its time as a float."""
    value = system_time_of(response(200, body))
    assert value == expected
    assert type(value) is float


@pytest.mark.parametrize(
    "body",
    [
        b'{"success": true, "time": NaN}',
        b'{"success": true, "time": 1e400}',
        b'{"success": true, "time": true}',
        b'{"success": true, "time": 1}',
        b'{"success": true, "time": 1.0}',
        b'{"success": true, "time": -1700000000}',
        b'{"success": true, "time": 99999999999}',
        b'{"success": true, "time": "1700000000"}',
        b'{"success": true, "time": null}',
        b'{"success": true}',
        b'{"time": 1700000000.5}',
        b'{"success": "true", "time": 1700000000.5}',
        b"<html>hi</html>",
        b"",
        b"[1700000000.5]",
    ],
)
def test_system_time_of_refuses_nonsense(body: bytes) -> None:
    """NaN, infinity, booleans, strings, implausible times, a missing "success"
    or an unreadable body raise APIError, never a number."""
    with pytest.raises(APIError) as info:
        system_time_of(response(200, body))
    assert type(info.value) is APIError
    assert info.value.status == 200


def test_system_time_of_refusal_is_a_bad_request() -> None:
    """ "success": false raises BadRequest with the API's errors."""
    body = b'{"success": false, "errors": ["Could not authenticate"], "time": 1.7e9}'
    with pytest.raises(BadRequest) as info:
        system_time_of(response(200, body))
    assert info.value.errors == ("Could not authenticate",)


@pytest.mark.parametrize(("status", "cls"), [(401, AuthError), (503, ServerError)])
def test_system_time_of_error_status(status: int, cls: type[APIError]) -> None:
    """An error status raises its typed error."""
    with pytest.raises(cls):
        system_time_of(response(status, {"success": False, "error": "x"}))


def test_system_time_of_cut_answer() -> None:
    """An answer cut at the cap is not read."""
    cut = Response(200, b'{"success": true, "time": 1700000000.5}', {}, truncated=True)
    with pytest.raises(APIError):
        system_time_of(cut)


# -- what errors keep ----------------------------------------------------------------


@pytest.mark.parametrize("status", [200, 400, 429, 500])
def test_errors_keep_a_few_kilobytes_of_the_body(status: int) -> None:
    """A huge error body is not kept whole on the error: MAX_KEPT_BODY bytes."""
    body = b'{"success": false, "errors": ["' + b"e" * 500_000 + b'"]}'
    error = (
        error_for(response(status, body))
        if status != 200
        else refusal_error(response(status, body))
    )
    assert error.body == body[:MAX_KEPT_BODY]
    assert len(error.errors) == 1
    assert len(error.errors[0]) == MAX_TEXT
    assert error.errors[0].endswith("…")
    assert len(str(error)) < MAX_TEXT + 50


def test_unknown_answer_keeps_a_few_kilobytes_of_the_body() -> None:
    """An unknown answer keeps MAX_KEPT_BODY bytes of its body."""
    body = b"<html>" + b"x" * 100_000
    error = read_single(response(200, body))
    assert error is not None
    assert error.body == body[:MAX_KEPT_BODY]


def test_many_error_strings_are_capped() -> None:
    """At most MAX_ERRORS strings are read from one body."""
    body = {"success": False, "errors": [f"e{index}" for index in range(10_000)]}
    assert body_errors(msgspec.json.encode(body)) == [
        f"e{index}" for index in range(MAX_ERRORS)
    ]


def test_deeply_nested_errors_do_not_blow_the_stack() -> None:
    """A deeply nested error body is read to a bounded depth, never raising."""
    nested: Any = "deep"
    for _ in range(5000):
        nested = [nested]
    data = {"errors": nested}
    assert errors_of(data) == []
    assert errors_of({"errors": [[["shallow"]]]}) == ["shallow"]


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
    """Unreadable result entries keep their place but have no "success" (so they
    count as missing); readable ones are kept."""
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
    unreadable = CommandResult()
    assert answer.results == [
        CommandResult(success=True, command_id="0"),
        unreadable,
        unreadable,
        unreadable,
        CommandResult(success=False, command_id="4", errors=["bad"]),
        CommandResult(success=True, time="noon"),
    ]
    assert match_results(answer.results, 6) == [
        answer.results[0],
        None,
        None,
        None,
        answer.results[4],
        answer.results[5],
    ]


@pytest.mark.parametrize(
    "entry",
    [
        {"success": "true", "command_id": "0"},
        {"success": "false", "command_id": "0", "errors": ["x"]},
        {"success": None, "command_id": "0"},
        {"command_id": "0"},
        {"command_id": "0", "errors": ["At least one id"]},
    ],
)
def test_unreadable_result_counts_as_missing(entry: dict[str, Any]) -> None:
    """A result whose "success" is not a boolean is not a refusal: the command
    is left without a result, so it is retried."""
    body = {"success": True, "results": [entry, {"success": True, "command_id": "1"}]}
    answer = batch_answer(response(200, body))
    assert answer is not None
    assert answer.results is not None
    matched = match_results(answer.results, 2)
    assert matched[0] is None
    assert matched[1] is not None
    assert matched[1].success is True


def test_batch_answer_cut_at_the_cap_is_none() -> None:
    """A batch answer cut by the transport is no answer, even if it parses."""
    body = msgspec.json.encode({"success": True, "results": [{"success": True}]})
    assert batch_answer(Response(200, body + b"   ", {}, truncated=True)) is None
    assert batch_answer(Response(200, body, {})) is not None


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
