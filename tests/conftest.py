"""Shared fixtures: clients wired to in-memory transports, with no real waiting."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from trackasync import Client, PrivateKey, Request, Response, Retry
from trackasync.testing import RecordingTransport, accept_all

BASE_URL = "https://api.example.test"
PROJECT = "project-1"

#: Retries immediately: tests drive time through flush(), never through sleeps.
NO_WAIT = Retry(
    attempts=4, timeout=60.0, wait_initial=0.0, wait_max=0.0, max_retry_after=0.0
)

IDS = {"registered": "ann@example.com"}


@pytest.fixture
def transport() -> RecordingTransport:
    """A transport that records requests and accepts every command."""
    return RecordingTransport()


@pytest.fixture
async def make_client(
    transport: RecordingTransport,
) -> AsyncIterator[Callable[..., Client]]:
    """A factory of unentered clients on ``transport``; all are closed at teardown."""
    made: list[Client] = []

    def make(**options: Any) -> Client:
        options.setdefault("transport", transport)
        options.setdefault("linger", 0.0)
        options.setdefault("retry", NO_WAIT)
        options.setdefault("rate_limit", None)
        client = Client(BASE_URL, PROJECT, auth=PrivateKey("key", "secret"), **options)
        made.append(client)
        return client

    yield make
    for client in made:
        await client.aclose(timeout=1.0)


class Gate:
    """A transport handler that holds every request until opened."""

    def __init__(self) -> None:
        self.open = asyncio.Event()
        self.waiting = 0

    async def __call__(self, request: Request) -> Response:
        self.waiting += 1
        try:
            await self.open.wait()
        finally:
            self.waiting -= 1
        return accept_all(request)


@pytest.fixture
def redis_server():
    """A real Redis server on loopback, stopped when the test ends."""
    from .redis_server import running_redis

    with running_redis() as server:
        yield server
