"""Tests for the codec's fast paths: property values proven to need no settling
(``_values.sent_as_is``) and the per-value size check of large bodies.

Each fast path must send exactly what the slow path would, and refuse exactly
what it would: the property tests below compare the two over generated values.
"""

from __future__ import annotations

import enum
import math
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings, strategies as st

from trackasync import _encoding
from trackasync._config import Limits
from trackasync._encoding import Codec
from trackasync._exceptions import InvalidEvent, PayloadTooLarge
from trackasync._values import AS_IS_DEPTH, normalise, sent_as_is

IDS = {"registered": "ann@example.com"}
TS = 1722458972.5
UTC = timezone.utc
PLUS_TWO = timezone(timedelta(hours=2))


class _Text(str):
    """A str subclass: encoded as a string, but not proven by class."""


class _Level(enum.IntEnum):
    HIGH = 3


@contextmanager
def _slow_path_only() -> Iterator[None]:
    """The codec as it was before ``sent_as_is``: every value that is not a
    plain scalar goes through ``normalise``."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(_encoding, "sent_as_is", lambda values: False)
        yield


def _outcome(call: Any) -> tuple[str, Any]:
    """The bytes a call returns, or what it raises (class, text, field, size)."""
    try:
        return ("body", call())
    except (InvalidEvent, PayloadTooLarge) as exc:
        return (
            type(exc).__name__,
            (str(exc), exc.field, getattr(exc, "size", None)),
        )


def _call(c: Codec, route: str, props: dict[str, Any]) -> bytes:
    if route == "event":
        return c.event(IDS, "test", props, TS)
    return c.customer(IDS, props, TS)


def _both_routes(c: Codec, props: dict[str, Any]) -> list[tuple[str, Any]]:
    return [
        _outcome(lambda: c.event(IDS, "test", props, TS)),
        _outcome(lambda: c.customer(IDS, props, TS)) if props else ("none", None),
    ]


# -- which values are proven ------------------------------------------------------

_PROVEN = {
    "scalars": ["a", 1, 1.5, True, None],
    "nan in a list": [math.nan, math.inf, -math.inf],
    "tags": ["gift", "express"],
    "address": {"country": "SK", "city": "Bratislava", "cost": 4.99},
    "line items": [{"sku": "SKU-1", "price": 9.99, "qty": 2}, {"sku": "SKU-2"}],
    "utc datetime": datetime(2024, 1, 1, 12, tzinfo=UTC),
    "utc datetime in a list": [datetime(2024, 1, 1, 12, tzinfo=UTC)],
    "empty": [[], {}, [{}]],
    "items with tags": [{"sku": "A", "tags": ["x", "y"], "at": {"d": 1}}],
    "big int": 2**70,
}

_NOT_PROVEN = {
    "offset datetime": datetime(2024, 1, 1, 12, tzinfo=PLUS_TWO),
    "naive datetime": datetime(2024, 1, 1),
    "naive datetime in a dict in a list": [{"at": datetime(2024, 1, 1)}],
    "offset datetime in a dict": {"at": datetime(2024, 1, 1, tzinfo=PLUS_TWO)},
    "zero-offset tz other than timezone.utc": datetime(
        2024, 1, 1, tzinfo=timezone(timedelta(0), "UTC+0")
    ),
    "bytes in a dict": {"b": b"x"},
    "timedelta": [timedelta(1)],
    "int key": {1: "one"},
    "too deep": [[[["a"], ["b"]]] * 2],
}

# Not exactly a plain class: not proven as a property's own value, but inside a
# list or dict ``convert`` takes them as the scalars and containers they
# encode the same as (a tuple or set as a list, a str subclass as a str).
_PROVEN_ONLY_INSIDE = {
    "tuple": ("a",),
    "str subclass": _Text("a"),
    "IntEnum": _Level.HIGH,
    "dict subclass": OrderedDict(a=1),
    "set": {"a"},
    "finite decimal": Decimal("1.10"),
}


@pytest.mark.parametrize("value", _PROVEN.values(), ids=_PROVEN.keys())
def test_values_that_need_nothing_are_proven(value: Any) -> None:
    """The shapes applications send are proven, and normalise agrees that
    nothing in them needs settling."""
    assert sent_as_is([value])
    assert normalise({"v": value}) is None


@pytest.mark.parametrize("value", _NOT_PROVEN.values(), ids=_NOT_PROVEN.keys())
def test_values_that_may_need_settling_are_not_proven(value: Any) -> None:
    """Anything normalise could change or refuse is left to normalise, at the
    top level and inside containers."""
    assert not sent_as_is([value])
    assert not sent_as_is([1, "a", [value]])
    assert not sent_as_is([{"k": value}])


@pytest.mark.parametrize(
    "value", _PROVEN_ONLY_INSIDE.values(), ids=_PROVEN_ONLY_INSIDE.keys()
)
def test_other_classes_are_proven_only_inside_containers(value: Any) -> None:
    """A class that is not exactly a plain one is not proven as a property's
    value; inside a list or a dict it is, and the codec then sends exactly what
    the slow path sends."""
    assert not sent_as_is([value])
    assert sent_as_is([[value]])
    assert sent_as_is([1, {"k": value}])
    props = {"top": value, "list": [value], "object": {"k": value}}
    fast = _both_routes(Codec(Limits()), props)
    with _slow_path_only():
        assert fast == _both_routes(Codec(Limits()), props)


def test_non_finite_decimals_never_reach_the_proof() -> None:
    """``convert`` takes a NaN Decimal for a float, so ``sent_as_is`` is only
    asked about values that encoded: the encoder refuses it, and the codec
    sends null, as for a float NaN, on either path."""
    with pytest.raises(ValueError, match="non-finite"):
        Codec(Limits())._encode([Decimal("NaN")])
    props = {"tags": ["a", Decimal("NaN"), Decimal("-Infinity")]}
    body = Codec(Limits()).event(IDS, "test", props, TS)
    assert msgspec.json.decode(body)["properties"] == {"tags": ["a", None, None]}
    with _slow_path_only():
        assert Codec(Limits()).event(IDS, "test", props, TS) == body


def test_proof_stops_at_its_depth() -> None:
    """Containers nested deeper than AS_IS_DEPTH are left to normalise (which
    sends them unchanged); down to it, they are proven."""
    value: Any = ["a"]
    for _ in range(AS_IS_DEPTH + 1):
        value = [value, "b"]
    assert not sent_as_is([value])
    assert sent_as_is([value[0]])
    assert normalise({"v": value}) is None


@pytest.mark.parametrize(
    ("props", "field"),
    [
        ({"tags": ["a", datetime(2024, 1, 1)]}, "tags[1]"),
        ({"items": [{"sku": "A", "at": datetime(2024, 1, 1)}]}, "items[0].at"),
        ({"ship": {"addr": {"at": datetime(2024, 1, 1)}}}, "ship.addr.at"),
    ],
)
@pytest.mark.parametrize("route", ["event", "customer"])
def test_naive_datetime_in_a_plain_container_is_still_refused(
    props: dict[str, Any], field: str, route: str
) -> None:
    """A naive datetime among plain values is refused with its path."""
    c = Codec(Limits())
    with pytest.raises(InvalidEvent, match="naive") as info:
        _call(c, route, props)
    assert info.value.field == field


def test_offset_datetime_in_line_items_is_sent_in_utc() -> None:
    """An aware datetime inside line items still goes out as UTC "...Z"."""
    props = {
        "items": [
            {"sku": "A", "at": datetime(2024, 1, 1, 12, tzinfo=PLUS_TWO)},
            {"sku": "B"},
        ],
        "at": datetime(2024, 1, 1, 12, tzinfo=UTC),
    }
    body = Codec(Limits()).event(IDS, "test", props, TS)
    assert msgspec.json.decode(body)["properties"] == {
        "items": [{"sku": "A", "at": "2024-01-01T10:00:00Z"}, {"sku": "B"}],
        "at": "2024-01-01T12:00:00Z",
    }


# -- fast path against slow path, generated -------------------------------------

_offsets = st.integers(min_value=-(24 * 60 - 1), max_value=24 * 60 - 1).map(
    lambda minutes: timezone(timedelta(minutes=minutes))
)
_leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=2**63, max_value=2**80),
    st.floats(),  # NaN and infinities included
    st.text(max_size=12),
    st.sampled_from(["T", "2024-01-01T00:00:00+02:00", "null", '"\\\n', "ü€😀"]),
    st.datetimes(timezones=st.just(UTC)),
    st.datetimes(timezones=_offsets),
    st.datetimes(),  # naive: refused
    st.decimals(allow_nan=True),
    st.sampled_from([Decimal("1.10"), Decimal("-0"), Decimal("1E+2")]),
    st.text(max_size=4).map(_Text),
    st.just(_Level.HIGH),
    st.timedeltas(),  # refused
    st.binary(max_size=3),  # refused
)
_keys = st.one_of(st.text(max_size=6), st.integers(), st.text(max_size=3).map(_Text))


def _containers(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.text(max_size=6), children, max_size=4),
        st.dictionaries(_keys, children, max_size=3),
        st.lists(st.dictionaries(st.text(max_size=4), children, max_size=3)),
        st.lists(children, max_size=3).map(tuple),
    )


_values = st.recursive(_leaves, _containers, max_leaves=16)
_properties = st.dictionaries(st.text(max_size=8), _values, max_size=6)


@settings(max_examples=600, deadline=None, database=None)
@given(_properties)
def test_fast_path_sends_what_the_slow_path_sends(props: dict[str, Any]) -> None:
    """For any properties, the codec with its fast paths returns the same bytes
    as the slow path alone, or raises the same error with the same text."""
    fast = _both_routes(Codec(Limits()), props)
    with _slow_path_only():
        slow = _both_routes(Codec(Limits()), props)
    assert fast == slow


@settings(max_examples=400, deadline=None, database=None)
@given(st.lists(_values, max_size=6))
def test_proven_values_are_left_alone_by_normalise(values: list[Any]) -> None:
    """Whatever sent_as_is proves, normalise leaves as it is, without raising
    (of values that encode: the codec asks about no others)."""
    try:
        Codec(Limits())._encode(values)
    except Exception:
        return
    if sent_as_is(values):
        assert normalise({f"k{i}": value for i, value in enumerate(values)}) is None


# -- the per-value size check of large bodies -----------------------------------

SMALL = Limits(max_command_bytes=3000, max_value_bytes=100, max_batch_bytes=4000)
_plain = msgspec.json.Encoder().encode


def _expected_verdict(props: dict[str, Any]) -> tuple[str, Any]:
    """The verdict of the old check: every value encoded again, in order."""
    body = _plain(
        {
            "customer_ids": IDS,
            "event_type": "test",
            "timestamp": TS,
            "properties": props,
        }
    )
    if len(body) >= SMALL.max_command_bytes:
        return ("command", len(body))
    if len(body) >= SMALL.max_value_bytes:
        for key, value in props.items():
            size = len(_plain(value))
            if size >= SMALL.max_value_bytes:
                return (key, size)
    return ("ok", body)


def _verdict(c: Codec, props: dict[str, Any]) -> tuple[str, Any]:
    try:
        return ("ok", c.event(IDS, "test", props, TS))
    except PayloadTooLarge as exc:
        return ("command", exc.size) if exc.field is None else (exc.field, exc.size)


# Strings whose encoded size is far from their length: escapes of 2 and 6
# bytes, and characters of 2 to 4 UTF-8 bytes.
_wide_text = st.text(
    alphabet=st.sampled_from(['"', "\\", "\n", "\x01", "é", "€", "😀", "a"]),
    max_size=60,
)
_sized = st.one_of(
    st.text(max_size=110),
    _wide_text,
    st.lists(_wide_text, max_size=4),
    st.dictionaries(st.text(max_size=5), _wide_text, max_size=3),
    st.integers(),
    st.floats(),
)


# Only values and keys whose lower bounds are exact: the check runs with no
# slack at all, so an off-by-one in it shows at a value of exactly the limit.
_exact = st.dictionaries(
    st.text(alphabet="kq", max_size=3),
    st.one_of(st.text(alphabet="ab", min_size=96, max_size=98), st.integers(0, 9)),
    max_size=4,
)


@settings(max_examples=600, deadline=None, database=None)
@given(st.one_of(st.dictionaries(st.text(max_size=6), _sized, max_size=8), _exact))
def test_value_limit_verdict_matches_encoding_every_value(
    props: dict[str, Any],
) -> None:
    """The bounded check names the same first property, with the same size, as
    encoding every value again would, and accepts what that accepts."""
    assert _verdict(Codec(SMALL), props) == _expected_verdict(props)


@pytest.mark.parametrize("route", ["event", "customer"])
def test_value_limit_counts_escapes_and_wide_characters(route: str) -> None:
    """A value whose length is under the limit but whose encoding is not is
    refused with its encoded size, behind values that are fine."""
    c = Codec(SMALL)
    props = {"fine": "x" * 90, "escaped": "\x01" * 17, "after": "y"}  # 6 * 17 + 2
    with pytest.raises(PayloadTooLarge) as info:
        _call(c, route, props)
    assert (info.value.field, info.value.size) == ("escaped", 104)


@pytest.mark.parametrize(
    ("props", "verdict"),
    [
        ({"a": "x" * 98}, ("a", 100)),
        ({"k": 5, "a": "x" * 98}, ("a", 100)),
        ({"a": "x" * 97, "b": "y" * 98, "c": 1}, ("b", 100)),
        ({"a": "x" * 97, "b": "y" * 97}, ("ok", None)),
    ],
)
def test_value_of_exactly_the_limit_is_caught_with_no_slack(
    props: dict[str, Any], verdict: tuple[str, Any]
) -> None:
    """When every lower bound is exact, a value of exactly the limit is still
    encoded and refused, and one a byte under passes."""
    field, detail = _verdict(Codec(SMALL), props)
    assert (field, None if field == "ok" else detail) == verdict


def test_large_body_of_short_values_is_not_encoded_again() -> None:
    """A body over the value limit whose values cannot reach it costs one
    encode of the body and one of its envelope, not one per value."""
    c = Codec(Limits())
    calls: list[object] = []
    encode = c._encode

    def counting(obj: object) -> bytes:
        calls.append(obj)
        return encode(obj)

    c._encode = counting  # type: ignore[misc]
    props: dict[str, Any] = {f"block_{i}": "lorem ipsum " * 300 for i in range(10)}
    props["items"] = [{"sku": f"SKU-{k}", "price": 1.5 * k} for k in range(40)]
    body = c.event(IDS, "test", props, TS)
    assert len(body) > Limits().max_value_bytes
    assert len(calls) == 2
