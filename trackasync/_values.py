"""What property values become on the wire, for the values that need a decision.

``Codec`` encodes ordinary JSON values (str, int, float, bool, None, and dicts
and lists of them) with msgspec directly. Everything else goes through
``normalise`` first, which settles every value whose meaning would otherwise
change on the wire (the README lists them):

- aware ``datetime`` -> the same instant in UTC (``...Z``); naive ones refused;
- ``time`` with a ``tzinfo`` refused (its UTC form depends on a date);
- ``Decimal`` NaN / infinities -> ``None`` (``null``), as for floats; finite
  ones are left to the encoder, which writes them as JSON numbers;
- ``bytes``, ``bytearray``, ``memoryview`` and ``timedelta`` refused.

Containers of every kind msgspec encodes (dict subclasses, other mappings,
lists, tuples, sets, dataclasses, Structs, Enums) are first flattened to dicts
and lists by ``msgspec.to_builtins``, in C, so one walk over dicts and lists
reaches every value wherever it sits. The walk is iterative: no nesting depth
that msgspec accepts can overflow the Python stack here.

``sent_as_is`` answers the cheaper question first: are these values ones that
``normalise`` would leave exactly as they are (so the caller's own encoding is
what goes on the wire)? It says yes only for shapes it can prove: plain
scalars, UTC datetimes, and lists and str-keyed dicts of scalars, nested a few
levels, as applications send tags, addresses and line items. The containers of
an event are checked together by one ``msgspec.convert``, in C.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime, time, timedelta, timezone
from decimal import Decimal
from itertools import chain
from typing import Any

import msgspec

from ._exceptions import InvalidEvent

#: Classes of values that need no decision: a dict of only these is sent as is.
PLAIN = frozenset((str, int, float, bool, type(None)))

# Left as they are by ``to_builtins`` so that the walk sees them (``date``,
# ``UUID`` and Enums become the strings and values msgspec would write anyway).
_KEPT = (datetime, time, timedelta, Decimal, bytes, bytearray, memoryview)
_REFUSED_BYTES = (bytes, bytearray, memoryview)
_UTC = timezone.utc

# ``issuperset`` over ``map(type, ...)``: one C-level pass over many values.
_all_plain = PLAIN.issuperset
_all_str = frozenset((str,)).issuperset
_all_dicts = frozenset((dict,)).issuperset
_type = type
_chain = chain.from_iterable
_dict_values = dict.values

#: Containers inside a property value that ``sent_as_is`` looks into before it
#: leaves the value to ``normalise``: a property holding a list of objects
#: holding lists of scalars is still proven, one level deeper is not.
AS_IS_DEPTH = 2


# What ``sent_as_is`` proves of all the containers of an event at once, in C:
# lists (or other sequences) and str-keyed objects holding only JSON scalars
# (or their subclasses), nested AS_IS_DEPTH levels below a property at most.
# ``msgspec.convert`` fails on anything else inside them (a datetime, time,
# timedelta, bytes, an Enum that is not an int, a non-str key, a deeper
# container) and builds a throwaway copy: still less than half the cost of
# visiting the values from Python.
_Scalar = None | bool | int | float | str
_Depth2 = _Scalar | list[_Scalar] | dict[str, _Scalar]
_Depth1 = _Scalar | list[_Depth2] | dict[str, _Depth2]


class _Containers(msgspec.Struct, array_like=True, gc=False):
    """Only for its type: ``convert((containers,), _Containers)`` checks them."""

    items: list[list[_Depth1] | dict[str, _Depth1]]


_convert = msgspec.convert
_ValidationError = msgspec.ValidationError


def sent_as_is(values: Iterable[Any]) -> bool:
    """True if ``normalise`` would leave every one of ``values`` as it is, so
    their own encoding is what goes on the wire.

    Only for values that encoded: the encoder refuses non-finite ``Decimal``
    values, which ``convert`` would take for floats (a finite one encodes the
    same either way). At the top level, plain scalars (exact classes) and
    ``timezone.utc`` datetimes (which msgspec writes as ``...Z``, as
    ``normalise`` would); lists and dicts are checked together by one
    ``convert`` (see ``_Containers``), and, if that fails, by the exact walk,
    which also proves UTC datetimes inside them. False means "not proven",
    never "refused": ``normalise`` then decides.
    """
    containers: list[Any] = []
    for value in values:
        cls = _type(value)
        if cls in PLAIN:
            continue
        if cls is list or cls is dict:
            containers.append(value)
        elif cls is datetime:
            if value.tzinfo is not _UTC:
                return False
        else:
            return False
    if not containers:
        return True
    try:
        _convert((containers,), _Containers)
    except _ValidationError:
        return _exact_proof(containers, AS_IS_DEPTH)
    return True


def _exact_proof(values: Iterable[Any], depth: int) -> bool:
    """``sent_as_is``' check from Python, ``depth`` levels deep.

    Exact classes only (a subclass of str or dict, an IntEnum or a tuple are
    not proven here, though ``convert`` proves them: their encoding is the
    same), str keys only (``normalise`` settles other keys), and a
    ``datetime`` only with ``timezone.utc`` itself.
    """
    for value in values:
        cls = _type(value)
        if cls in PLAIN:
            continue
        if cls is list:
            if _all_plain(map(_type, value)):
                continue
            if (
                _all_dicts(map(_type, value))
                and _all_str(map(_type, _chain(value)))
                and _all_plain(map(_type, _chain(map(_dict_values, value))))
            ):
                continue  # a list of flat objects (line items), in C
            inner: Iterable[Any] = value
        elif cls is dict:
            if not _all_str(map(_type, value)):
                return False
            inner = value.values()
            if _all_plain(map(_type, inner)):
                continue
        elif cls is datetime:
            if value.tzinfo is not _UTC:
                return False
            continue
        else:
            return False
        if not depth or not _exact_proof(inner, depth - 1):
            return False
    return True


def enc_hook(value: object) -> object:
    """msgspec's hook for types it does not encode natively: any other Mapping
    is sent as an object (like a dict); everything else stays unsupported."""
    if isinstance(value, Mapping):
        try:
            return dict(value)
        except Exception:
            # The caller's mapping failed while being read: a refusal, like
            # any other value that cannot be encoded (its message may not be
            # shown, it could quote the mapping's contents).
            raise TypeError(
                f"a {type(value).__name__} mapping that could not be read"
            ) from None
    if isinstance(value, (tuple, frozenset)):
        # Encoded natively as values, so the hook meets them only as keys.
        raise TypeError("Only dicts with str-like or number-like keys are supported")
    # msgspec passes this message on; never the value's repr (it could be big).
    raise TypeError(f"Encoding objects of type {type(value).__name__} is unsupported")


def normalise(properties: Mapping[str, Any]) -> dict[str, Any] | None:
    """``properties`` with every value settled, or None if none needed settling.

    None means the caller's own encoding is already what goes on the wire.
    Raises ``InvalidEvent`` naming the property path of a refused value, and for
    values msgspec cannot represent (unsupported types, nesting too deep).
    """
    try:
        flat = msgspec.to_builtins(properties, builtin_types=_KEPT, enc_hook=enc_hook)
    except RecursionError:
        raise InvalidEvent(
            "properties are nested too deeply to be encoded", field="properties"
        ) from None
    except (TypeError, ValueError) as exc:
        raise _unsupported(properties, exc) from None
    # ``to_builtins`` built fresh dicts and lists: they can be changed in place.
    changed = False
    stack: list[tuple[Any, str]] = [(flat, "")]
    while stack:
        container, path = stack.pop()
        if _type(container) is list:
            for index, item in enumerate(container):
                cls = _type(item)
                if cls in PLAIN:
                    continue
                where = f"{path}[{index}]"
                if cls is dict or cls is list:
                    stack.append((item, where))
                    continue
                if cls is tuple:  # kept by to_builtins; a list encodes the same
                    container[index] = item = list(item)
                    stack.append((item, where))
                    continue
                new = _settle(item, where)
                if new is not item:
                    container[index] = new
                    changed = True
            continue
        rekey = False
        for key, item in container.items():
            if _type(key) not in PLAIN:
                rekey = True
            cls = _type(item)
            if cls in PLAIN:
                continue
            where = f"{path}.{key}" if path else str(key)
            if cls is dict or cls is list:
                stack.append((item, where))
                continue
            if cls is tuple:
                container[key] = item = list(item)
                stack.append((item, where))
                continue
            new = _settle(item, where)
            if new is not item:
                # Same key, new value: no resize, safe while iterating.
                container[key] = new
                changed = True
        if rekey:
            # A datetime (or other settled type) as an object key: rebuild the
            # object in order, with each key settled like a value.
            items = [
                (_settle(key, f"{path}.{key}" if path else str(key)), item)
                for key, item in container.items()
            ]
            if any(new is not key for new, (key, _) in zip(items, container.items())):
                # Aware datetimes that are the same instant are equal keys
                # already, so converting them cannot merge two entries.
                changed = True
                container.clear()
                container.update(items)
    return flat if changed else None


def _settle(value: Any, path: str) -> Any:
    """One leaf: the value to send (the same object if unchanged) or InvalidEvent."""
    if isinstance(value, datetime):
        offset = value.utcoffset()
        if offset is None:
            raise InvalidEvent(
                f"property {path!r} is a naive datetime; give it a tzinfo so it "
                "can be sent as UTC",
                field=path,
            )
        if offset or value.tzinfo is not _UTC:
            try:
                return value.astimezone(_UTC)
            except OverflowError:
                raise InvalidEvent(
                    f"property {path!r} is a datetime outside the range UTC can "
                    "represent",
                    field=path,
                ) from None
        return value
    if isinstance(value, time):
        if value.tzinfo is not None:
            raise InvalidEvent(
                f"property {path!r} is a time with a tzinfo, which has no UTC form "
                "without a date; send an aware datetime, or a naive time",
                field=path,
            )
        return value
    if isinstance(value, Decimal):
        # JSON has no NaN: like a float NaN or infinity, it goes out as null.
        return value if value.is_finite() else None
    if isinstance(value, _REFUSED_BYTES):
        raise InvalidEvent(
            f"property {path!r} is {type(value).__name__}, whose meaning as JSON "
            "text is ambiguous; decode it to str, or base64-encode it yourself",
            field=path,
        )
    if isinstance(value, timedelta):
        raise InvalidEvent(
            f"property {path!r} is a timedelta; send a number, e.g. "
            "value.total_seconds()",
            field=path,
        )
    return value


def _unsupported(properties: Mapping[str, Any], exc: Exception) -> InvalidEvent:
    """Name the top-level property ``to_builtins`` could not convert."""
    for key, value in properties.items():
        try:
            msgspec.to_builtins(value, builtin_types=_KEPT, enc_hook=enc_hook)
        except RecursionError:
            return InvalidEvent(
                f"property {key!r} is nested too deeply to be encoded", field=key
            )
        except (TypeError, ValueError) as inner:
            reason = str(inner)
            try:
                _json(value)
            except (TypeError, ValueError) as encoding:
                reason = str(encoding)  # the encoder words it for JSON
            except RecursionError:
                pass
            return InvalidEvent(
                f"property {key!r} cannot be encoded as JSON: {reason}", field=key
            )
    return InvalidEvent(f"properties cannot be encoded as JSON: {exc}")


# Only for wording errors; ``Codec`` keeps its own reused encoder.
_json = msgspec.json.Encoder(enc_hook=enc_hook, decimal_format="number").encode
