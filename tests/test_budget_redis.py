"""The rate budget shared by a fleet through Redis, against a real Redis server."""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import multiprocessing
import os
import signal
import sys
import time
from typing import Any

import pytest

from trackasync import Client, ConfigError, _budget_redis, _budget_shared
from trackasync._budget_redis import RedisBudget
from trackasync._budget_shared import HEADROOM
from trackasync._ratelimit import make_limiter

from .redis_server import RedisServer, redis_binary
from .test_ratelimit import busiest_window

pytestmark = [
    pytest.mark.skipif(redis_binary() is None, reason="no redis-server binary"),
    pytest.mark.skipif(os.name == "nt", reason="fork"),
    # Python 3.12+ warns about forking a process that runs threads.
    pytest.mark.filterwarnings("ignore:This process .* is multi-threaded"),
]

API = "https://api.example.test"
RATE = 4.0
INTERVAL = 1 / (RATE * HEADROOM)


async def step(budget: RedisBudget, **signals: Any) -> tuple[float, float]:
    result = await budget._step(
        signals.get("cut", False), signals.get("pause", 0.0), signals.get("accepted", 0)
    )
    assert result is not None, "the Redis step failed"
    return result[0], result[1]


async def slots(*budgets: RedisBudget) -> list[tuple[float, float]]:
    """Step each budget in turn; for each step, the earliest and the latest
    time its reserved slot can fall at, in seconds after the first step began.

    A wait counts from the moment the server read its clock, somewhere between
    the call and its answer: on a loaded machine that can be a while.
    """
    start = time.monotonic()
    spans = []
    for budget in budgets:
        before = time.monotonic() - start
        wait, _ = await step(budget)
        after = time.monotonic() - start
        spans.append((before + wait, after + wait))
    return spans


def assert_paced(spans: list[tuple[float, float]], tolerance: float = 0.05) -> None:
    """Slot k falls ``k`` intervals after slot 0 (whose wait must be nothing)."""
    first_low, first_high = spans[0]
    assert first_low <= tolerance, spans
    for k, (low, high) in enumerate(spans):
        # Slot 0 lies in [first_low, first_high]; slot k, k intervals later.
        assert low - tolerance <= first_high + k * INTERVAL, (k, spans)
        assert first_low + k * INTERVAL <= high + tolerance, (k, spans)


async def raw(server: RedisServer, *command: str) -> Any:
    from redis.asyncio import Redis

    client = Redis.from_url(server.url)
    try:
        return await client.execute_command(*command)
    finally:
        await client.aclose()


async def test_two_processes_share_one_pace(redis_server: RedisServer) -> None:
    """Slots reserved through one key are one interval apart, with no burst."""
    a = RedisBudget(RATE, redis_server.url, API)
    b = RedisBudget(RATE, redis_server.url, API)
    try:
        spans = await slots(a, b, a, b)
    finally:
        await a.aclose()
        await b.aclose()
    assert_paced(spans)


async def test_a_429_is_shared_at_once(redis_server: RedisServer) -> None:
    """A 429 seen by one process halves the pace of all and pauses them all."""
    a = RedisBudget(RATE, redis_server.url, API)
    b = RedisBudget(RATE, redis_server.url, API)
    try:
        a.rate_limited(2.0)
        assert a._push_task is not None
        await a._push_task
        wait, factor = await step(b)
        assert wait == pytest.approx(2.0, abs=0.05)
        assert factor == 0.5
        assert b.current_rate == RATE * HEADROOM / 2
        _, factor = await step(b, accepted=30)
        assert factor == 1.0
    finally:
        await a.aclose()
        await b.aclose()


async def test_a_lower_rate_is_not_imposed_on_neighbours(
    redis_server: RedisServer,
) -> None:
    """A process with a lower rate_limit reserves the budget's interval, not its own."""
    fast = RedisBudget(RATE, redis_server.url, API)
    slow = RedisBudget(RATE / 4, redis_server.url, API)
    try:
        spans = await slots(fast, slow, fast)
    finally:
        await fast.aclose()
        await slow.aclose()
    assert_paced(spans)


@pytest.mark.parametrize(
    "fields",
    [
        lambda now: {"next": "garbage", "factor": "\x00\xff", "written_at": "nan"},
        lambda now: {"factor": "0.004"},
        # Further ahead than the settings allow.
        lambda now: {"next": repr(now + 250), "written_at": repr(now)},
        # Written "250 s from now": the server's clock stepped back since.
        lambda now: {"next": repr(now + 50), "written_at": repr(now + 250)},
    ],
)
async def test_a_corrupt_or_stale_state_recovers_at_once(
    redis_server: RedisServer, fields: Any
) -> None:
    """Garbage, a factor out of bounds, a far-off slot or a clock step back: no stall."""
    budget = RedisBudget(100.0, redis_server.url, API)
    try:
        await step(budget)
        seconds, micros = await raw(redis_server, "TIME")
        for name, value in fields(int(seconds) + int(micros) / 1e6).items():
            await raw(redis_server, "HSET", budget.key, name, value)
        wait, factor = await step(budget)
        assert wait <= 0.02
        assert 0.05 <= factor <= 1.0
        second, _ = await step(budget)
        assert second <= wait + 1 / (100.0 * HEADROOM * 0.05)
    finally:
        await budget.aclose()


async def test_one_round_trip_reserves_several_slots(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A step reserves SLOTS_PER_STEP consecutive slots, used one interval
    apart; a 429 drops those still ahead (they may fall in its pause)."""
    budget = RedisBudget(RATE, redis_server.url, API)
    steps = 0
    real = RedisBudget._step

    async def counted(self: RedisBudget, *args: Any, **kwargs: Any) -> Any:
        nonlocal steps
        steps += 1
        return await real(self, *args, **kwargs)

    monkeypatch.setattr(RedisBudget, "_step", counted)
    try:
        started = time.monotonic()
        released = []
        for _ in range(8):
            await budget.acquire()
            released.append(time.monotonic() - started)
        assert steps == 8 // _budget_redis.SLOTS_PER_STEP
        # Seven intervals from the first slot to the last, at the budget's pace.
        assert released[-1] == pytest.approx(7 * INTERVAL, abs=0.15)
        await budget.acquire()  # a new step: three slots left ahead
        assert len(budget._ahead) == _budget_redis.SLOTS_PER_STEP - 1
        budget.rate_limited(None)
        assert len(budget._ahead) == 0
    finally:
        await budget.aclose()


async def test_the_key_names_the_api_and_the_egress(redis_server: RedisServer) -> None:
    """The default key names the API's address and egress; both can be chosen."""
    default = RedisBudget(RATE, redis_server.url, "https://api.exponea.com")
    assert default.key == "trackasync:rate:https://api.exponea.com::default"
    other = RedisBudget(RATE, redis_server.url + "?egress=nat-b", API)
    assert other.key.endswith(":nat-b")
    named = RedisBudget(RATE, redis_server.url + "?key=mine", API)
    assert named.key == "mine"
    try:
        await step(named)
        assert await raw(redis_server, "EXISTS", "mine") == 1
    finally:
        await named.aclose()


async def test_the_password_is_never_shown(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Neither repr, nor messages, nor log lines repeat a password in the URL."""
    await raw(redis_server, "CONFIG", "SET", "requirepass", "s3cret-pw")
    port = redis_server.port
    good = make_limiter(100.0, f"redis://:s3cret-pw@127.0.0.1:{port}/0", API)
    bad = make_limiter(100.0, f"redis://:wrong-pw@127.0.0.1:{port}/0", API)
    assert isinstance(good, RedisBudget)
    assert isinstance(bad, RedisBudget)
    try:
        with caplog.at_level(logging.DEBUG):
            await step(good)  # the right password works
            await bad.acquire()  # the wrong one: local pacing, one WARNING
        assert not bad.sharing
    finally:
        await good.aclose()
        await bad.aclose()
    shown = [repr(good), repr(bad), good.where, caplog.text]
    with pytest.raises(ConfigError) as bad_port:
        make_limiter(100.0, "redis://:s3cret-pw@127.0.0.1:99999999/0", API)
    with pytest.raises(ConfigError) as bad_scheme:
        make_limiter(100.0, "http://:s3cret-pw@127.0.0.1/0", API)
    shown += [str(bad_port.value), str(bad_scheme.value)]
    assert "out of reach" in caplog.text
    for text in shown:
        assert "s3cret" not in text
        assert "wrong-pw" not in text


def test_the_redis_package_is_needed_only_for_redis(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Without the redis package a redis:// budget says which extra to install."""
    monkeypatch.setitem(sys.modules, "redis.asyncio", None)
    monkeypatch.setitem(sys.modules, "redis", None)
    with pytest.raises(ConfigError, match=r"trackasync\[redis\]"):
        make_limiter(100.0, "redis://127.0.0.1:1/0", API)


def _send_paced(url: str, count: int, out: multiprocessing.Queue[list[float]]) -> None:
    async def run() -> list[float]:
        budget = RedisBudget(100.0, url, API)
        released = []
        try:
            for _ in range(count):
                await budget.acquire()
                released.append(time.time())
        finally:
            await budget.aclose()
        assert budget.sharing
        return released

    out.put(asyncio.run(run()))


def test_several_processes_keep_to_one_budget(redis_server: RedisServer) -> None:
    """Four processes on one key: no one-second window sees more than the rate."""
    context = multiprocessing.get_context("fork")
    out: multiprocessing.Queue[list[float]] = context.Queue()
    workers = [
        context.Process(target=_send_paced, args=(redis_server.url, 60, out))
        for _ in range(4)
    ]
    for worker in workers:
        worker.start()
    released = sorted(t for _ in workers for t in out.get(timeout=30))
    for worker in workers:
        worker.join(10)
        assert worker.exitcode == 0
    # Alone, each would have sent its 60 in about 0.6 s; together they need
    # 240 slots at 95/s.
    assert released[-1] - released[0] > 2.0
    assert busiest_window(released) <= 100


async def test_redis_killed_and_restarted_mid_run(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Redis goes away and comes back: every event is delivered, pacing goes
    local with one WARNING, and sharing resumes with one line."""
    from trackasync.testing import FakeTrackingAPI

    caplog.set_level(logging.WARNING, logger="trackasync")
    async with FakeTrackingAPI() as api:
        async with Client(
            api.base_url,
            api.project_token,
            auth=api.auth,
            linger=0.0,
            mode="single",
            rate_budget=redis_server.url,
        ) as client:
            limiter = client._pipeline.rate
            assert isinstance(limiter, RedisBudget)
            for i in range(5):
                await client.track_and_wait({"registered": f"a{i}"}, "page")
            assert limiter.sharing
            redis_server.stop()
            for i in range(5):
                await client.track_and_wait({"registered": f"b{i}"}, "page")
            assert not limiter.sharing
            redis_server.start()
            await asyncio.sleep(_budget_shared.PROBE_SPACING)
            for i in range(5):
                await client.track_and_wait({"registered": f"c{i}"}, "page")
            assert limiter.sharing
        assert api.event_count == 15
    lines = [r.getMessage() for r in caplog.records]
    assert len([m for m in lines if "out of reach" in m]) == 1
    assert len([m for m in lines if "reachable again" in m]) == 1


async def test_a_stalled_redis_never_blocks_the_loop(
    redis_server: RedisServer,
) -> None:
    """A Redis server that stops answering (SIGSTOP) costs a bounded wait."""
    budget = RedisBudget(100.0, redis_server.url, API)
    assert redis_server.process is not None
    try:
        await step(budget)
        redis_server.process.send_signal(signal.SIGSTOP)
        try:
            started = time.monotonic()
            for _ in range(5):
                await budget.acquire()
            assert time.monotonic() - started < 3.0
            assert not budget.sharing
        finally:
            redis_server.process.send_signal(signal.SIGCONT)
        await asyncio.sleep(_budget_shared.PROBE_SPACING)
        await budget.acquire()
        assert budget.sharing
    finally:
        await budget.aclose()


def test_a_fork_leaves_parent_and_child_working(redis_server: RedisServer) -> None:
    """A child forked from a process whose budget is connected gets its own
    connection; the parent's keeps working."""
    loop = asyncio.new_event_loop()
    budget = RedisBudget(1000.0, redis_server.url, API)
    try:
        loop.run_until_complete(step(budget))
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                child = RedisBudget(1000.0, redis_server.url, API)

                async def in_child() -> bool:
                    # The inherited budget too: it must not touch the parent's socket.
                    ok = await budget._step(False, 0.0, 0) is not None
                    ok = ok and await child._step(False, 0.0, 0) is not None
                    await budget.aclose()
                    await child.aclose()
                    return ok

                code = 0 if asyncio.run(in_child()) else 2
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        for _ in range(3):
            loop.run_until_complete(step(budget))
    finally:
        loop.run_until_complete(budget.aclose())
        loop.close()


def test_a_sync_client_on_a_redis_budget_survives_a_fork(
    redis_server: RedisServer,
) -> None:
    """Parent and child SyncClients keep delivering on one Redis budget after a
    fork from a process whose client holds a Redis connection in its thread."""
    from trackasync import SyncClient

    from ._fake_thread import threaded_fake

    with threaded_fake() as fake:
        client = SyncClient(**fake.client_kwargs(), rate_budget=redis_server.url)
        for i in range(3):
            client.track({"registered": f"p{i}"}, "parent")
        client.flush(timeout=10)
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                handles = [
                    client.track({"registered": f"c{i}"}, "child") for i in range(3)
                ]
                client.flush(timeout=10)
                ok = all(h.result(timeout=10).status == 200 for h in handles)
                sharing = client._client._pipeline.rate.sharing  # type: ignore[attr-defined]
                client.close(timeout=10)
                code = 0 if ok and sharing else 2
            finally:
                os._exit(code)
        for i in range(3):
            client.track({"registered": f"q{i}"}, "parent")
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        report = client.close(timeout=10)
        assert report.delivered == 6
        types = sorted(e.event_type for e in fake.events())
        assert types == ["child"] * 3 + ["parent"] * 6


def test_trackasync_send_shares_the_budget_from_the_environment(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    """`trackasync send` with TRACKASYNC_RATE_BUDGET=redis://... paces on the key."""
    import io
    import json

    from trackasync._cli.send import send

    from ._fake_thread import threaded_fake

    with threaded_fake() as fake:
        api = fake.api
        for name, value in {
            "TRACKASYNC_BASE_URL": api.base_url,
            "TRACKASYNC_PROJECT_TOKEN": api.project_token,
            "TRACKASYNC_KEY_ID": api.key_id,
            "TRACKASYNC_SECRET": api.secret,
            "TRACKASYNC_LINGER": "0.01",
            "TRACKASYNC_RATE_BUDGET": redis_server.url + "?key=send-budget",
        }.items():
            monkeypatch.setenv(name, value)
        path = tmp_path / "in.jsonl"
        event = {"customer_ids": {"registered": "a"}, "event_type": "view"}
        path.write_text(json.dumps(event) + "\n")
        out, err = io.StringIO(), io.StringIO()
        stdin = io.BufferedReader(io.BytesIO(b""))
        status = send([str(path)], stdin=stdin, stdout=out, stderr=err)
        assert status == 0, out.getvalue() + err.getvalue()
        assert len(fake.events()) == 1

    async def exists() -> Any:
        return await raw(redis_server, "EXISTS", "send-budget")

    assert asyncio.run(exists()) == 1


async def test_the_lua_step_and_the_python_step_agree(
    redis_server: RedisServer,
) -> None:
    """The Redis script and _budget_shared.step give the same answer and the
    same new state from the same state and signals (the script's clock read
    back from the state it wrote)."""
    import random

    from trackasync._budget_shared import FIELDS, step as python_step

    rng = random.Random(3)
    budget = RedisBudget(100.0, redis_server.url, API)
    try:
        await step(budget)  # connects, and gives a first state
        for case in range(60):
            seconds, micros = await raw(redis_server, "TIME")
            now = int(seconds) + int(micros) / 1e6
            before = [
                now + rng.choice([-30.0, -0.05, 0.0, 0.02, 0.5, 300.0]),  # next
                rng.choice([0.004, 0.05, 0.3, 1.0, 2.0]),  # factor
                now + rng.choice([-5.0, -0.5, 10.0]),  # last_cut
                rng.choice([50.0, 95.0, 190.0, 5000.0]),  # limit
                now + rng.choice([-20.0, -1.0]),  # limit_at
                now + rng.choice([-1.0, 0.0, 250.0]),  # written_at
            ]
            if case % 10 == 9:
                before[rng.randrange(6)] = math.nan
            mapping = {name: repr(value) for name, value in zip(FIELDS, before)}
            await raw(
                redis_server, "HSET", budget.key, *itertools.chain(*mapping.items())
            )
            cut = rng.random() < 0.3
            pause = rng.choice([0.0, 0.0, 1.5, 100.0])
            accepted = rng.choice([0, 0, 3])
            reserve = rng.random() < 0.8
            count = rng.choice([1, 4])
            result = await budget._step(cut, pause, accepted, reserve, count)
            assert result is not None
            stored = await raw(redis_server, "HMGET", budget.key, *FIELDS)
            after = [float(value) for value in stored]
            expected, delay, factor = python_step(
                before,
                after[-1],  # the script's own clock
                budget._pace,
                cut=cut,
                pause=pause,
                accepted=accepted,
                reserve=reserve,
                count=count,
                catch_up=budget._catch_up,
            )
            assert after == pytest.approx(expected, rel=1e-12, abs=1e-9), case
            assert result[0] == pytest.approx(delay, abs=1e-9), case
            assert result[1] == factor, case
    finally:
        await budget.aclose()
