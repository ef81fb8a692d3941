"""A plain asyncio script: ``async with Client`` around the work.

    python examples/script_async.py     # settings from TRACKASYNC_* variables

Leaving the block flushes the queue and closes the connections; the report lists
every command that could not be delivered.
"""

from __future__ import annotations

import asyncio
import sys

from trackasync import Client


async def main() -> int:
    async with Client.from_env() as client:
        for order in range(1, 4):
            client.track_nowait(
                {"registered": "ann@example.com"},
                "purchase",
                {"order_id": order, "total": 10.0 * order},
            )
        # One command whose outcome matters now: wait for its receipt.
        receipt = await client.track_and_wait(
            {"registered": "ann@example.com"}, "checkout_done"
        )
        print(f"checkout accepted in {receipt.latency:.3f} s")
    report = await client.aclose()  # already closed by the block: its report
    print(f"delivered {report.delivered}, undelivered {len(report.undelivered)}")
    return 0 if not report.undelivered else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
