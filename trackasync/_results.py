"""Reading the API's answers: error envelopes, typed errors, per-command results.

The API answers in several shapes (``{"errors": [...]}``, ``{"message": ...}``,
``{"error": ...}``, nested ``{"errors": {"_global": [...]}}``, error objects, even
plain text). Reading error strings is lenient: it never raises on a body it does
not understand, it only extracts what it can. Reading a *success* is strict: only
an answer understood in full counts as one; anything else is "unknown", which
the sender retries (an unreadable answer is no proof that the API stored the
commands, and a resend is deduplicated if it did).

What is kept from a body on an error is capped (``MAX_KEPT_BODY`` bytes,
``MAX_ERRORS`` strings of at most ``MAX_TEXT`` characters): the API's error
strings are short, and an error may live long in a ``DeliveryFailed``.

Every text taken from an answer is scrubbed of the credentials its request
carried (an echoing proxy or gateway sends them back) and has its control
characters escaped, before it is cut to size: see ``_scrub``.
"""

from __future__ import annotations

import math
import re
from typing import Any
from urllib.parse import urlsplit

import msgspec

from ._config import MAX_BATCH_COMMANDS
from ._exceptions import (
    APIError,
    AuthError,
    BadRequest,
    RateLimited,
    RequestError,
    ServerError,
)
from ._retry import parse_retry_after
from ._scrub import NOTHING, Scrubber, printable
from ._transport import Response

#: Characters kept of one error string.
MAX_TEXT = 500
#: Error strings kept from one body.
MAX_ERRORS = 20
#: Bytes of a body kept on an error (``APIError.body``).
MAX_KEPT_BODY = 4096

# system/time answers outside 2000-01-01 .. 2100-01-01 are nonsense, not a clock.
_MIN_TIME = 946_684_800.0
_MAX_TIME = 4_102_444_800.0


class CommandResult(msgspec.Struct):
    """One entry of a batch answer's ``results``.

    ``success`` is ``None`` when the entry could not be read (no ``success``, or
    not a boolean): such an entry says nothing and counts as missing.
    """

    success: bool | None = None
    command_id: Any = None
    errors: Any = None
    #: Some entries say why in one string rather than a list (the API's own
    #: description of the batch route allows both).
    error: Any = None
    # Unused by the sender: an odd value must not make the entry unreadable.
    time: Any = None


#: Stands in for a result entry that could not be read at all.
_UNREADABLE = CommandResult()


class _SingleAnswer(msgspec.Struct):
    """A single route's answer (also ``system/time``'s), any field any type."""

    success: Any = None
    errors: Any = None
    message: Any = None
    error: Any = None
    time: Any = None


class BatchAnswer(msgspec.Struct):
    """A batch answer, typed for the common case."""

    success: Any = None
    results: list[CommandResult] | None = None
    errors: Any = None
    message: Any = None
    error: Any = None


_decode_any = msgspec.json.Decoder().decode
_decode_batch = msgspec.json.Decoder(BatchAnswer).decode
_decode_single = msgspec.json.Decoder(_SingleAnswer).decode


def request_id(response: Response) -> str | None:
    """The API's ``x-request-id`` for this answer, if it sent one."""
    return response.header("x-request-id")


def scrubber(response: Response) -> Scrubber:
    """The scrubber for texts taken from ``response``: the credentials its
    transport said it sent, or those in the headers of its request."""
    if response.secrets:
        return Scrubber(response.secrets)
    request = response.request
    if request is None:
        return NOTHING
    return Scrubber.for_headers(request.headers)


def errors_of(data: Any, scrub: Scrubber = NOTHING) -> list[str]:
    """Every error string in a decoded body, whatever its shape (capped),
    scrubbed and made printable."""
    out: list[str] = []
    if isinstance(data, dict):
        for key in ("errors", "error", "message", "_global", "description"):
            if key in data:
                _collect(data[key], out, 0)
    else:
        _collect(data, out, 0)
    return [_cut(printable(scrub.text(text))) for text in out]


def result_errors(result: CommandResult, response: Response) -> list[str]:
    """The error strings of one failed batch result (``errors`` and ``error``)."""
    return errors_of(
        {"errors": result.errors, "error": result.error}, scrubber(response)
    )


def _collect(value: Any, out: list[str], depth: int) -> None:
    # Bounded in count and depth: a hostile body must not cost more than a
    # few kilobytes, nor blow the stack.
    if len(out) >= MAX_ERRORS or depth > 16 or value is None:
        return
    if value is True or value is False:
        return
    if isinstance(value, str):
        if value:
            out.append(_clip(value))
    elif isinstance(value, list):
        for item in value:
            _collect(item, out, depth + 1)
    elif isinstance(value, dict):
        if "message" in value or "description" in value:
            _collect(value.get("message") or value.get("description"), out, depth + 1)
        else:
            for item in value.values():
                _collect(item, out, depth + 1)
    else:
        out.append(_clip(str(value)))


# Room kept past MAX_TEXT until scrubbing is done: a credential cut in half by
# the size cap would no longer be recognised.
_SCRUB_MARGIN = 1024


def _clip(text: str) -> str:
    return text[: MAX_TEXT + _SCRUB_MARGIN]


def _cut(text: str) -> str:
    return text if len(text) <= MAX_TEXT else text[: MAX_TEXT - 1] + "…"


def body_errors(body: bytes, scrub: Scrubber = NOTHING) -> list[str]:
    """Error strings from a raw body: JSON of any known shape, or plain text."""
    if not body:
        return []
    try:
        data = _decode_any(body)
    except msgspec.DecodeError:
        raw = body[: MAX_TEXT + _SCRUB_MARGIN].decode("utf-8", "replace")
        text = printable(scrub.text(raw).strip())[:MAX_TEXT]
        return [text] if text else []
    return errors_of(data, scrub)


def _kept(body: bytes, scrub: Scrubber = NOTHING) -> bytes:
    """What of a body an error keeps, scrubbed before it is cut."""
    return scrub.data(body[: MAX_KEPT_BODY + _SCRUB_MARGIN])[:MAX_KEPT_BODY]


# The project token is no credential, but the answer's text has no need of it.
_PROJECT = re.compile(r"(/projects/)[^/]+")


def _where(response: Response) -> str:
    """``" for POST /path"`` when the answer says the path is wrong, else ``""``.

    A 404 from a wrong ``base_url`` is only understood with the path that was
    asked for: the API's own text ("The requested URL was not found on the
    server") does not say it. Never the host's user info or query, never the
    project token.
    """
    request = response.request
    if request is None or response.status not in (404, 405):
        return ""
    path = _PROJECT.sub(r"\1***", urlsplit(request.url).path or "/")
    return f" for {request.method} {path}"


def error_for(response: Response) -> RequestError:
    """The typed error for an answer that is not a plain success."""
    status = response.status
    scrub = scrubber(response)
    errors = body_errors(response.body, scrub)
    rid = request_id(response)
    detail = "; ".join(errors) if errors else "no error message"
    message = f"HTTP {status}{_where(response)}: {detail}"
    cls: type[APIError]
    if status == 429:
        return RateLimited(
            message,
            status=status,
            request_id=rid,
            errors=errors,
            body=_kept(response.body, scrub),
            retry_after=parse_retry_after(response.header("retry-after")),
        )
    if status in (401, 403):
        cls = AuthError
    elif status >= 500:
        cls = ServerError
    elif status == 408:
        cls = APIError
    else:
        cls = BadRequest
    return cls(
        message,
        status=status,
        request_id=rid,
        errors=errors,
        body=_kept(response.body, scrub),
    )


def refusal_error(response: Response) -> BadRequest:
    """The error for a 2xx answer that says ``"success": false``: the API's
    documented refusal, final."""
    scrub = scrubber(response)
    errors = body_errors(response.body, scrub)
    detail = "; ".join(errors) if errors else "no error message"
    return BadRequest(
        f"HTTP {response.status}: {detail}",
        status=response.status,
        request_id=request_id(response),
        errors=errors,
        body=_kept(response.body, scrub),
    )


def unknown_answer(response: Response, why: str) -> APIError:
    """The error for a 2xx answer that says neither yes nor no: retried.

    It is a plain ``APIError`` with the answer's status, so nothing treats it as
    a refusal; the message quotes the start of the body to help find the proxy
    or page that sent it.
    """
    scrub = scrubber(response)
    # Scrubbed before it is cut to 120 characters, so no credential is cut
    # into a piece that would no longer be recognised.
    text = scrub.text(response.body[: 120 + _SCRUB_MARGIN].decode("utf-8", "replace"))
    # One line, however the page was laid out; printable() for what split() leaves.
    snippet = printable(" ".join(text.split())[:120])
    detail = f"{why}: {snippet!r}" if snippet else f"{why}, empty body"
    return APIError(
        f"HTTP {response.status}: not an answer of the API ({detail})",
        status=response.status,
        request_id=request_id(response),
        body=_kept(response.body, scrub),
    )


def read_single(response: Response) -> APIError | None:
    """Read a 2xx answer of a single route (``/customers/events``, ``/customers``).

    Three outcomes:

    - ``None``: accepted, the body is a JSON object with ``"success": true``;
    - a ``BadRequest``: refused, ``"success": false`` (with the API's errors): final;
    - any other ``APIError``: unknown (an HTML page, an empty or cut body,
      ``"success": "false"``, ``{"errors": [...]}`` without ``success``): retry.
    """
    if response.truncated:
        return unknown_answer(response, "the answer was over the size cap")
    try:
        answer = _decode_single(response.body)
    except msgspec.DecodeError:
        return unknown_answer(response, "not a readable JSON object")
    success = answer.success
    if success is True:
        return None
    if success is False:
        return refusal_error(response)
    return unknown_answer(response, 'no boolean "success"')


def system_time_of(response: Response) -> float:
    """The API's clock from a ``system/time`` answer, in UNIX seconds.

    Raises the typed error for an error status, ``BadRequest`` for
    ``"success": false``, and ``APIError`` for any answer that is not
    ``"success": true`` with a finite number of seconds between 2000 and 2100.
    """
    if response.status != 200:
        raise error_for(response)
    if response.truncated:
        raise unknown_answer(response, "the answer was over the size cap")
    try:
        answer = _decode_single(response.body)
    except msgspec.DecodeError:
        raise unknown_answer(response, "not a readable JSON object") from None
    if answer.success is False:
        raise refusal_error(response)
    if answer.success is not True:
        raise unknown_answer(response, 'no boolean "success"')
    seconds = answer.time
    # bool is an int: "time": true must not read as 1.0.
    if (
        seconds.__class__ not in (int, float)
        or not math.isfinite(seconds)
        or not _MIN_TIME <= seconds <= _MAX_TIME
    ):
        raise unknown_answer(response, '"time" is not a plausible UNIX time')
    return float(seconds)


def batch_answer(response: Response) -> BatchAnswer | None:
    """The batch answer, or ``None`` when the body is not one (or was cut)."""
    if response.truncated:
        return None
    try:
        return _decode_batch(response.body)
    except msgspec.DecodeError:
        pass
    # A shape the typed decoder refused (say, odd "results" entries): read the
    # parts we can, entry by entry.
    try:
        data = _decode_any(response.body)
    except msgspec.DecodeError:
        return None
    if not isinstance(data, dict):
        return None
    raw_results = data.get("results")
    results: list[CommandResult] | None = None
    if isinstance(raw_results, list):
        results = []
        for item in raw_results:
            try:
                results.append(msgspec.convert(item, CommandResult))
            except msgspec.ValidationError:
                # Kept in place (positions matter) but unread: counts as missing.
                results.append(_UNREADABLE)
    return BatchAnswer(
        success=data.get("success"),
        results=results,
        errors=data.get("errors"),
        message=data.get("message"),
        error=data.get("error"),
    )


# The ids the client sends, by position; an echo equal to its own position's id
# needs no parsing.
_POSITION_IDS = tuple(str(index) for index in range(MAX_BATCH_COMMANDS))


def match_results(
    results: list[CommandResult], count: int
) -> list[CommandResult | None]:
    """Pair results with the ``count`` commands sent, by ``command_id`` first.

    Commands are sent with their position as ``command_id``; a result without an
    id is paired by its own position. A command with no result gets ``None``, and
    so does one whose result has no boolean ``success``: it is not understood, so
    it is retried rather than taken for a refusal. Every result returned has
    ``success`` True or False.
    """
    matched: list[CommandResult | None] = [None] * count
    for position, result in enumerate(results):
        if result.success is None:
            continue
        index = position
        command_id = result.command_id
        if position < count and command_id == _POSITION_IDS[position]:
            pass  # the common case: results in order, ids echoed as sent
        elif command_id is not None:
            # Only the ids the client sends ("0", "1", ...) or their int echo:
            # int() would also take 1.5, True, " 1" or "1_0" for an id.
            if command_id.__class__ is int:
                index = command_id
            elif (
                command_id.__class__ is str
                and command_id.isascii()
                and command_id.isdigit()
            ):
                index = int(command_id)
            else:
                continue
        if 0 <= index < count and matched[index] is None:
            matched[index] = result
    return matched


# -- recognising an all-success batch answer without reading it ----------------------
#
# Nearly every batch answer says that every command succeeded. Decoding its 50
# results into objects and matching them one by one costs more than the rest of
# the request's bookkeeping, so such an answer is recognised by its text: the
# ``results`` array is taken as raw bytes (msgspec still checks the whole body is
# valid JSON and keeps the last of duplicate keys, as the full decode does) and
# compared with the exact text of ``count`` successes echoing the ids the client
# sent. Any other spelling, order, extra field or failure falls back to the full
# parse, so this can only ever say "yes" where the full parse would accept every
# command.


class _RawBatchAnswer(msgspec.Struct):
    results: msgspec.Raw = msgspec.Raw(b"")
    success: Any = None


_decode_raw_batch = msgspec.json.Decoder(_RawBatchAnswer).decode

# The spellings seen from JSON encoders: compact, and with ``", "``/``": "``
# (Python's ``json.dumps``), each with ``success`` or ``command_id`` first.
_SUCCESS_SPELLINGS = (
    ('{"success":true,"command_id":"%d"}', ","),
    ('{"command_id":"%d","success":true}', ","),
    ('{"success": true, "command_id": "%d"}', ", "),
    ('{"command_id": "%d", "success": true}', ", "),
)
_all_success_texts: dict[int, tuple[msgspec.Raw, ...]] = {}


def _success_texts(count: int) -> tuple[msgspec.Raw, ...]:
    texts = _all_success_texts.get(count)
    if texts is None:
        texts = tuple(
            msgspec.Raw(
                ("[" + separator.join(item % i for i in range(count)) + "]").encode()
            )
            for item, separator in _SUCCESS_SPELLINGS
        )
        _all_success_texts[count] = texts
    return texts


def batch_all_accepted(body: bytes, count: int) -> bool:
    """Whether a 200 batch ``body`` says that all ``count`` commands succeeded.

    True only for a JSON object with ``"success": true`` whose ``results`` is
    exactly ``count`` results of ``"success": true`` echoing the ids
    ``"0"`` .. ``str(count - 1)`` in order, in one of a few common spellings. False
    means "not recognised", not "failed": read the answer with ``batch_answer``
    and ``match_results`` then.
    """
    if not 1 <= count <= MAX_BATCH_COMMANDS:
        return False
    try:
        answer = _decode_raw_batch(body)
    except msgspec.DecodeError:
        return False
    if answer.success is not True:
        return False
    return answer.results in _success_texts(count)
