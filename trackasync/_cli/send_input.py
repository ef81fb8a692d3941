"""The input of ``trackasync send``: lines of bounded length, and the commands in them.

Memory stays constant whatever the input: a line is read at most ``limit + 1``
bytes at a time, and a longer one is skipped to its end without being held
(the API refuses a command that large anyway). A damaged or truncated gzip
stream becomes an :class:`InputError` with a plain message, so the command can
still print its summary. :func:`commands` numbers the lines, skips and counts
blank and ``#`` comment lines, and :func:`parse` turns one into a command.
"""

from __future__ import annotations

import gzip
import os
import stat
import zlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import IO, Any

import msgspec

from .._config import DEFAULT_MAX_COMMAND_BYTES
from .._consent import CONSENT
from .send_ledger import Ledger

#: Bytes read at a time while skipping the rest of a line that is too long.
_SKIP_CHUNK = 1 << 16


class InputError(Exception):
    """The input cannot be read any further; the message says why, for a person."""


class TooLong:
    """Stands in for a line longer than the limit, whose bytes were not kept."""

    __slots__ = ("size",)

    def __init__(self, size: int) -> None:
        self.size = size


def same_file(a: os.stat_result, b: os.stat_result) -> bool:
    """Whether two stats are of one file (through a link or another name too)."""
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


class Source:
    """The input as lines, with how far into it we are (for the time left)."""

    def __init__(self, name: str, stdin: IO[bytes] | None, *, limit: int) -> None:
        self.name = name
        self._limit = limit
        raw: IO[bytes]
        if name == "-":
            if stdin is None:
                raise InputError("standard input is closed")
            raw = stdin
        else:
            try:
                raw = open(name, "rb")  # noqa: SIM115  (closed in close())
            except OSError as exc:
                raise InputError(f"cannot read {name}: {exc.strerror}") from None
        self._raw = raw
        try:
            self.stat: os.stat_result | None = os.fstat(raw.fileno())
        except (OSError, ValueError, AttributeError):
            self.stat = None  # an in-memory stream: it cannot be any output file
        regular = self.stat is not None and stat.S_ISREG(self.stat.st_mode)
        self.size = self.stat.st_size if regular and self.stat is not None else None
        try:
            head = raw.peek(2)[:2] if hasattr(raw, "peek") else b""
        except (OSError, ValueError):
            raise InputError(f"cannot read {self._label}") from None
        self.stream: IO[bytes] | gzip.GzipFile = raw
        if name.endswith(".gz") or head == b"\x1f\x8b":
            self.stream = gzip.GzipFile(fileobj=raw, mode="rb")

    @property
    def _label(self) -> str:
        return "standard input" if self.name == "-" else self.name

    def lines(self) -> Iterator[bytes | TooLong]:
        """Each line with its line ending, or :class:`TooLong` in its place."""
        limit = self._limit
        while True:
            line = self._read(limit + 1)
            if not line:
                return
            if len(line) <= limit or line.endswith(b"\n"):
                yield line
                continue
            size = len(line)
            while not line.endswith(b"\n"):
                line = self._read(_SKIP_CHUNK)
                if not line:
                    break
                size += len(line)
            yield TooLong(size)

    def _read(self, size: int) -> bytes:
        try:
            return self.stream.readline(size)
        except EOFError:
            raise InputError(
                f"{self._label} ends in the middle of its compressed data "
                "(a truncated .gz file?)"
            ) from None
        except (gzip.BadGzipFile, zlib.error):
            raise InputError(
                f"{self._label} is not valid gzip data (a damaged .gz file?)"
            ) from None
        except OSError as exc:
            raise InputError(f"cannot read {self._label}: {exc.strerror}") from None

    def fraction(self) -> float | None:
        """Share of the input read so far, when its size is known."""
        if not self.size:
            return None
        try:
            return min(1.0, self._raw.tell() / self.size)
        except (OSError, ValueError):
            return None

    def close(self) -> None:
        if self.name != "-":
            self._raw.close()


# -- lines into commands ---------------------------------------------------------------

_EVENT_KEYS = frozenset({"customer_ids", "event_type", "properties", "timestamp"})
_CUSTOMER_KEYS = frozenset({"customer_ids", "properties", "update_timestamp"})
_decode = msgspec.json.Decoder().decode


@dataclass(slots=True)
class Command:
    """One line's command: the client method's arguments."""

    kind: str  # "event", "consent" or "customer"
    args: tuple[Any, ...]
    kwargs: dict[str, Any]


def parse(line: bytes) -> Command:
    """One line into a command, or ``ValueError`` saying what is wrong with it."""
    try:
        data = _decode(line)
    except msgspec.DecodeError as exc:
        raise ValueError(str(exc)) from None  # msgspec's says where and what
    if not isinstance(data, dict):
        raise ValueError("a line must be a JSON object")
    if "customer_ids" not in data:
        raise ValueError("missing 'customer_ids'")
    if "event_type" in data:
        unknown = set(data) - _EVENT_KEYS
        if unknown:
            raise ValueError(f"unknown keys for an event: {sorted(unknown)}")
        if data["event_type"] == CONSENT:
            return _consent(data)
        return Command(
            "event",
            (data["customer_ids"], data["event_type"], data.get("properties")),
            {"timestamp": data.get("timestamp")},
        )
    unknown = set(data) - _CUSTOMER_KEYS
    if unknown:
        raise ValueError(
            f"unknown keys for a customer update: {sorted(unknown)} "
            "(an event needs 'event_type')"
        )
    if "properties" not in data:
        raise ValueError("a customer update needs 'properties'")
    return Command(
        "customer",
        (data["customer_ids"], data["properties"]),
        {"update_timestamp": data.get("update_timestamp")},
    )


def _consent(data: dict[str, Any]) -> Command:
    """A ``consent`` event line, for ``consent()``: its ``action``,
    ``category`` and ``valid_until`` properties become the call's arguments,
    so they are checked (and stamped in order) as the call checks them."""
    properties = data.get("properties")
    if not isinstance(properties, dict):
        raise ValueError(
            "a consent line needs 'properties' with 'action' and 'category'"
        )
    rest = dict(properties)
    action = rest.pop("action", None)
    category = rest.pop("category", None)
    valid_until = rest.pop("valid_until", None)
    return Command(
        "consent",
        (data["customer_ids"], action, category),
        {
            "valid_until": valid_until,
            "properties": rest or None,
            "timestamp": data.get("timestamp"),
        },
    )


def too_long(line: TooLong) -> str:
    """Why a :class:`TooLong` line is rejected."""
    return (
        f"the line is {line.size:,} bytes, over the {DEFAULT_MAX_COMMAND_BYTES:,} "
        "bytes of the largest command the API accepts (not kept)"
    )


@dataclass
class Counts:
    """What the reading loop saw; ``handled`` is the last line fully dealt with."""

    lines: int = 0
    commands: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    handled: int = 0


def commands(
    source: Source, counts: Counts, ledger: Ledger, first: int
) -> Iterator[tuple[int, bytes]]:
    """The lines that are commands, numbered; the rest are counted and settled."""
    for number, line in enumerate(source.lines(), 1):
        counts.lines = number
        if number < first:
            counts.handled = number
            continue
        if isinstance(line, TooLong):
            counts.commands += 1
            ledger.reject(number, "too_long", too_long(line), None)
            counts.handled = number
            continue
        text = line.strip()
        if not text or text.startswith(b"#"):
            counts.skipped["blank" if not text else "comment"] += 1
            counts.handled = number
            continue
        counts.commands += 1
        yield number, line
