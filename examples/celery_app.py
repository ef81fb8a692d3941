"""Celery: one SyncClient per worker process, opened and closed on its signals.

    celery -A examples.celery_app worker --pool=prefork --concurrency=4

The client is created in each worker process once it has forked
(``worker_process_init``), so no process shares another's thread or
connections, and closed when that process stops (``worker_process_shutdown``),
which delivers what is still queued. The solo pool (Celery 5.x) sends
``worker_process_init`` too but not ``worker_process_shutdown``: there the
client is flushed at interpreter exit instead. Tasks only queue: they never wait for
the API. The broker here is Kombu's filesystem transport, which needs no
server (set ``CELERY_BROKER_FOLDER``); use your real broker instead.
"""

from __future__ import annotations

import logging
import os
import tempfile
from typing import Any

from celery import Celery
from celery.signals import worker_process_init, worker_process_shutdown

from trackasync import SyncClient

logger = logging.getLogger(__name__)

_folder = os.environ.get(
    "CELERY_BROKER_FOLDER", os.path.join(tempfile.gettempdir(), "celery-broker")
)
os.makedirs(_folder, exist_ok=True)

app = Celery("examples.celery_app")
app.conf.update(
    broker_url="filesystem://",
    broker_transport_options={
        "data_folder_in": _folder,
        "data_folder_out": _folder,
        "control_folder": os.path.join(_folder, "control"),
    },
    task_ignore_result=True,
    broker_connection_retry_on_startup=True,
)

_tracker: SyncClient | None = None


@worker_process_init.connect
def open_tracker(**_: Any) -> None:
    global _tracker
    _tracker = SyncClient.from_env()


@worker_process_shutdown.connect
def close_tracker(**_: Any) -> None:
    if _tracker is not None:
        report = _tracker.close()
        if report.undelivered:
            logger.warning("%d tracking commands undelivered", len(report.undelivered))


def tracker() -> SyncClient:
    if _tracker is None:  # not in a worker: e.g. the web app that enqueues
        raise RuntimeError("tracker() is for tasks run by a Celery worker")
    return _tracker


@app.task
def order_shipped(email: str, order_id: int) -> None:
    tracker().track({"registered": email}, "order_shipped", {"order_id": order_id})
