"""``trackasync spool DIR``: what a spool directory holds, and ``--drain`` to
send it all now.

For each spool file: its owner process (from the name) and whether it is alive
(its lock is held), the commands it holds, their bytes, and the oldest
command's age (files of either format, ``_spool_format``). Files moved aside as unreadable are listed too. ``--drain``
opens a client on the directory with the credentials of the ``TRACKASYNC_*``
variables, which adopts every file whose owner is gone, sends what they hold,
and closes; files of live owners are theirs and are left alone.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sqlite3
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from .._exceptions import TrackError
from .._spool_files import CORRUPT_SUFFIX, owner_alive, spool_files
from .._spool_read import summary

# How long --drain waits, at most, by default.
DEFAULT_DRAIN_TIMEOUT = 600.0


@dataclass(frozen=True, slots=True)
class FileReport:
    name: str
    alive: bool
    commands: int
    body_bytes: int
    file_bytes: int
    oldest: float | None
    error: str | None = None


def inspect(directory: Path) -> list[FileReport]:
    """One report per spool file, oldest written first (read-only)."""
    reports: list[FileReport] = []
    for found in spool_files(directory):
        file_bytes = sum(
            os.path.getsize(p)
            for p in (found.path, Path(f"{found.path}-wal"))
            if p.exists()
        )
        alive = owner_alive(directory, found.name)
        try:
            conn = sqlite3.connect(f"file:{found.path}?mode=ro", uri=True)
            try:
                count, size, oldest = summary(conn)
            finally:
                conn.close()
        except sqlite3.Error as exc:
            reports.append(
                FileReport(found.name, alive, 0, 0, file_bytes, None, str(exc))
            )
            continue
        reports.append(FileReport(found.name, alive, count, size, file_bytes, oldest))
    return reports


def _age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def show(directory: Path, out: TextIO) -> int:
    reports = inspect(directory)
    now = time.time()
    out.write(f"spool {directory}\n")
    if not reports:
        out.write("  no spool files\n")
    for r in reports:
        owner = r.name.split("-", 1)[0]
        state = "alive" if r.alive else "gone"
        if r.error is not None:
            out.write(
                f"  {r.name}.spool  owner pid {owner} ({state})  "
                f"UNREADABLE: {r.error}\n"
            )
            continue
        age = "-" if r.oldest is None else _age(max(0.0, now - r.oldest))
        out.write(
            f"  {r.name}.spool  owner pid {owner} ({state})  "
            f"{r.commands} command(s), {r.body_bytes} bytes of commands, "
            f"{r.file_bytes} bytes on disk, oldest {age}\n"
        )
    total = sum(r.commands for r in reports)
    orphaned = sum(r.commands for r in reports if not r.alive)
    out.write(
        f"total: {total} command(s) in {len(reports)} file(s); "
        f"{orphaned} in files whose owner is gone (sent by the next process "
        "to start on this directory, or by --drain)\n"
    )
    corrupt = sorted(
        p.name
        for p in directory.glob(f"*{CORRUPT_SUFFIX}*")
        if not p.name.endswith(("-wal", "-shm"))
    )
    if corrupt:
        out.write(
            "moved aside as unreadable (not sent, never deleted): "
            f"{', '.join(corrupt)}\n"
        )
    return 0


async def _drain(directory: Path, timeout: float, out: TextIO) -> int:
    from .._client import Client
    from .._env import client_options
    from .._spool import SqliteLog

    options = client_options({"spool": str(directory)}, "trackasync spool")
    client = Client._from_options(options)
    async with client:
        log = client._pipeline.table.log
        assert isinstance(log, SqliteLog)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            stats = client.stats()
            if (
                log.opened
                and not log.backlog()
                and not stats.queued
                and not stats.in_flight
            ):
                break
            await client.flush(timeout=0.1)
            await asyncio.sleep(0.05)
        report = await client.aclose()
    stats = client.stats()
    lost = sum(report.failed.values())
    out.write(
        f"drained: {stats.recovered} command(s) adopted, {report.delivered} "
        f"delivered, {lost} not delivered, {report.kept} kept in the spool\n"
    )
    return 0 if lost == 0 and report.kept == 0 else 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="trackasync spool",
        description="Show what a spool directory holds; --drain sends it now "
        "(credentials from the TRACKASYNC_* environment variables).",
    )
    parser.add_argument("directory", help="the spool directory")
    parser.add_argument(
        "--drain",
        action="store_true",
        help="adopt every file whose owner is gone, send it all, then exit",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_DRAIN_TIMEOUT,
        help="seconds --drain waits at most (default: %(default)s)",
    )
    return parser


def main(argv: list[str] | None = None, out: TextIO | None = None) -> int:
    """Run ``trackasync spool``; returns the exit status."""
    stream = sys.stdout if out is None else out
    args = _parser().parse_args(argv)
    directory = Path(args.directory)
    if not directory.is_dir():
        sys.stderr.write(f"trackasync spool: no such directory: {directory}\n")
        return 2
    if not args.drain:
        return show(directory, stream)
    try:
        status = asyncio.run(_drain(directory, args.timeout, stream))
    except TrackError as exc:
        sys.stderr.write(f"trackasync spool: {exc}\n")
        return 2
    show(directory, stream)
    return status
