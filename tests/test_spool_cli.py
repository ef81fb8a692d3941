"""``trackasync spool DIR``: what a spool holds, and --drain; ``send --spool``."""

from __future__ import annotations

import asyncio
import io
import os
from pathlib import Path

import pytest

from trackasync import Client
from trackasync._cli import main as cli
from trackasync._cli.send_options import client_options as _options, parser as _parser
from trackasync._cli.spool import main
from trackasync.testing import FakeTrackingAPI, RecordingTransport

from .conftest import BASE_URL, IDS, PROJECT, Gate
from .test_spool import AUTH


async def leave_orphan(spool: Path, count: int) -> list[bytes]:
    """A client that closes keeping ``count`` unsent commands in ``spool``."""
    client = Client(
        BASE_URL,
        PROJECT,
        auth=AUTH,
        transport=RecordingTransport(Gate()),
        spool=spool,
        linger=0.0,
        rate_limit=None,
    )
    bodies = [(await client.track(IDS, "view", {"n": n})).body for n in range(count)]
    await client.aclose(timeout=0.05)
    return bodies


def test_spool_shows_files_owners_commands_and_age(tmp_path: Path) -> None:
    """The listing names each file, says its owner is gone, and counts its
    commands and bytes."""
    bodies = asyncio.run(leave_orphan(tmp_path, 4))
    out = io.StringIO()
    assert main([str(tmp_path)], out=out) == 0
    text = out.getvalue()
    assert f"owner pid {os.getpid()} (gone)" in text
    assert "4 command(s)" in text
    assert f"{sum(len(b) for b in bodies)} bytes of commands" in text
    assert "total: 4 command(s) in 1 file(s); 4 in files whose owner is gone" in text


async def test_spool_says_a_live_owner_is_alive(tmp_path: Path) -> None:
    """A file whose client is open is listed as alive, and not drained."""
    client = Client(
        BASE_URL,
        PROJECT,
        auth=AUTH,
        transport=RecordingTransport(Gate()),
        spool=tmp_path,
        linger=0.0,
        rate_limit=None,
    )
    await client.track(IDS, "view")
    out = io.StringIO()
    assert main([str(tmp_path)], out=out) == 0
    assert "(alive)" in out.getvalue()
    assert "0 in files whose owner is gone" in out.getvalue()
    await client.aclose(timeout=0.05)


def test_spool_drain_sends_everything_and_leaves_the_directory_empty(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--drain adopts the orphans, sends them with the environment's
    credentials, and exits 0 once all are delivered."""
    asyncio.run(leave_orphan(tmp_path, 7))
    with FakeTrackingAPI() as api:
        monkeypatch.setenv("TRACKASYNC_BASE_URL", api.base_url)
        monkeypatch.setenv("TRACKASYNC_PROJECT_TOKEN", api.project_token)
        monkeypatch.setenv("TRACKASYNC_KEY_ID", api.key_id)
        monkeypatch.setenv("TRACKASYNC_SECRET", api.secret)
        out = io.StringIO()
        assert main([str(tmp_path), "--drain", "--timeout", "60"], out=out) == 0
        assert api.event_count == 7
    assert "7 command(s) adopted, 7 delivered" in out.getvalue()
    assert [p for p in tmp_path.iterdir() if p.suffix == ".spool"] == []


def test_the_cli_dispatches_spool(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``trackasync spool DIR`` reaches the spool command."""
    assert cli(["spool", str(tmp_path)]) == 0
    assert "no spool files" in capsys.readouterr().out


def test_send_takes_a_spool_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``trackasync send --spool DIR`` gives the client that spool."""
    monkeypatch.setenv("TRACKASYNC_BASE_URL", BASE_URL)
    monkeypatch.setenv("TRACKASYNC_PROJECT_TOKEN", PROJECT)
    monkeypatch.setenv("TRACKASYNC_PUBLIC_TOKEN", "t")
    args = _parser().parse_args(["events.jsonl", "--spool", str(tmp_path)])
    assert _options(args)["spool"] == str(tmp_path)
    args = _parser().parse_args(["events.jsonl"])
    assert "spool" not in _options(args)
