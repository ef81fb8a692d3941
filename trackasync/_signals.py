"""An opt-in SIGTERM handler: close a ``SyncClient`` before the process ends.

Containers and process managers stop a worker with SIGTERM. Python's default
action for it ends the process at once: no ``atexit``, no ``finally``, so
whatever a client still queues is lost without a line. :func:`close_on_sigterm`
replaces that action with one that closes the client within its budget, then
ends the process as SIGTERM would have (or hands over to the handler that was
installed before).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from types import FrameType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._sync import SyncClient

logger = logging.getLogger("trackasync")


def close_on_sigterm(client: SyncClient, *, timeout: float | None = None) -> None:
    """On SIGTERM, close ``client`` (up to ``timeout`` seconds), then end as SIGTERM would.

    ``timeout`` defaults to the client's ``shutdown_timeout``; keep it under the
    grace period of whatever sends the signal (10 s by default for
    ``docker stop``, 30 s for Kubernetes). The close runs in a thread of its
    own, so a handler that interrupts the main thread inside the client can
    never wait on it; the program goes on meanwhile, and its calls to the
    client raise ``ClientClosed``. Once the client is closed, SIGTERM is sent
    again to the process with the handler that was installed before: the
    default ends the process, a Python handler is called, an ignored SIGTERM
    stays ignored. A second SIGTERM during the close acts as before too.
    Call it from the main thread (Python runs signal handlers only there); it
    raises ``ValueError`` elsewhere.
    """
    if threading.current_thread() is not threading.main_thread():
        raise ValueError("close_on_sigterm() must be called from the main thread")
    if timeout is not None and not timeout >= 0:
        raise ValueError(f"timeout must be 0 or more seconds, got {timeout!r}")
    previous = _restorable(signal.getsignal(signal.SIGTERM))

    def close_then_resend() -> None:
        try:
            report = client.close(timeout)
        except Exception as exc:
            logger.warning(
                "trackasync: SIGTERM: the client could not close (%s)",
                type(exc).__name__,
            )
        else:
            if report.undelivered:
                logger.warning(
                    "trackasync: SIGTERM: %d command(s) undelivered at close",
                    len(report.undelivered),
                )
        os.kill(os.getpid(), signal.SIGTERM)  # to the handler restored below

    def handle(signum: int, frame: FrameType | None) -> None:
        signal.signal(signal.SIGTERM, previous)
        # Not a daemon: an interpreter that exits meanwhile waits for the close.
        threading.Thread(
            target=close_then_resend, name="trackasync-sigterm", daemon=False
        ).start()

    signal.signal(signal.SIGTERM, handle)


def _restorable(handler: Any) -> Any:
    # getsignal() returns None for a handler not installed from Python.
    return signal.SIG_DFL if handler is None else handler
