"""The progress line of ``trackasync send``."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TextIO

_PROGRESS_EVERY_TTY = 0.2  # seconds between redraws of the progress line
_PROGRESS_EVERY_LOG = 10.0  # seconds between plain progress lines


class Progress:
    """A progress line on a terminal, or a plain line every few seconds in a log."""

    def __init__(self, out: TextIO, *, quiet: bool) -> None:
        self._out = out
        self._quiet = quiet
        self._tty = out.isatty()
        self._every = _PROGRESS_EVERY_TTY if self._tty else _PROGRESS_EVERY_LOG
        self._start = time.monotonic()
        self._last = self._start
        self._drawn = False
        # The watchdog writes from its own thread.
        self._lock = threading.RLock()

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
            text += f", {fraction:.0%} of the input, about {duration(left)} left"
        with self._lock:
            if self._tty:
                self._out.write(f"\r\x1b[K{text}")
                self._drawn = True
            else:
                self._out.write(f"trackasync send: {text}\n")
            self._out.flush()

    def end(self) -> None:
        with self._lock:
            if self._drawn:
                self._out.write("\n")
                self._out.flush()
                self._drawn = False

    def say(self, message: str) -> None:
        """A line of its own, shown even with ``--quiet`` (warnings, stops)."""
        with self._lock:
            self.end()
            self._out.write(f"trackasync send: {message}\n")
            self._out.flush()


class Watchdog:
    """Says so when lines wait and no outcome came for ``silence`` seconds.

    The client retries an unreachable API quietly until a command's deadline;
    a person watching the command should hear about it within seconds.
    ``last_outcome`` and ``pending`` are read from the ledger.
    """

    def __init__(
        self,
        progress: Progress,
        last_outcome: Callable[[], float | None],
        pending: Callable[[], int],
        *,
        silence: float,
    ) -> None:
        self._progress = progress
        self._last_outcome = last_outcome
        self._pending = pending
        self._silence = silence
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name="trackasync-send-watchdog", daemon=True
        )

    def __enter__(self) -> Watchdog:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        said: float | None = None  # the silence already reported
        while not self._stop.wait(min(1.0, self._silence / 4)):
            since = self._last_outcome()
            waiting = self._pending()
            if since is None or not waiting:
                continue
            quiet_for = time.monotonic() - since
            if quiet_for < self._silence or said == since:
                continue
            said = since
            self._progress.say(
                f"warning: no answer from the API for {duration(quiet_for)} "
                f"({waiting:,} lines waiting); the client keeps retrying"
            )


def duration(seconds: float) -> str:
    seconds = int(seconds + 0.5)
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"
