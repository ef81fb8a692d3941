"""Test helpers for code that uses trackasync: transports and a fake Tracking API.

- ``MockTransport(handler)`` and ``RecordingTransport`` replace the network in
  unit tests;
- ``FakeTrackingAPI`` is a real HTTP server on 127.0.0.1 that behaves like the
  Tracking API (auth, validation, deduplication, faults); its pytest fixture is
  ``fake_tracking_api``.
"""

from ._transport import (
    MockTransport as MockTransport,
    RecordingTransport as RecordingTransport,
    accept_all as accept_all,
    commands_of as commands_of,
)

__all__ = (
    "accept_all",
    "commands_of",
    "MockTransport",
    "RecordingTransport",
)
