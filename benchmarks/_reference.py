"""The reference senders the benchmarks compare trackasync with.

- the floor (``use_msgspec=True``): bare aiohttp + msgspec. Each event dict
  (with ``time.time()`` as its timestamp) is encoded once with a reused
  ``msgspec.json.Encoder``; 50 of them are joined into a ``/batch`` body with
  precomputed envelope bytes; one ``ClientSession`` posts it, with at most
  ``in_flight`` requests at a time. No validation, no per-event handles, no
  retries, no parsing of the answer beyond its status.
- the obvious hand-written sender (``use_msgspec=False``): the same, but the
  batch is a dict of commands turned into bytes with ``json.dumps`` per request.

Every sender sends the same bytes. Events with a timestamp in the pool send it
instead of ``time.time()``, moved on by a second each time the pool comes
round, exactly as the benchmarks' producer passes it to trackasync; a
``datetime`` property, wherever it sits (nested objects and lists included), is
written as trackasync writes it: ISO 8601 in UTC with a "Z" (msgspec does so
natively for UTC datetimes; ``json.dumps`` is given a ``default`` that does, and
compact separators, so its body is byte for byte the floor's).
``check_same_json`` proves it for a pool before anything is timed.

Not a benchmark itself.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import aiohttp
import msgspec

from trackasync import PrivateKey

BATCH = 50


_UTC = datetime.timezone.utc


def _iso(value: object) -> str:
    """``json.dumps``' fallback for the one type it cannot write: datetimes,
    in UTC with a "Z", as trackasync (and msgspec, for UTC ones) writes them."""
    if isinstance(value, datetime.datetime) and value.utcoffset() is not None:
        text = value.astimezone(_UTC).isoformat()
        return text.removesuffix("+00:00") + "Z"
    raise TypeError(f"cannot encode {type(value).__name__}")


Event = tuple[dict[str, str], dict[str, Any], "float | None"]

# Envelope bytes before the i-th command's data, as a floor would precompute.
_PREFIXES = [b'{"commands":[{"name":"customers/events","command_id":"0","data":']
_PREFIXES += [
    b'},{"name":"customers/events","command_id":"%d","data":' % i
    for i in range(1, BATCH)
]


def floor_bodies(
    pool: list[Event], events: int, now: Callable[[], float] = time.time
) -> Iterator[bytes]:
    """The floor's ``/batch`` bodies: each event encoded once by a reused
    msgspec encoder, ``BATCH`` of them joined with precomputed envelopes."""
    encode = msgspec.json.Encoder().encode
    prefixes = _PREFIXES
    size = len(pool)
    chunks: list[bytes] = []
    count = 0
    for i in range(events):
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
        if count == BATCH or i == events - 1:
            chunks.append(b"}]}")
            yield b"".join(chunks)
            chunks = []
            count = 0


def json_bodies(
    pool: list[Event], events: int, now: Callable[[], float] = time.time
) -> Iterator[bytes]:
    """The obvious sender's bodies: a dict of ``BATCH`` commands per request,
    turned into bytes by ``json.dumps`` (compact, so the bytes are the floor's)."""
    dumps = json.JSONEncoder(default=_iso, separators=(",", ":")).encode
    size = len(pool)
    commands: list[dict[str, Any]] = []
    for i in range(events):
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
        if len(commands) == BATCH or i == events - 1:
            yield dumps({"commands": commands}).encode()
            commands = []


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
    url = f"{base_url}/track/v2/projects/{project_token}/batch"
    headers = {
        "Authorization": PrivateKey(key_id, secret).header,
        "Content-Type": "application/json",
        "Accept": "application/json",
    }
    slots = asyncio.Semaphore(in_flight)
    tasks: set[asyncio.Task[None]] = set()
    outcome = {"requests": 0, "non_200": 0}
    bodies = (floor_bodies if use_msgspec else json_bodies)(pool, n)

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
        for body in bodies:
            await submit(session, body)
        if tasks:
            await asyncio.wait(set(tasks), timeout=timeout)
    return {
        "requests": outcome["requests"],
        "non_200": outcome["non_200"],
        "commands_per_request": round(n / max(1, outcome["requests"]), 2),
    }


async def check_same_json(pool: list[Event], events: int | None = None) -> int:
    """Raise ``RuntimeError`` unless the floor, the ``json.dumps`` sender and
    trackasync put the same bytes on the wire for the first ``events`` events of
    ``pool`` (two rounds of it by default); returns the bytes compared.

    trackasync's bodies are its ``Delivery.body`` (what it sends inside the
    batch envelope), from a dry-run client; the default timestamp ("now") is
    pinned to one value on all three sides, which is the only difference
    allowed.
    """
    import logging

    from trackasync import Client, PrivateKey

    count = 2 * len(pool) if events is None else events
    size = len(pool)
    fixed = 1_764_547_200.5

    def now() -> float:
        return fixed

    floor = list(floor_bodies(pool, count, now))
    dumped = list(json_bodies(pool, count, now))
    if floor != dumped:
        raise RuntimeError("the json.dumps sender's bodies differ from the floor's")
    log = logging.getLogger("trackasync")
    level = log.level
    log.setLevel(logging.ERROR)  # a dry run says so once, at WARNING
    try:
        client = Client(
            "http://127.0.0.1:9",
            "bench-check",
            auth=PrivateKey("key", "secret"),
            send=False,
            linger=3600.0,
            max_queue=count + 1,
        )
        async with client:
            commands = []
            for i in range(count):
                ids, props, stamp = pool[i % size]
                when = fixed if stamp is None else stamp + i // size
                delivery = client.track_nowait(ids, "purchase", props, timestamp=when)
                commands.append(bytes(delivery.body))
            await client.flush()
    finally:
        log.setLevel(level)
    ours = []
    for start in range(0, count, BATCH):
        chunk = commands[start : start + BATCH]
        parts = [
            piece for k, body in enumerate(chunk) for piece in (_PREFIXES[k], body)
        ]
        ours.append(b"".join(parts) + b"}]}")
    for k, (theirs, mine) in enumerate(zip(floor, ours)):
        if theirs != mine:
            at = next(j for j, (a, b) in enumerate(zip(theirs, mine)) if a != b)
            raise RuntimeError(
                f"request {k}: trackasync's commands differ from the floor's at "
                f"byte {at}: {mine[at - 40 : at + 40]!r} vs {theirs[at - 40 : at + 40]!r}"
            )
    if len(floor) != len(ours):
        raise RuntimeError("trackasync and the floor cut different batches")
    return sum(map(len, floor))
