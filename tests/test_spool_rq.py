"""An RQ work horse ends with os._exit: with a spool, nothing its durable
calls accepted is lost (a real ``rq worker`` and a real Redis on loopback)."""

from __future__ import annotations

import asyncio
import collections
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from trackasync.testing import FakeTrackingAPI

from .test_spool_kill import drain, stored_numbers

rq = pytest.importorskip("rq")
redis = pytest.importorskip("redis")

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.timeout(300)
def test_rq_horses_ending_with_os_exit_lose_nothing(
    tmp_path: Path, redis_server: Any
) -> None:
    """Three jobs, each in a horse that tracks through a SyncClient with a
    spool and ends with os._exit while the slow API has not answered: the
    next process on the directory sends every event whose track() returned,
    and the API stores each once."""
    spool = tmp_path / "spool"
    acks = tmp_path / "acks"
    with FakeTrackingAPI(response_delay=0.5) as api:
        connection = redis.Redis.from_url(redis_server.url)
        queue = rq.Queue("spool", connection=connection)
        for k in range(3):
            queue.enqueue(
                "tests.spool_producer.rq_job",
                api.base_url,
                str(spool),
                str(acks),
                k * 1_000_000,
                60,
            )
        rq_cli = str(Path(sys.executable).parent / "rq")
        worker = subprocess.run(
            [rq_cli, "worker", "--burst", "--url", redis_server.url, "spool"],
            cwd=ROOT,
            capture_output=True,
            timeout=240,
        )
        assert worker.returncode == 0, worker.stderr.decode()[-2000:]
        connection.close()
        acked = [int(x) for x in acks.read_text().split()]
        unsent = sum(1 for p in spool.iterdir() if p.suffix == ".spool")
        asyncio.run(drain(api.base_url, spool))
        stored = stored_numbers(api)
    assert len(acked) == 180
    assert unsent > 0, "the horses left nothing: the test proves nothing"
    counts = collections.Counter(stored[n] for n in acked)
    assert counts == {1: 180}
