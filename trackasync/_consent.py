"""Consent events: their fields checked at the call, their timestamps ordered.

Bloomreach records a consent from an event named ``consent`` whose properties
``action`` (``"accept"`` or ``"reject"``), ``category`` (a category id from the
project's settings) and ``valid_until`` (UNIX seconds or ``"unlimited"``,
needed for ``accept``) are exactly these lowercase names and values: anything
else is stored as an ordinary event and silently is not a consent. So the
fields are checked here and a mistake raises ``InvalidEvent`` at the call.

The API executes the commands of a batch in no set order and never
deduplicates consent events: what orders an ``accept`` and a ``reject`` of
the same category is their timestamp. ``ConsentClock`` stamps every consent of
one customer and category strictly later than the previous one in this
process, so the later call always wins. It cannot order calls made in other
processes or on other hosts: those are ordered by their wall clocks only.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Mapping
from typing import Any, Literal

from ._exceptions import InvalidEvent
from ._timestamps import to_seconds

__all__ = ["CONSENT", "ConsentClock", "consent_properties"]

CONSENT = "consent"
"""The event type Bloomreach reads consents from."""

ConsentAction = Literal["accept", "reject"]
ACTIONS: tuple[str, ...] = ("accept", "reject")
UNLIMITED = "unlimited"

#: The API keeps six decimals of a timestamp: one microsecond is the smallest
#: step that keeps two stamps apart once stored.
STEP = 1e-6
#: (id name, id value, category) entries remembered at most; see ConsentClock.
MAX_KEYS = 100_000


def consent_properties(
    action: object,
    category: object,
    valid_until: object,
    properties: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """The properties of one consent event, checked; ``InvalidEvent`` if wrong.

    ``properties`` are extra ones sent along (say, a ``message`` or the
    ``identification`` of the source); they may not set the three consent
    fields, which come from the arguments only.
    """
    if action not in ACTIONS or action.__class__ is not str:
        raise InvalidEvent(
            f"consent action must be 'accept' or 'reject' (lowercase), got {action!r}",
            field="action",
        )
    if category.__class__ is not str or not category or category != category.strip():
        raise InvalidEvent(
            "consent category must be a non-empty category id from the project's "
            f"settings (no surrounding spaces), got {category!r}",
            field="category",
        )
    until: float | str | None
    if valid_until is None:
        if action == "accept":
            raise InvalidEvent(
                "an 'accept' consent needs valid_until: UNIX seconds or 'unlimited'",
                field="valid_until",
            )
        until = None
    elif valid_until == UNLIMITED and valid_until.__class__ is str:
        until = UNLIMITED
    elif isinstance(valid_until, str) and valid_until.strip().lower() == UNLIMITED:
        raise InvalidEvent(
            f"consent valid_until must be exactly 'unlimited', got {valid_until!r}",
            field="valid_until",
        )
    else:
        # Seconds, an aware datetime or an ISO 8601 string, converted as every
        # timestamp is (milliseconds refused: the API would read a far future).
        try:
            until = to_seconds(valid_until, "valid_until")
        except InvalidEvent as exc:
            raise InvalidEvent(
                f"consent valid_until must be UNIX seconds, a date-time or "
                f"'unlimited': {exc}",
                field="valid_until",
            ) from None
        if until <= 0:
            raise InvalidEvent(
                f"consent valid_until must be after 1970, got {valid_until!r}",
                field="valid_until",
            )
    extra: dict[str, Any] = {}
    if properties is not None:
        if not isinstance(properties, Mapping):
            raise InvalidEvent(
                f"properties must be a mapping, got {type(properties).__name__}",
                field="properties",
            )
        extra = dict(properties)
        for name in ("action", "category", "valid_until"):
            if name in extra:
                raise InvalidEvent(
                    f"consent property {name!r} is an argument of consent(), "
                    "not one of its extra properties",
                    field=name,
                )
    extra["action"] = action
    extra["category"] = category
    if until is not None:
        extra["valid_until"] = until
    return extra


class ConsentClock:
    """Strictly increasing timestamps per customer id and consent category.

    A consent's stamp is the later of the time asked for (now by default) and
    one microsecond after the previous consent stamped for any of the same
    customer's ids in the same category. Thread-safe: ``SyncClient`` calls it
    from any thread. Memory is bounded: past ``MAX_KEYS`` entries the oldest
    are forgotten, and their latest stamp becomes a floor that every stamp of
    a forgotten (or new) key exceeds, so the guarantee holds without them.
    """

    __slots__ = ("_floor", "_last", "_lock", "_max_keys")

    def __init__(self, max_keys: int = MAX_KEYS) -> None:
        self._lock = threading.Lock()
        self._last: dict[tuple[str, str, str], float] = {}
        self._floor = 0.0
        self._max_keys = max_keys

    def stamp(
        self, customer_ids: Mapping[str, str], category: str, wanted: float
    ) -> float:
        """The timestamp for a consent of this customer and category."""
        try:
            keys = [(name, value, category) for name, value in customer_ids.items()]
            hash(tuple(keys))
        except (AttributeError, TypeError):
            raise InvalidEvent(
                "customer_ids must be a mapping of id name to value, e.g. "
                "{'registered': 'ann@example.com'}",
                field="customer_ids",
            ) from None
        with self._lock:
            last = self._last
            previous = self._floor
            for key in keys:
                seen = last.get(key)
                if seen is not None and seen > previous:
                    previous = seen
            stamp = wanted
            if stamp <= previous:
                # Six decimals, as every other timestamp the client sends.
                stamp = round(previous + STEP, 6)
                if stamp <= previous:  # past 2**52 µs a float cannot step 1 µs
                    stamp = math.nextafter(previous, math.inf)
            for key in keys:
                last.pop(key, None)  # re-inserted last: the dict is oldest-first
                last[key] = stamp
            while len(last) > self._max_keys:
                oldest = next(iter(last))
                self._floor = max(self._floor, last.pop(oldest))
            return stamp
