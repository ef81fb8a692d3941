"""Every example in examples/ runs against the fake API, which must then hold its data."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from trackasync.testing import FakeTrackingAPI

from ._fake_thread import ThreadedFake, threaded_fake

ROOT = Path(__file__).resolve().parent.parent


def _settings(api: FakeTrackingAPI) -> dict[str, str]:
    return {
        "TRACKASYNC_BASE_URL": api.base_url,
        "TRACKASYNC_PROJECT_TOKEN": api.project_token,
        "TRACKASYNC_KEY_ID": api.key_id,
        "TRACKASYNC_SECRET": api.secret,
    }


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[ThreadedFake]:
    with threaded_fake() as server:
        for name, value in _settings(server.api).items():
            monkeypatch.setenv(name, value)
        yield server


def _run_example(name: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / "examples" / name)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=dict(os.environ),
    )


def test_script(fake: ThreadedFake) -> None:
    done = _run_example("script.py")
    assert done.returncode == 0, done.stderr
    assert "delivered 6, undelivered 0" in done.stdout
    assert sorted(e.customer_ids["registered"] for e in fake.events()) == [
        "ann@example.com",
        "bob@example.com",
        "eve@example.com",
    ]
    customers = fake.call(lambda: fake.api.customers)
    assert len(customers) == 3


def test_script_async(fake: ThreadedFake) -> None:
    done = _run_example("script_async.py")
    assert done.returncode == 0, done.stderr
    assert "delivered 4, undelivered 0" in done.stdout
    types = sorted(e.event_type for e in fake.events())
    assert types == ["checkout_done"] + ["purchase"] * 3


async def test_fastapi_app(monkeypatch: pytest.MonkeyPatch) -> None:
    import httpx

    from examples.fastapi_app import app

    async with FakeTrackingAPI() as api:
        for name, value in _settings(api).items():
            monkeypatch.setenv(name, value)
        # The application's lifespan, as a server runs it around the requests.
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(
                transport=transport, base_url="http://app"
            ) as http:
                for total in (1.5, 2.5):
                    answer = await http.post(
                        "/purchases", json={"email": "ann@example.com", "total": total}
                    )
                    assert answer.status_code == 202
                    assert answer.json() == {"status": "queued"}
                bad = await http.post("/purchases", json={"email": "", "total": 1})
                assert bad.json()["status"] == "invalid"
        assert sorted(e.properties["total"] for e in api.events) == [1.5, 2.5]


async def test_aiohttp_app(monkeypatch: pytest.MonkeyPatch) -> None:
    from aiohttp.test_utils import TestClient, TestServer

    from examples.aiohttp_app import create_app

    async with FakeTrackingAPI() as api:
        for name, value in _settings(api).items():
            monkeypatch.setenv(name, value)
        async with TestClient(TestServer(create_app())) as http:
            answer = await http.post("/views/v-1?path=/shoes")
            assert answer.status == 202
            answer = await http.post("/views/v-2")
            assert answer.status == 202
        # The cleanup context closed the client: everything is stored.
        assert sorted(
            (e.customer_ids["cookie"], e.properties["path"]) for e in api.events
        ) == [("v-1", "/shoes"), ("v-2", "/")]


def _closed_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _outage(monkeypatch: pytest.MonkeyPatch) -> None:
    """The API is down (nothing listens) and the queue holds 3 events."""
    monkeypatch.setenv("TRACKASYNC_BASE_URL", f"http://127.0.0.1:{_closed_port()}")
    monkeypatch.setenv("TRACKASYNC_PROJECT_TOKEN", "project")
    monkeypatch.setenv("TRACKASYNC_KEY_ID", "key-id")
    monkeypatch.setenv("TRACKASYNC_SECRET", "secret-value-1")
    monkeypatch.setenv("TRACKASYNC_MAX_QUEUE", "3")
    monkeypatch.setenv("TRACKASYNC_SHUTDOWN_TIMEOUT", "0.1")


async def test_fastapi_app_during_an_outage(monkeypatch: pytest.MonkeyPatch) -> None:
    """API down, queue full: every request still answers 202 at once (no wait
    for room, no 500), and the events beyond the queue are counted as dropped."""
    import time

    import httpx

    from examples.fastapi_app import app

    _outage(monkeypatch)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://app"
        ) as http:
            start = time.monotonic()
            for total in range(20):
                answer = await http.post(
                    "/purchases", json={"email": "ann@example.com", "total": total}
                )
                assert answer.status_code == 202
            # Generous: the old example waited 10 s per request once full.
            assert time.monotonic() - start < 5.0
        assert app.state.tracker.stats().dropped > 0


async def test_aiohttp_app_during_an_outage(monkeypatch: pytest.MonkeyPatch) -> None:
    """API down, queue full: the aiohttp example answers 202, not 500."""
    from aiohttp.test_utils import TestClient, TestServer

    from examples.aiohttp_app import TRACKER, create_app

    _outage(monkeypatch)
    app = create_app()
    async with TestClient(TestServer(app)) as http:
        for i in range(20):
            answer = await http.post(f"/views/v-{i}")
            assert answer.status == 202
        stats = app[TRACKER].stats()
    assert stats.enqueued == 20
    assert stats.dropped > 0


def test_flask_app(fake: ThreadedFake) -> None:
    from examples.flask_app import create_app

    app = create_app()
    http = app.test_client()
    answer = http.post("/signup", json={"email": "ann@example.com", "plan": "pro"})
    assert answer.status_code == 202
    assert http.post("/signup", json={"email": ""}).status_code == 400
    client = app.extensions["trackasync"]
    report = client.close(timeout=5)
    assert report.delivered == 1
    [event] = fake.events()
    assert (event.event_type, event.properties) == ("signup", {"plan": "pro"})


def test_serverless_handler_flushes_before_returning(fake: ThreadedFake) -> None:
    from examples import serverless

    try:
        first = serverless.handler(
            {"email": "ann@example.com", "items": [{"sku": "A"}, {"sku": "B"}]}
        )
        # Stored by the time the handler returned: no waiting here.
        assert fake.event_count == 2
        assert first == {"statusCode": 200, "delivered": 2}
        second = serverless.handler(
            {"email": "bob@example.com", "items": [{"sku": "C"}]}
        )
        assert second == {"statusCode": 200, "delivered": 1}
        assert fake.event_count == 3
    finally:
        if serverless._client is not None:
            serverless._client.close(timeout=5)
            serverless._client = None


def test_celery_worker(
    fake: ThreadedFake, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib
    import signal
    import time

    broker = tmp_path / "broker"
    env = {
        **os.environ,
        "CELERY_BROKER_FOLDER": str(broker),
        # Nothing is sent before the worker stops: what arrives proves that the
        # process-shutdown signal closed the client.
        "TRACKASYNC_LINGER": "60",
    }
    log = tmp_path / "worker.log"
    with open(log, "w") as log_file:
        worker = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "examples.celery_app",
                "worker",
                "--pool=prefork",
                "--concurrency=2",
                "--loglevel=INFO",
                "--without-heartbeat",
                "--without-gossip",
                "--without-mingle",
            ],
            cwd=ROOT,
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    try:
        # The producer side: this process sends the tasks through the same folder.
        monkeypatch.setenv("CELERY_BROKER_FOLDER", str(broker))
        import examples.celery_app as celery_app

        celery_app = importlib.reload(celery_app)
        for order in range(3):
            celery_app.order_shipped.delay("ann@example.com", order)
        deadline = time.monotonic() + 60
        while log.read_text().count("succeeded") < 3:
            assert worker.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        assert fake.event_count == 0  # lingering, as configured
        worker.send_signal(signal.SIGTERM)  # a warm shutdown
        assert worker.wait(60) == 0, log.read_text()
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
    assert sorted(e.properties["order_id"] for e in fake.events()) == [0, 1, 2]
    assert "Traceback" not in log.read_text()
    assert not (ROOT / "control").exists()  # the broker's files stay in its folder
