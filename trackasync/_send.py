"""``trackasync send FILE``: stream a JSON Lines file of commands through the client.

One line is one command: an event (``customer_ids``, ``event_type``, and
optionally ``properties`` and ``timestamp``) or a customer update
(``customer_ids``, ``properties``, and optionally ``update_timestamp``). The
file is read line by line and each command is handed to a ``SyncClient``,
whose "wait" policy holds the reader back while the queue is full: memory stays
bounded by the queue, whatever the file's size. Outcomes come back through
done callbacks (in the client's thread) and are written by the main thread.
"""

from __future__ import annotations

import argparse
import gzip
import os
import stat
import sys
import threading
import time
from collections import Counter, deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Any, TextIO

import msgspec

from ._auth import PrivateKey, PublicToken
from ._client import Client
from ._env import client_kwargs
from ._exceptions import ClientStateError, ConfigError, InvalidEvent, TrackError
from ._sync import SyncClient, SyncDelivery

#: Lines above which the command reminds that bulk loads belong to Imports.
DEFAULT_BULK_THRESHOLD = 100_000
_PROGRESS_EVERY_TTY = 0.2  # seconds between redraws of the progress line
_PROGRESS_EVERY_LOG = 10.0  # seconds between plain progress lines
_EVENT_KEYS = frozenset({"customer_ids", "event_type", "properties", "timestamp"})
_CUSTOMER_KEYS = frozenset({"customer_ids", "properties", "update_timestamp"})
_decode = msgspec.json.Decoder().decode
_encode = msgspec.json.Encoder().encode


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="trackasync send",
        description=(
            "Send a JSON Lines file of events and customer updates to the "
            "Tracking API. Credentials come from the options or from the "
            "TRACKASYNC_* environment variables (prefer the environment for "
            "secrets: options show in the process list)."
        ),
    )
    add = parser.add_argument
    add("file", help="the JSON Lines file ('-' for standard input; .gz is read too)")
    add("--base-url", help="the API's address (TRACKASYNC_BASE_URL)")
    add("--project-token", help="(TRACKASYNC_PROJECT_TOKEN)")
    add("--key-id", help="private key id (TRACKASYNC_KEY_ID)")
    add("--secret", help="private key secret (TRACKASYNC_SECRET)")
    add("--public-token", help="a public token instead (TRACKASYNC_PUBLIC_TOKEN)")
    add(
        "--dry-run",
        action="store_true",
        help="validate and encode every line, send nothing",
    )
    add(
        "--rejected",
        metavar="FILE",
        help="write each rejected or undelivered line here (JSON Lines: line "
        "number, reason, error, the line)",
    )
    add(
        "--timeout",
        type=float,
        default=60.0,
        help="seconds to wait at the end for what is still queued "
        "(default: %(default)s)",
    )
    add(
        "--bulk-threshold",
        type=int,
        default=DEFAULT_BULK_THRESHOLD,
        metavar="LINES",
        help="warn above this many lines (default: %(default)s)",
    )
    add(
        "--spool",
        metavar="DIR",
        help="keep accepted lines in this spool directory until delivered "
        "(TRACKASYNC_SPOOL; TRACKASYNC_DURABILITY=interval for speed)",
    )
    add("--quiet", action="store_true", help="no progress, only the summary")
    return parser


# -- reading ------------------------------------------------------------------------------


class _Source:
    """The input as bytes lines, with how far into it we are (for time left)."""

    def __init__(self, name: str, stdin: IO[bytes]) -> None:
        self.name = name
        self._raw: IO[bytes]
        if name == "-":
            self._raw = stdin
            self.size: int | None = None
        else:
            self._raw = open(name, "rb")  # noqa: SIM115  (closed in close())
            info = os.fstat(self._raw.fileno())
            self.size = info.st_size if stat.S_ISREG(info.st_mode) else None
        head = self._raw.peek(2)[:2] if hasattr(self._raw, "peek") else b""
        self.stream: IO[bytes] | gzip.GzipFile = self._raw
        if name.endswith(".gz") or head == b"\x1f\x8b":
            self.stream = gzip.GzipFile(fileobj=self._raw, mode="rb")

    def lines(self) -> Iterator[bytes]:
        yield from self.stream

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


@dataclass(slots=True)
class _Command:
    kind: str  # "event" or "customer"
    args: tuple[Any, ...]
    kwargs: dict[str, Any]


def _parse(line: bytes) -> _Command:
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
        return _Command(
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
    return _Command(
        "customer",
        (data["customer_ids"], data["properties"]),
        {"update_timestamp": data.get("update_timestamp")},
    )


# -- progress -----------------------------------------------------------------------------


class _Progress:
    def __init__(self, out: TextIO, *, quiet: bool) -> None:
        self._out = out
        self._quiet = quiet
        self._tty = out.isatty()
        self._every = _PROGRESS_EVERY_TTY if self._tty else _PROGRESS_EVERY_LOG
        self._start = time.monotonic()
        self._last = self._start
        self._drawn = False

    def tick(
        self, read: int, delivered: int, fraction: float | None, *, force: bool = False
    ) -> None:
        now = time.monotonic()
        if self._quiet or (not force and now - self._last < self._every):
            return
        self._last = now
        elapsed = max(now - self._start, 1e-9)
        text = (
            f"{read:,} lines read, {delivered:,} delivered, "
            f"{delivered / elapsed:,.0f}/s"
        )
        if fraction:
            left = elapsed * (1 - fraction) / fraction
            text += f", {fraction:.0%} of the input, about {_duration(left)} left"
        if self._tty:
            self._out.write(f"\r\x1b[K{text}")
            self._drawn = True
        else:
            self._out.write(f"trackasync send: {text}\n")
        self._out.flush()

    def end(self) -> None:
        if self._drawn:
            self._out.write("\n")
            self._out.flush()
            self._drawn = False

    def say(self, message: str) -> None:
        self.end()
        self._out.write(f"trackasync send: {message}\n")
        self._out.flush()


def _duration(seconds: float) -> str:
    seconds = int(seconds + 0.5)
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


# -- the command --------------------------------------------------------------------------


class _Rejects:
    """Rejected lines, collected from any thread, written by the main thread."""

    def __init__(self, path: str | None) -> None:
        self._file = None if path is None else open(path, "wb")  # noqa: SIM115
        self._pending: deque[tuple[int, str, str, bytes]] = deque()
        self.reasons: Counter[str] = Counter()
        self.first: list[str] = []
        self._lock = threading.Lock()

    def add(self, number: int, reason: str, error: str, line: bytes) -> None:
        with self._lock:
            self.reasons[reason] += 1
            if len(self.first) < 5:
                self.first.append(f"line {number}: {reason}: {error}")
        self._pending.append((number, reason, error, line))

    def write(self) -> None:
        pending = self._pending
        while pending:
            number, reason, error, line = pending.popleft()
            if self._file is not None:
                record = {
                    "line": number,
                    "reason": reason,
                    "error": error,
                    "data": line.decode("utf-8", "replace").rstrip("\r\n"),
                }
                self._file.write(_encode(record) + b"\n")

    def close(self) -> None:
        self.write()
        if self._file is not None:
            self._file.close()

    @property
    def count(self) -> int:
        return sum(self.reasons.values())


def _options(args: argparse.Namespace) -> dict[str, Any]:
    overrides: dict[str, Any] = {}
    if args.base_url:
        overrides["base_url"] = args.base_url
    if args.project_token:
        overrides["project_token"] = args.project_token
    if args.public_token and (args.key_id or args.secret):
        raise ConfigError("give --key-id/--secret or --public-token, not both")
    if args.public_token:
        overrides["auth"] = PublicToken(args.public_token)
    elif args.key_id or args.secret:
        if not (args.key_id and args.secret):
            raise ConfigError("--key-id and --secret go together")
        overrides["auth"] = PrivateKey(args.key_id, args.secret)
    if getattr(args, "spool", None):
        overrides["spool"] = args.spool
    return client_kwargs(overrides)


def _dry_run_client(args: argparse.Namespace) -> Client:
    """A client that only encodes: the configured one, or a stand-in without
    credentials (nothing is sent either way)."""
    try:
        return Client(**_options(args))
    except ConfigError:
        return Client("https://dry-run.invalid", "dry-run", auth=PublicToken("x"))


def send(
    argv: list[str] | None = None,
    *,
    stdin: IO[bytes] | None = None,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> int:
    """Run ``trackasync send``; returns the exit status (0: every line delivered)."""
    out = sys.stdout if stdout is None else stdout
    err = sys.stderr if stderr is None else stderr
    args = _parser().parse_args(argv)
    try:
        source = _Source(args.file, sys.stdin.buffer if stdin is None else stdin)
    except OSError as exc:
        err.write(f"trackasync send: cannot read {args.file}: {exc.strerror}\n")
        return 2
    try:
        try:
            client = None if args.dry_run else SyncClient(**_options(args))
        except TrackError as exc:
            err.write(f"trackasync send: {exc}\n")
            return 2
        try:
            rejects = _Rejects(args.rejected)
        except OSError as exc:
            err.write(
                f"trackasync send: cannot write {args.rejected}: {exc.strerror}\n"
            )
            if client is not None:
                client.close()
            return 2
        if client is None:
            return _dry_run(args, source, rejects, out, err)
        return _send(args, client, source, rejects, out, err)
    finally:
        source.close()


def _dry_run(
    args: argparse.Namespace,
    source: _Source,
    rejects: _Rejects,
    out: TextIO,
    err: TextIO,
) -> int:
    client = _dry_run_client(args)
    progress = _Progress(err, quiet=args.quiet)
    kinds: Counter[str] = Counter()
    encoded = 0
    number = 0
    seen = 0
    try:
        for number, line in enumerate(source.lines(), 1):
            if not line.strip():
                continue  # a blank line is not a command
            try:
                command = _parse(line)
                build = client._event if command.kind == "event" else client._customer
                delivery = build(*command.args, *command.kwargs.values())
            except (ValueError, InvalidEvent) as exc:
                reason = "invalid" if isinstance(exc, InvalidEvent) else "malformed"
                rejects.add(number, reason, str(exc), line)
                continue
            kinds[command.kind] += 1
            encoded += len(delivery.body)
            seen += 1
            if seen == args.bulk_threshold + 1:
                progress.say(_bulk_warning(args.bulk_threshold))
            progress.tick(number, 0, source.fraction())
            rejects.write()
    finally:
        rejects.close()
        progress.end()
    valid = kinds["event"] + kinds["customer"]
    out.write(
        f"dry run: {number:,} lines, {valid:,} valid ({kinds['event']:,} events, "
        f"{kinds['customer']:,} customer updates, {encoded:,} bytes encoded), "
        f"{rejects.count:,} rejected; nothing was sent\n"
    )
    for first in rejects.first:
        out.write(f"  {first}\n")
    return 0 if rejects.count == 0 else 1


def _reasons(reasons: Counter[str]) -> str:
    return ", ".join(f"{reason}: {count:,}" for reason, count in reasons.most_common())


def _bulk_warning(threshold: int) -> str:
    return (
        f"warning: more than {threshold:,} lines. The Tracking API is for real-time "
        "tracking; Bloomreach asks that large or historical loads go through "
        "Imports (Data & Assets > Imports), and may block bulk loads sent here."
    )


def _send(
    args: argparse.Namespace,
    client: SyncClient,
    source: _Source,
    rejects: _Rejects,
    out: TextIO,
    err: TextIO,
) -> int:
    progress = _Progress(err, quiet=args.quiet)
    delivered = 0
    counted = threading.Lock()
    number = 0

    def outcome(number: int, line: bytes) -> Any:
        def done(handle: SyncDelivery) -> None:
            nonlocal delivered
            failure = handle.exception(timeout=0)
            if failure is None:
                with counted:
                    delivered += 1
            else:
                rejects.add(number, failure.reason, str(failure), line)

        return done

    commands = 0
    queued = 0
    interrupted = False
    report = None
    try:
        for number, line in enumerate(source.lines(), 1):
            if not line.strip():
                continue  # a blank line is not a command
            commands += 1
            try:
                command = _parse(line)
                send_one = (
                    client.track if command.kind == "event" else client.update_customer
                )
                handle = send_one(*command.args, **command.kwargs)
            except (ValueError, InvalidEvent) as exc:
                reason = "invalid" if isinstance(exc, InvalidEvent) else "malformed"
                rejects.add(number, reason, str(exc), line)
                continue
            except TrackError as exc:  # QueueFull after queue_timeout, or closed
                rejects.add(number, "not_queued", str(exc), line)
                continue
            queued += 1
            handle.add_done_callback(outcome(number, line))
            if commands == args.bulk_threshold + 1:
                progress.say(_bulk_warning(args.bulk_threshold))
            progress.tick(number, delivered, source.fraction())
            rejects.write()
    except KeyboardInterrupt:
        interrupted = True
        progress.say("interrupted: delivering what was queued, then stopping")
    finally:
        try:
            report = client.close(timeout=args.timeout)
        except ClientStateError as exc:
            progress.say(f"error: {exc}")
        progress.tick(number, delivered, 1.0, force=True)
        progress.end()
        rejects.close()
    out.write(
        f"{commands:,} commands: {delivered:,} delivered, {rejects.count:,} not "
        "delivered"
        + (f" ({_reasons(rejects.reasons)})" if rejects.count else "")
        + "\n"
    )
    unsettled = commands - delivered - rejects.count
    if unsettled or report is None:
        out.write(f"  {unsettled:,} without an outcome\n")
    for first in rejects.first:
        out.write(f"  {first}\n")
    if interrupted:
        return 130
    return 0 if delivered == commands else 1


def main(argv: list[str] | None = None) -> int:
    return send(argv)
