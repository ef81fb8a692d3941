"""Events shaped at the call: default properties merged in, then ``before_send``.

Both are options of the client. When neither is set, the client does not come
here at all (one attribute test on its hot path). When one is, every event
(consents included; customer updates are not events and are left alone) is
shaped here before it is validated, size-checked and encoded, once:

1. ``default_properties`` are merged under the call's own properties (the
   call's win on a shared name);
2. ``before_send(event)`` receives an ``Event`` (a fresh object with fresh
   dicts: changing it never changes what the caller passed) and returns it,
   changed or not, or ``None`` to drop the event. It runs in the caller's
   thread and context, synchronously: it must be cheap.

A dropped event never enters the queue: its ``Delivery`` is returned already
settled with ``DeliveryFailed`` reason ``"filtered"``, and ``Stats.filtered``
counts it (it is not a term of the ``Stats`` invariant, because it was never
enqueued). An exception in ``before_send``, or a return value that is neither
an ``Event`` nor ``None``, raises ``InvalidEvent`` at the call, chained to the
hook's own exception: the event is the caller's to handle, never lost silently.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import Any

import msgspec

from ._delivery import Delivery
from ._exceptions import ConfigError, DeliveryFailed, InvalidEvent
from ._timestamps import to_seconds

__all__ = ["BeforeSend", "Event", "Shaper", "check_default_properties", "filtered"]


class Event(msgspec.Struct, kw_only=True):
    """One event as ``before_send`` sees it, before it is validated and encoded.

    ``properties`` holds the default properties merged with the call's own;
    ``timestamp`` is UNIX seconds (the call's, or now, taken at the call).
    Change any field in place, or build a new ``Event``, and return it.
    """

    customer_ids: dict[str, str]
    event_type: str
    properties: dict[str, Any]
    timestamp: float


BeforeSend = Callable[[Event], "Event | None"]
"""``before_send``: takes an ``Event``, returns it (changed or not) or None."""


def check_default_properties(value: object) -> dict[str, Any] | None:
    """``default_properties`` as a private dict, or ``ConfigError``.

    Checked once, at construction: names must be strings and values must be
    JSON-encodable (the same encoder then encodes them with every event).
    """
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise ConfigError("default_properties must be a mapping of name to value")
    props = dict(value)
    for name in props:
        if not isinstance(name, str) or not name:
            raise ConfigError(
                f"default_properties names must be non-empty strings, got {name!r}"
            )
    try:
        msgspec.json.encode(props)
    except Exception as exc:
        raise ConfigError(
            "default_properties must be JSON values (str, int, float, bool, None, "
            f"lists and dicts of them): {type(exc).__name__}"
        ) from None
    return props


def filtered(created: float, owner: int) -> Delivery:
    """The handle of an event ``before_send`` dropped: settled at once, with
    reason "filtered", and an empty body (nothing of the event is kept)."""
    delivery = Delivery("customers/events", b"{}", created, owner)
    delivery._settle(
        DeliveryFailed("filtered", "before_send dropped the event; it was never queued")
    )
    return delivery


def shaper_of(
    default_properties: Mapping[str, Any] | None, before_send: BeforeSend | None
) -> Shaper | None:
    """The shaper for these options, or None when neither is set (the client
    then skips shaping with one attribute test)."""
    defaults = check_default_properties(default_properties)
    if not defaults and before_send is None:
        return None
    return Shaper(defaults or None, before_send)


class Shaper:
    """Applies ``default_properties`` and ``before_send`` to each event."""

    __slots__ = ("_before_send", "_defaults", "_lock", "filtered")

    def __init__(
        self, defaults: dict[str, Any] | None, before_send: BeforeSend | None
    ) -> None:
        self._defaults = defaults
        self._before_send = before_send
        self._lock = threading.Lock()
        #: Events ``before_send`` dropped (any thread).
        self.filtered = 0

    def shape(
        self,
        customer_ids: Mapping[str, str],
        event_type: str,
        properties: Mapping[str, Any] | None,
        timestamp: float,
    ) -> Event | None:
        """The event to encode, or None if ``before_send`` dropped it."""
        defaults = self._defaults
        # Exact-class tests first: the ABC isinstance costs more than the rest.
        if properties is None:
            merged = {} if defaults is None else defaults.copy()
        elif properties.__class__ is dict or isinstance(properties, Mapping):
            merged = (
                dict(properties) if defaults is None else {**defaults, **properties}
            )
        else:
            raise InvalidEvent(
                f"properties must be a mapping, got {type(properties).__name__}",
                field="properties",
            )
        hook = self._before_send
        if hook is None:
            return Event(
                customer_ids=customer_ids,  # type: ignore[arg-type]
                event_type=event_type,
                properties=merged,
                timestamp=timestamp,
            )
        if customer_ids.__class__ is not dict and not isinstance(customer_ids, Mapping):
            raise InvalidEvent(
                "customer_ids must be a mapping of id name to value, "
                f"got {type(customer_ids).__name__}",
                field="customer_ids",
            )
        event = Event(
            customer_ids=dict(customer_ids),
            event_type=event_type,
            properties=merged,
            timestamp=timestamp,
        )
        try:
            result = hook(event)
        except Exception as exc:
            # The hook's own text is not quoted: it may hold the event's data.
            raise InvalidEvent(
                f"before_send raised {type(exc).__name__}; the event was not queued",
                field="before_send",
            ) from exc
        if result is None:
            with self._lock:
                self.filtered += 1
            return None
        if not isinstance(result, Event):
            raise InvalidEvent(
                "before_send must return a trackasync.Event or None, got "
                f"{type(result).__name__}",
                field="before_send",
            )
        if result.timestamp is not timestamp:
            result.timestamp = to_seconds(result.timestamp, "timestamp")
        return result
