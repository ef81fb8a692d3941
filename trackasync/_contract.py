"""Attribute limits by contract: the value cap from the environment, and a
one-time warning on property names that are not ASCII.

Some Bloomreach contracts allow 1,024 customer attributes with values up to
2 KiB instead of 255 with values up to 16 KB; a new attribute past the cap is
discarded by the API, silently. ``Limits(max_value_bytes=2048)`` makes the
client refuse such values at the call; ``TRACKASYNC_MAX_VALUE_BYTES`` sets it
from the environment (``from_env``). Attribute names should be ASCII: one that
is not is logged once per process at WARNING, the first time it is seen (not
once per event: the name comes back with every event).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Mapping

from ._config import Limits
from ._exceptions import ConfigError

__all__ = ["MAX_VALUE_BYTES_VAR", "check_names_ascii", "limits_from_env"]

logger = logging.getLogger("trackasync")

MAX_VALUE_BYTES_VAR = "TRACKASYNC_MAX_VALUE_BYTES"


def limits_from_env(environ: Mapping[str, str]) -> Limits | None:
    """``Limits`` with ``max_value_bytes`` from the environment, or None if the
    variable is unset (or empty); ``ConfigError`` naming it if it is wrong."""
    raw = environ.get(MAX_VALUE_BYTES_VAR)
    if not raw:
        return None
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(
            f"{MAX_VALUE_BYTES_VAR} must be a whole number of bytes, got {raw!r}"
        ) from None
    try:
        return Limits(max_value_bytes=value)
    except ConfigError as exc:
        raise ConfigError(f"{MAX_VALUE_BYTES_VAR}: {exc}") from None


class _Once:
    """A process-wide "already warned" flag: the point is once per process,
    whatever number of clients, so it cannot live in one client."""

    __slots__ = ("done", "lock")

    def __init__(self) -> None:
        self.done = False
        self.lock = threading.Lock()

    def claim(self) -> bool:
        """True for the first caller only (any thread)."""
        with self.lock:
            first = not self.done
            self.done = True
            return first


_non_ascii = _Once()


def check_names_ascii(names: Iterable[str]) -> None:
    """Log once per process, at WARNING, the first property name that is not
    ASCII. Called only for names the codec has not seen before."""
    if _non_ascii.done:
        return
    for name in names:
        if not name.isascii():
            if not _non_ascii.claim():
                return
            logger.warning(
                "property name %s is not ASCII; Bloomreach expects ASCII "
                "attribute names (this is logged once per process)",
                ascii(name)[:80],
            )
            return
