"""The rate budget shared by the processes of one host, through a state file."""

from __future__ import annotations

import asyncio
import fcntl
import itertools
import logging
import math
import multiprocessing
import os
import signal
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from trackasync import Client, ConfigError, _budget_file, _budget_shared, _ratelimit
from trackasync._budget_file import FileBudget, budget_path, default_directory
from trackasync._budget_shared import HEADROOM
from trackasync._ratelimit import RateLimiter, make_limiter

from .test_ratelimit import Clock

pytestmark = [
    pytest.mark.skipif(os.name == "nt", reason="POSIX file locks"),
    # Python 3.12+ warns about forking a process that runs threads: a fork
    # while another thread steps is exactly what is under test.
    pytest.mark.filterwarnings("ignore:This process .* is multi-threaded"),
]

RATE = 4.0
PACE = RATE * HEADROOM  # the shared budget keeps a margin under the rate
INTERVAL = 1 / PACE


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock(1_000_000.0)
    monkeypatch.setattr(_budget_file, "_wall", fake)
    return fake


@pytest.fixture
def path(tmp_path: Path) -> str:
    return str(tmp_path / "budget")


def wait_of(limiter: FileBudget, **signals: object) -> float:
    result = limiter.try_step(
        bool(signals.get("cut", False)),
        float(signals.get("pause", 0.0)),  # type: ignore[arg-type]
        int(signals.get("accepted", 0)),  # type: ignore[call-overload]
    )
    assert result is not None
    return result[0]


def test_two_limiters_share_one_pace(clock: Clock, path: str) -> None:
    """Slots reserved by two processes are one interval apart, with no burst."""
    a, b = FileBudget(RATE, path), FileBudget(RATE, path)
    assert [wait_of(a), wait_of(b), wait_of(a), wait_of(b)] == pytest.approx(
        [0.0, INTERVAL, 2 * INTERVAL, 3 * INTERVAL]
    )


def test_idle_time_is_not_banked(clock: Clock, path: str) -> None:
    """After a quiet spell the next slots are still one interval apart."""
    a = FileBudget(RATE, path)
    assert wait_of(a) == 0.0
    clock.now += 10
    assert [wait_of(a), wait_of(a)] == pytest.approx([0.0, INTERVAL])


def test_a_429_in_one_process_slows_the_others_at_once(clock: Clock, path: str) -> None:
    """A 429 is shared when it is seen: the halving and its pause reach all."""
    a, b = FileBudget(RATE, path), FileBudget(RATE, path)
    a.rate_limited(2.0)  # no slot taken by a: the signal is written now
    assert wait_of(b) == pytest.approx(2.0, abs=1e-3)
    assert b.current_rate == PACE / 2
    assert wait_of(b) == pytest.approx(2.0 + 2 * INTERVAL, abs=1e-3)
    a.rate_limited(None)  # within the cut spacing: one signal, one cut
    assert wait_of(a) == pytest.approx(2.0 + 4 * INTERVAL, abs=1e-3)
    assert a.current_rate == PACE / 2
    wait_of(b, accepted=30)  # what b's next step carries after 30 accepted
    assert wait_of(a) > 0
    assert a.current_rate == PACE


def test_a_lower_rate_is_not_imposed_on_neighbours(clock: Clock, path: str) -> None:
    """A process with a low rate_limit of its own leaves its neighbour's pace be."""
    fast, slow = FileBudget(RATE, path), FileBudget(RATE / 4, path)
    assert wait_of(fast) == 0.0
    assert wait_of(slow) == pytest.approx(INTERVAL)
    # slow's slot cost one interval of the budget, not four.
    assert wait_of(fast) == pytest.approx(2 * INTERVAL)
    assert slow.current_rate == pytest.approx(PACE / 4)


async def test_a_lower_rate_still_paces_its_own_process(
    clock: Clock, path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The slow process itself keeps to its own rate_limit."""
    mono = Clock(50.0)
    monkeypatch.setattr(_ratelimit, "time", type("T", (), {"monotonic": mono}))
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        mono.now += seconds
        clock.now += seconds

    monkeypatch.setattr(_ratelimit, "_sleep", sleep)
    slow = FileBudget(1.0, path)
    for _ in range(3):
        await slow.acquire()
    assert sum(slept) >= 2.0


@pytest.mark.parametrize(
    ("content", "first_waits"),
    [
        (b"garbage", 0.0),
        (os.urandom(48), 0.0),
        (struct.pack("<6d", *[math.nan] * 6), 0.0),
        # Further ahead than the settings allow (a pause of 60 s at most, and
        # 64 slots at the slowest pace).
        (struct.pack("<6d", 1_000_500.0, 1.0, 0.0, PACE, 999_999.0, 999_999.0), 0.0),
        # Written "250 s from now": the clock stepped back since.
        (struct.pack("<6d", 1_000_250.0, 1.0, 0.0, PACE, 999_999.0, 1_000_250.0), 0.0),
        # A rate factor out of bounds: back within [floor, 1].
        (struct.pack("<6d", 999_999.0, 0.004, 0.0, PACE, 999_999.0, 999_999.0), 0.0),
    ],
)
def test_a_stale_or_corrupt_state_recovers_at_once(
    clock: Clock, path: str, content: bytes, first_waits: float
) -> None:
    """Whatever the file holds, the next slots come at most a floor interval apart."""
    Path(path).write_bytes(content)
    limiter = FileBudget(RATE, path)
    assert wait_of(limiter) == first_waits
    floor_interval = 1 / (PACE * _ratelimit._FLOOR_SHARE)
    assert 0 < wait_of(limiter) <= floor_interval


def test_a_clock_step_back_does_not_stall(
    path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """State written before the wall clock stepped back 250 s costs no wait."""
    writer = FileBudget(RATE, path)
    monkeypatch.setattr(_budget_file, "_wall", lambda: time.time() + 250.0)
    for _ in range(5):
        wait_of(writer)
    monkeypatch.setattr(_budget_file, "_wall", time.time)
    assert wait_of(FileBudget(RATE, path)) == 0.0


def test_budget_path_is_keyed_by_api_host_in_a_private_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """'host' picks a file per API address in a 0700 directory of this user."""
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    monkeypatch.setattr(_budget_file.tempfile, "gettempdir", lambda: str(tmp_path))
    one = budget_path("host", "https://api.exponea.com")
    assert one == budget_path("host", "https://api.exponea.com/")
    assert one != budget_path("host", "https://api.eu1.exponea.com")
    assert budget_path("host", "http://127.0.0.1:1") != budget_path(
        "host", "http://127.0.0.1:2"
    )
    directory = Path(one).parent
    assert directory == tmp_path / f"trackasync-{os.geteuid()}"
    assert directory.stat().st_mode & 0o777 == 0o700
    assert budget_path(str(tmp_path / "x"), "https://a.test") == str(tmp_path / "x")


def test_the_default_directory_prefers_a_private_runtime_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """$XDG_RUNTIME_DIR is used when it is private, and skipped when it is not."""
    runtime = tmp_path / "run"
    runtime.mkdir(0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
    monkeypatch.setattr(_budget_file.tempfile, "gettempdir", lambda: str(tmp_path))
    assert default_directory() == str(runtime / "trackasync")
    runtime.chmod(0o755)
    assert default_directory() == str(tmp_path / f"trackasync-{os.geteuid()}")


@pytest.mark.parametrize("how", ["mode", "link"])
def test_a_default_directory_that_is_not_private_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    """A directory others can write, or a link put in its place, is refused."""
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    monkeypatch.setattr(_budget_file.tempfile, "gettempdir", lambda: str(tmp_path))
    place = tmp_path / f"trackasync-{os.geteuid()}"
    if how == "mode":
        place.mkdir()
        place.chmod(0o777)
    else:
        (tmp_path / "elsewhere").mkdir(0o700)
        place.symlink_to(tmp_path / "elsewhere")
    with pytest.raises(ConfigError, match="not a private directory"):
        make_limiter(100.0, "host", "https://a.test")


def test_a_link_in_place_of_the_file_is_refused_and_left_alone(
    tmp_path: Path,
) -> None:
    """A symbolic or hard link never gets the victim's file overwritten."""
    victim = tmp_path / "profile"
    victim.write_bytes(b"export PATH=/usr/bin\n" * 3)
    victim.chmod(0o600)
    before = victim.read_bytes()
    (tmp_path / "sym").symlink_to(victim)
    with pytest.raises(ConfigError, match="symbolic link"):
        make_limiter(100.0, str(tmp_path / "sym"), "https://a.test")
    os.link(victim, tmp_path / "hard")
    with pytest.raises(ConfigError, match="hard links"):
        make_limiter(100.0, str(tmp_path / "hard"), "https://a.test")
    assert victim.read_bytes() == before


def test_a_file_others_can_write_is_refused(tmp_path: Path) -> None:
    """A 0666 state file (anyone could hold or rewrite it) is refused."""
    planted = tmp_path / "budget"
    planted.write_bytes(b"")
    planted.chmod(0o666)
    with pytest.raises(ConfigError, match="written by other users"):
        make_limiter(100.0, str(planted), "https://a.test")


def test_make_limiter_choices(tmp_path: Path) -> None:
    """Off in its usual spellings, a path, and the errors for the rest."""
    for off in (None, "off", "OFF", " Off ", "none", "false", "0", "no"):
        assert type(make_limiter(100.0, off, "https://a.test")) is RateLimiter
    shared = make_limiter(100.0, str(tmp_path / "b"), "https://a.test")
    assert isinstance(shared, FileBudget)
    assert (tmp_path / "b").stat().st_mode & 0o777 == 0o600
    with pytest.raises(ConfigError, match="needs a rate_limit"):
        make_limiter(None, "host", "https://a.test")
    with pytest.raises(ConfigError, match="does not exist"):
        make_limiter(100.0, str(tmp_path / "missing" / "b"), "https://a.test")
    with pytest.raises(ConfigError, match="rate_budget must be"):
        make_limiter(100.0, 3, "https://a.test")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="with a '/'"):
        make_limiter(100.0, "hots", "https://a.test")
    with pytest.raises(ConfigError, match="redis://"):
        make_limiter(100.0, "http://user:hunter2@cache:6379", "https://a.test")


def test_the_environment_variable_takes_off_and_refuses_a_bare_word(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """TRACKASYNC_RATE_BUDGET=OFF is off (no file named OFF); 'banana' is refused."""
    from trackasync._env import client_kwargs

    monkeypatch.chdir(tmp_path)
    base = {
        "TRACKASYNC_BASE_URL": "https://a.test",
        "TRACKASYNC_PROJECT_TOKEN": "p",
        "TRACKASYNC_PUBLIC_TOKEN": "t",
    }
    for off in ("OFF", "off", "None", "false", "0"):
        options = client_kwargs(environ={**base, "TRACKASYNC_RATE_BUDGET": off})
        assert options["rate_budget"] is None
    for good in ("host", "./budget", str(tmp_path / "b"), "redis://cache:6379/0"):
        options = client_kwargs(environ={**base, "TRACKASYNC_RATE_BUDGET": good})
        assert options["rate_budget"] == good
    with pytest.raises(ConfigError, match="TRACKASYNC_RATE_BUDGET"):
        client_kwargs(environ={**base, "TRACKASYNC_RATE_BUDGET": "banana"})
    assert list(tmp_path.iterdir()) == []


async def test_a_held_lock_never_blocks_the_event_loop(
    path: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A lock held elsewhere (a stopped process) costs a bounded, async wait:
    the loop keeps running, pacing goes local with one WARNING, and comes back."""
    limiter = FileBudget(100.0, path)
    holder = os.open(path, os.O_RDWR)
    fcntl.flock(holder, fcntl.LOCK_EX)
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.005)

    task = asyncio.create_task(ticker())
    try:
        with caplog.at_level(logging.WARNING, logger="trackasync"):
            started = time.monotonic()
            for _ in range(5):
                await limiter.acquire()
            took = time.monotonic() - started
            assert not limiter.sharing
            # One patient attempt, then local pacing (probes once a second).
            assert took < 3.0
            assert ticks >= 10
            os.close(holder)
            holder = -1
            await asyncio.sleep(_budget_shared.PROBE_SPACING)
            await limiter.acquire()
            assert limiter.sharing
    finally:
        task.cancel()
        if holder >= 0:
            os.close(holder)
    lines = [r.getMessage() for r in caplog.records]
    assert len([m for m in lines if "out of reach" in m]) == 1
    assert len([m for m in lines if "reachable again" in m]) == 1
    assert all(path in m for m in lines)


def _hammer(path: str, stop: threading.Event) -> None:
    limiter = FileBudget(1e6, path)
    while not stop.is_set():
        limiter.try_step(False, 0.0, 0)


def test_a_fork_at_any_moment_leaves_parent_and_child_working(path: str) -> None:
    """Forks while another thread steps all the time: no child inherits a held
    lock, and the parent's budget keeps working."""
    stop = threading.Event()
    thread = threading.Thread(target=_hammer, args=(path, stop), daemon=True)
    thread.start()
    limiter = FileBudget(1e6, path)
    try:
        for _ in range(30):
            pid = os.fork()
            if pid == 0:  # the child: a step must succeed within a second
                code = 1
                try:
                    deadline = time.monotonic() + 1.0
                    while time.monotonic() < deadline:
                        if FileBudget(1e6, path).try_step(False, 0.0, 0) is not None:
                            code = 0
                            break
                finally:
                    os._exit(code)
            _, status = os.waitpid(pid, 0)
            assert os.waitstatus_to_exitcode(status) == 0
    finally:
        stop.set()
        thread.join(5)
    assert limiter.try_step(False, 0.0, 0) is not None


def _reserve(path: str, count: int, out: multiprocessing.Queue[list[float]]) -> None:
    read: list[float] = []

    def wall() -> float:
        read.append(time.time())
        return read[-1]

    _budget_file._wall = wall  # a child process: nothing to restore
    limiter = FileBudget(1000.0, path)
    slots = []
    while len(slots) < count:
        result = limiter.try_step(False, 0.0, 0)
        if result is not None:
            slots.append(read[-1] + result[0])
    out.put(slots)


def test_processes_never_share_a_slot(path: str) -> None:
    """Slots reserved by four processes at once are all one interval apart."""
    context = multiprocessing.get_context("fork")
    out: multiprocessing.Queue[list[float]] = context.Queue()
    workers = [context.Process(target=_reserve, args=(path, 50, out)) for _ in range(4)]
    for worker in workers:
        worker.start()
    slots = sorted(s for _ in workers for s in out.get(timeout=20))
    for worker in workers:
        worker.join(20)
        assert worker.exitcode == 0
    gaps = [b - a for a, b in itertools.pairwise(slots)]
    assert len(slots) == 200
    # One interval apart, give or take the float rounding of wall-clock seconds.
    assert min(gaps) > 1 / (1000.0 * HEADROOM) - 1e-6


def test_a_stopped_process_does_not_freeze_its_neighbours(path: str) -> None:
    """A process stopped while it holds the lock (SIGSTOP): the others go on."""
    code = (
        "import fcntl, os, sys, time\n"
        "fd = os.open(sys.argv[1], os.O_RDWR)\n"
        "fcntl.flock(fd, fcntl.LOCK_EX)\n"
        "print('held', flush=True)\n"
        "time.sleep(60)\n"
    )
    FileBudget(100.0, path)  # creates the file
    with subprocess.Popen(
        [sys.executable, "-c", code, path], stdout=subprocess.PIPE, text=True
    ) as holder:
        try:
            assert holder.stdout is not None
            assert holder.stdout.readline().strip() == "held"
            holder.send_signal(signal.SIGSTOP)

            async def send_some() -> float:
                limiter = FileBudget(100.0, path)
                started = time.monotonic()
                for _ in range(10):
                    await limiter.acquire()
                return time.monotonic() - started

            assert asyncio.run(send_some()) < 5.0
        finally:
            holder.kill()


async def test_client_with_a_shared_budget_delivers(tmp_path: Path) -> None:
    """A client on a file budget delivers, and leaves the state in the file."""
    from trackasync.testing import FakeTrackingAPI

    async with FakeTrackingAPI() as api:
        async with Client(
            api.base_url,
            api.project_token,
            auth=api.auth,
            linger=0.0,
            rate_budget=str(tmp_path / "budget"),
        ) as client:
            await client.track_and_wait({"registered": "a"}, "page")
        assert api.event_count == 1
    assert (tmp_path / "budget").stat().st_size == 48


def test_no_window_of_slots_holds_more_than_the_rate(clock: Clock, path: str) -> None:
    """Requests sent in their slots by processes that come early, late, after
    a lapse or in a crowd: no one-second window holds more than rate_limit."""
    import random

    from .test_ratelimit import busiest_window

    rng = random.Random(7)
    budgets = [FileBudget(100.0, path) for _ in range(4)]
    sent = []
    for i in range(1200):
        if i % 300 == 0:
            clock.now += 2.0  # a quiet spell, then a crowd at once
        wait = wait_of(budgets[i % 4])
        sent.append(clock.now + max(0.0, wait))
        if i % 300 > 150:  # then sometimes idle or late: slots pass unused
            clock.now += rng.choice([0.0, 0.0, 0.004, 0.02, 0.3])
    assert busiest_window(sent) <= 100


def test_slots_that_passed_unused_are_caught_up_a_few_at_most(
    clock: Clock, path: str
) -> None:
    """After a lapse, up to catch_up_slots(rate) slots come back at once, no more."""
    budget = FileBudget(100.0, path)
    catch_up = _budget_shared.catch_up_slots(100.0)
    assert catch_up == 4
    wait_of(budget)
    clock.now += 5.0
    waits = [wait_of(budget) for _ in range(catch_up + 3)]
    assert sum(w <= 0 for w in waits) == catch_up + 1
    assert waits[-1] > 0


def test_the_budget_says_where_it_is(
    path: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Making a budget logs, at INFO, the file it is shared through."""
    with caplog.at_level(logging.INFO, logger="trackasync"):
        FileBudget(RATE, path)
    assert [r.getMessage() for r in caplog.records] == [
        f"trackasync: rate budget shared through file {path}"
    ]
