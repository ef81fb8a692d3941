"""Test helpers for code that uses trackasync: transports and a fake Tracking API.

- ``MockTransport(handler)`` and ``RecordingTransport`` replace the network in
  unit tests;
- ``FakeTrackingAPI`` is a real HTTP server on 127.0.0.1 that behaves like the
  Tracking API (auth, validation, deduplication, faults), served in the running
  loop (``async with``) or from a thread of its own (``with``); its pytest
  fixture is ``fake_tracking_api``, registered when trackasync is installed (the
  plugin module is the top-level ``pytest_trackasync``).
"""

from ._fake_api import (
    CHAOS_KINDS as CHAOS_KINDS,
    FakeTrackingAPI as FakeTrackingAPI,
    HandledRequest as HandledRequest,
)
from ._fake_consent import StoredConsent as StoredConsent
from ._fake_store import CustomerKey as CustomerKey, StoredEvent as StoredEvent
from ._transport import (
    MockTransport as MockTransport,
    RecordingTransport as RecordingTransport,
    accept_all as accept_all,
    commands_of as commands_of,
)

__all__ = (
    "accept_all",
    "CHAOS_KINDS",
    "commands_of",
    "CustomerKey",
    "FakeTrackingAPI",
    "HandledRequest",
    "MockTransport",
    "RecordingTransport",
    "StoredConsent",
    "StoredEvent",
)
