"""Where every line read by ``trackasync send`` ends: delivered, or in the rejects file.

A line handed to the client is *pending* until its outcome arrives (in the
client's thread). A run that stops early (Ctrl-C, refused credentials, a
damaged input) settles whatever is still pending as ``unknown``: it may have
been stored. Every line that reached the client is written with the timestamp
it was sent with, so sending the rejects file again is absorbed by the API's
deduplication instead of storing an event twice.

The rejects file is one that ``send`` reads back: each rejected line as it was
(plus that timestamp), preceded by a comment line ``# line N: reason: error``.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, deque
from typing import IO

import msgspec

from .._exceptions import DeliveryFailed

#: The error text kept in a comment: one line, this long at most.
_MAX_NOTE = 300
_decode = msgspec.json.Decoder().decode
_encode = msgspec.json.Encoder().encode


def _note(text: str) -> str:
    """``text`` fit for a one-line comment: no control characters, capped."""
    clean = "".join(ch if ch.isprintable() else " " for ch in text)
    return clean if len(clean) <= _MAX_NOTE else clean[: _MAX_NOTE - 3] + "..."


def stamped(line: bytes, timestamp: float | None) -> bytes:
    """The line with ``timestamp`` set, or as it was when there is none to set."""
    body = line.rstrip(b"\r\n")
    if timestamp is None:
        return body
    data = _decode(body)
    data["timestamp"] = timestamp
    return _encode(data)


class Ledger:
    """Outcomes of the lines, from any thread; the file is written by the main one."""

    def __init__(self, rejects: IO[bytes] | None) -> None:
        self._file = rejects
        self._lock = threading.Lock()
        self._room = threading.Condition(self._lock)
        # Bytes of the pending lines: the reader waits while they are over a
        # budget, so long lines cannot fill memory up to the queue's length.
        self._bytes = 0
        #: The most bytes ever pending at once.
        self.peak_bytes = 0
        #: time.monotonic() of the latest outcome (or of the first line sent).
        self.last_outcome: float | None = None
        # line number -> (the line, the timestamp it was sent with, if we set one)
        self._pending: dict[int, tuple[bytes, float | None]] = {}
        self._out: deque[tuple[int, str, str, bytes | None]] = deque()
        self._closed = False
        self.delivered = 0
        self.reasons: Counter[str] = Counter()
        self.first: list[str] = []
        #: The latest refusal of the credentials not followed by any success.
        self.auth_refused: str | None = None
        #: The highest line number handed to the client.
        self.highest = 0

    # -- from the main thread -------------------------------------------------------

    def sending(self, number: int, line: bytes, timestamp: float | None) -> None:
        """``line`` is about to be handed to the client (it may be sent from now)."""
        with self._lock:
            self._pending[number] = (line, timestamp)
            self.highest = number
            self._bytes += len(line)
            self.peak_bytes = max(self.peak_bytes, self._bytes)
            if self.last_outcome is None:
                self.last_outcome = time.monotonic()

    def wait_for_room(self, size: int, budget: int, timeout: float) -> bool:
        """Wait up to ``timeout`` until ``size`` more bytes fit in ``budget``.

        A line always fits when nothing is pending (it may be over the budget
        on its own). Returns whether it fits now.
        """
        with self._room:
            if self._pending and self._bytes + size > budget:
                self._room.wait(timeout)
            return not self._pending or self._bytes + size <= budget

    def _release(self, line: bytes) -> None:
        # Called with the lock held.
        self._bytes -= len(line)
        self._room.notify_all()

    def reject(self, number: int, reason: str, error: str, line: bytes | None) -> None:
        """A line that never reached the client (``None``: too long to keep)."""
        with self._lock:
            self._count(number, reason, error)
            self._out.append((number, reason, error, line))

    def unsent(self, number: int, reason: str, error: str) -> None:
        """The line handed over by :meth:`sending` was refused at the call."""
        with self._lock:
            entry = self._pending.pop(number, None)
            if entry is None:
                return
            self._release(entry[0])
            self._count(number, reason, error)
            self._out.append((number, reason, error, entry[0].rstrip(b"\r\n")))

    def write(self) -> None:
        """Write what was rejected so far to the rejects file."""
        out = self._out
        while out:
            number, reason, error, line = out.popleft()
            if self._file is None:
                continue
            note = f"# line {number}: {reason}: {_note(error)}\n".encode()
            self._file.write(note + (b"" if line is None else line + b"\n"))

    def settle_pending(self, reason: str, error: str) -> int:
        """Give every line still without an outcome ``reason``; later outcomes
        are ignored. Returns how many there were."""
        with self._lock:
            self._closed = True
            pending, self._pending = self._pending, {}
            self._bytes = 0
            self._room.notify_all()
            for number, (line, timestamp) in sorted(pending.items()):
                self._count(number, reason, error)
                self._out.append((number, reason, error, stamped(line, timestamp)))
        return len(pending)

    def close(self) -> None:
        self.write()
        if self._file is not None:
            self._file.close()

    @property
    def count(self) -> int:
        """Lines not delivered."""
        return sum(self.reasons.values())

    @property
    def pending(self) -> int:
        with self._lock:
            return len(self._pending)

    # -- from the client's thread -----------------------------------------------------

    def outcome(self, number: int, failure: DeliveryFailed | None) -> None:
        """The outcome of a line handed to the client."""
        with self._lock:
            if self._closed:
                return
            entry = self._pending.pop(number, None)
            if entry is None:
                return
            self._release(entry[0])
            self.last_outcome = time.monotonic()
            if failure is None:
                self.delivered += 1
                self.auth_refused = None
                return
            if failure.reason == "rejected" and failure.status in (401, 403):
                self.auth_refused = _note(str(failure))
            line, timestamp = entry
            self._count(number, failure.reason, str(failure))
            self._out.append(
                (number, failure.reason, str(failure), stamped(line, timestamp))
            )

    def _count(self, number: int, reason: str, error: str) -> None:
        self.reasons[reason] += 1
        if len(self.first) < 5:
            self.first.append(f"line {number}: {reason}: {_note(error)}")
