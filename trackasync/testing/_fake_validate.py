"""Per-command validation for the fake Tracking API.

The same checks run for the single routes and for each command of a batch. They
return every problem found, as the error strings of the command's result, or the
parsed command when there is none. The exact wording of most real error messages
is not documented; only the customer-id one is taken from the API's answers.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any, NamedTuple

__all__ = [
    "INVALID_ID_ERROR",
    "MAX_COMMAND_BYTES",
    "MAX_VALUE_BYTES",
    "CustomerCommand",
    "EventCommand",
    "parse_customer",
    "parse_event",
]

MAX_COMMAND_BYTES = 800_000
"""A command's ``data`` (or a single route's body) must be smaller than this."""

MAX_VALUE_BYTES = 16_000
"""Each property value, JSON-encoded, must be smaller than this."""

INVALID_ID_ERROR = "At least one valid id should be specified"

# A valid id value has a letter or digit (a word character other than "_", in
# any script), and is not one of the strings JavaScript callers produce from
# missing values. One regex keeps this check cheap: it runs for every id.
_match_valid_id = re.compile(
    r"(?!\s*(?:null|undefined)\s*\Z).*?[^\W_]", re.IGNORECASE | re.DOTALL
).match

Encode = Callable[[Any], bytes]


class EventCommand(NamedTuple):
    """A valid ``customers/events`` command."""

    customer_ids: dict[str, str]
    event_type: str
    timestamp: float | None
    properties: dict[str, Any]


class CustomerCommand(NamedTuple):
    """A valid ``customers`` command."""

    customer_ids: dict[str, str]
    properties: dict[str, Any]
    update_timestamp: float | None


def _customer_ids(data: dict[str, Any], errors: list[str]) -> dict[str, str]:
    ids = data.get("customer_ids")
    if isinstance(ids, dict) and ids:
        for value in ids.values():
            if not isinstance(value, str) or _match_valid_id(value) is None:
                break
        else:
            return ids
    errors.append(INVALID_ID_ERROR)
    return {}


def _optional_number(
    data: dict[str, Any], field: str, errors: list[str]
) -> float | None:
    value = data.get(field)
    # The common case first: decoded JSON floats are always finite.
    if value is None or type(value) is float:
        return value
    # bool is an int subclass, but `true` is not a timestamp.
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            if math.isfinite(value):
                return value
        except OverflowError:  # an integer too large for a float
            pass
    errors.append(f"{field} should be a number of UNIX seconds")
    return None


def _check_sizes(
    properties: dict[str, Any], size: int, encode: Encode, errors: list[str]
) -> None:
    if size < MAX_VALUE_BYTES:
        # No value can reach the limit when the whole command is smaller, so
        # the common case skips encoding each value a second time.
        return
    if size >= MAX_COMMAND_BYTES:
        errors.append(f"Message is too large: {size} bytes, the limit is under 800000")
    for name, value in properties.items():
        value_size = len(encode(value))
        if value_size >= MAX_VALUE_BYTES:
            errors.append(
                f"Property {name!r} is too large: {value_size} bytes, "
                "the limit is under 16000"
            )


def parse_event(data: object, size: int, encode: Encode) -> EventCommand | list[str]:
    """Check a ``customers/events`` body; ``size`` is its length as sent."""
    if not isinstance(data, dict):
        return ["data should be a JSON object"]
    errors: list[str] = []
    ids = _customer_ids(data, errors)
    event_type = data.get("event_type")
    if not isinstance(event_type, str) or not event_type.strip():
        errors.append("event_type should be a non-empty string")
        event_type = ""
    properties = data.get("properties")
    if properties is None:  # optional for events; old SDKs send null
        properties = {}
    elif not isinstance(properties, dict):
        errors.append("properties should be a JSON object")
        properties = {}
    timestamp = _optional_number(data, "timestamp", errors)
    _check_sizes(properties, size, encode, errors)
    if errors:
        return errors
    return EventCommand(ids, event_type, timestamp, properties)


def parse_customer(
    data: object, size: int, encode: Encode
) -> CustomerCommand | list[str]:
    """Check a ``customers`` body; ``size`` is its length as sent."""
    if not isinstance(data, dict):
        return ["data should be a JSON object"]
    errors: list[str] = []
    ids = _customer_ids(data, errors)
    properties = data.get("properties")
    if not isinstance(properties, dict) or not properties:
        errors.append("properties should be a non-empty JSON object")
        properties = {}
    update_timestamp = _optional_number(data, "update_timestamp", errors)
    _check_sizes(properties, size, encode, errors)
    if errors:
        return errors
    return CustomerCommand(ids, properties, update_timestamp)
