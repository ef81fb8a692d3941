"""The files of a spool directory: where they are, who holds them, and safety.

A spool directory holds one SQLite file per process that writes to it
(``<pid>-<random>.spool``, with SQLite's ``-wal`` and ``-shm`` beside it) and,
for each, a lock file (``<pid>-<random>.lock``) that its owner holds with
``flock`` for as long as the file is open. A file whose lock can be taken
belongs to nobody alive (its process was killed, ended with ``os._exit``, or
closed keeping unsent commands): any process may adopt it. ``flock`` locks
belong to an open file description, so the lock ends with the owner's last
descriptor, whatever way the process ends; a forked child closes its inherited
copy at once, so a parent's file never looks owned by a child.

The spool holds customer data: the directory is created 0700 and every file
0600. A directory another user can write, or a spool or lock file that is a
symbolic link, is refused: either would let someone else read or plant
commands that this process then sends with its credentials.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path

from ._exceptions import ConfigError

SPOOL_SUFFIX = ".spool"
LOCK_SUFFIX = ".lock"
#: Where an unreadable spool file is moved, beside the others (never deleted).
CORRUPT_SUFFIX = ".corrupt"
_SIDE_FILES = ("-wal", "-shm")


def prepare_directory(path: str | os.PathLike[str]) -> Path:
    """The spool directory, created 0700 if missing; ``ConfigError`` if it is
    not safe to use."""
    directory = Path(path).expanduser()
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = os.lstat(directory)
    except OSError as exc:
        raise ConfigError(
            f"spool: cannot create or read the directory {str(directory)!r} "
            f"({exc.strerror})"
        ) from None
    if stat.S_ISLNK(info.st_mode):
        raise ConfigError(
            f"spool: {str(directory)!r} is a symbolic link; give the real directory"
        )
    if not stat.S_ISDIR(info.st_mode):
        raise ConfigError(f"spool: {str(directory)!r} is not a directory")
    if info.st_uid != os.geteuid():
        raise ConfigError(
            f"spool: the directory {str(directory)!r} belongs to another user; "
            "a spool holds customer data and must be this user's own"
        )
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise ConfigError(
            f"spool: the directory {str(directory)!r} can be written by other "
            f"users (mode {stat.S_IMODE(info.st_mode):o}); make it 0700 "
            f"(chmod 700 {str(directory)!r})"
        )
    return directory


def new_name() -> str:
    """A file name no other process will pick: the pid and a random part."""
    return f"{os.getpid()}-{secrets.token_hex(6)}"


def spool_path(directory: Path, name: str) -> Path:
    return directory / (name + SPOOL_SUFFIX)


def lock_path(directory: Path, name: str) -> Path:
    return directory / (name + LOCK_SUFFIX)


def create_private(path: Path) -> None:
    """Create ``path`` empty, 0600, refusing one that exists or is a link."""
    fd = os.open(
        path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600
    )
    os.close(fd)


def take_lock(path: Path, *, create: bool) -> int | None:
    """The descriptor of ``path`` locked exclusively, or None if someone holds
    it (or it vanished meanwhile: its owner finished with it)."""
    flags = os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC
    if create:
        flags |= os.O_CREAT
    try:
        fd = os.open(path, flags, 0o600)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise ConfigError(f"spool: {str(path)!r} is a symbolic link") from None
        raise
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    # Locked: make sure it is still the file at that path (an adopter may have
    # finished with it and unlinked it between our open and our lock).
    try:
        same = os.stat(path, follow_symlinks=False).st_ino == os.fstat(fd).st_ino
    except FileNotFoundError:
        same = False
    if not same:
        os.close(fd)
        return None
    return fd


def release_lock(fd: int, path: Path | None) -> None:
    """Unlink the lock file (when ``path`` is given), then let the lock go."""
    if path is not None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
    os.close(fd)


def remove_spool(path: Path) -> None:
    """Delete a spool file and SQLite's files beside it."""
    for suffix in _SIDE_FILES:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(str(path) + suffix)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def move_aside(path: Path) -> Path:
    """Rename an unreadable spool file (and its side files) so nothing adopts
    it again; returns where it went. Its data stays for a person to look at."""
    target = path.with_name(path.name + CORRUPT_SUFFIX)
    n = 1
    while target.exists():
        n += 1
        target = path.with_name(f"{path.name}{CORRUPT_SUFFIX}{n}")
    for suffix in _SIDE_FILES:
        with contextlib.suppress(FileNotFoundError):
            os.rename(str(path) + suffix, str(target) + suffix)
    os.rename(path, target)
    return target


def check_regular(path: Path) -> None:
    """``ConfigError`` unless ``path`` is a regular file of this user."""
    info = os.lstat(path)
    if stat.S_ISLNK(info.st_mode):
        raise ConfigError(f"spool: {str(path)!r} is a symbolic link; refused")
    if not stat.S_ISREG(info.st_mode):
        raise ConfigError(f"spool: {str(path)!r} is not a regular file; refused")
    if info.st_uid != os.geteuid():
        raise ConfigError(f"spool: {str(path)!r} belongs to another user; refused")


@dataclass(frozen=True, slots=True)
class SpoolFile:
    """One spool file of a directory, as found."""

    path: Path
    name: str
    #: When it was last written (UNIX seconds).
    mtime: float


def spool_files(directory: Path, *, exclude: str | None = None) -> list[SpoolFile]:
    """The spool files of ``directory``, oldest written first."""
    found: list[SpoolFile] = []
    try:
        entries = list(os.scandir(directory))
    except FileNotFoundError:
        return []
    for entry in entries:
        if not entry.name.endswith(SPOOL_SUFFIX):
            continue
        name = entry.name[: -len(SPOOL_SUFFIX)]
        if name == exclude:
            continue
        try:
            mtime = entry.stat(follow_symlinks=False).st_mtime
        except FileNotFoundError:
            continue
        found.append(SpoolFile(Path(entry.path), name, mtime))
    found.sort(key=lambda f: (f.mtime, f.name))
    return found


def stale_locks(directory: Path) -> list[Path]:
    """Lock files without a spool file: left by a process that died between
    taking its lock and creating its file."""
    out: list[Path] = []
    with contextlib.suppress(FileNotFoundError):
        for entry in os.scandir(directory):
            if entry.name.endswith(LOCK_SUFFIX):
                name = entry.name[: -len(LOCK_SUFFIX)]
                if not spool_path(directory, name).exists():
                    out.append(Path(entry.path))
    return out


def owner_alive(directory: Path, name: str) -> bool:
    """Whether a live process holds the file's lock (probed without keeping it)."""
    fd = take_lock(lock_path(directory, name), create=False)
    if fd is None:
        # Held by someone, or no lock file at all (then nobody holds it).
        return lock_path(directory, name).exists()
    os.close(fd)
    return False
