"""What the fake Tracking API keeps: accepted events, customer properties, a clock.

The store applies Bloomreach's documented rules, simplified for a test double:

* An event is a duplicate when it has the same customer, event type, timestamp
  and the same property values *with their types* as one already stored. The
  comparison uses a canonical typed encoding (JSON with sorted keys), so ``1``,
  ``1.0``, ``true`` and ``"1"`` are all different values, which decoded Python
  equality (``1 == 1.0 == True``) would get wrong. Consent events are never
  deduplicated. The dedup memory lasts as long as the store (the real one keeps
  90 days).
* A customer is identified by its whole ``customer_ids`` mapping (see
  :func:`customer_key`); the real identity merging across ids is not emulated.
* Customer properties are merged per property: a value is only overwritten by an
  update whose ``update_timestamp`` is newer than the one that wrote it. An update
  without ``update_timestamp`` counts as "now".
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import msgspec

from ._fake_consent import StoredConsent, read_consent

__all__ = [
    "CONSENT_EVENT_TYPE",
    "CustomerKey",
    "FakeStore",
    "ServerClock",
    "StoredEvent",
    "customer_key",
]

CustomerKey = tuple[tuple[str, str], ...]
"""A customer's identity in the fake: its ``customer_ids`` items, sorted."""

CONSENT_EVENT_TYPE = "consent"
"""The event type that is never deduplicated."""

_MICROSECOND = 1e-6


def customer_key(customer_ids: Mapping[str, str]) -> CustomerKey:
    """Return the key the fake files a customer under: its id items, sorted."""
    return tuple(sorted(customer_ids.items()))


# gc=False is safe: a StoredEvent is never referenced by its own fields.
class StoredEvent(msgspec.Struct, frozen=True, gc=False):
    """One event the fake accepted (duplicates are not stored).

    ``timestamp`` is the one sent, or the server's time of receipt when none was.
    ``properties`` is ``{}`` when the event came without properties.
    """

    customer_ids: Mapping[str, str]
    event_type: str
    timestamp: float
    properties: Mapping[str, Any]

    @property
    def customer(self) -> CustomerKey:
        """The key of the customer this event belongs to."""
        return customer_key(self.customer_ids)


class ServerClock:
    """The fake server's wall clock, optionally skewed, with unique stamps.

    ``offset`` is added to the local clock so tests can simulate a server whose
    clock differs from the client's (``system/time`` reports it too).
    """

    __slots__ = ("_last_stamp", "offset")

    def __init__(self, offset: float = 0.0) -> None:
        self.offset = offset
        self._last_stamp = 0.0

    def now(self) -> float:
        """The server's current UNIX time in seconds."""
        return time.time() + self.offset

    def stamp(self) -> float:
        """A receipt time that is strictly later than the previous one.

        Events sent without a timestamp get this. Two such events received in
        the same microsecond must not look like duplicates of each other, and
        two timestamp-less customer updates must apply in arrival order.
        """
        now = self.now()
        if now <= self._last_stamp:
            now = self._last_stamp + _MICROSECOND
        self._last_stamp = now
        return now


class FakeStore:
    """Accepted events and customer properties, with dedup and per-property LWW.

    Events are kept as the JSON they arrived as and decoded only when read:
    bytes are invisible to the garbage collector, so a benchmark that pushes
    hundreds of thousands of events does not pay for full collections walking
    through them all.
    """

    __slots__ = (
        "_customers",
        "_decoded",
        "_encoder",
        "_event_data",
        "_event_times",
        "_seen",
        "_updated_at",
        "consents",
        "duplicates",
        "not_consents",
    )

    def __init__(self) -> None:
        # Sorted keys make the encoding canonical; msgspec keeps int/float/bool
        # apart ("1", "1.0", "true"), which is exactly the "same types" rule.
        self._encoder = msgspec.json.Encoder(order="sorted")
        self._event_data: list[bytes] = []
        self._event_times: list[float] = []
        self._decoded: list[StoredEvent] = []
        self._seen: set[bytes] = set()
        self._customers: dict[CustomerKey, dict[str, Any]] = {}
        self._updated_at: dict[CustomerKey, dict[str, float]] = {}
        self.duplicates = 0
        #: Recognised consents, in arrival order (a resend is a second one).
        self.consents: list[StoredConsent] = []
        #: Events named "consent" that were not one (stored as plain events).
        self.not_consents = 0

    def add_event(
        self,
        raw: bytes,
        customer_ids: dict[str, str],
        event_type: str,
        timestamp: float,
        properties: dict[str, Any],
    ) -> bool:
        """Store an event unless it duplicates one already stored; True if stored.

        ``raw`` is the event's JSON as sent; the other arguments were parsed
        from it (``timestamp`` is the receipt time when it had none).
        """
        if event_type != CONSENT_EVENT_TYPE:
            # The sorted-keys encoding of the ids mapping is the same customer
            # key as customer_key(), and float() makes 1 and 1.0 the same time.
            fingerprint = self._encoder.encode(
                (customer_ids, event_type, float(timestamp), properties)
            )
            if fingerprint in self._seen:
                self.duplicates += 1
                return False
            self._seen.add(fingerprint)
        else:
            consent = read_consent(customer_ids, timestamp, properties)
            if consent is None:
                self.not_consents += 1
            else:
                self.consents.append(consent)
        self._event_data.append(raw)
        self._event_times.append(timestamp)
        return True

    def update_customer(
        self, customer_ids: dict[str, str], properties: dict[str, Any], stamp: float
    ) -> None:
        """Merge ``properties`` into the customer; newer stamps win per property."""
        key = customer_key(customer_ids)
        stored = self._customers.setdefault(key, {})
        written_at = self._updated_at.setdefault(key, {})
        for name, value in properties.items():
            previous = written_at.get(name)
            # Strictly older only: an update carrying the same stamp as the
            # stored value does not clobber it.
            if previous is None or previous < stamp:
                stored[name] = value
                written_at[name] = stamp

    @property
    def events(self) -> list[StoredEvent]:
        """A copy of the stored events, in the order they were accepted."""
        decoded = self._decoded
        for index in range(len(decoded), len(self._event_data)):
            data = msgspec.json.decode(self._event_data[index])
            decoded.append(
                StoredEvent(
                    data["customer_ids"],
                    data["event_type"],
                    self._event_times[index],
                    data.get("properties") or {},
                )
            )
        return list(decoded)

    def consent_in_force(
        self, customer_ids: Mapping[str, str], category: str
    ) -> StoredConsent | None:
        """The consent with the latest timestamp for this customer and category
        (whatever order they arrived in), or None if there is none.

        On equal timestamps the API may apply either; the fake keeps the first
        to arrive, the unfavourable choice, so that a test catches a client
        that relies on arrival order."""
        key = customer_key(customer_ids)
        found: StoredConsent | None = None
        for consent in self.consents:
            if consent.category != category:
                continue
            if customer_key(consent.customer_ids) != key:
                continue
            if found is None or consent.timestamp > found.timestamp:
                found = consent
        return found

    @property
    def event_count(self) -> int:
        """How many events are stored, without decoding them."""
        return len(self._event_data)

    @property
    def customers(self) -> dict[CustomerKey, dict[str, Any]]:
        """A copy of every updated customer's properties, by customer key."""
        return {key: dict(props) for key, props in self._customers.items()}

    def customer(self, customer_ids: Mapping[str, str]) -> dict[str, Any] | None:
        """A copy of one customer's properties, or None if it was never updated."""
        props = self._customers.get(customer_key(customer_ids))
        return None if props is None else dict(props)
