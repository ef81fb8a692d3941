"""RQ: a job's events are delivered before RQ calls the job a success.

    rq worker --worker-class examples.rq_app.TrackingWorker --url redis://...

RQ's default worker forks a *work horse* for each job, and the horse ends with
``os._exit()``: no ``atexit``, so a client's queue in the horse is lost
silently while RQ logs "Successfully completed". Two things fix it:

- ``@delivered`` flushes the client at the end of each job and fails the job
  (so RQ retries it or shows it failed) when something was not delivered;
- naming ``TrackingWorker`` (RQ's forking ``Worker``, unchanged) makes the
  worker import this module, and so trackasync and aiohttp, once, before it
  forks: each horse starts with them loaded instead of importing them again.

The client is created in the worker process; each horse is a fork, where a
``SyncClient`` starts afresh on first use (it never sends the parent's queue).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from rq import Worker

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
        result = job(*args, **kwargs)
        flushed = tracker.flush(timeout=FLUSH_TIMEOUT)
        if flushed.failed or flushed.pending:
            raise RuntimeError(
                f"{flushed.failed} tracking command(s) failed and "
                f"{flushed.pending} still pending after {FLUSH_TIMEOUT:g} s"
            )
        return result

    return run


@delivered
def order_shipped(email: str, order_id: int) -> None:
    tracker.track({"registered": email}, "order_shipped", {"order_id": order_id})


class TrackingWorker(Worker):
    """RQ's forking ``Worker``; see the module docstring for why it is named here."""
