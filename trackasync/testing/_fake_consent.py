"""How the fake Tracking API reads consent events, as Bloomreach documents it.

A consent is an event named ``consent`` whose properties ``action``
(``"accept"`` or ``"reject"``), ``category`` (a non-empty string) and
``valid_until`` (UNIX seconds, or ``"unlimited"``; needed for ``accept``) are
exactly these lowercase names and values. Anything else is stored as an
ordinary event and is not a consent: the API answers success either way, so
the fake counts such events (``not_consents``) for tests to see.

Consents are kept in arrival order, and the one in force for a customer and
category is the one with the latest timestamp, not the last to arrive: the
API executes a batch's commands in no set order.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import msgspec

__all__ = ["StoredConsent", "read_consent"]


# gc=False is safe: a StoredConsent is never referenced by its own fields.
class StoredConsent(msgspec.Struct, frozen=True, gc=False):
    """One consent the fake recognised, as sent."""

    customer_ids: Mapping[str, str]
    action: str
    category: str
    valid_until: float | str | None
    timestamp: float


def _until(value: object) -> float | str | bool | None:
    """``valid_until`` read as the API does; False when it is not valid."""
    if value is None:
        return None
    if value == "unlimited":
        return "unlimited"
    if (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value > 0
    ):
        return float(value)
    return False


def read_consent(
    customer_ids: Mapping[str, str], timestamp: float, properties: dict[str, Any]
) -> StoredConsent | None:
    """The consent this ``consent`` event records, or None if it is not one."""
    action = properties.get("action")
    category = properties.get("category")
    if action not in ("accept", "reject") or not isinstance(category, str):
        return None
    if not category:
        return None
    until = _until(properties.get("valid_until"))
    if until is False or (action == "accept" and until is None):
        return None
    assert until is not True
    return StoredConsent(dict(customer_ids), action, category, until, timestamp)
