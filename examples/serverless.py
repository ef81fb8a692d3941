"""A serverless handler (AWS Lambda style): flush before returning.

The platform may freeze the process as soon as the handler returns, so a
queued event could wait for the next invocation, or forever. The client is
created once per process (warm invocations reuse it and its connections) and
each invocation ends with ``flush()``, bounded by a timeout.
"""

from __future__ import annotations

from typing import Any

from trackasync import SyncClient

_client: SyncClient | None = None


def _tracker() -> SyncClient:
    global _client
    if _client is None:
        _client = SyncClient.from_env(linger=0.05)
    return _client


def handler(event: dict[str, Any], context: object = None) -> dict[str, Any]:
    client = _tracker()
    for item in event.get("items", []):
        client.track(
            {"registered": event["email"]}, "item_shipped", {"sku": item["sku"]}
        )
    flushed = client.flush(timeout=5.0)
    return {
        "statusCode": 200 if flushed.failed == flushed.pending == 0 else 502,
        "delivered": flushed.delivered,
    }
