"""A plain script (a cron job, a one-off backfill of a few events): SyncClient.

    export TRACKASYNC_BASE_URL=https://api.exponea.com TRACKASYNC_PROJECT_TOKEN=...
    export TRACKASYNC_KEY_ID=... TRACKASYNC_SECRET=...
    python examples/script.py

No event loop to manage: ``track`` returns at once, ``close()`` (here, the end of
the ``with`` block) delivers what is queued and reports what was not.
"""

from __future__ import annotations

import sys

from trackasync import SyncClient


def main() -> int:
    signups = [
        ("ann@example.com", "newsletter"),
        ("bob@example.com", "checkout"),
        ("eve@example.com", "newsletter"),
    ]
    with SyncClient.from_env() as client:
        for email, source in signups:
            client.track({"registered": email}, "signup", {"source": source})
            client.update_customer({"registered": email}, {"email": email})
    report = client.close()  # already closed by the block: returns its report
    print(f"delivered {report.delivered}, undelivered {len(report.undelivered)}")
    return 0 if not report.undelivered and not sum(report.failed.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
