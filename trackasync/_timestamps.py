"""Turning the timestamps callers give into UNIX seconds, rounded to microseconds.

Bloomreach reads ``timestamp`` and ``update_timestamp`` as UNIX seconds and keeps
six decimals; it does not detect milliseconds, and its ISO reader does not take
UTC offsets. So everything is converted here, at the call, to a float.
"""

from __future__ import annotations

import math
import re
import time
from datetime import datetime, timezone
from typing import Any

from ._exceptions import InvalidEvent

# Anything above this is surely milliseconds (1e11 s is the year 5138).
MAX_SECONDS = 1e11


def now() -> float:
    """The current time in seconds with exactly microsecond precision.

    Integer division keeps this cheap (``round(x, 6)`` costs several times more)
    and the quotient is the closest float to a six-decimal number, so its repr
    has at most six decimals.
    """
    return time.time_ns() // 1000 / 1_000_000


# Below 2**51 microseconds (2041-05-06), ``value * 1e6`` is within 0.125 of
# the exact product, which is what makes the fast rounding in ``to_seconds``
# exact; later timestamps take ``round``.
_FAST_BELOW = 2.0**51 / 1e6


def to_seconds(value: object, field: str) -> float:
    """Convert one caller-given timestamp to UNIX seconds, or raise InvalidEvent.

    Int and float seconds of today's dates take a fast path that returns the
    very float ``round(value, 6)`` would (so the same bytes go on the wire);
    everything else, including every invalid value, takes ``_to_seconds``.
    """
    number: Any = value  # narrowed by the class checks, which mypy cannot follow
    cls = type(number)
    if cls is float:
        if 0.0 < number < _FAST_BELOW:
            # ``round(value, 6)`` formats and parses decimal digits: slow. The
            # product's ulp is at most 0.25 here, so it is within 0.125 of the
            # exact value * 10**6; if it is within 0.25 of an integer n, the
            # exact value is within 0.375 of n, so n is its correct rounding
            # (no tie is possible), and n / 1e6 is the double nearest to
            # n * 10**-6 (n and 1e6 are exact, division rounds correctly):
            # exactly what ``round`` returns. Otherwise (near a half) ``round``.
            scaled = number * 1e6
            whole = int(scaled + 0.5)
            if -0.25 <= scaled - whole <= 0.25:
                return whole / 1e6
    elif cls is int and 0 <= number <= MAX_SECONDS:
        return float(number)  # whole seconds: nothing to round
    return _to_seconds(value, field)


def _to_seconds(value: object, field: str) -> float:
    """``to_seconds`` for every value its fast path does not take."""
    if isinstance(value, bool):
        raise InvalidEvent(
            f"{field} must be a number of seconds, not a bool", field=field
        )
    if isinstance(value, (int, float)):
        try:
            seconds = float(value)
        except OverflowError:  # an int beyond float range (too long to repr, even)
            raise InvalidEvent(
                f"{field} must be a finite number of seconds, got an int too large "
                "for a float",
                field=field,
            ) from None
    elif isinstance(value, datetime):
        seconds = _from_datetime(value, field)
    elif isinstance(value, str):
        seconds = _from_iso(value, field)
    else:
        raise InvalidEvent(
            f"{field} must be UNIX seconds (int or float), an aware datetime or an "
            f"ISO 8601 string, got {type(value).__name__}",
            field=field,
        )
    if math.isnan(seconds) or math.isinf(seconds):
        raise InvalidEvent(
            f"{field} must be a finite number, got {value!r}", field=field
        )
    if seconds < 0:
        raise InvalidEvent(f"{field} must not be negative, got {value!r}", field=field)
    if seconds > MAX_SECONDS:
        raise InvalidEvent(
            f"{field}={value!r} looks like milliseconds; the API takes seconds "
            f"(divide by 1000)",
            field=field,
        )
    return round(seconds, 6)


def _from_datetime(value: datetime, field: str) -> float:
    if value.tzinfo is None or value.utcoffset() is None:
        raise InvalidEvent(
            f"{field} is a naive datetime; give it a tzinfo "
            f"(e.g. datetime.now(timezone.utc)) so it can be converted to UTC",
            field=field,
        )
    return value.timestamp()


_FRACTION = re.compile(r"(?<=:\d\d)\.(\d+)")


def _six_digits(match: re.Match[str]) -> str:
    """Fractional seconds padded or cut to microseconds (what 3.11+ does)."""
    return "." + (match.group(1) + "00000")[:6]


def _from_iso(value: str, field: str) -> float:
    text = value.strip()
    # datetime.fromisoformat only learned "Z", and fractions of other than 3 or
    # 6 digits, in Python 3.11; give it the forms every version reads.
    if text[-1:] in ("Z", "z"):
        text = text[:-1] + "+00:00"
    text = _FRACTION.sub(_six_digits, text, count=1)
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidEvent(
            f"{field}={value!r} is not an ISO 8601 date-time", field=field
        ) from None
    if parsed.tzinfo is None:
        # An ISO string without an offset is read as UTC, which is what the
        # API itself does with such strings.
        parsed = parsed.replace(tzinfo=timezone.utc)
    return _from_datetime(parsed, field)
