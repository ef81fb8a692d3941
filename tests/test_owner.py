"""One owner for every command: the log seam under the command table, kept and
recovered commands, per-client expediting, and one list of options."""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Sequence
from typing import Any

import pytest

from trackasync import (
    Client,
    DeliveryFailed,
    PrivateKey,
    Stats,
    SyncClient,
)
from trackasync._delivery import Delivery
from trackasync._env import TUNING
from trackasync._log import LogEntry
from trackasync._options import NAMES, EnvOptions, Options, SyncClientOptions
from trackasync.testing import RecordingTransport

from .conftest import BASE_URL, IDS, NO_WAIT, PROJECT, Gate

AUTH = PrivateKey("key", "secret")


def invariant(stats: Stats) -> bool:
    """The books balance, kept and recovered commands included."""
    return stats.enqueued + stats.recovered == (
        stats.delivered
        + sum(stats.failed.values())
        + stats.kept
        + stats.queued
        + stats.in_flight
    )


class Disk:
    """What a durable log would keep between runs: entries by run and seq."""

    def __init__(self) -> None:
        self.entries: dict[tuple[int, int], LogEntry] = {}
        self.runs = 0


class DiskLog:
    """A persistent ``CommandLog`` over a ``Disk`` in memory: what a spool does,
    without the files. Each instance is one run."""

    persistent = True

    def __init__(self, disk: Disk) -> None:
        disk.runs += 1
        self.disk = disk
        self.run = disk.runs
        self.opened = False
        self.settled: list[int] = []
        self.settle_calls = 0
        # Entries of earlier runs, oldest first, with this run's numbers for
        # them (negative, as the protocol asks).
        earlier = sorted(
            (key for key in disk.entries if key[0] != self.run),
            key=lambda key: disk.entries[key].created,
        )
        self._backlog = [(-(i + 1), key) for i, key in enumerate(earlier)]
        self._recovered: dict[int, tuple[int, int]] = {}

    async def open(self) -> None:
        self.opened = True

    def append(self, commands: Sequence[Delivery]) -> None:
        for c in commands:
            self.disk.entries[(self.run, c.seq)] = LogEntry(
                c.seq, c.kind, c.body, c.created, c.attempts
            )

    def synced(self, seq: int) -> Awaitable[None] | None:
        return None

    def _key(self, seq: int) -> tuple[int, int]:
        return self._recovered[seq] if seq < 0 else (self.run, seq)

    def settle(self, seqs: Sequence[int]) -> None:
        self.settle_calls += 1
        self.settled.extend(seqs)
        for seq in seqs:
            self.disk.entries.pop(self._key(seq), None)

    def release(self, commands: Sequence[Delivery]) -> None:
        for c in commands:
            key = self._key(c.seq)
            self.disk.entries[key] = self.disk.entries[key]._replace(
                attempts=c.attempts
            )

    async def recover(self, limit: int) -> list[LogEntry]:
        page, self._backlog = self._backlog[:limit], self._backlog[limit:]
        out = []
        for seq, key in page:
            self._recovered[seq] = key
            out.append(self.disk.entries[key]._replace(seq=seq))
        return out

    def backlog(self) -> int:
        return len(self._backlog)

    async def aclose(self) -> None:
        pass

    def after_fork_in_child(self) -> None:
        pass


def spooled_client(disk: Disk, transport: RecordingTransport, **options: Any) -> Client:
    settings = Options(
        base_url=BASE_URL,
        project_token=PROJECT,
        auth=AUTH,
        transport=transport,
        retry=NO_WAIT,
        rate_limit=None,
        **options,
    )
    return Client._from_options(settings, log=lambda: DiskLog(disk))


async def test_a_keeping_close_keeps_unsent_commands_and_the_next_run_sends_them() -> (
    None
):
    """With a persistent log, aclose() keeps what the API never answered: the
    handles end "kept", stats and the report count them apart from failures, and
    the next run recovers them (oldest first, as the original bytes) and sends
    them, telling the hook they are recovered."""
    disk = Disk()
    gate = Gate()  # never opened: the first run's requests get no answer
    first = spooled_client(disk, RecordingTransport(gate), linger=0.0)
    handles = [first.track_nowait(IDS, "view", {"n": n}) for n in range(5)]
    bodies = [h.body for h in handles]
    report = await first.aclose(timeout=0.2)
    stats = first.stats()
    assert report.kept == stats.kept == 5
    assert sum(report.failed.values()) == 0
    assert report.undelivered == []
    assert invariant(stats)
    for handle in handles:
        with pytest.raises(DeliveryFailed) as caught:
            handle.result()
        assert caught.value.reason == "kept"
    assert len(disk.entries) == 5

    seen: list[Delivery] = []
    transport = RecordingTransport()
    second = spooled_client(disk, transport, linger=0.0, on_result=seen.append)
    async with second:
        second.track_nowait(IDS, "new")
        for _ in range(200):
            if len(seen) == 6:
                break
            await asyncio.sleep(0.01)
    stats = second.stats()
    assert stats.recovered == 5
    assert stats.delivered == 6
    assert stats.kept == 0
    assert invariant(stats)
    assert disk.entries == {}
    recovered = [d for d in seen if d.recovered]
    assert [d.body for d in recovered] == bodies
    assert all(d.attempts >= 2 for d in recovered)  # one per run at least
    sent = b"".join(r.body or b"" for r in transport.requests)
    assert all(body in sent for body in bodies)


async def test_outcomes_reach_the_log_once_per_answer() -> None:
    """A request's answer settles all its commands in the log in one call."""
    disk = Disk()
    transport = RecordingTransport()
    client = spooled_client(disk, transport, linger=60.0)
    async with client:
        for n in range(30):
            client.track_nowait(IDS, "view", {"n": n})
        await client.flush()
        log = client._pipeline.table.log
        assert isinstance(log, DiskLog)
        assert sorted(log.settled) == list(range(1, 31))
        assert log.settle_calls == 1  # one answer, one call
    assert len(transport.requests) == 1
    assert disk.entries == {}


async def test_awaiting_one_clients_command_does_not_expedite_another() -> None:
    """Awaiting client A's command sends A's batch at once; client B, which has
    a long linger, keeps its commands queued."""
    transport = RecordingTransport()
    a = Client(BASE_URL, PROJECT, auth=AUTH, transport=transport, linger=60.0)
    b = Client(BASE_URL, PROJECT, auth=AUTH, transport=transport, linger=60.0)
    async with a, b:
        b.track_nowait(IDS, "b-event")
        delivery = a.track_nowait(IDS, "a-event")
        receipt = await asyncio.wait_for(delivery, 5)
        assert receipt.status == 200
        assert b.stats().queued == 1
        assert len(transport.requests) == 1


def test_every_entry_point_agrees_with_the_one_list_of_options() -> None:
    """Client's keywords, their defaults, SyncClient's options, from_env's
    overrides and the environment variables all come from ``Options``."""
    signature = inspect.signature(Client.__init__)
    params = [p for p in signature.parameters if p != "self"]
    assert tuple(params) == NAMES
    defaults = Options(base_url="https://x.example", project_token="p", auth=AUTH)
    for name, param in signature.parameters.items():
        if param.default is not inspect.Parameter.empty:
            expected = getattr(defaults, name)
            if name in ("retry", "limits"):
                assert param.default is None  # filled in by Options
            else:
                assert param.default == expected, name
    sync_keys = set(SyncClientOptions.__optional_keys__)
    assert sync_keys == set(NAMES) - {"base_url", "project_token", "auth", "transport"}
    assert set(EnvOptions.__optional_keys__) == set(NAMES)
    # Every option that is a plain setting can come from the environment.
    not_from_env = {
        "base_url",  # TRACKASYNC_BASE_URL, read apart
        "project_token",  # TRACKASYNC_PROJECT_TOKEN
        "auth",  # TRACKASYNC_KEY_ID/SECRET or TRACKASYNC_PUBLIC_TOKEN
        "send",  # TRACKASYNC_SEND
        "retry",
        "limits",
        "on_result",
        "transport",
        "default_properties",  # a mapping, given in code
        "before_send",  # a callable
    }
    assert set(TUNING) == set(NAMES) - not_from_env


def test_an_unknown_keyword_names_the_class_called_and_leaves_no_noise(
    recwarn: pytest.WarningsRecorder,
) -> None:
    """A typo raises TypeError naming what the user called; a constructor that
    failed leaves nothing for the finalizer to complain about."""
    with pytest.raises(TypeError, match="lingr"):
        Client(BASE_URL, PROJECT, auth=AUTH, lingr=0)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match=r"^SyncClient\(\) got an unexpected .*'lingr'"):
        SyncClient(BASE_URL, PROJECT, auth=AUTH, lingr=0)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match=r"^Client\.from_env\(\) got an unexpected"):
        Client.from_env(lingr=0)  # type: ignore[call-arg]
    import gc

    gc.collect()
    assert [str(w.message) for w in recwarn] == []


def test_sync_drops_go_through_the_same_path_as_async(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """SyncClient with drop_new: every dropped command gets its on_result call
    and the same rate-limited WARNING as on Client."""
    caplog.set_level(logging.WARNING, logger="trackasync")
    seen: list[str] = []
    client = SyncClient(
        "http://127.0.0.1:9",
        PROJECT,
        auth=AUTH,
        max_queue=2,
        overflow="drop_new",
        linger=60.0,
        send=False,
        on_result=lambda d: seen.append(
            "dropped" if not d.delivered() else "delivered"
        ),
    )
    handles = [client.track(IDS, "view", {"n": n}) for n in range(6)]
    report = client.close(timeout=5)
    assert report.failed["dropped"] == 4
    assert report.delivered == 2
    assert sorted(seen) == ["delivered"] * 2 + ["dropped"] * 4
    assert sum(1 for h in handles if h.done() and not h.delivered()) == 4
    assert any("queue full: dropped" in r.getMessage() for r in caplog.records)


async def test_system_time_during_a_close_says_the_client_is_closing() -> None:
    """system_time() while aclose() is under way raises ClientClosed."""
    from trackasync import ClientClosed

    gate = Gate()
    client = Client(
        BASE_URL, PROJECT, auth=AUTH, transport=RecordingTransport(gate), linger=0.0
    )
    client.track_nowait(IDS, "view")
    closing = asyncio.ensure_future(client.aclose(timeout=5))
    await asyncio.sleep(0.01)
    with pytest.raises(ClientClosed, match="closing"):
        await client.system_time()
    gate.open.set()
    report = await closing
    assert report.delivered == 1
