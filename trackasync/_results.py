"""Reading the API's answers: error envelopes, typed errors, per-command results.

The API answers in several shapes (``{"errors": [...]}``, ``{"message": ...}``,
``{"error": ...}``, nested ``{"errors": {"_global": [...]}}``, error objects, even
plain text). Everything here is lenient: it never raises on a body it does not
understand, it only extracts what it can.
"""

from __future__ import annotations

from typing import Any

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
from ._transport import Response

_MAX_TEXT = 500


class CommandResult(msgspec.Struct):
    """One entry of a batch answer's ``results``."""

    success: bool = False
    command_id: Any = None
    errors: Any = None
    time: float | None = None


class BatchAnswer(msgspec.Struct):
    """A batch answer, typed for the common case."""

    success: Any = None
    results: list[CommandResult] | None = None
    errors: Any = None
    message: Any = None
    error: Any = None


_decode_any = msgspec.json.Decoder().decode
_decode_batch = msgspec.json.Decoder(BatchAnswer).decode


def request_id(response: Response) -> str | None:
    """The API's ``x-request-id`` for this answer, if it sent one."""
    return response.header("x-request-id")


def errors_of(data: Any) -> list[str]:
    """Every error string in a decoded body, whatever its shape."""
    out: list[str] = []
    if isinstance(data, dict):
        for key in ("errors", "error", "message", "_global", "description"):
            if key in data:
                out.extend(_flatten(data[key]))
    else:
        out.extend(_flatten(data))
    return out


def _flatten(value: Any) -> list[str]:
    if value is None or value is True or value is False:
        return []
    if isinstance(value, str):
        return [value] if value else []
    if isinstance(value, list):
        return [text for item in value for text in _flatten(item)]
    if isinstance(value, dict):
        if "message" in value or "description" in value:
            text = value.get("message") or value.get("description")
            return _flatten(text)
        return [text for item in value.values() for text in _flatten(item)]
    return [str(value)]


def body_errors(body: bytes) -> list[str]:
    """Error strings from a raw body: JSON of any known shape, or plain text."""
    if not body:
        return []
    try:
        data = _decode_any(body)
    except msgspec.DecodeError:
        text = body[:_MAX_TEXT].decode("utf-8", "replace").strip()
        return [text] if text else []
    return errors_of(data)


def error_for(response: Response) -> RequestError:
    """The typed error for an answer that is not a plain success."""
    status = response.status
    errors = body_errors(response.body)
    rid = request_id(response)
    detail = "; ".join(errors) if errors else "no error message"
    message = f"HTTP {status}: {detail}"
    cls: type[APIError]
    if status == 429:
        return RateLimited(
            message,
            status=status,
            request_id=rid,
            errors=errors,
            body=response.body,
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
        message, status=status, request_id=rid, errors=errors, body=response.body
    )


def single_accepted(response: Response) -> bool:
    """Whether a 200 answer on a single route accepted the command.

    Only an explicit ``"success": false`` counts as a refusal; the API answers
    JSON, but a 200 without a readable body still means it was taken.
    """
    body = response.body
    if b"false" not in body:  # fast path: {"success": true}
        return True
    try:
        data = _decode_any(body)
    except msgspec.DecodeError:
        return True
    return not (isinstance(data, dict) and data.get("success") is False)


def batch_answer(response: Response) -> BatchAnswer | None:
    """The batch answer, or ``None`` when the body is not one."""
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
                results.append(
                    CommandResult(success=False, errors=["unreadable result"])
                )
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
    id is paired by its own position. A command with no result gets ``None``.
    """
    matched: list[CommandResult | None] = [None] * count
    for position, result in enumerate(results):
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
