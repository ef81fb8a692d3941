"""The progress line of ``trackasync send``."""

from __future__ import annotations

import time
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


def duration(seconds: float) -> str:
    seconds = int(seconds + 0.5)
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"
