"""The rate budget of one host: a small state file shared by its processes.

Each step opens the file, takes an exclusive ``flock`` *without waiting*
(``LOCK_NB``), reads and writes 48 bytes and closes it: some 10 microseconds.
When another process holds the lock, the step is tried again after a short
asynchronous sleep, for at most ``LOCK_PATIENCE`` seconds; a holder stopped
for longer (SIGSTOP, a debugger) sends the others to local pacing, and the
event loop never waits on the lock.

A fork must never leave a lock held in the child (it would share the parent's
locked file description and hold it for ever). A process-wide lock is held
around every step, and ``os.register_at_fork`` takes it before a fork: no step
is half done when the process forks.

The default file (``rate_budget="host"``) lives in a directory that only this
user can write: ``$XDG_RUNTIME_DIR/trackasync`` when that is set and private,
else ``<temporary directory>/trackasync-<uid>``. The directory is created 0700,
and its owner and mode are checked. The file is opened with ``O_NOFOLLOW``, and
it must be a regular file of this user with one link that nobody else can write.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import stat
import struct
import sys
import tempfile
import threading
import time

from . import _ratelimit
from ._budget_shared import FIELDS, SharedLimiter, logger, step
from ._exceptions import ConfigError
from ._ratelimit import api_address

if sys.platform != "win32":
    import fcntl

_STATE = struct.Struct(f"<{len(FIELDS)}d")
#: How long a step keeps trying a lock held by another process.
LOCK_PATIENCE = 0.5
_FIRST_RETRY = 0.0005
_LAST_RETRY = 0.02


def _wall() -> float:
    """Wall-clock seconds: every process, and every boot, reads them alike."""
    return time.time()


# Held around each step in this process; taken before a fork (below).
_section = threading.Lock()


def _reset_after_fork() -> None:
    global _section
    _section = threading.Lock()


if hasattr(os, "register_at_fork"):
    # Before: wait for a step under way (microseconds, it never blocks) so that
    # no file is open and locked when the process forks. The child gets a new
    # lock: the thread that held the old one is not there.
    os.register_at_fork(
        before=lambda: _section.acquire(),
        after_in_parent=lambda: _section.release(),
        after_in_child=_reset_after_fork,
    )


def default_directory() -> str:
    """The private directory of the default budget files, created if missing."""
    runtime = os.environ.get("XDG_RUNTIME_DIR", "")
    if runtime and os.path.isabs(runtime) and _private(runtime):
        path = os.path.join(runtime, "trackasync")
    else:
        path = os.path.join(tempfile.gettempdir(), f"trackasync-{os.geteuid()}")
    with contextlib.suppress(FileExistsError):
        os.mkdir(path, 0o700)
    if not _private(path):
        raise ConfigError(
            f"rate_budget='host': {path} is not a private directory of this user "
            "(it must be a directory, not a link, owned by this user, mode 0700); "
            "remove it or pass a file path as rate_budget"
        )
    return path


def _private(path: str) -> bool:
    try:
        info = os.lstat(path)
    except OSError:
        return False
    return (
        stat.S_ISDIR(info.st_mode)
        and info.st_uid == os.geteuid()
        and info.st_mode & 0o077 == 0
    )


def budget_path(budget: str, base_url: str) -> str:
    """The state file: for ``"host"``, one per API address (scheme, host and
    port) in ``default_directory()``; anything else is the file's own path."""
    if budget == "host":
        digest = hashlib.sha256(api_address(base_url).encode()).hexdigest()[:16]
        return os.path.join(default_directory(), f"budget-{digest}")
    return budget


def _open(path: str) -> int:
    """The state file, opened safely: no link followed, only a file of ours."""
    # O_NONBLOCK: a FIFO put in its place must not block the open.
    flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
    fd = os.open(path, flags, 0o600)
    try:
        info = os.fstat(fd)
        problem = None
        if not stat.S_ISREG(info.st_mode):
            problem = "is not a regular file"
        elif info.st_uid != os.geteuid():
            problem = "belongs to another user"
        elif info.st_nlink != 1:
            problem = "has other hard links"
        elif info.st_mode & 0o022:
            problem = "can be written by other users"
        if problem is not None:
            raise PermissionError(errno.EPERM, f"the file {problem}")
    except BaseException:
        os.close(fd)
        raise
    return fd


class FileBudget(SharedLimiter):
    """A rate budget shared through a state file by the processes of one host."""

    __slots__ = ("_path",)

    def __init__(self, rate: float, path: str) -> None:
        if sys.platform == "win32":
            raise ConfigError("a file rate_budget needs POSIX file locks, absent here")
        super().__init__(rate)
        self._path = path
        try:
            os.close(_open(path))  # a bad path fails when the client is built
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                reason = "it is a symbolic link"
            else:
                reason = exc.strerror or type(exc).__name__
            raise ConfigError(
                f"rate_budget: cannot use {path!r} as the shared state file ({reason})"
            ) from None
        logger.info("rate budget shared through %s", self.where)

    @property
    def path(self) -> str:
        """The state file shared with the other processes."""
        return self._path

    @property
    def where(self) -> str:
        return f"file {self._path}"

    def __repr__(self) -> str:
        return f"<FileBudget {self._path!r} rate={self._rate}>"

    def try_step(
        self,
        cut: bool,
        pause: float,
        accepted: int,
        reserve: bool = True,
        count: int = 1,
    ) -> tuple[float, float, float] | None:
        """One step if the lock is free now: (wait, factor, interval); None if
        the lock is taken.

        Raises OSError when the file cannot be used at all.
        """
        if not _section.acquire(blocking=False):
            return None
        try:
            fd = _open(self._path)
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    return None
                raw = os.pread(fd, _STATE.size, 0)
                state = list(_STATE.unpack(raw)) if len(raw) == _STATE.size else None
                new, wait, factor = step(
                    state,
                    _wall(),
                    self._pace,
                    cut=cut,
                    pause=pause,
                    accepted=accepted,
                    reserve=reserve,
                    count=count,
                    catch_up=self._catch_up,
                )
                os.pwrite(fd, _STATE.pack(*new), 0)
                self._factor = factor
                return wait, factor, 1.0 / (new[3] * factor)
            finally:
                os.close(fd)  # also releases the flock
        finally:
            _section.release()

    async def _step(
        self,
        cut: bool,
        pause: float,
        accepted: int,
        reserve: bool = True,
        count: int = 1,
    ) -> tuple[float, float, float] | None:
        deadline = time.monotonic() + LOCK_PATIENCE
        retry = _FIRST_RETRY
        while True:
            try:
                result = self.try_step(cut, pause, accepted, reserve, count)
            except OSError:
                return None  # the file went away or changed hands: pace locally
            if result is not None:
                return result
            if time.monotonic() >= deadline:
                return None
            await _ratelimit._sleep(retry)
            retry = min(retry * 2, _LAST_RETRY)

    def _push(self) -> None:
        cut, pause, accepted = self._take_signals()
        try:
            done = self.try_step(cut, pause, accepted, reserve=False)
        except OSError:
            done = None
        if done is None:
            self._keep_signals(cut, accepted)
