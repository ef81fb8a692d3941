"""Validating and encoding commands, once, at the call.

The hot path (``Codec.event`` / ``Codec.customer``) does only cheap checks and one
``msgspec`` encode. Property values that are plain scalars, UTC datetimes, or
plain lists and dicts of them (``_values.sent_as_is``) are sent as encoded.
Anything else (a failed encode, any other value) drops to a slow path that
settles such values (``_values.normalise``) and names any culprit. A body of
``max_value_bytes`` or more also has each value's size checked, without
encoding again the values that cannot reach the limit (``_value_sizes``).

Conversions worth knowing (documented in the README, decided in ``_values``):

- ``datetime`` values inside properties are sent as UTC (``...Z``): the API's ISO
  reader does not take offsets. Naive datetimes are refused.
- NaN and infinities inside properties (float or Decimal) are sent as ``null``,
  the JSON rendering of "no number" (JSON itself cannot carry them); finite
  ``Decimal`` values are JSON numbers, digit for digit.
- Property names must be strings; keys of nested objects follow JSON encoding
  (an ``int`` key becomes a string, as ``json.dumps`` does).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import msgspec

from ._config import Limits
from ._contract import check_names_ascii
from ._exceptions import InvalidEvent, PayloadTooLarge
from ._values import PLAIN, enc_hook, normalise, sent_as_is


class _Event(msgspec.Struct, gc=False):
    """The ``customers/events`` body. A Struct encodes faster than a dict.

    ``gc=False`` is safe: instances live only for the length of one encode call
    and never take part in reference cycles (measured: about 25 % off encoding).
    """

    customer_ids: Mapping[str, str]
    event_type: str
    timestamp: float
    properties: dict[str, Any]


class _CustomerUpdate(msgspec.Struct, gc=False):
    """The ``customers`` body; see ``_Event``."""

    customer_ids: Mapping[str, str]
    properties: dict[str, Any]
    update_timestamp: float


# A value that starts and ends with a letter or digit holds one, and can only
# be "null"/"undefined" (in some letter case) if it has exactly their length:
# at those lengths one lower() tells (ids such as "9f1c-0000" have them, so
# they must not take the full check); empty values take the full check.
_SUSPECT_LENGTHS = frozenset((len("null"), len("undefined")))
_NULLS = frozenset(("null", "undefined"))
_join = "".join
# True if every class in the iterable is a plain JSON scalar's: one C-level pass
# over the property values, so ordinary events never look at their text.
_all_plain = PLAIN.issuperset
_type = type
_MAX_KNOWN_NAMES = 10_000
# isinstance(value, str) as a C function of one argument, for filter().
_is_str = str.__instancecheck__
_filter = filter


def _read_mapping(mapping: Mapping[str, Any], field: str) -> dict[str, Any]:
    """A plain dict of the caller's mapping; InvalidEvent if reading it fails.

    The mapping's own error is not quoted: its text could carry its contents.
    """
    try:
        return dict(mapping)
    except Exception as exc:
        raise InvalidEvent(
            f"{field} could not be read as a mapping ({type(exc).__name__} "
            "while reading it)",
            field=field,
        ) from None


def _valid_id_value(value: object) -> bool:
    """At least one letter or digit, and not the strings "null" / "undefined"."""
    return (
        isinstance(value, str)
        and value.strip().lower() not in ("null", "undefined")
        and any(char.isalnum() for char in value)
    )


class Codec:
    """Validates commands and encodes them to JSON bytes with one reused encoder."""

    __slots__ = ("_encode", "_max_command", "_max_value", "_names")

    def __init__(self, limits: Limits) -> None:
        self._encode = msgspec.json.Encoder(
            enc_hook=enc_hook, decimal_format="number"
        ).encode
        # Property names already seen, all str: checking a dict's names against
        # this set costs half of checking each name's type, and applications use
        # a bounded vocabulary of names. Bounded, in case one does not.
        self._names: set[str] = set()
        self._max_command = limits.max_command_bytes
        self._max_value = limits.max_value_bytes

    # -- hot path ---------------------------------------------------------------

    def event(
        self,
        customer_ids: Mapping[str, str],
        event_type: str,
        properties: Mapping[str, Any] | None,
        timestamp: float,
    ) -> bytes:
        """The body of one ``customers/events`` command.

        This is the hottest function of the library, so the checks of ``_ids``
        and ``_properties`` are inlined here for their common case (a plain
        dict) and fall back to those methods for anything else.
        """
        ids = customer_ids
        if ids.__class__ is not dict or not ids:
            ids = self._ids(ids)
        else:
            for name, value in ids.items():
                if (
                    name.__class__ is not str
                    or not name
                    or value.__class__ is not str
                    or not value
                    or not value[0].isalnum()
                    or not value[-1].isalnum()
                    or (len(value) in _SUSPECT_LENGTHS and value.lower() in _NULLS)
                ):
                    self._check_id(name, value)
        if event_type.__class__ is not str or not event_type:
            raise InvalidEvent(
                f"event_type must be a non-empty string, got {event_type!r}",
                field="event_type",
            )
        props = properties
        if props.__class__ is not dict or not self._names.issuperset(props):
            props = self._properties(props)
        try:
            body = self._encode(_Event(ids, event_type, timestamp, props))
        except Exception:  # not encodable as is: settled or named in _recheck
            body = b""
        if (
            body
            and len(body) < self._max_value
            and (_all_plain(map(_type, props.values())) or sent_as_is(props.values()))
        ):
            return body
        return self._recheck(
            body,
            ids,
            props,
            lambda p: self._encode(_Event(ids, event_type, timestamp, p)),
        )

    def customer(
        self,
        customer_ids: Mapping[str, str],
        properties: Mapping[str, Any] | None,
        update_timestamp: float,
    ) -> bytes:
        """The body of one ``customers`` (update properties) command."""
        ids = self._ids(customer_ids)
        props = self._properties(properties)
        if not props:
            raise InvalidEvent(
                "update_customer needs at least one property", field="properties"
            )

        def reencode(settled: dict[str, Any]) -> bytes:
            return self._encode(_CustomerUpdate(ids, settled, update_timestamp))

        try:
            body = self._encode(_CustomerUpdate(ids, props, update_timestamp))
        except Exception:
            body = b""
        # Not a hot path: _recheck's own proof and size checks serve it whole
        # (``event`` inlines their common case instead).
        return self._recheck(body, ids, props, reencode)

    def _ids(self, customer_ids: Mapping[str, str]) -> Mapping[str, str]:
        if customer_ids.__class__ is not dict:
            if not isinstance(customer_ids, Mapping):
                raise InvalidEvent(
                    "customer_ids must be a mapping of id name to value, "
                    f"got {type(customer_ids).__name__}",
                    field="customer_ids",
                )
            customer_ids = _read_mapping(customer_ids, "customer_ids")
        if not customer_ids:
            raise InvalidEvent(
                "customer_ids needs at least one id, e.g. {'registered': 'ann@example.com'}",
                field="customer_ids",
            )
        for name, value in customer_ids.items():
            # Fast check first: most ids start and end with a letter or digit.
            if (
                name.__class__ is not str
                or not name
                or value.__class__ is not str
                or not value
                or not value[0].isalnum()
                or not value[-1].isalnum()
                or (len(value) in _SUSPECT_LENGTHS and value.lower() in _NULLS)
            ):
                self._check_id(name, value)
        return customer_ids

    def _properties(self, properties: Mapping[str, Any] | None) -> dict[str, Any]:
        if properties is None:
            return {}
        if properties.__class__ is not dict:
            if not isinstance(properties, Mapping):
                raise InvalidEvent(
                    f"properties must be a mapping, got {type(properties).__name__}",
                    field="properties",
                )
            properties = _read_mapping(properties, "properties")
        try:
            _join(properties)  # C-speed check that every name is a str
        except TypeError:
            for key in properties:
                if not isinstance(key, str):
                    raise InvalidEvent(
                        f"property names must be strings, got {key!r}",
                        field=repr(key),
                    ) from None
        # Only names not seen before come here (or every name, once the set is
        # full): the once-per-process check costs nothing on the hot path.
        check_names_ascii(properties)
        if len(self._names) < _MAX_KNOWN_NAMES:
            self._names.update(properties)
        return properties

    # -- slow paths -------------------------------------------------------------

    @staticmethod
    def _check_id(name: object, value: object) -> None:
        if not isinstance(name, str) or not name:
            raise InvalidEvent(
                f"customer id names must be non-empty strings, got {name!r}",
                field="customer_ids",
            )
        if not _valid_id_value(value):
            raise InvalidEvent(
                f"customer id {name!r} must be a string with at least one letter or "
                f"digit, not 'null' or 'undefined'; got {value!r}",
                field=f"customer_ids.{name}",
            )

    def _diagnose(
        self, ids: Mapping[str, str], props: dict[str, Any], exc: Exception
    ) -> InvalidEvent:
        """Name the id or property msgspec could not encode."""
        for label, mapping in (("customer_ids", ids), ("property", props)):
            for key, value in mapping.items():
                try:
                    self._encode(value)
                except Exception as inner:
                    return InvalidEvent(
                        f"{label} {key!r} cannot be encoded as JSON: {inner}",
                        field=key if label == "property" else f"customer_ids.{key}",
                    )
        return InvalidEvent(f"command cannot be encoded as JSON: {exc}")

    def _recheck(
        self,
        body: bytes,
        ids: Mapping[str, str],
        props: dict[str, Any],
        reencode: Callable[[dict[str, Any]], bytes],
    ) -> bytes:
        """Settled values and size limits, for the rare bodies that need them.

        ``body`` is the encoding of ``props`` as given, or empty if that failed.
        """
        if body and (
            _all_plain(map(_type, props.values())) or sent_as_is(props.values())
        ):
            settled = None  # only here for its size
        else:
            settled = normalise(props)
        if settled is not None or not body:
            if settled is not None:
                props = settled
            try:
                body = reencode(props)
            except Exception as exc:
                raise self._diagnose(ids, props, exc) from None
        size = len(body)
        if size >= self._max_command:
            raise PayloadTooLarge(
                f"command is {size} bytes encoded; the limit is under "
                f"{self._max_command} bytes",
                size=size,
                limit=self._max_command,
            )
        if size >= self._max_value:
            self._value_sizes(size - len(reencode({})), props)
        return body

    def _value_sizes(self, room: int, props: dict[str, Any]) -> None:
        """PayloadTooLarge for the first property whose value encodes to
        ``max_value_bytes`` or more; ``room`` is the encoded size of ``props``'s
        entries (the body less its envelope, which includes ``{}``).

        Encoding every value again would cost as much as the body. Instead,
        ``room`` is the sum of every entry's exact size (key, colon, value, a
        comma between two), and each has a cheap lower bound: a str encodes to
        at least len + 2 bytes, anything else to at least 1. ``slack`` is room
        less all the lower bounds, so no value can encode to more than its own
        lower bound plus ``slack``: only values for which that reaches the
        limit are encoded, and each exact size found tightens ``slack``. Bodies
        of long ASCII strings and small containers need no second encode.
        """
        limit = self._max_value
        # In C, over the str values (most of a large body): their lengths.
        lengths = list(map(len, _filter(_is_str, props.values())))
        # Each entry also holds its key (at least len + 2), a colon and a comma
        # (one fewer comma than entries); a value that is not a str, 1 byte.
        slack = (
            room
            - sum(lengths)
            - 2 * len(lengths)
            - (len(props) - len(lengths))
            - sum(map(len, props))
            - 4 * len(props)
            + 1
        )
        if max(lengths, default=0) + 2 + slack < limit:
            return  # the usual case: no value can reach the limit
        lows = [len(value) + 2 if _is_str(value) else 1 for value in props.values()]
        for (key, value), low in zip(props.items(), lows):
            if low + slack < limit:
                continue
            value_size = len(self._encode(value))
            if value_size >= limit:
                raise PayloadTooLarge(
                    f"property {key!r} is {value_size} bytes encoded; each "
                    f"property value must be under {limit} bytes",
                    field=key,
                    size=value_size,
                    limit=limit,
                )
            slack -= value_size - low
