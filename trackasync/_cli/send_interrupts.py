"""Ctrl-C in ``trackasync send``: a request to stop between lines, never mid-line."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any


class Interrupts:
    """SIGINT as a request to stop at the next line, raised only where that is safe.

    Outside :meth:`call`, Ctrl-C only sets :attr:`count`: the loop stops between
    lines, so no line is half handled. Inside (while blocked on the input, the
    queue or the close), it raises ``KeyboardInterrupt`` at once.
    """

    def __init__(self) -> None:
        self.count = 0
        self.raising = False
        self._previous: Any = None
        self._installed = False

    def __enter__(self) -> Interrupts:
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
