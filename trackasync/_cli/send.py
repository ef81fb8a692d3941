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
import os
import sys
import time
from collections import Counter
from collections.abc import Callable
from typing import IO, TextIO

from .._auth import PublicToken
from .._client import Client
from .._config import DEFAULT_MAX_COMMAND_BYTES
from .._delivery import Delivery
from .._exceptions import (
    ClientStateError,
    ConfigError,
    InvalidEvent,
    RequestTimeout,
    TrackError,
    TransportError,
)
from .._sync import SyncClient, SyncDelivery
from .send_input import (
    Counts,
    InputError,
    Source,
    commands,
    parse,
    same_file,
)
from .send_interrupts import Interrupts
from .send_ledger import Ledger
from .send_options import client_options, parser
from .send_progress import Progress, Watchdog

#: Seconds the first request (``GET /system/time``) may take before a warning
#: (a refused connection ends the run at once instead of after a minute of
#: retries).
PREFLIGHT_TIMEOUT = 10.0
#: Seconds without any outcome, while lines wait for one, before a warning.
SILENCE = 10.0
#: Exit statuses.
OK, NOT_ALL_DELIVERED, USAGE, STOPPED, INTERRUPTED = 0, 1, 2, 3, 130
#: Bytes of lines handed to the client and still without an outcome at most:
#: with long lines, the queue's length alone would not bound the memory.
PENDING_BYTES = 64 * 1024 * 1024


def _dry_run_client(args: argparse.Namespace) -> Client:
    """A client that only encodes: the configured one, or a stand-in without
    credentials (nothing is sent either way)."""
    try:
        return Client(**client_options(args))
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
    args = parser().parse_args(argv)
    try:
        # Everything that can be refused is refused before the first line is read.
        client = None if args.dry_run else SyncClient(**client_options(args))
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
        status = USAGE
        try:
            problem = _preflight(client, err)
        except KeyboardInterrupt:
            problem = "interrupted before the first line was read"
            status = INTERRUPTED
        if problem is not None:
            err.write(f"trackasync send: {problem}\n")
            ledger.close()
            client.close(timeout=0.1)
            return status
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
    counts = Counts()
    encoded = 0
    damaged = None
    try:
        for number, line in commands(source, counts, ledger, args.from_line):
            try:
                command = parse(line)
                build: Callable[..., Delivery] = client._event
                if command.kind == "consent":
                    build = client._consent
                elif command.kind == "customer":
                    build = client._customer
                delivery = build(*command.args, *command.kwargs.values())
            except (ValueError, InvalidEvent) as exc:
                reason = "invalid" if isinstance(exc, InvalidEvent) else "malformed"
                ledger.reject(number, reason, str(exc), line.rstrip(b"\r\n"))
                continue
            kinds["customer" if command.kind == "customer" else "event"] += 1
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


def _skipped(counts: Counts) -> str:
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
    counts = Counts()
    stopped: str | None = None  # why the run stopped before the end of the input

    def outcome(number: int) -> Callable[[SyncDelivery], None]:
        def done(handle: SyncDelivery) -> None:
            ledger.outcome(number, handle.exception(timeout=0))

        return done

    watchdog = Watchdog(
        progress, lambda: ledger.last_outcome, lambda: ledger.pending, silence=SILENCE
    )
    with Interrupts() as interrupts, watchdog:
        lines = commands(source, counts, ledger, args.from_line)
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
                if not _wait_for_room(ledger, len(line), interrupts):
                    continue  # credentials refused meanwhile: the loop stops
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


def _wait_for_room(ledger: Ledger, size: int, interrupts: Interrupts) -> bool:
    """Wait until a line of ``size`` bytes fits in :data:`PENDING_BYTES`;
    False when the run must stop instead."""
    while not interrupts.call(lambda: ledger.wait_for_room(size, PENDING_BYTES, 0.5)):
        if ledger.auth_refused is not None:
            return False
    return True


def _hand_over(
    client: SyncClient,
    number: int,
    line: bytes,
    ledger: Ledger,
    interrupts: Interrupts,
    outcome: Callable[[int], Callable[[SyncDelivery], None]],
) -> None:
    """Give one line to the client, or settle it as rejected."""
    try:
        command = parse(line)
    except ValueError as exc:
        ledger.reject(number, "malformed", str(exc), line.rstrip(b"\r\n"))
        return
    timestamp = None
    if command.kind != "customer" and command.kwargs["timestamp"] is None:
        # Stamped here, not by the client, so that a line written back after
        # an unknown outcome carries the timestamp it was sent with.
        timestamp = time.time()
        command.kwargs["timestamp"] = timestamp
    send_one: Callable[..., SyncDelivery] = client.track
    if command.kind == "consent":
        send_one = client.consent
    elif command.kind == "customer":
        send_one = client.update_customer
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
    counts: Counts,
    ledger: Ledger,
    stopped: str | None,
    out: TextIO,
) -> int:
    if stopped is not None:
        # Why it stopped comes first: it explains every count below.
        out.write(f"stopped: {stopped}\n")
        # A line read but not handed over is not counted: it is read again
        # from the resume line.
        counts.commands = ledger.delivered + ledger.count
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
