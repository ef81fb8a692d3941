"""aiohttp.web: one Client per application, in a cleanup context.

    python -m aiohttp.web -P 8080 examples.aiohttp_app:create_app

The cleanup context opens the client at startup and closes it (delivering what
is queued) at shutdown. ``overflow="drop_new"``: while the Tracking API is down
and the queue is full, new events are dropped (counted, logged) rather than
failing the request with ``QueueFull`` (see the README's "Web applications").
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from trackasync import Client, InvalidEvent

TRACKER = web.AppKey("tracker", Client)


async def tracker(app: web.Application) -> AsyncIterator[None]:
    async with Client.from_env(overflow="drop_new") as client:
        app[TRACKER] = client
        yield


async def page_view(request: web.Request) -> web.Response:
    client = request.app[TRACKER]
    try:
        client.track_nowait(
            {"cookie": request.match_info["visitor"]},
            "page_view",
            {"path": request.query.get("path", "/")},
        )
    except InvalidEvent as exc:
        return web.json_response({"status": "invalid", "detail": str(exc)}, status=400)
    return web.json_response({"status": "queued"}, status=202)


def create_app(argv: list[str] | None = None) -> web.Application:
    app = web.Application()
    app.cleanup_ctx.append(tracker)
    app.router.add_post("/views/{visitor}", page_view)
    return app
