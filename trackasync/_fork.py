"""Fork awareness shared by the clients: a hook run in the child after ``os.fork()``.

A forked child inherits the parent's memory, so a client's queue, loop, thread
and sockets, but only the thread that forked. Nothing inherited may be used or
closed there (the sockets and the session are the parent's too). A client
registers itself here; in the child, its ``_after_fork_in_child()`` runs first
thing, to drop what it inherited and count what it will not send.
"""

from __future__ import annotations

import logging
import os
import weakref
from typing import Protocol

logger = logging.getLogger("trackasync")


class ForkAware(Protocol):
    def _after_fork_in_child(self) -> None: ...


# Weak: registering never keeps a client alive.
_registered: weakref.WeakSet[ForkAware] = weakref.WeakSet()
# Whatever a child must never finalize (loops, sessions, threads of the
# parent): kept referenced for the life of the child process.
_inherited: list[object] = []


def register(obj: ForkAware) -> None:
    """Call ``obj._after_fork_in_child()`` in every child forked from now on."""
    _registered.add(obj)


def unregister(obj: ForkAware) -> None:
    _registered.discard(obj)


def keep_forever(obj: object) -> None:
    """Keep ``obj`` referenced in this (child) process, so that no finalizer of
    the parent's resources (an unclosed loop's or session's ``__del__``) ever
    runs here."""
    _inherited.append(obj)


def _after_fork_in_child() -> None:
    for obj in list(_registered):
        try:
            obj._after_fork_in_child()
        except Exception:
            # A hook must not stop the others, nor the child's own code.
            logger.exception("trackasync: resetting a client after fork failed")


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
