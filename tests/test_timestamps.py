"""Tests for ``trackasync._timestamps``: caller timestamps to UNIX seconds."""

from __future__ import annotations

import contextlib
import math
import re
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given, settings, strategies as st

from trackasync import _timestamps
from trackasync._exceptions import InvalidEvent
from trackasync._timestamps import MAX_SECONDS, now, to_seconds

# 2024-08-01T12:00:00Z
EPOCH = 1722513600


def test_int_seconds_become_float() -> None:
    """An int number of seconds is returned as the same float."""
    result = to_seconds(EPOCH, "timestamp")
    assert result == float(EPOCH)
    assert type(result) is float


def test_float_seconds_are_kept() -> None:
    """A float number of seconds with six decimals is returned unchanged."""
    assert to_seconds(1722458972.123456, "timestamp") == 1722458972.123456


def test_zero_is_accepted() -> None:
    """The epoch itself is a valid timestamp."""
    assert to_seconds(0, "timestamp") == 0.0


def test_float_is_rounded_to_six_decimals() -> None:
    """More than six decimals are rounded to the microsecond."""
    assert to_seconds(1722458972.1234567, "timestamp") == 1722458972.123457
    assert to_seconds(0.0000004, "timestamp") == 0.0
    assert to_seconds(12.3456785001, "timestamp") == 12.345679


def test_aware_datetime_becomes_utc_epoch() -> None:
    """An aware datetime is converted to UTC epoch seconds."""
    utc = datetime(2024, 8, 1, 12, 0, tzinfo=timezone.utc)
    assert to_seconds(utc, "timestamp") == EPOCH
    plus_two = datetime(
        2024, 8, 1, 14, 0, 0, 250000, tzinfo=timezone(timedelta(hours=2))
    )
    assert to_seconds(plus_two, "timestamp") == EPOCH + 0.25


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-08-01T12:00:00Z", EPOCH),
        ("2024-08-01T12:00:00z", EPOCH),
        ("2024-08-01T12:00:00.5Z", EPOCH + 0.5),
        ("2024-08-01T12:00:00.123456Z", EPOCH + 0.123456),
        ("2024-08-01T12:00:00.12Z", EPOCH + 0.12),
        ("2024-08-01T12:00:00.1234567Z", EPOCH + 0.123456),
        ("2024-08-01T14:00:00.5+02:00", EPOCH + 0.5),
        ("2024-08-01T14:00:00+02:00", EPOCH),
        ("2024-08-01T07:30:00-04:30", EPOCH),
        ("2024-08-01T12:00:00", EPOCH),
        ("2024-08-01 12:00:00", EPOCH),
        ("  2024-08-01T12:00:00Z ", EPOCH),
        ("2024-08-01", EPOCH - 12 * 3600),
    ],
)
def test_iso_strings_are_converted(text: str, expected: float) -> None:
    """ISO 8601 strings with Z, with an offset (converted) or without one (UTC),
    with any number of fractional digits, on every supported Python."""
    assert to_seconds(text, "timestamp") == pytest.approx(expected, abs=1e-9)


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        (datetime(2024, 8, 1, 12, 0), "naive"),
        (math.nan, "finite"),
        (math.inf, "finite"),
        (-math.inf, "finite"),
        (-1, "negative"),
        (-0.5, "negative"),
        ("1969-12-31T23:59:59Z", "negative"),
        (True, "bool"),
        (False, "bool"),
        ("yesterday", "ISO 8601"),
        ("", "ISO 8601"),
        ("Z", "ISO 8601"),
        ("2024-13-01T00:00:00Z", "ISO 8601"),
        (b"1722458972", "bytes"),
        (None, "NoneType"),
        (Decimal("1722458972"), "Decimal"),
        ([1722458972], "list"),
    ],
)
def test_bad_values_are_refused(value: Any, fragment: str) -> None:
    """Naive datetimes, non-finite, negative, bool, garbage and other types raise."""
    with pytest.raises(InvalidEvent, match=re.escape(fragment)) as info:
        to_seconds(value, "update_timestamp")
    assert info.value.field == "update_timestamp"
    assert "update_timestamp" in str(info.value)


@pytest.mark.parametrize("value", [1722458972123, 1722458972123.5, MAX_SECONDS + 1])
def test_milliseconds_are_refused_with_a_hint(value: float) -> None:
    """A value above 1e11 seconds is taken for milliseconds and refused."""
    with pytest.raises(InvalidEvent, match="divide by 1000") as info:
        to_seconds(value, "timestamp")
    assert info.value.field == "timestamp"


def test_largest_plausible_seconds_are_accepted() -> None:
    """Exactly 1e11 seconds is still read as seconds."""
    assert MAX_SECONDS == 1e11
    assert to_seconds(MAX_SECONDS, "timestamp") == 1e11


def test_int_too_large_for_a_float_is_refused() -> None:
    """An int beyond float range raises InvalidEvent, not OverflowError."""
    for value in (10**400, -(10**400), 10**5000):
        with pytest.raises(InvalidEvent) as info:
            to_seconds(value, "timestamp")
        assert info.value.field == "timestamp"


def test_now_has_at_most_six_decimals(monkeypatch: pytest.MonkeyPatch) -> None:
    """now() is the current time whose repr never has more than six decimals."""
    samples = [
        1722458972_123456_789,
        1722458972_100000_000,
        1722458972_999999_999,
        1722458972_000001_000,
        1_700_000_000_333_333_333,
    ]
    for ns in samples:
        fake = SimpleNamespace(time_ns=lambda ns=ns: ns)
        monkeypatch.setattr(_timestamps, "time", fake)
        value = now()
        assert value == pytest.approx(ns / 1e9, abs=1e-6)
        assert len(repr(value).partition(".")[2]) <= 6
        assert value == round(value, 6)
    monkeypatch.undo()
    real = now()
    assert abs(real - datetime.now(timezone.utc).timestamp()) < 5
    assert len(repr(real).partition(".")[2]) <= 6


# -- the fast path for int and float seconds --------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        1764547200.001,
        1764547200.1234567,  # seven decimals, as time.time() gives
        1722458972.0000005,
        1 / 128,  # 0.0078125: an exact tie at six decimals, rounded to even
        0.0000005,
        2.5e-6,
        1e-7,
        -0.0,
        5e-324,
        2**51 / 1e6 - 1e-6,  # the end of the fast range
        2**51 / 1e6,
        2**51 / 1e6 + 0.3333333,
        2.9e9 + 0.1234565,
        float(MAX_SECONDS),
    ],
)
def test_float_fast_path_gives_the_same_float_as_round(value: float) -> None:
    """Whatever path a float takes, the result is ``round(value, 6)`` exactly
    (same repr, so the same bytes on the wire), ties and edges included."""
    assert repr(to_seconds(value, "timestamp")) == repr(round(value, 6))


# 3,000 examples take seconds alone, but several times that on a loaded machine
# measuring coverage: more than the suite's 60 s guard against hangs.
@pytest.mark.timeout(300)
@settings(max_examples=3000, deadline=None, database=None)
@given(
    st.one_of(
        st.floats(min_value=0.0, max_value=MAX_SECONDS),
        st.floats(min_value=1.5e9, max_value=2.3e9),
        # Values on or next to a half microsecond, where rounding can tip.
        st.integers(min_value=0, max_value=2 * 10**15).map(lambda n: (n + 0.5) / 1e6),
        st.integers(min_value=0, max_value=10**15).flatmap(
            lambda n: st.sampled_from([n / 1e6, math.nextafter(n / 1e6, 0.0)])
        ),
    )
)
def test_random_floats_round_exactly_like_round(value: float) -> None:
    """Property: the fast rounding never differs from ``round(value, 6)``."""
    assert repr(to_seconds(value, "timestamp")) == repr(round(value, 6))


@settings(max_examples=500, deadline=None, database=None)
@given(st.integers(min_value=0, max_value=int(MAX_SECONDS)))
def test_random_ints_become_the_same_float(value: int) -> None:
    """Property: int seconds become ``round(float(value), 6)``."""
    result = to_seconds(value, "timestamp")
    assert type(result) is float
    assert repr(result) == repr(round(float(value), 6))


def test_common_timestamps_skip_the_general_path(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Int and float seconds of today's dates are converted without the general
    path; everything else (and every invalid value) still reaches it."""
    seen: list[object] = []
    general = _timestamps._to_seconds

    def spy(value: object, field: str) -> float:
        seen.append(value)
        return general(value, field)

    monkeypatch.setattr(_timestamps, "_to_seconds", spy)
    for common in (1764547200, 1764547200.001, 1764547200.1234567, 1.5):
        to_seconds(common, "timestamp")
    assert seen == []
    slow: list[object] = [True, -1.0, math.nan, 3e9 + 0.5, 0.0, "2024-08-01"]
    for value in slow:
        with contextlib.suppress(InvalidEvent):
            to_seconds(value, "timestamp")
    assert seen == slow
