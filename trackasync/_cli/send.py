"""``trackasync send FILE``: stream a JSON Lines file of commands through the client.

One line is one command: an event (``customer_ids``, ``event_type``, and
optionally ``properties`` and ``timestamp``) or a customer update
(``customer_ids``, ``properties``, and optionally ``update_timestamp``). Blank
lines and lines starting with ``#`` are skipped (and counted). The file is read
line by line and each command is handed to a ``SyncClient``, whose "wait"
policy holds the reader back while the queue is full: memory stays bounded by
the queue and the longest line, whatever the file's size.

No line is lost or doubled: every line read is delivered or written to the
rejects file (see ``send_ledger``), an event is stamped with its timestamp when
it is read, and a stopped run names the line to resume from (``--from-line``).
"""

from __future__ import annotations

import argparse
import math
import os
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from types import FrameType
from typing import IO, Any, TextIO

import msgspec

from .._auth import PrivateKey, PublicToken
from .._client import Client
from .._config import DEFAULT_MAX_COMMAND_BYTES
from .._env import client_kwargs
from .._exceptions import (
    ClientStateError,
    ConfigError,
    InvalidEvent,
    RequestTimeout,
    TrackError,
    TransportError,
)
from .._sync import SyncClient, SyncDelivery
from .send_input import InputError, Source, TooLong, same_file
from .send_ledger import Ledger
from .send_progress import Progress

#: Lines above which the command reminds that bulk loads belong to Imports.
DEFAULT_BULK_THRESHOLD = 100_000
#: Seconds the first request (``GET /system/time``) may take before the run is
#: refused: an unreachable API is said at once, not after a minute of retries.
PREFLIGHT_TIMEOUT = 10.0
#: Exit statuses.
OK, NOT_ALL_DELIVERED, USAGE, STOPPED, INTERRUPTED = 0, 1, 2, 3, 130
_EVENT_KEYS = frozenset({"customer_ids", "event_type", "properties", "timestamp"})
_CUSTOMER_KEYS = frozenset({"customer_ids", "properties", "update_timestamp"})
_decode = msgspec.json.Decoder().decode


def _seconds(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {raw!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(
            f"must be a finite number of seconds above 0, got {raw!r}"
        )
    return value


def _positive(raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {raw!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, got {raw!r}")
    return value


def _rate(raw: str) -> float | str:
    if raw.strip().lower() in ("none", "off"):
        return "off"
    try:
        value = float(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {raw!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(
            f"must be a positive number of requests per second, or 'off', got {raw!r}"
        )
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="trackasync send",
        description=(
            "Send a JSON Lines file of events and customer updates to the "
            "Tracking API. Credentials come from the options or from the "
            "TRACKASYNC_* environment variables (prefer the environment for "
            "secrets: options show in the process list)."
        ),
        epilog=(
            "Exit status: 0 every line delivered; 1 some lines not delivered "
            "(see --rejected); 2 bad options, or nothing could be sent; 3 "
            "stopped early (credentials refused, or the input is damaged); "
            "130 interrupted."
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
        help="write each line not delivered here, as it was, after a comment "
        "line with its line number and reason; send can read it back",
    )
    add(
        "--from-line",
        type=_positive,
        default=1,
        metavar="N",
        help="skip the lines before line N (to resume a stopped run)",
    )
    add(
        "--timeout",
        type=_seconds,
        default=60.0,
        help="seconds to wait at the end for what is still queued "
        "(default: %(default)s)",
    )
    add(
        "--rate-limit",
        type=_rate,
        metavar="PER_SECOND",
        help="requests per second at most, or 'off' (TRACKASYNC_RATE_LIMIT)",
    )
    add(
        "--rate-budget",
        metavar="URL",
        help="share one rate budget with other processes, e.g. redis://host/0 "
        "(TRACKASYNC_RATE_BUDGET)",
    )
    add(
        "--max-in-flight",
        type=_positive,
        metavar="N",
        help="requests in flight at most (TRACKASYNC_MAX_IN_FLIGHT)",
    )
    add(
        "--bulk-threshold",
        type=int,
        default=DEFAULT_BULK_THRESHOLD,
        metavar="LINES",
        help="warn above this many lines (default: %(default)s)",
    )
    add("--quiet", action="store_true", help="no progress, only the summary")
    return parser


# -- reading ------------------------------------------------------------------------------


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


def _too_long(line: TooLong) -> str:
    return (
        f"the line is {line.size:,} bytes, over the {DEFAULT_MAX_COMMAND_BYTES:,} "
        "bytes of the largest command the API accepts (not kept)"
    )


@dataclass
class _Counts:
    """What the reading loop saw; ``handled`` is the last line fully dealt with."""

    lines: int = 0
    commands: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    handled: int = 0


# -- interrupts ---------------------------------------------------------------------------


class _Interrupts:
    """SIGINT as a request to stop at the next line, raised only where that is safe.

    Outside :meth:`allow` blocks, Ctrl-C only sets :attr:`count`: the loop stops
    between lines, so no line is half handled. Inside (while blocked on the
    input, the queue or the close), it raises ``KeyboardInterrupt`` at once.
    """

    def __init__(self) -> None:
        self.count = 0
        self.raising = False
        self._previous: Any = None
        self._installed = False

    def __enter__(self) -> _Interrupts:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
            self._installed = True
        return self

    def __exit__(self, *exc: object) -> None:
        if self._installed:
            signal.signal(signal.SIGINT, self._previous)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.count += 1
        if self.raising:
            self.raising = False  # once: the handler must not raise in cleanup
            raise KeyboardInterrupt

    def call(self, fn: Callable[[], Any]) -> Any:
        """``fn()``, interruptible; raises ``KeyboardInterrupt`` if already asked."""
        if self.count:
            raise KeyboardInterrupt
        self.raising = True
        try:
            return fn()
        finally:
            self.raising = False


# -- the command --------------------------------------------------------------------------


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
    for option in ("rate_limit", "rate_budget", "max_in_flight"):
        value = getattr(args, option)
        if value is not None:
            overrides[option] = None if value == "off" else value
    return client_kwargs(overrides)


def _dry_run_client(args: argparse.Namespace) -> Client:
    """A client that only encodes: the configured one, or a stand-in without
    credentials (nothing is sent either way)."""
    try:
        return Client(**_options(args))
    except ConfigError:
        return Client("https://dry-run.invalid", "dry-run", auth=PublicToken("x"))


def _standard_input() -> IO[bytes] | None:
    stdin = sys.stdin
    return None if stdin is None else getattr(stdin, "buffer", None)


def _open_rejects(path: str | None, source: Source) -> IO[bytes] | None:
    """The rejects file, opened only once it is known not to be the input."""
    if path is None:
        return None
    try:
        existing: os.stat_result | None = os.stat(path)
    except FileNotFoundError:
        existing = None
    if (
        existing is not None
        and source.stat is not None
        and same_file(existing, source.stat)
    ):
        raise InputError(f"--rejected {path} is the input file; choose another")
    # Opened only now: the input was checked, and nothing was read yet.
    return open(path, "wb")


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
        # Everything that can be refused is refused before the first line is read.
        client = None if args.dry_run else SyncClient(**_options(args))
    except TrackError as exc:
        err.write(f"trackasync send: {exc}\n")
        return USAGE
    try:
        source = Source(
            args.file,
            _standard_input() if stdin is None else stdin,
            limit=DEFAULT_MAX_COMMAND_BYTES,
        )
    except InputError as exc:
        err.write(f"trackasync send: {exc}\n")
        if client is not None:
            client.close(timeout=0.1)
        return USAGE
    try:
        try:
            ledger = Ledger(_open_rejects(args.rejected, source))
        except (InputError, OSError) as exc:
            message = str(exc) if isinstance(exc, InputError) else exc.strerror
            if isinstance(exc, OSError):
                message = f"cannot write {args.rejected}: {message}"
            err.write(f"trackasync send: {message}\n")
            if client is not None:
                client.close(timeout=0.1)
            return USAGE
        if client is None:
            return _dry_run(args, source, ledger, out, err)
        try:
            problem = _preflight(client, err)
        except KeyboardInterrupt:
            problem = "interrupted before the first line was read"
        if problem is not None:
            err.write(f"trackasync send: {problem}\n")
            ledger.close()
            client.close(timeout=0.1)
            return USAGE
        return _send(args, client, source, ledger, out, err)
    finally:
        source.close()


def _preflight(client: SyncClient, err: TextIO) -> str | None:
    """Why nothing can be sent (the API cannot be reached), or None.

    One ``GET /system/time``: a refused connection or a wrong address is said
    within seconds instead of after a minute of retries. An HTTP answer, even an
    error, proves the API is reachable; the credentials are judged by the
    answers to the commands themselves.
    """
    try:
        client.system_time(timeout=PREFLIGHT_TIMEOUT)
    except (RequestTimeout, TimeoutError):
        # Slow, not unreachable: the commands get their own timeouts and retries.
        err.write(
            f"trackasync send: warning: no answer from the API within "
            f"{PREFLIGHT_TIMEOUT:g} s; sending anyway\n"
        )
    except TransportError as exc:
        return f"cannot reach the API: {exc}"
    except TrackError:
        pass
    return None


def _lines(
    source: Source, counts: _Counts, ledger: Ledger, first: int
) -> Any:  # Iterator[tuple[int, bytes]]
    """The lines that are commands, numbered; the rest are counted and settled."""
    for number, line in enumerate(source.lines(), 1):
        counts.lines = number
        if number < first:
            counts.handled = number
            continue
        if isinstance(line, TooLong):
            counts.commands += 1
            ledger.reject(number, "too_long", _too_long(line), None)
            counts.handled = number
            continue
        text = line.strip()
        if not text or text.startswith(b"#"):
            counts.skipped["blank" if not text else "comment"] += 1
            counts.handled = number
            continue
        counts.commands += 1
        yield number, line


def _dry_run(
    args: argparse.Namespace,
    source: Source,
    ledger: Ledger,
    out: TextIO,
    err: TextIO,
) -> int:
    client = _dry_run_client(args)
    progress = Progress(err, quiet=args.quiet)
    kinds: Counter[str] = Counter()
    counts = _Counts()
    encoded = 0
    damaged = None
    try:
        for number, line in _lines(source, counts, ledger, args.from_line):
            try:
                command = _parse(line)
                build = client._event if command.kind == "event" else client._customer
                delivery = build(*command.args, *command.kwargs.values())
            except (ValueError, InvalidEvent) as exc:
                reason = "invalid" if isinstance(exc, InvalidEvent) else "malformed"
                ledger.reject(number, reason, str(exc), line.rstrip(b"\r\n"))
                continue
            kinds[command.kind] += 1
            encoded += len(delivery.body)
            if kinds.total() == args.bulk_threshold + 1:
                progress.say(_bulk_warning(args.bulk_threshold))
            progress.tick(number, 0, source.fraction())
            ledger.write()
    except InputError as exc:
        damaged = str(exc)
    finally:
        ledger.close()
        progress.end()
    if damaged is not None:
        out.write(f"stopped: {damaged}\n")
    valid = kinds["event"] + kinds["customer"]
    out.write(
        f"dry run: {counts.lines:,} lines, {valid:,} valid ({kinds['event']:,} "
        f"events, {kinds['customer']:,} customer updates, {encoded:,} bytes "
        f"encoded), {ledger.count:,} rejected{_skipped(counts)}; nothing was sent\n"
    )
    for first in ledger.first:
        out.write(f"  {first}\n")
    if damaged is not None:
        return STOPPED
    return OK if ledger.count == 0 else NOT_ALL_DELIVERED


def _skipped(counts: _Counts) -> str:
    if not counts.skipped:
        return ""
    return ", " + ", ".join(
        f"{count:,} {kind} line{'s' if count != 1 else ''} skipped"
        for kind, count in sorted(counts.skipped.items())
    )


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
    source: Source,
    ledger: Ledger,
    out: TextIO,
    err: TextIO,
) -> int:
    progress = Progress(err, quiet=args.quiet)
    counts = _Counts()
    stopped: str | None = None  # why the run stopped before the end of the input

    def outcome(number: int) -> Callable[[SyncDelivery], None]:
        def done(handle: SyncDelivery) -> None:
            ledger.outcome(number, handle.exception(timeout=0))

        return done

    with _Interrupts() as interrupts:
        lines = _lines(source, counts, ledger, args.from_line)
        try:
            while True:
                if interrupts.count:
                    raise KeyboardInterrupt
                if ledger.auth_refused is not None:
                    stopped = f"the API refused the credentials: {ledger.auth_refused}"
                    break
                item = interrupts.call(lambda: next(lines, None))
                if item is None:
                    break
                number, line = item
                _hand_over(client, number, line, ledger, interrupts, outcome)
                counts.handled = number
                if counts.commands == args.bulk_threshold + 1:
                    progress.say(_bulk_warning(args.bulk_threshold))
                progress.tick(number, ledger.delivered, source.fraction())
                ledger.write()
        except KeyboardInterrupt:
            stopped = "interrupted"
            progress.say("interrupted: delivering what was queued, then stopping")
        except InputError as exc:
            stopped = str(exc)
        try:
            interrupts.call(lambda: client.close(timeout=args.timeout))
        except KeyboardInterrupt:
            stopped = "interrupted"
            progress.say("interrupted again: not waiting for the last outcomes")
        except ClientStateError as exc:
            progress.say(f"error: {exc}")
        ledger.settle_pending(
            "unknown",
            "no outcome before the run stopped (it may have been stored; a "
            "resend of this line is deduplicated)",
        )
        progress.tick(counts.lines, ledger.delivered, source.fraction(), force=True)
        progress.end()
        ledger.close()
    return _summary(args, counts, ledger, stopped, out)


def _hand_over(
    client: SyncClient,
    number: int,
    line: bytes,
    ledger: Ledger,
    interrupts: _Interrupts,
    outcome: Callable[[int], Callable[[SyncDelivery], None]],
) -> None:
    """Give one line to the client, or settle it as rejected."""
    try:
        command = _parse(line)
    except ValueError as exc:
        ledger.reject(number, "malformed", str(exc), line.rstrip(b"\r\n"))
        return
    timestamp = None
    if command.kind == "event" and command.kwargs["timestamp"] is None:
        # Stamped here, not by the client, so that a line written back after
        # an unknown outcome carries the timestamp it was sent with.
        timestamp = time.time()
        command.kwargs["timestamp"] = timestamp
    send_one = client.track if command.kind == "event" else client.update_customer
    ledger.sending(number, line, timestamp)
    try:
        handle = interrupts.call(lambda: send_one(*command.args, **command.kwargs))
    except InvalidEvent as exc:
        ledger.unsent(number, "invalid", str(exc))
        return
    except TrackError as exc:  # QueueFull after queue_timeout, or closed
        ledger.unsent(number, "not_queued", str(exc))
        return
    handle.add_done_callback(outcome(number))


def _summary(
    args: argparse.Namespace,
    counts: _Counts,
    ledger: Ledger,
    stopped: str | None,
    out: TextIO,
) -> int:
    if stopped is not None:
        # Why it stopped comes first: it explains every count below.
        out.write(f"stopped: {stopped}\n")
    out.write(
        f"{counts.commands:,} commands: {ledger.delivered:,} delivered, "
        f"{ledger.count:,} not delivered"
        + (f" ({_reasons(ledger.reasons)})" if ledger.count else "")
        + _skipped(counts)
        + "\n"
    )
    for first in ledger.first:
        out.write(f"  {first}\n")
    if ledger.count and args.rejected:
        out.write(f"  the lines not delivered are in {args.rejected}\n")
    if stopped is not None:
        resume = max(counts.handled, ledger.highest) + 1
        out.write(
            f"  to resume: send the rest with --from-line {resume}"
            + (f", and {args.rejected} again" if args.rejected else "")
            + "\n"
        )
    if stopped == "interrupted":
        return INTERRUPTED
    if stopped is not None:
        return STOPPED
    return OK if ledger.delivered == counts.commands else NOT_ALL_DELIVERED


def main(argv: list[str] | None = None) -> int:
    return send(argv)
