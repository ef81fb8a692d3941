"""The kill tests: producers killed at random moments lose nothing a durable
call accepted; the next process on the directory sends it, stored once."""

from __future__ import annotations

import asyncio
import collections
import multiprocessing
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from trackasync import Client, Retry
from trackasync._spool import SqliteLog
from trackasync.testing import FakeTrackingAPI

from .spool_producer import INTERVAL, pool_job

ROOT = Path(__file__).resolve().parent.parent
# Rounds per mode (more with TRACKASYNC_KILL_ROUNDS=10 for a long run).
ROUNDS = int(os.environ.get("TRACKASYNC_KILL_ROUNDS", "1"))
SEED = int(os.environ.get("TRACKASYNC_KILL_SEED", str(random.randrange(1 << 30))))


def closed_port() -> int:
    """A loopback port nobody listens on: an API that does not answer at all."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


class Producer:
    """One producing process; collects the numbers it acknowledged, with when."""

    def __init__(self, mode: str, base_url: str, spool: Path, first: int) -> None:
        command = [sys.executable, "-m", "tests.spool_producer", mode, base_url]
        self.proc = subprocess.Popen(
            [*command, str(spool), str(first)],
            stdout=subprocess.PIPE,
            cwd=ROOT,
        )
        self.acks: list[tuple[int, float]] = []
        self.first_ack = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.acks.append((int(line), time.monotonic()))
            self.first_ack.set()

    def kill(self) -> float:
        self.proc.send_signal(signal.SIGKILL)
        at = time.monotonic()
        self.proc.wait(10)
        self._reader.join(10)
        assert self.proc.stdout is not None
        self.proc.stdout.close()
        return at


async def drain(base_url: str, spool: Path) -> Client:
    """A client on the directory, open until it sent everything it adopted."""
    client = Client(
        base_url,
        FakeTrackingAPI().project_token,
        auth=FakeTrackingAPI().auth,
        spool=spool,
        linger=0.01,
        rate_limit=None,
        retry=Retry(attempts=20, wait_initial=0.01, wait_max=0.1),
    )
    async with client:
        log = client._pipeline.table.log
        assert isinstance(log, SqliteLog)
        for _ in range(6000):
            if log.opened:
                break
            await asyncio.sleep(0.01)
        await client.flush()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            stats = client.stats()
            if not log.backlog() and not stats.queued and not stats.in_flight:
                break
            await asyncio.sleep(0.05)
    return client


def stored_numbers(api: FakeTrackingAPI) -> collections.Counter[int]:
    return collections.Counter(
        int(e.properties["n"]) for e in api.events if e.event_type == "kill_test"
    )


@pytest.mark.timeout(600)
@pytest.mark.parametrize("mode", ["async", "sync", "interval", "async-spill"])
def test_sigkill_at_random_moments_loses_nothing_a_durable_call_accepted(
    tmp_path: Path, mode: str
) -> None:
    """Producers are SIGKILLed at random moments, with the API answering
    normally, slowly and not at all; after a restart on the same directory,
    every event whose durable call returned is stored exactly once (under
    "interval", what is lost was accepted within the last interval)."""
    rng = random.Random(SEED)
    spool = tmp_path / "spool"
    acked: dict[int, float] = {}
    kills: list[float] = []
    with FakeTrackingAPI() as api:
        down = f"http://127.0.0.1:{closed_port()}"
        first = 0
        for _ in range(ROUNDS):
            for answer in ("normal", "slow", "down"):
                api.response_delay = 0.3 if answer == "slow" else 0.0
                target = down if answer == "down" else api.base_url
                producer = Producer(mode, target, spool, first)
                assert producer.first_ack.wait(60), "the producer never started"
                time.sleep(rng.uniform(0.0, 0.8))
                killed = producer.kill()
                kills.append(killed)
                for n, at in producer.acks:
                    acked[n] = killed - at
                first += 1_000_000
        api.response_delay = 0.0
        client = asyncio.run(drain(api.base_url, spool))
        stored = stored_numbers(api)
    assert acked, f"nothing acknowledged (seed {SEED})"
    assert client.stats().recovered > 0
    twice = [n for n, count in stored.items() if count > 1]
    assert twice == [], f"stored more than once (seed {SEED})"
    lost = [n for n in acked if stored[n] == 0]
    if mode == "interval":
        # Only what was accepted shortly before a kill may be lost.
        late = [n for n in lost if acked[n] > INTERVAL + 1.0]
        assert late == [], f"lost beyond the interval (seed {SEED})"
    else:
        assert lost == [], f"{len(lost)} of {len(acked)} lost (seed {SEED})"
    assert [p for p in spool.iterdir() if p.suffix == ".spool"] == []


@pytest.mark.timeout(300)
def test_a_terminated_pool_loses_nothing_its_workers_accepted(tmp_path: Path) -> None:
    """multiprocessing.Pool workers with a SyncClient on one spool directory,
    terminated mid-work (SIGTERM, no exit hooks): the next process sends every
    event whose track() returned, once."""
    spool = tmp_path / "spool"
    acks = tmp_path / "acks"
    with FakeTrackingAPI(response_delay=0.2) as api:
        context = multiprocessing.get_context("fork")
        pool = context.Pool(3)
        jobs = [
            (api.base_url, str(spool), str(acks), k * 1_000_000, 100_000)
            for k in range(3)
        ]
        pool.map_async(pool_job, jobs)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if acks.exists() and acks.stat().st_size > 2000:
                break
            time.sleep(0.05)
        pool.terminate()
        pool.join()
        acked = [int(x) for x in acks.read_text().split()]
        asyncio.run(drain(api.base_url, spool))
        stored = stored_numbers(api)
    assert len(acked) > 100
    assert [n for n in acked if stored[n] != 1] == []


@pytest.mark.timeout(300)
def test_a_forked_child_that_ends_with_os_exit_loses_nothing(tmp_path: Path) -> None:
    """A child forked from a process whose client has a spool writes its own
    file (never the parent's), ends with os._exit without closing, and the
    next process sends everything its durable calls accepted; the parent's
    client goes on untouched."""
    from trackasync import SyncClient

    spool = tmp_path / "spool"
    with FakeTrackingAPI(response_delay=0.2) as api:
        parent = SyncClient(
            api.base_url,
            api.project_token,
            auth=api.auth,
            spool=spool,
            linger=0.01,
            rate_limit=None,
        )
        parent.track({"registered": "p"}, "kill_test", {"n": -1})
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child
            status = 1
            try:
                os.close(read)
                for n in range(200):
                    parent.track({"registered": "c"}, "kill_test", {"n": n})
                    os.write(write, b"%d\n" % n)
                status = 0
            finally:
                os._exit(status)
        os.close(write)
        with os.fdopen(read, "rb") as pipe:
            acked = [int(x) for x in pipe.read().split()]
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        report = parent.close(timeout=10)
        assert report.delivered == 1
        asyncio.run(drain(api.base_url, spool))
        stored = stored_numbers(api)
    assert len(acked) == 200
    assert [n for n in acked if stored[n] != 1] == []
    assert stored[-1] == 1
