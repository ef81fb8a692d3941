"""FastAPI: one Client for the application, opened and closed in the lifespan.

    uvicorn examples.fastapi_app:app     # settings from TRACKASYNC_* variables

The client lives as long as the application: every request shares its queue,
batches and connections, and shutdown delivers what is still queued.

An outage of the Tracking API must not become an outage of the application:
``overflow="drop_new"`` and ``track_nowait`` mean a request never waits for
the queue and never fails because it is full. Once the queue is full (10,000
events by default) new events are dropped, counted in ``stats().dropped`` and
logged at WARNING (rate-limited). The README's "Web applications" section
has the measured cost of each policy.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from pydantic import BaseModel

from trackasync import Client, InvalidEvent


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    async with Client.from_env(overflow="drop_new") as client:
        app.state.tracker = client
        yield
    # Leaving the block flushed the queue within the client's shutdown_timeout.


app = FastAPI(lifespan=lifespan)


class Purchase(BaseModel):
    email: str
    total: float


@app.post("/purchases", status_code=202)
async def purchase(body: Purchase, request: Request) -> dict[str, str]:
    client: Client = request.app.state.tracker
    try:
        # Queued at once, or dropped (counted, logged) if the queue is full:
        # the request never waits for the API, even while it is down.
        client.track_nowait(
            {"registered": body.email}, "purchase", {"total": body.total}
        )
    except InvalidEvent as exc:
        return {"status": "invalid", "detail": str(exc)}
    return {"status": "queued"}
