"""FastAPI: one Client for the application, opened and closed in the lifespan.

    uvicorn examples.fastapi_app:app     # settings from TRACKASYNC_* variables

The client lives as long as the application: every request shares its queue,
batches and connections, and shutdown delivers what is still queued.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from pydantic import BaseModel

from trackasync import Client, InvalidEvent


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    async with Client.from_env() as client:
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
        # Queued at once; the request does not wait for the API.
        await client.track(
            {"registered": body.email}, "purchase", {"total": body.total}
        )
    except InvalidEvent as exc:
        return {"status": "invalid", "detail": str(exc)}
    return {"status": "queued"}
