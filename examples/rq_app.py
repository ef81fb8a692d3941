"""RQ: a job's events are delivered before RQ calls the job a success.

    rq worker --worker-class examples.rq_app.TrackingWorker --url redis://...

RQ's default worker forks a *work horse* for each job, and the horse ends with
``os._exit()``: no ``atexit``, so a client's queue in the horse is lost
silently while RQ logs "Successfully completed". Two things fix it:

- ``@delivered`` flushes the client at the end of each job (a failing one
  too) and fails the job (so RQ retries it or shows it failed) when something
  was not delivered;
- events are stamped with the time the job was created (``job_timestamp``),
  so a retried job sends the same events again and the API's deduplication
  absorbs those the first attempt delivered (two events of one job that are
  alike in customer, type and properties are merged too: give them a
  property that tells them apart);
- naming ``TrackingWorker`` (RQ's forking ``Worker``, unchanged) makes the
  worker import this module, and so trackasync and aiohttp, once, before it
  forks: each horse starts with them loaded instead of importing them again.

The client is created in the worker process; each horse is a fork, where a
``SyncClient`` starts afresh on first use (it never sends the parent's queue).
"""

from __future__ import annotations

import datetime
import functools
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from rq import Worker, get_current_job

from trackasync import SyncClient

P = ParamSpec("P")
T = TypeVar("T")

#: Seconds a job waits at its end for its events' outcomes.
FLUSH_TIMEOUT = 30.0

tracker = SyncClient.from_env(linger=0.05)


def delivered(job: Callable[P, T]) -> Callable[P, T]:
    """Flush ``tracker`` when ``job`` ends; fail the job if anything is left over."""

    @functools.wraps(job)
    def run(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            result = job(*args, **kwargs)
        except BaseException:
            # What the job tracked before it failed is sent all the same.
            tracker.flush(timeout=FLUSH_TIMEOUT)
            raise
        flushed = tracker.flush(timeout=FLUSH_TIMEOUT)
        if flushed.failed or flushed.pending:
            raise RuntimeError(
                f"{flushed.failed} tracking command(s) failed and "
                f"{flushed.pending} still pending after {FLUSH_TIMEOUT:g} s"
            )
        return result

    return run


def job_timestamp() -> float | None:
    """When the running job was created: the same for each of its attempts
    (its enqueue time changes when RQ requeues it for a retry)."""
    job = get_current_job()
    if job is None or job.created_at is None:
        return None  # not in a job: the client stamps the time of the call
    created = job.created_at
    if created.tzinfo is None:  # RQ stores UTC, naive in some versions
        created = created.replace(tzinfo=datetime.timezone.utc)
    return created.timestamp()


@delivered
def order_shipped(email: str, order_id: int) -> None:
    tracker.track(
        {"registered": email},
        "order_shipped",
        {"order_id": order_id},
        timestamp=job_timestamp(),
    )


class TrackingWorker(Worker):
    """RQ's forking ``Worker``; see the module docstring for why it is named here."""
