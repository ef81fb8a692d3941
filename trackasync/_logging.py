"""Every log line of the library names it, and shows no control characters.

uvicorn and gunicorn leave the root logger's format alone (``%(message)s`` or
``%(levelname)s %(message)s``), so a line such as ``closed: 765 delivered`` did
not say where it came from; and an error string from the network with a line
break in it could forge a whole line of the application's log (a fake
``CRITICAL``), or an escape sequence repaint its terminal.

One ``logging.Filter`` on the library's own logger does both for every record
the library logs (every module logs to ``"trackasync"``): it puts
``"trackasync: "`` before the message and escapes CR, LF, ESC and the other
control characters in the message and in its arguments (``_scrub.printable``).
It is installed when the package is imported, once, on that logger only: it
adds no handler, sets no level and leaves every other logger alone. Doing it
here rather than at each place text enters also covers lines written later by
code that does not know the rule.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from ._scrub import printable

__all__ = ["LOGGER_NAME", "PREFIX", "LogFilter", "install"]

LOGGER_NAME = "trackasync"
PREFIX = "trackasync: "


def _safe(value: object) -> object:
    """``value`` as it may go into a line: strings escaped, numbers as they are."""
    if isinstance(value, str):
        return printable(value)
    if value is None or isinstance(value, (int, float)):
        return value
    try:
        text = str(value)
    except Exception:
        return value  # the handler will report its own formatting error
    escaped = printable(text)
    # Objects whose text is already clean keep their type (a %r stays a repr).
    return value if escaped == text else escaped


class LogFilter(logging.Filter):
    """Prefixes the library's log records and escapes their control characters."""

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.msg
        if isinstance(msg, str):
            msg = printable(msg)
            if not msg.startswith(LOGGER_NAME):
                msg = PREFIX + msg
            record.msg = msg
        args: Any = record.args
        if isinstance(args, tuple):
            record.args = tuple(_safe(arg) for arg in args)
        elif isinstance(args, Mapping):
            record.args = {key: _safe(arg) for key, arg in args.items()}
        return True


def install() -> None:
    """Add the filter to the library's logger, unless it is there already."""
    logger = logging.getLogger(LOGGER_NAME)
    if not any(isinstance(f, LogFilter) for f in logger.filters):
        logger.addFilter(LogFilter())
