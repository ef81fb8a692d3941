"""The transport's cost per request: capped reads and safe errors vs the old send.

``AiohttpTransport.send`` reads an answer in capped pieces (so a huge answer is
never held whole) instead of one ``response.read()``. This measures what that
costs on the hot path, in one process pinned to core 0, against baselines in
the same run:

- ``transport``: trackasync's ``AiohttpTransport.send`` as it is;
- ``read_all``: the same class with the previous ``send`` (one uncapped
  ``response.read()``), defined below;
- ``bare_session``: ``ClientSession.post`` and ``read()``, no transport at all.

Each posts ``--requests`` prebuilt 50-command bodies to the fake server (in
another process, on the other core), 4 at a time. The three run interleaved,
``--rounds`` times; each figure is the median CPU time per request (user +
system, ``getrusage``), and per event (/50). ``transport_over_read_all_paired``
is the ratio of the two within each round, then its median: on a shared
machine, load changes between rounds more than within one.

    python benchmarks/bench_transport.py            # full run
    python benchmarks/bench_transport.py --quick    # smoke run
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from _common import (
    CLIENT_CPU,
    fake_server,
    median,
    pin,
    post_bodies,
    publish,
    spread,
    typical_pool,
)
from _reference import BATCH
from bench_breakdown import _batch_body

from trackasync._transport import AiohttpTransport, Request, Response

HOWS = ("transport", "read_all", "bare_session")


class ReadAllTransport(AiohttpTransport):
    """The baseline: the transport's send before the read cap (one ``read()``)."""

    async def send(self, request: Request) -> Response:
        session = self._session or self._get_session()
        async with session.request(
            request.method,
            request.url,
            data=request.body,
            headers=request.headers,
            allow_redirects=False,
        ) as response:
            return Response(response.status, await response.read(), response.headers)


async def _http(server: Any, bodies: list[bytes], how: str) -> float:
    """CPU seconds to post ``bodies``, 4 at a time."""
    if how == "bare_session":
        return await post_bodies(server, bodies, None)
    transport = ReadAllTransport() if how == "read_all" else AiohttpTransport()
    return await post_bodies(server, bodies, transport)


def run(args: argparse.Namespace) -> dict[str, Any]:
    pinned = pin(CLIENT_CPU)
    pool = typical_pool()
    figures: dict[str, list[float]] = {how: [] for how in HOWS}
    with fake_server() as server:
        for round_no in range(args.rounds):
            # Distinct bodies in every round, so deduplication stays out of the way.
            bodies = [
                _batch_body(
                    [
                        (ids, {**props, "n": r, "round": round_no})
                        for ids, props in pool[:BATCH]
                    ]
                )
                for r in range(args.requests)
            ]
            # Rotate the order, so no variant always runs first or last.
            order = HOWS[round_no % 3 :] + HOWS[: round_no % 3]
            for how in order:
                server.reset()
                figures[how].append(asyncio.run(_http(server, bodies, how)))
    summary: dict[str, Any] = {}
    for how, values in figures.items():
        per_request = [value / args.requests for value in values]
        summary[how] = {
            "cpu_us_per_request": spread(per_request, 1e6, 1),
            "cpu_us_per_event": round(median(per_request) / BATCH * 1e6, 3),
        }
    base = median(figures["read_all"])
    summary["transport_over_read_all"] = round(median(figures["transport"]) / base, 3)
    # The same ratio taken within each round (the two ran back to back), then
    # the median: less exposed to load that comes and goes between rounds.
    paired = [
        mine / theirs for mine, theirs in zip(figures["transport"], figures["read_all"])
    ]
    summary["transport_over_read_all_paired"] = spread(paired, 1.0, 3)
    summary["transport_minus_read_all_us_per_request"] = round(
        (median(figures["transport"]) - base) / args.requests * 1e6, 1
    )
    return {
        "settings": {
            "requests": args.requests,
            "commands_per_request": BATCH,
            "rounds": args.rounds,
            "pinned_to_cpu": pinned,
        },
        "summary": summary,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a fast smoke run")
    parser.add_argument("--requests", type=int, default=2_000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--out", help="also write the JSON report to this file")
    args = parser.parse_args(argv)
    if args.quick:
        args.requests, args.rounds = 200, 1
    return publish(args.out, lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
