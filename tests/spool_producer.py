"""A producing process for the kill tests: tracks numbered events into a spool
and prints each number once its call has returned (durable), until killed.

    python -m tests.spool_producer MODE BASE_URL SPOOL FIRST [COUNT]

MODE: "async" (``await Client.track``), "sync" (``SyncClient.track``) or
"interval" (``Client.track_nowait`` under ``durability="interval"``; the
number is printed at the call); "-spill" after it (e.g. "async-spill") makes
the queue in memory 20 commands long, so that most commands overflow to disk. Credentials are the fake server's defaults.
"""

from __future__ import annotations

import asyncio
import os
import sys

from trackasync import Client, PrivateKey, Retry, SyncClient
from trackasync.testing import FakeTrackingAPI

RETRY = Retry(attempts=1000, timeout=3600.0, wait_initial=0.05, wait_max=0.2)
INTERVAL = 0.2


def _say(n: int) -> None:
    # One write per line, unbuffered: what is printed survives a SIGKILL.
    os.write(1, b"%d\n" % n)


def adopt(spool: str, go: str) -> None:
    """Wait for ``go`` to exist, open a log on ``spool`` (adopting what it
    can), print every body it recovered, one hex line each, and settle it."""
    import time

    from trackasync._spool import SqliteLog

    while not os.path.exists(go):
        time.sleep(0.001)

    async def run() -> None:
        log = SqliteLog(spool)
        await log.open()
        while True:
            entries = await log.recover(100)
            if not entries:
                break
            for entry in entries:
                os.write(1, entry.body.hex().encode() + b"\n")
            # Delivered, as far as this test goes: they leave the spool.
            log.settle([entry.seq for entry in entries])
        await log.aclose()

    asyncio.run(run())


def main(argv: list[str]) -> None:
    if argv[0] == "adopt":
        adopt(argv[1], argv[2])
        return
    mode, base_url, spool, first = argv[0], argv[1], argv[2], int(argv[3])
    count = int(argv[4]) if len(argv) > 4 else 10**9
    fake = FakeTrackingAPI()
    # "...-spill": a queue of 20 in memory, so most commands overflow to disk.
    spill = mode.endswith("-spill")
    mode = mode.removesuffix("-spill")
    options = {
        "max_queue": 20 if spill else 10_000,
        "auth": PrivateKey(fake.key_id, fake.secret),
        "spool": spool,
        "linger": 0.05,
        "retry": RETRY,
        "rate_limit": None,
        "timeout": 5.0,
        "connect_timeout": 1.0,
    }
    if mode == "sync":
        client = SyncClient(base_url, fake.project_token, **options)  # type: ignore[arg-type]
        for n in range(first, first + count):
            client.track({"registered": f"u{n % 7}"}, "kill_test", {"n": n})
            _say(n)
        client.close()
        return

    async def run() -> None:
        interval = mode == "interval"
        async with Client(
            base_url,
            fake.project_token,
            durability="interval" if interval else "durable",
            spool_interval=INTERVAL,
            **options,  # type: ignore[arg-type]
        ) as client:
            for n in range(first, first + count):
                ids = {"registered": f"u{n % 7}"}
                if interval:
                    client.track_nowait(ids, "kill_test", {"n": n})
                    await asyncio.sleep(0.0005)
                else:
                    await client.track(ids, "kill_test", {"n": n})
                _say(n)

    asyncio.run(run())


if __name__ == "__main__":
    main(sys.argv[1:])


# -- for multiprocessing.Pool workers (importable by reference) -----------------------

_pool_client: SyncClient | None = None


def pool_job(args: tuple[str, str, str, int, int]) -> int:
    """Track ``count`` events from ``first`` with this worker's SyncClient
    (durable), appending each number to ``acks`` once its call returned."""
    global _pool_client
    base_url, spool, acks, first, count = args
    fake = FakeTrackingAPI()
    if _pool_client is None:
        _pool_client = SyncClient(
            base_url,
            fake.project_token,
            auth=PrivateKey(fake.key_id, fake.secret),
            spool=spool,
            linger=0.05,
            retry=RETRY,
            rate_limit=None,
        )
    fd = os.open(acks, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        for n in range(first, first + count):
            _pool_client.track({"registered": f"u{n % 7}"}, "kill_test", {"n": n})
            os.write(fd, b"%d\n" % n)
    finally:
        os.close(fd)
    return count


def rq_job(base_url: str, spool: str, acks: str, first: int, count: int) -> int:
    """An RQ job: a SyncClient with a spool tracks ``count`` events (durable)
    and appends each number to ``acks`` once its call returned. The work horse
    then ends with ``os._exit``: no exit hook runs, nothing is closed."""
    fake = FakeTrackingAPI()
    client = SyncClient(
        base_url,
        fake.project_token,
        auth=PrivateKey(fake.key_id, fake.secret),
        spool=spool,
        linger=0.05,
        retry=RETRY,
        rate_limit=None,
    )
    fd = os.open(acks, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        for n in range(first, first + count):
            client.track({"registered": f"u{n % 7}"}, "kill_test", {"n": n})
            os.write(fd, b"%d\n" % n)
    finally:
        os.close(fd)
    return count
