"""The reference senders the benchmarks compare trackasync with.

- the floor (``use_msgspec=True``): bare aiohttp + msgspec. Each event dict
  (with ``time.time()`` as its timestamp) is encoded once with a reused
  ``msgspec.json.Encoder``; 50 of them are joined into a ``/batch`` body with
  precomputed envelope bytes; one ``ClientSession`` posts it, with at most
  ``in_flight`` requests at a time. No validation, no per-event handles, no
  retries, no parsing of the answer beyond its status.
- the obvious hand-written sender (``use_msgspec=False``): the same, but the
  batch is a dict of commands turned into bytes with ``json.dumps`` per request.

Events with a timestamp in the pool (the realistic ones) send it instead of
``time.time()``, moved on by a second each time the pool comes round, exactly
as the benchmarks' producer passes it to trackasync; a ``datetime`` property is
written as an ISO 8601 string (msgspec does so natively, ``json.dumps`` is given
a ``default`` that does).

Not a benchmark itself.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import time
from typing import Any

import aiohttp
import msgspec

from trackasync import PrivateKey

BATCH = 50


def _iso(value: object) -> str:
    """``json.dumps``' fallback for the one type it cannot write: datetimes."""
    if isinstance(value, datetime.datetime):
        return value.isoformat()
    raise TypeError(f"cannot encode {type(value).__name__}")


async def send_reference(
    *,
    base_url: str,
    project_token: str,
    key_id: str,
    secret: str,
    pool: list[tuple[dict[str, str], dict[str, Any], float | None]],
    events: int,
    in_flight: int,
    use_msgspec: bool,
    timeout: float,
) -> dict[str, Any]:
    """Post ``events`` events from ``pool`` (used cyclically); returns counts."""
    n = events
    size = len(pool)
    url = f"{base_url}/track/v2/projects/{project_token}/batch"
    headers = {
        "Authorization": PrivateKey(key_id, secret).header,
        "Content-Type": "application/json",
        "Accept": "application/json",
    }
    encode = msgspec.json.Encoder().encode
    dumps = json.JSONEncoder(default=_iso).encode
    now = time.time
    slots = asyncio.Semaphore(in_flight)
    tasks: set[asyncio.Task[None]] = set()
    outcome = {"requests": 0, "non_200": 0}
    # Envelope bytes before the i-th command's data, as a floor would precompute.
    prefixes = [b'{"commands":[{"name":"customers/events","command_id":"0","data":']
    prefixes += [
        b'},{"name":"customers/events","command_id":"%d","data":' % i
        for i in range(1, BATCH)
    ]

    async def post(session: aiohttp.ClientSession, body: bytes) -> None:
        try:
            async with session.post(url, data=body, headers=headers) as response:
                await response.read()
                outcome["requests"] += 1
                if response.status != 200:
                    outcome["non_200"] += 1
        finally:
            slots.release()

    async def submit(session: aiohttp.ClientSession, body: bytes) -> None:
        await slots.acquire()
        task = asyncio.create_task(post(session, body))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    async with aiohttp.ClientSession() as session:
        if use_msgspec:
            chunks: list[bytes] = []
            count = 0
            for i in range(n):
                ids, props, stamp = pool[i % size]
                chunks.append(prefixes[count])
                chunks.append(
                    encode(
                        {
                            "customer_ids": ids,
                            "event_type": "purchase",
                            "timestamp": now() if stamp is None else stamp + i // size,
                            "properties": props,
                        }
                    )
                )
                count += 1
                if count == BATCH or i == n - 1:
                    chunks.append(b"}]}")
                    body = b"".join(chunks)
                    chunks = []
                    count = 0
                    await submit(session, body)
        else:
            commands: list[dict[str, Any]] = []
            for i in range(n):
                ids, props, stamp = pool[i % size]
                commands.append(
                    {
                        "name": "customers/events",
                        "command_id": str(len(commands)),
                        "data": {
                            "customer_ids": ids,
                            "event_type": "purchase",
                            "timestamp": now() if stamp is None else stamp + i // size,
                            "properties": props,
                        },
                    }
                )
                if len(commands) == BATCH or i == n - 1:
                    body = dumps({"commands": commands}).encode()
                    commands = []
                    await submit(session, body)
        if tasks:
            await asyncio.wait(set(tasks), timeout=timeout)
    return {
        "requests": outcome["requests"],
        "non_200": outcome["non_200"],
        "commands_per_request": round(n / max(1, outcome["requests"]), 2),
    }
