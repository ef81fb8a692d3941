"""The web application measured by ``bench_outage.py``, run in a child process.

An aiohttp.web app with one route, ``POST /event``, that tracks one typical
event with the policy named on the command line and answers 202 (or 500 when
the tracking call raised, as an application that does not catch it would).
The Tracking API is down: ``--outage refused`` points the client at a port
where nothing listens, ``--outage hang`` at a socket that accepts and never
answers. Before serving, the queue is filled to ``max_queue``, as it is after
an outage has lasted a while. ``GET /stats`` returns the client's counters.
Prints ``PORT <n>`` when it serves; exits when its stdin closes.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import TYPICAL_PROPERTIES, pin
from aiohttp import web

from trackasync import Client, PrivateKey, QueueFull

IDS = {"registered": "ann@example.com", "cookie": "9f1c2b3a-aaaa"}

#: policy name: (Client options, how the handler calls, whether it catches QueueFull)
POLICIES: dict[str, tuple[dict[str, Any], str, bool]] = {
    "none": ({}, "none", False),
    "await_track_default": ({}, "await", False),
    "await_track_50ms_caught": ({"queue_timeout": 0.05}, "await", True),
    "nowait_wait_uncaught": ({}, "nowait", False),
    "nowait_drop_new": ({"overflow": "drop_new"}, "nowait", False),
    "nowait_drop_old": ({"overflow": "drop_old"}, "nowait", False),
}


def _down_api(outage: str) -> tuple[str, socket.socket | None]:
    """A base URL where the API is down, and the socket to keep open (hang)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    if outage == "refused":
        sock.close()
        return f"http://127.0.0.1:{port}", None
    sock.listen(1024)  # accepted by the kernel, never answered
    return f"http://127.0.0.1:{port}", sock


async def serve(policy: str, outage: str, max_queue: int, cpu: int | None) -> None:
    if cpu is not None:
        pin(cpu)
    options, call, catch = POLICIES[policy]
    base_url, keep = _down_api(outage)
    client = Client(
        base_url,
        "project",
        auth=PrivateKey("key-id", "bench-secret-1"),
        max_queue=max_queue,
        rate_limit=None,
        **options,
    )
    async with client:
        # The outage has lasted long enough to fill the queue.
        # (No await in this loop: the sender cannot take any meanwhile.)
        if call != "none":
            for _ in range(max_queue):
                client.track_nowait(IDS, "prefill", TYPICAL_PROPERTIES)
            assert client.stats().queued == max_queue

        queue_full = 0

        async def event(request: web.Request) -> web.Response:
            nonlocal queue_full
            try:
                if call == "await":
                    await client.track(IDS, "purchase", TYPICAL_PROPERTIES)
                elif call == "nowait":
                    client.track_nowait(IDS, "purchase", TYPICAL_PROPERTIES)
            except QueueFull:
                queue_full += 1  # lost too, but never counted by the client
                if not catch:
                    raise  # aiohttp answers 500, as for any unhandled error
            return web.json_response({"status": "queued"}, status=202)

        async def stats(request: web.Request) -> web.Response:
            s = client.stats()
            return web.json_response(
                {
                    "queued": s.queued,
                    "dropped": s.dropped,
                    "enqueued": s.enqueued,
                    "queue_full": queue_full,
                }
            )

        app = web.Application()
        app.router.add_post("/event", event)
        app.router.add_get("/stats", stats)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, backlog=1024)
        await site.start()
        print(f"PORT {runner.addresses[0][1]}", flush=True)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, sys.stdin.read)  # until stdin closes
        await runner.cleanup()
        await client.aclose(timeout=0.1)
    if keep is not None:
        keep.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--policy", choices=sorted(POLICIES), required=True)
    parser.add_argument("--outage", choices=("refused", "hang"), default="refused")
    parser.add_argument("--max-queue", type=int, default=10_000)
    parser.add_argument("--cpu", type=int)
    args = parser.parse_args()
    # The library's warnings (drops, failures) would flood the benchmark's
    # output: they are rate-limited, but not wanted on stderr here.
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    asyncio.run(serve(args.policy, args.outage, args.max_queue, args.cpu))


if __name__ == "__main__":
    main()
