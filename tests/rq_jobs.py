"""Jobs for the RQ tests, imported by a real ``rq worker`` (``PYTHONPATH`` is the repo)."""

from __future__ import annotations

from rq import get_current_job

from examples.rq_app import delivered, job_timestamp, tracker


@delivered
def flaky_order(email: str, order_id: int) -> None:
    """Tracks its event, then fails on its first attempt only."""
    tracker.track(
        {"registered": email},
        "order_shipped",
        {"order_id": order_id},
        timestamp=job_timestamp(),
    )
    job = get_current_job()
    assert job is not None
    if job.connection.incr(f"attempts:{job.id}") == 1:
        raise RuntimeError("the first attempt fails after tracking")
