"""Tests for ``trackasync._encoding``: validation and JSON encoding of commands."""

from __future__ import annotations

import dataclasses
import enum
import math
import re
from collections import OrderedDict, defaultdict
from collections.abc import Mapping
from datetime import date, datetime, time, timedelta, timezone
from decimal import Decimal
from types import MappingProxyType
from typing import Any
from uuid import UUID

import msgspec
import pytest
from hypothesis import given, settings, strategies as st

from trackasync import _encoding
from trackasync._config import Limits
from trackasync._encoding import Codec, _valid_id_value
from trackasync._exceptions import InvalidEvent, PayloadTooLarge

IDS = {"registered": "ann@example.com"}
TS = 1722458972.5
PLUS_TWO = timezone(timedelta(hours=2))

# Small limits keep the size tests fast; max_batch_bytes only has to leave room.
SMALL = Limits(max_command_bytes=1000, max_value_bytes=100, max_batch_bytes=2000)


def codec(limits: Limits = SMALL) -> Codec:
    return Codec(limits)


def event(c: Codec, properties: Any, ids: Any = IDS) -> dict[str, Any]:
    decoded: dict[str, Any] = msgspec.json.decode(c.event(ids, "test", properties, TS))
    return decoded


def encoded_len(value: Any) -> int:
    return len(msgspec.json.encode(value))


def encode(c: Codec, route: str, properties: Any, ids: Any = IDS) -> bytes:
    """One command through ``Codec.event`` or ``Codec.customer``."""
    if route == "event":
        return c.event(ids, "test", properties, TS)
    return c.customer(ids, properties, TS)


# -- the body ------------------------------------------------------------------


def test_event_body_is_exact_and_deterministic() -> None:
    """An event encodes to the documented body, byte for byte, every time."""
    c = codec()
    expected = (
        b'{"customer_ids":{"registered":"ann@example.com"},"event_type":"purchase",'
        b'"timestamp":1722458972.5,"properties":{"total":10,"currency":"EUR"}}'
    )
    for _ in range(2):  # the second call takes the warmed name cache
        body = c.event(IDS, "purchase", {"total": 10, "currency": "EUR"}, TS)
        assert body == expected


def test_customer_body_has_update_timestamp() -> None:
    """A customer update encodes ids, properties and update_timestamp."""
    body = codec().customer(IDS, {"first_name": "Ann"}, 1681484247.0)
    assert msgspec.json.decode(body) == {
        "customer_ids": IDS,
        "properties": {"first_name": "Ann"},
        "update_timestamp": 1681484247.0,
    }


def test_none_properties_encode_as_empty_object() -> None:
    """An event without properties is sent with an empty properties object."""
    assert event(codec(), None)["properties"] == {}


def test_non_dict_mappings_are_accepted() -> None:
    """Read-only mappings work for both customer_ids and properties."""
    data = event(codec(), MappingProxyType({"a": 1}), ids=MappingProxyType(IDS))
    assert data["customer_ids"] == IDS
    assert data["properties"] == {"a": 1}


def test_customer_update_needs_a_property() -> None:
    """update_customer with no properties is refused at the call."""
    for props in (None, {}):
        with pytest.raises(InvalidEvent) as info:
            codec().customer(IDS, props, 1.0)
        assert info.value.field == "properties"


# -- customer_ids --------------------------------------------------------------


@pytest.mark.parametrize(
    ("ids", "field"),
    [
        ({}, "customer_ids"),
        ([("registered", "ann")], "customer_ids"),
        ({1: "ann"}, "customer_ids"),
        ({"": "ann"}, "customer_ids"),
        ({"registered": "null"}, "customer_ids.registered"),
        ({"registered": "undefined"}, "customer_ids.registered"),
        ({"registered": "NULL"}, "customer_ids.registered"),
        ({"registered": "nuLL"}, "customer_ids.registered"),
        ({"registered": "UnDeFiNeD"}, "customer_ids.registered"),
        ({"registered": "null "}, "customer_ids.registered"),
        ({"registered": " undefined"}, "customer_ids.registered"),
        ({"registered": ""}, "customer_ids.registered"),
        ({"registered": "-- @ --"}, "customer_ids.registered"),
        ({"registered": None}, "customer_ids.registered"),
        ({"registered": 42}, "customer_ids.registered"),
        ({"registered": "ann", "cookie": "null"}, "customer_ids.cookie"),
    ],
)
@pytest.mark.parametrize("route", ["event", "customer"])
def test_invalid_customer_ids_are_refused(ids: Any, field: str, route: str) -> None:
    """Empty, non-string and null-like ids raise InvalidEvent naming the id."""
    c = codec()
    # Warm the fast path with a valid call first: it must not change the verdict.
    c.event(IDS, "warm", {"a": 1}, TS)
    with pytest.raises(InvalidEvent) as info:
        encode(c, route, {"a": 1}, ids=ids)
    assert info.value.field == field


@pytest.mark.parametrize(
    "value", ["ann@example.com", " ann", "_x1", "9f1c", "nullable", "undefined2", "ü"]
)
def test_valid_customer_ids_are_kept(value: str) -> None:
    """Ids with at least one letter or digit that are not null-like are sent as is."""
    ids = {"registered": value}
    assert event(codec(), {}, ids=ids)["customer_ids"] == ids
    body = codec().customer(ids, {"a": 1}, TS)
    assert msgspec.json.decode(body)["customer_ids"] == ids


@settings(max_examples=500, deadline=None, database=None)
@given(
    st.one_of(
        st.text(max_size=12),
        st.sampled_from(["null", "NULL", "Undefined", "9f1c-0000", "abcd", " null"]),
    )
)
def test_id_values_are_judged_like_the_full_check(value: str) -> None:
    """Property: the fast id check never accepts what the full check refuses,
    nor refuses what it accepts, on both routes."""
    expected = _valid_id_value(value)
    c = codec()
    for call in (
        lambda: c.event({"registered": value}, "test", {"a": 1}, TS),
        lambda: c.customer({"registered": value}, {"a": 1}, TS),
    ):
        try:
            call()
        except InvalidEvent:
            assert not expected
        else:
            assert expected


def test_ids_of_null_like_length_take_the_fast_check(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Ids four or nine characters long ("9f1c-0000") are not sent down the
    full check just for their length; "null"-likes of those lengths are."""
    seen: list[object] = []
    full = Codec._check_id

    def spy(name: object, value: object) -> None:
        seen.append(value)
        full(name, value)

    monkeypatch.setattr(Codec, "_check_id", staticmethod(spy))
    c = codec()
    c.event({"registered": "9f1c-0000", "cookie": "ab12"}, "test", {"a": 1}, TS)
    assert seen == []
    with pytest.raises(InvalidEvent):
        c.event({"registered": "NuLl"}, "test", {"a": 1}, TS)
    assert seen == ["NuLl"]


# -- event_type and properties -------------------------------------------------


@pytest.mark.parametrize("event_type", ["", None, 5, b"purchase"])
def test_bad_event_type_is_refused(event_type: Any) -> None:
    """event_type must be a non-empty string."""
    with pytest.raises(InvalidEvent) as info:
        codec().event(IDS, event_type, {}, TS)
    assert info.value.field == "event_type"


@pytest.mark.parametrize("properties", [[("a", 1)], "a=1", 5])
def test_non_mapping_properties_are_refused(properties: Any) -> None:
    """properties must be a mapping."""
    with pytest.raises(InvalidEvent) as info:
        codec().event(IDS, "test", properties, TS)
    assert info.value.field == "properties"


@pytest.mark.parametrize("key", [1, ("a",), b"name", None, 1.5])
@pytest.mark.parametrize("warmed", [False, True])
def test_non_str_property_name_is_named(key: Any, warmed: bool) -> None:
    """A non-str top-level property name raises InvalidEvent naming that key."""
    c = codec()
    if warmed:
        for _ in range(3):
            c.event(IDS, "test", {"a": 1, "b": 2}, TS)
            c.customer(IDS, {"a": 1, "b": 2}, TS)
    for call in (
        lambda: c.event(IDS, "test", {"a": 1, key: 2}, TS),
        lambda: c.customer(IDS, {"a": 1, key: 2}, TS),
    ):
        with pytest.raises(InvalidEvent) as info:
            call()
        assert info.value.field == repr(key)
        assert repr(key) in str(info.value)


def test_non_str_key_in_nested_object_follows_json() -> None:
    """Keys of nested objects are encoded like json.dumps does (int -> str)."""
    assert event(codec(), {"counts": {1: "one"}})["properties"] == {
        "counts": {"1": "one"}
    }


@pytest.mark.parametrize(
    ("bad", "fragment"),
    [(object(), "object"), (1 + 2j, "complex"), ({(1, 2): "x"}, "dict")],
)
def test_unencodable_property_is_named(bad: Any, fragment: str) -> None:
    """A value msgspec cannot encode raises InvalidEvent naming its property."""
    for route in ("event", "customer"):
        c = codec()
        props = {"fine": 1, "culprit": bad, "after": "x"}
        with pytest.raises(InvalidEvent) as info:
            encode(c, route, props)
        assert info.value.field == "culprit"
        assert "'culprit'" in str(info.value)
        assert fragment in str(info.value)
        assert info.value.__cause__ is None


def test_unencodable_nested_value_names_top_level_property() -> None:
    """A bad value deep inside a property names the top-level property."""
    with pytest.raises(InvalidEvent) as info:
        codec().event(IDS, "test", {"outer": {"inner": [1, object()]}}, TS)
    assert info.value.field == "outer"


def test_nan_and_infinities_are_sent_as_null() -> None:
    """NaN, inf and -inf in properties become JSON null, also when nested."""
    props = {
        "nan": math.nan,
        "inf": math.inf,
        "ninf": -math.inf,
        "nested": [1.5, math.nan, {"x": math.inf}],
    }
    assert event(codec(), props)["properties"] == {
        "nan": None,
        "inf": None,
        "ninf": None,
        "nested": [1.5, None, {"x": None}],
    }


# -- datetimes inside properties ---------------------------------------------


def test_aware_datetimes_are_sent_in_utc_with_z() -> None:
    """Aware datetimes anywhere in properties are converted to UTC "...Z" strings."""
    props = {
        "at": datetime(2024, 8, 1, 12, 0, 0, tzinfo=PLUS_TWO),
        "utc": datetime(2024, 8, 1, 10, 0, 0, 5, tzinfo=timezone.utc),
        "zero_offset": datetime(2024, 8, 1, 10, 0, tzinfo=timezone(timedelta(0))),
        "list": [1, datetime(2024, 1, 1, 1, 30, tzinfo=PLUS_TWO)],
        "tuple": (datetime(2024, 1, 1, 0, 0, tzinfo=timezone(-timedelta(hours=5))),),
        "obj": {
            "when": datetime(2024, 1, 1, 23, 0, tzinfo=timezone(-timedelta(hours=1)))
        },
        "text": "Tuesday",
    }
    original = dict(props)
    for route in ("event", "customer"):
        body = encode(codec(), route, props)
        assert msgspec.json.decode(body)["properties"] == {
            "at": "2024-08-01T10:00:00Z",
            "utc": "2024-08-01T10:00:00.000005Z",
            "zero_offset": "2024-08-01T10:00:00Z",
            "list": [1, "2023-12-31T23:30:00Z"],
            "tuple": ["2024-01-01T05:00:00Z"],
            "obj": {"when": "2024-01-02T00:00:00Z"},
            "text": "Tuesday",
        }
        assert b"+02:00" not in body
    assert props == original  # the caller's dict is not modified


@pytest.mark.parametrize(
    ("props", "field"),
    [
        ({"when": datetime(2024, 1, 1)}, "when"),
        ({"items": ["a", datetime(2024, 1, 1)]}, "items[1]"),
        ({"meta": {"at": datetime(2024, 1, 1)}}, "meta.at"),
    ],
)
def test_naive_datetime_is_refused_with_its_path(
    props: dict[str, Any], field: str
) -> None:
    """A naive datetime in properties raises InvalidEvent naming where it is."""
    with pytest.raises(InvalidEvent) as info:
        codec().event(IDS, "test", props, TS)
    assert info.value.field == field
    assert "naive" in str(info.value)


@pytest.mark.parametrize(
    "when",
    [
        datetime.min.replace(tzinfo=PLUS_TWO),
        datetime.max.replace(tzinfo=timezone(-timedelta(hours=2))),
    ],
)
def test_datetime_outside_utc_range_is_refused(when: datetime) -> None:
    """An aware datetime whose UTC form is out of range raises InvalidEvent."""
    with pytest.raises(InvalidEvent) as info:
        codec().event(IDS, "test", {"a": 1, "edge": [when]}, TS)
    assert info.value.field == "edge[0]"


def test_string_with_t_is_left_alone() -> None:
    """Strings that merely look like datetimes are text: sent unchanged."""
    props = {"title": "The Thing", "iso": "2024-01-01T00:00:00+02:00"}
    assert event(codec(), props)["properties"] == props


@pytest.mark.parametrize("route", ["event", "customer"])
def test_ordinary_text_never_takes_the_slow_path(
    route: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Plain scalar values are encoded once, whatever their text (capitals,
    "T", things that read like dates): only other types reach ``normalise``."""
    calls: list[object] = []

    def spy(properties: Any) -> None:
        calls.append(properties)

    monkeypatch.setattr(_encoding, "normalise", spy)
    c = codec()
    props = {
        "product_name": "Mechanical Keyboard TKL",
        "when": "2024-01-01T00:00:00+02:00",
        "clock": "12:30:00",
        "n": 1,
        "price": 9.5,
        "ok": True,
        "none": None,
    }
    plain = msgspec.json.decode(encode(c, route, props))["properties"]
    assert plain == props
    assert calls == []
    encode(c, route, {**props, "tags": ["A", "T"], "items": [{"sku": "A", "n": 1}]})
    assert calls == []  # plain containers are proven as they are
    encode(c, route, {**props, "tags": ["A", datetime(2024, 1, 1, tzinfo=PLUS_TWO)]})
    assert len(calls) == 1  # a datetime with an offset must be settled


# -- any container, any depth -----------------------------------------------------


@dataclasses.dataclass
class _Order:
    at: Any
    note: str = "Thanks"


class _Visit(msgspec.Struct):
    at: Any
    page: str = "Top"


class _When(enum.Enum):
    LAUNCH = datetime(2024, 1, 1, 12, 0, tzinfo=PLUS_TWO)


_AWARE = datetime(2024, 1, 1, 12, 0, tzinfo=PLUS_TWO)
_SENT = "2024-01-01T10:00:00Z"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (OrderedDict(at=_AWARE), {"at": _SENT}),
        (defaultdict(list, at=_AWARE), {"at": _SENT}),
        (MappingProxyType({"at": _AWARE}), {"at": _SENT}),
        ({"deep": MappingProxyType({"x": [(_AWARE,)]})}, {"deep": {"x": [[_SENT]]}}),
        ({_AWARE}, [_SENT]),
        (frozenset([_AWARE]), [_SENT]),
        ([(1, _AWARE)], [[1, _SENT]]),
        (_Order(_AWARE), {"at": _SENT, "note": "Thanks"}),
        (_Visit(_AWARE), {"at": _SENT, "page": "Top"}),
        (_When.LAUNCH, _SENT),
        ({_AWARE: "key"}, {_SENT: "key"}),
    ],
    ids=[
        "OrderedDict",
        "defaultdict",
        "mappingproxy",
        "nested-mapping-tuple",
        "set",
        "frozenset",
        "tuple-in-list",
        "dataclass",
        "Struct",
        "Enum",
        "dict-key",
    ],
)
@pytest.mark.parametrize("route", ["event", "customer"])
def test_datetimes_in_any_container_are_sent_in_utc(
    value: Any, expected: Any, route: str
) -> None:
    """An aware datetime is converted to UTC wherever it sits, not only in plain
    dicts, lists and tuples."""
    body = encode(codec(Limits()), route, {"v": value, "title": "T"})
    assert msgspec.json.decode(body)["properties"] == {"v": expected, "title": "T"}
    assert b"+02:00" not in body


@pytest.mark.parametrize(
    ("props", "field"),
    [
        ({"od": OrderedDict(at=datetime(2024, 1, 1))}, "od.at"),
        ({"s": {datetime(2024, 1, 1)}}, "s[0]"),
        ({"order": _Order(datetime(2024, 1, 1))}, "order.at"),
        ({"visit": [_Visit(datetime(2024, 1, 1))]}, "visit[0].at"),
        ({"m": MappingProxyType({"k": (1, datetime(2024, 1, 1))})}, "m.k[1]"),
    ],
)
def test_naive_datetime_in_any_container_is_refused(
    props: dict[str, Any], field: str
) -> None:
    """A naive datetime is refused wherever it sits, with its path."""
    with pytest.raises(InvalidEvent, match="naive") as info:
        codec().event(IDS, "test", props, TS)
    assert info.value.field == field


def _nested(depth: int, leaf: Any, kind: str) -> Any:
    value = leaf
    for _ in range(depth):
        value = [value] if kind == "list" else {"k": value}
    return value


@pytest.mark.parametrize("kind", ["list", "dict"])
@pytest.mark.parametrize("depth", [1, 100, 499, 500, 650, 800, 900, 990, 1200, 5000])
@pytest.mark.parametrize(
    "leaf",
    ["The Thing", datetime(2024, 1, 1, tzinfo=PLUS_TWO), datetime(2024, 1, 1)],
    ids=["text-with-T", "aware", "naive"],
)
def test_any_depth_is_accepted_or_invalid_event(
    kind: str, depth: int, leaf: Any
) -> None:
    """Deep nesting never escapes as a raw exception (RecursionError): a command
    is encoded or refused with InvalidEvent, with or without datetimes."""
    c = codec(Limits())
    for route in ("event", "customer"):
        try:
            body = encode(c, route, {"title": "T", "deep": _nested(depth, leaf, kind)})
        except InvalidEvent:
            continue
        assert isinstance(leaf, str) or leaf.tzinfo is not None, "naive accepted"
        text = body.decode()
        if isinstance(leaf, datetime):
            assert '"2023-12-31T22:00:00Z"' in text
        else:
            assert '"The Thing"' in text


def test_cyclic_properties_are_refused() -> None:
    """A structure that contains itself is refused, not a RecursionError."""
    loop: dict[str, Any] = {"at": datetime(2024, 1, 1, tzinfo=PLUS_TWO)}
    loop["self"] = loop
    cycle: list[Any] = ["T"]
    cycle.append(cycle)
    for props in ({"loop": loop}, {"cycle": cycle}):
        for route in ("event", "customer"):
            with pytest.raises(InvalidEvent):
                encode(codec(), route, props)


class _Hostile(Mapping[str, Any]):
    """A mapping that fails when read."""

    def __getitem__(self, key: str) -> Any:
        raise RuntimeError("secret-token-123")

    def __iter__(self) -> Any:
        return iter(["a"])

    def __len__(self) -> int:
        return 1


@pytest.mark.parametrize("route", ["event", "customer"])
@pytest.mark.parametrize("where", ["customer_ids", "properties"])
def test_a_mapping_that_fails_when_read_is_refused(route: str, where: str) -> None:
    """customer_ids or properties that raise while read give InvalidEvent for
    that argument, without the mapping's own error text."""
    ids: Any = _Hostile() if where == "customer_ids" else IDS
    props: Any = _Hostile() if where == "properties" else {"a": 1}
    with pytest.raises(InvalidEvent) as info:
        encode(codec(), route, props, ids=ids)
    assert info.value.field == where
    assert "secret-token-123" not in str(info.value)


def test_a_nested_mapping_that_fails_is_refused_without_its_message() -> None:
    """A nested mapping that raises while read gives InvalidEvent naming the
    property, and not the mapping's own error text."""
    for route in ("event", "customer"):
        with pytest.raises(InvalidEvent) as info:
            encode(codec(), route, {"ok": 1, "bad": {"in": _Hostile()}})
        assert info.value.field == "bad"
        assert "secret-token-123" not in str(info.value)


@pytest.mark.parametrize("kind", ["list", "dict"])
def test_datetime_at_depth_600_is_converted(kind: str) -> None:
    """Nesting that msgspec encodes is also walked for datetimes, without
    recursion in Python (deep enough to have overflowed the old walk)."""
    leaf = datetime(2024, 1, 1, tzinfo=PLUS_TWO)
    body = codec(Limits()).event(IDS, "test", {"d": _nested(600, leaf, kind)}, TS)
    assert body.count(b"2023-12-31T22:00:00Z") == 1
    assert b"+02:00" not in body


# -- other types: what is converted, what is refused ------------------------------


def test_decimals_are_json_numbers() -> None:
    """A Decimal goes out as a JSON number with its own digits, not a string."""
    props = {
        "price": Decimal("19.99"),
        "big": Decimal("12345678901234567890.123456789"),
        "exp": Decimal("1E+2"),
        "nested": [Decimal("-0.5"), {"x": Decimal("3")}],
    }
    body = codec(Limits()).event(IDS, "test", props, TS)
    assert (
        b'"properties":{"price":19.99,"big":12345678901234567890.123456789,'
        b'"exp":1E+2,"nested":[-0.5,{"x":3}]}}' in body
    )
    decoded = msgspec.json.decode(body)["properties"]
    assert decoded["price"] == 19.99
    assert decoded["exp"] == 100.0


@pytest.mark.parametrize("text", ["NaN", "-NaN", "sNaN", "Infinity", "-Infinity"])
@pytest.mark.parametrize("route", ["event", "customer"])
def test_non_finite_decimals_are_null_like_floats(text: str, route: str) -> None:
    """Decimal NaN and infinities are sent as null, as float ones are."""
    props = {"d": Decimal(text), "f": math.nan, "in": [Decimal(text)], "ok": 1}
    body = encode(codec(), route, props)
    assert msgspec.json.decode(body)["properties"] == {
        "d": None,
        "f": None,
        "in": [None],
        "ok": 1,
    }


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        (b"abc", "bytes"),
        (bytearray(b"abc"), "bytearray"),
        (memoryview(b"abc"), "memoryview"),
        (timedelta(minutes=5), "total_seconds"),
        (time(12, 30, tzinfo=timezone.utc), "time with a tzinfo"),
        (time(12, 30, tzinfo=PLUS_TWO), "time with a tzinfo"),
    ],
)
@pytest.mark.parametrize("where", ["top", "nested"])
@pytest.mark.parametrize("route", ["event", "customer"])
def test_types_whose_meaning_would_change_are_refused(
    value: Any, fragment: str, where: str, route: str
) -> None:
    """bytes-likes, timedeltas and times with a tzinfo are refused, naming
    where they are, instead of going out as base64 / durations / offsets."""
    props = {"v": value} if where == "top" else {"v": {"in": [1, value]}}
    with pytest.raises(InvalidEvent, match=re.escape(fragment)) as info:
        encode(codec(), route, props)
    assert info.value.field == ("v" if where == "top" else "v.in[1]")


def test_documented_conversions() -> None:
    """UUID, date, naive time, Enum, set, dataclass and Struct values go out as
    the README says."""

    class Tier(enum.Enum):
        GOLD = "gold"

    class Level(enum.IntEnum):
        HIGH = 3

    props = {
        "id": UUID(int=1),
        "day": date(2024, 2, 29),
        "opens": time(9, 30),
        "opens_ms": time(9, 30, 0, 500),
        "tier": Tier.GOLD,
        "level": Level.HIGH,
        "tags": {"a"},
        "order": _Order(1),
        "visit": _Visit("x"),
    }
    assert event(codec(Limits()), props)["properties"] == {
        "id": "00000000-0000-0000-0000-000000000001",
        "day": "2024-02-29",
        "opens": "09:30:00",
        "opens_ms": "09:30:00.000500",
        "tier": "gold",
        "level": 3,
        "tags": ["a"],
        "order": {"at": 1, "note": "Thanks"},
        "visit": {"at": "x", "page": "Top"},
    }


# -- size limits ---------------------------------------------------------------


def test_value_one_byte_under_the_limit_passes() -> None:
    """A property value encoding to max_value_bytes - 1 bytes is accepted."""
    value = "x" * (SMALL.max_value_bytes - 3)  # quotes add two bytes
    assert encoded_len(value) == SMALL.max_value_bytes - 1
    assert event(codec(), {"v": value})["properties"] == {"v": value}


@pytest.mark.parametrize("route", ["event", "customer"])
def test_value_at_the_limit_fails(route: str) -> None:
    """A property value encoding to exactly max_value_bytes raises PayloadTooLarge."""
    value = "x" * (SMALL.max_value_bytes - 2)
    assert encoded_len(value) == SMALL.max_value_bytes
    c = codec()
    with pytest.raises(PayloadTooLarge) as info:
        encode(c, route, {"small": 1, "big": value})
    error = info.value
    assert error.field == "big"
    assert error.size == SMALL.max_value_bytes
    assert error.limit == SMALL.max_value_bytes
    assert "'big'" in str(error)
    assert str(SMALL.max_value_bytes) in str(error)


def test_value_limit_uses_encoded_size_of_any_type() -> None:
    """The value limit counts encoded bytes, for lists and escapes too."""
    ok = [1] * ((SMALL.max_value_bytes - 2) // 2)  # "[1,1,...,1]"
    assert encoded_len(ok) == SMALL.max_value_bytes - 1
    event(codec(), {"ok": ok})
    # Each quote is escaped to two bytes: 49 quotes + 2 = 100 bytes encoded.
    quotes = '"' * ((SMALL.max_value_bytes - 2) // 2)
    assert encoded_len(quotes) == SMALL.max_value_bytes
    with pytest.raises(PayloadTooLarge) as info:
        codec().event(IDS, "test", {"q": quotes}, TS)
    assert info.value.size == SMALL.max_value_bytes


def test_value_limit_applies_to_the_utc_form_of_datetimes() -> None:
    """The value size is measured on what is sent: datetimes after UTC conversion."""
    when = datetime(2024, 1, 2, 3, 4, 5, tzinfo=PLUS_TWO)
    base = encoded_len([when.astimezone(timezone.utc), ""])
    value = [when, "x" * (SMALL.max_value_bytes - 1 - base)]
    sent = [when.astimezone(timezone.utc), value[1]]
    assert encoded_len(sent) == SMALL.max_value_bytes - 1
    assert encoded_len(value) > SMALL.max_value_bytes  # the offset form is longer
    assert event(codec(), {"v": value})["properties"]["v"][0] == "2024-01-02T01:04:05Z"


def _command_of_size(c: Codec, size: int) -> dict[str, Any]:
    """Properties that make the event body exactly ``size`` bytes."""
    props = {f"p{i}": "" for i in range(10)}
    base = len(c.event(IDS, "test", props, TS))
    missing = size - base
    per = missing // 10
    for i in range(10):
        props[f"p{i}"] = "y" * (per + (1 if i < missing % 10 else 0))
    return props


def test_command_one_byte_under_the_limit_passes() -> None:
    """A command encoding to max_command_bytes - 1 bytes is accepted."""
    c = codec()
    props = _command_of_size(c, SMALL.max_command_bytes - 1)
    assert len(c.event(IDS, "test", props, TS)) == SMALL.max_command_bytes - 1


def test_command_at_the_limit_fails() -> None:
    """A command encoding to exactly max_command_bytes raises PayloadTooLarge."""
    c = codec()
    props = _command_of_size(c, SMALL.max_command_bytes)
    with pytest.raises(PayloadTooLarge) as info:
        c.event(IDS, "test", props, TS)
    assert info.value.size == SMALL.max_command_bytes
    assert info.value.limit == SMALL.max_command_bytes
    assert info.value.field is None
    assert str(SMALL.max_command_bytes) in str(info.value)


def test_customer_command_over_the_limit_fails() -> None:
    """A customer update over max_command_bytes raises PayloadTooLarge."""
    props = {f"p{i}": "z" * 90 for i in range(20)}
    with pytest.raises(PayloadTooLarge) as info:
        codec().customer(IDS, props, TS)
    assert info.value.size > SMALL.max_command_bytes
    assert info.value.field is None


def test_default_value_limit_is_16000_bytes() -> None:
    """With the default limits a value of 15,999 bytes passes and 16,000 fails."""
    c = Codec(Limits())
    ok = "x" * 15_997
    assert event(c, {"v": ok})["properties"]["v"] == ok
    with pytest.raises(PayloadTooLarge) as info:
        c.event(IDS, "test", {"v": "x" * 15_998}, TS)
    assert info.value.size == 16_000
    assert info.value.limit == 16_000
    assert info.value.field == "v"


# -- property-based --------------------------------------------------------------


class _Bad(Exception):
    """Marks an input the codec must refuse."""


_offsets = st.integers(min_value=-(24 * 60 - 1), max_value=24 * 60 - 1).map(
    lambda minutes: timezone(timedelta(minutes=minutes))
)
_aware = st.one_of(
    st.datetimes(timezones=st.one_of(st.just(timezone.utc), _offsets)),
    # The ends of the range, where converting to UTC can overflow.
    st.tuples(st.sampled_from([datetime.min, datetime.max]), _offsets).map(
        lambda pair: pair[0].replace(tzinfo=pair[1])
    ),
)
_decimals = st.one_of(
    st.decimals(min_value=-(10**12), max_value=10**12, allow_nan=False),
    st.sampled_from([Decimal("NaN"), Decimal("sNaN"), Decimal("-Infinity")]),
)
# Values that can sit in a set (hashable), special types included.
_hashable = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.text(max_size=20),
    _aware,
    st.datetimes(),  # naive: refused
    st.dates(),
    st.uuids(),
    st.times(),  # naive: sent as text
    st.times(timezones=_offsets),  # with a tzinfo: refused
)
_leaves = st.one_of(
    _hashable,
    st.floats(),
    _decimals,
    st.binary(max_size=4),  # refused
    st.timedeltas(),  # refused
)
_bad_leaves = st.one_of(
    st.builds(object),
    st.complex_numbers(allow_nan=False),
)


def _containers(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Every kind of container msgspec encodes, with ``children`` inside."""
    return st.one_of(
        st.lists(children, max_size=4),
        st.lists(children, max_size=3).map(tuple),
        st.dictionaries(st.text(max_size=8), children, max_size=4),
        st.dictionaries(st.text(max_size=8), children, max_size=3).map(OrderedDict),
        st.dictionaries(st.text(max_size=8), children, max_size=3).map(
            MappingProxyType
        ),
        st.frozensets(_hashable, max_size=3),
        st.sets(_hashable, max_size=3),
        children.map(_Order),
        children.map(_Visit),
    )


_values = st.recursive(st.one_of(_leaves, _bad_leaves), _containers, max_leaves=12)


def _normalised(value: Any) -> Any:
    """What the API should receive for ``value``; raises _Bad if it must be refused.

    Written from the README's table, independently of ``trackasync._values``.
    """
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Decimal):
        return float(value) if value.is_finite() else None
    if isinstance(value, datetime):
        if value.utcoffset() is None:
            raise _Bad
        try:
            utc = value.astimezone(timezone.utc)
        except OverflowError:
            raise _Bad from None
        return utc.replace(tzinfo=None).isoformat() + "Z"
    if isinstance(value, time):
        if value.tzinfo is not None:
            raise _Bad
        return value.isoformat()
    if isinstance(value, (date, UUID)):
        return str(value)
    if isinstance(value, (bytes, timedelta)):
        raise _Bad
    if isinstance(value, _Order):
        return {"at": _normalised(value.at), "note": value.note}
    if isinstance(value, _Visit):
        return {"at": _normalised(value.at), "page": value.page}
    if isinstance(value, Mapping):
        return {key: _normalised(item) for key, item in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_normalised(item) for item in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise _Bad


_shared = Codec(Limits())


@settings(max_examples=300, deadline=None, database=None)
@given(st.dictionaries(st.text(max_size=8), _values, max_size=6))
def test_random_properties_round_trip_or_raise_invalid_event(
    properties: dict[str, Any],
) -> None:
    """Random properties, with datetimes and every other type in any container,
    either round-trip (normalised) or raise InvalidEvent; never anything else."""
    try:
        expected: Any = _normalised(properties)
    except _Bad:
        expected = _Bad
    for c in (_shared, Codec(Limits())):
        for route in ("event", "customer"):
            if route == "customer" and not properties:
                continue
            try:
                body = encode(c, route, properties)
            except InvalidEvent:
                assert expected is _Bad
                continue
            assert expected is not _Bad, "a value that must be refused was encoded"
            assert msgspec.json.decode(body)["properties"] == expected


# Values whose meaning JSON keeps: the codec must write exactly what a plain
# msgspec encoder writes (the bytes sent before datetime handling was reworked).
_json_values = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(),
        st.text(max_size=20),
        st.sampled_from(["The Thing", "2024-01-01T00:00:00+02:00", "T", "12:00:00"]),
        st.dates(),
        st.uuids(),
        st.times(),
    ),
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.lists(children, max_size=3).map(tuple),
        st.dictionaries(st.text(max_size=8), children, max_size=4),
        st.dictionaries(st.text(max_size=8), children, max_size=3).map(OrderedDict),
        children.map(_Order),
        st.frozensets(st.text(max_size=5), max_size=3),
    ),
    max_leaves=12,
)
_plain_encode = msgspec.json.Encoder().encode


@settings(max_examples=300, deadline=None, database=None)
@given(st.dictionaries(st.text(max_size=8), _json_values, min_size=1, max_size=6))
def test_ordinary_values_encode_to_the_same_bytes(properties: dict[str, Any]) -> None:
    """Where the meaning does not change, the bytes do not either."""
    assert _shared.event(IDS, "test", properties, TS) == _plain_encode(
        {
            "customer_ids": IDS,
            "event_type": "test",
            "timestamp": TS,
            "properties": properties,
        }
    )
    assert _shared.customer(IDS, properties, TS) == _plain_encode(
        {"customer_ids": IDS, "properties": properties, "update_timestamp": TS}
    )


def test_custom_mapping_properties_are_encoded() -> None:
    """A Mapping subclass with str keys is encoded like a dict."""

    class Props(Mapping[str, Any]):
        def __init__(self, data: dict[str, Any]) -> None:
            self._data = data

        def __getitem__(self, key: str) -> Any:
            return self._data[key]

        def __iter__(self) -> Any:
            return iter(self._data)

        def __len__(self) -> int:
            return len(self._data)

    assert event(codec(), Props({"a": [1, 2]}))["properties"] == {"a": [1, 2]}
