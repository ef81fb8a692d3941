"""Serve ``FakeTrackingAPI`` on 127.0.0.1 for the benchmarks, controlled over stdin.

Started by ``_common.FakeServerProcess``; not a benchmark itself. It prints one
JSON line with the base URL and credentials, then answers one command per stdin
line with one JSON line:

- ``stats``: events stored, duplicates, requests by status, commands carried by
  accepted tracking requests, 429s;
- ``reset``: forget everything stored (and restart the rate window);
- ``delay SECONDS``: set the response delay;
- ``quit`` (or stdin closing): stop.

Unlike ``trackasync fake-server`` it takes ``--response-delay`` and ``--cpu``.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import sys

from _common import pin

from trackasync.testing import FakeTrackingAPI


def _stats(api: FakeTrackingAPI) -> dict[str, object]:
    requests = api.requests
    statuses = collections.Counter(str(r.status) for r in requests)
    tracking = [r for r in requests if r.route in ("batch", "customers/events")]
    accepted = [r for r in tracking if r.status == 200]
    commands = sum(r.commands for r in accepted)
    return {
        "events": api.event_count,
        "duplicates": api.duplicates,
        "requests": len(requests),
        "statuses": dict(statuses),
        "rate_limited": sum(1 for r in requests if r.fault == "rate_limited"),
        "accepted_requests": len(accepted),
        "accepted_commands": commands,
        "commands_per_accepted_request": (
            round(commands / len(accepted), 3) if accepted else None
        ),
    }


async def _main(args: argparse.Namespace, pinned: bool) -> None:
    api = FakeTrackingAPI(
        port=0,
        rate_limit=args.rate_limit,
        rate_window=args.rate_window,
        response_delay=args.response_delay,
    )
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), sys.stdin
    )

    def say(payload: dict[str, object]) -> None:
        sys.stdout.write(json.dumps(payload) + "\n")
        sys.stdout.flush()

    async with api:
        say(
            {
                "base_url": api.base_url,
                "project_token": api.project_token,
                "key_id": api.key_id,
                "secret": api.secret,
                "pinned": pinned,
                "pid": os.getpid(),
            }
        )
        while True:
            line = (await reader.readline()).decode().strip()
            if not line or line == "quit":
                break
            command, _, arg = line.partition(" ")
            if command == "stats":
                say(_stats(api))
            elif command == "reset":
                api.reset()
                say({"reset": True})
            elif command == "delay":
                api.response_delay = float(arg)
                say({"response_delay": api.response_delay})
            else:
                say({"error": f"unknown command {line!r}"})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate-limit", type=float, default=None)
    parser.add_argument("--rate-window", type=float, default=60.0)
    parser.add_argument("--response-delay", type=float, default=0.0)
    parser.add_argument("--cpu", type=int, default=None)
    args = parser.parse_args()
    pinned = args.cpu is not None and pin(args.cpu)
    asyncio.run(_main(args, pinned))


if __name__ == "__main__":
    main()
