"""Shared helpers of the benchmark scripts: events, machine facts, CPU pinning,
the fake server in a child process, and the JSON report.

Not a benchmark itself (pytest never collects ``benchmarks/``; the scripts are
run by hand or by ``run_all.py``).
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import platform
import resource
import shlex
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SERVER_SCRIPT = HERE / "_server.py"

#: Set by ``run_all.py --snapshot`` to the commit whose library is measured.
SNAPSHOT_ENV = "TRACKASYNC_BENCH_SNAPSHOT"

#: The core the client (or reference sender) runs on; the server gets the other.
CLIENT_CPU = 0
SERVER_CPU = 1

# -- events ---------------------------------------------------------------------

TYPICAL_IDS = {"registered": "ann@example.com", "cookie": "9f1c2b3a-aaaa"}
TYPICAL_TYPE = "purchase"
TYPICAL_PROPERTIES: dict[str, Any] = {
    "total_price": 49.99,
    "currency": "EUR",
    "item_id": "SKU-12345",
    "quantity": 3,
    "category": "shoes",
    "discount": 0.1,
    "campaign": "black-friday-2026",
    "in_stock": True,
}
SMALL_PROPERTIES: dict[str, Any] = {"item_id": "SKU-12345", "price": 10, "views": 1}


def large_properties() -> dict[str, Any]:
    """About 10 KB of JSON: 40 properties of about 250 bytes each.

    No value is near the 16,000-byte per-value limit and none contains a "T",
    so the codec stays on its ordinary path, as it would for most large events.
    """
    return {f"field_{i:02d}": ("abcdefghij" * 25)[: 230 + i % 7] for i in range(40)}


def event_sizes() -> dict[str, tuple[dict[str, str], str, dict[str, Any]]]:
    """The three enqueue sizes: (customer_ids, event_type, properties)."""
    return {
        "small": (dict(TYPICAL_IDS), "view_item", dict(SMALL_PROPERTIES)),
        "typical": (dict(TYPICAL_IDS), TYPICAL_TYPE, dict(TYPICAL_PROPERTIES)),
        "large": (dict(TYPICAL_IDS), TYPICAL_TYPE, large_properties()),
    }


def typical_pool(n: int = 1000) -> list[tuple[dict[str, str], dict[str, Any]]]:
    """``n`` distinct typical events (customer_ids, properties), used cyclically.

    Each has its own cookie, so the server's deduplication (same customer, type,
    timestamp and properties) can never merge two of them, and the pool is small
    enough not to weigh on the RSS of a 100,000-event run.
    """
    return [
        (
            {"registered": "ann@example.com", "cookie": f"9f1c2b3a-{i:04x}"},
            dict(TYPICAL_PROPERTIES),
        )
        for i in range(n)
    ]


#: An event as applications send it: product names and campaign labels with
#: capital letters, and an explicit float timestamp (see ``realistic_pool``).
REALISTIC_PROPERTIES: dict[str, Any] = {
    "total_price": 129.9,
    "currency": "EUR",
    "item_id": "SKU-12345",
    "product_name": "Mechanical Keyboard TKL",
    "brand": "Keychron",
    "quantity": 1,
    "category": "Computers > Keyboards",
    "campaign": "Black Friday 2026",
    "in_stock": True,
}


def realistic_pool(
    n: int = 1000,
) -> list[tuple[dict[str, str], dict[str, Any], float]]:
    """``n`` distinct realistic events (customer_ids, properties, timestamp).

    Strings carry capitals (a "T" among them), every event has an explicit float
    timestamp, and one event in a hundred holds a ``datetime`` property, as an
    application's order or session time would be.
    """
    import datetime

    base = 1_764_547_200.0  # 2025-12-01T00:00:00Z
    pool = []
    for i in range(n):
        props = dict(REALISTIC_PROPERTIES)
        if i % 100 == 0:
            props["ordered_at"] = datetime.datetime(
                2025, 12, 1, 12, 30, i % 60, tzinfo=datetime.timezone.utc
            )
        ids = {"registered": f"Customer{i:04d}@Example.com", "cookie": f"9f1c-{i:04x}"}
        pool.append((ids, props, base + i * 0.001))
    return pool


def _stamps(n: int) -> list[float]:
    return [1_764_547_200.0 + i * 0.001 for i in range(n)]


def tags_pool(n: int = 1000) -> list[tuple[dict[str, str], dict[str, Any], float]]:
    """The realistic event plus a list of strings (tags, a category path).

    One list property is what a view or a purchase usually carries: it must not
    cost what a rare value costs.
    """
    pool = []
    for (ids, props, stamp), i in zip(realistic_pool(n), range(n)):
        props = dict(props)
        props["tags"] = ["gift", "express", f"batch-{i % 7}"]
        props["category_path"] = ["Computers", "Keyboards", "Mechanical"]
        pool.append((ids, props, stamp))
    return pool


#: How many distinct customers the purchase pool's "returning" half draws from.
RETURNING_CUSTOMERS = 50


def purchase_pool(
    n: int = 1000,
) -> list[tuple[dict[str, str], dict[str, Any], float]]:
    """A purchase as shops send it, ``n`` distinct ones.

    Capitalised names and strings, an explicit float timestamp, a list of
    strings, a nested object (the shipping address), a list of objects (line
    items with prices) and a ``datetime``. Half the events come from a few
    returning customers (ids seen before), half from new ones.
    """
    import datetime

    pool = []
    for i, stamp in enumerate(_stamps(n)):
        if i % 2:
            who = i % RETURNING_CUSTOMERS
            ids = {"registered": f"Customer{who:04d}@Example.com"}
        else:
            ids = {"registered": f"New{i:05d}@Example.com", "cookie": f"c0ffee-{i:05x}"}
        props: dict[str, Any] = {
            "Order_ID": f"ORD-{i:06d}",
            "total_price": round(61.97 + i % 13, 2),
            "currency": "EUR",
            "Voucher": "WINTER-10",
            "tags": ["gift", "express"],
            "shipping": {
                "country": "SK",
                "city": "Bratislava",
                "method": "Courier",
                "cost": 4.99,
            },
            "items": [
                {"sku": "SKU-1", "name": "Stoneware Mug", "price": 9.99, "qty": 2},
                {"sku": "SKU-2", "name": "Cast Iron Teapot", "price": 42.0, "qty": 1},
            ],
            "ordered_at": datetime.datetime(
                2026, 12, 1, 12, 30, i % 60, tzinfo=datetime.timezone.utc
            ),
        }
        pool.append((ids, props, stamp))
    return pool


def big_pool(n: int = 20) -> list[tuple[dict[str, str], dict[str, Any], float]]:
    """Events of about 100 KB: between the 16 KB value limit and the 800 KB one.

    Many properties of a few KB each (a description, rendered snippets), each
    value under the per-value limit, as a content-heavy event would be.
    """
    pool = []
    for i, stamp in enumerate(_stamps(n)):
        props: dict[str, Any] = {
            f"block_{j:02d}": f"Block {j} of event {i}: " + "lorem ipsum " * 340
            for j in range(24)
        }
        props["items"] = [{"sku": f"SKU-{k}", "price": 1.5 * k} for k in range(40)]
        pool.append(({"registered": f"Big{i:04d}@Example.com"}, props, stamp))
    return pool


#: The event kinds the end-to-end, breakdown and memory scripts take.
EVENT_KINDS = ("typical", "realistic", "tags", "purchase")

#: A pool of events: (customer_ids, properties, timestamp or None for "now").
Pool = list[tuple[dict[str, str], dict[str, Any], float | None]]


def event_pool(kind: str, n: int = 1000) -> Pool:
    """``n`` distinct events of ``kind`` (one of ``EVENT_KINDS``, or "big")."""
    if kind == "typical":
        return [(ids, props, None) for ids, props in typical_pool(n)]
    if kind == "realistic":
        return [(ids, props, stamp) for ids, props, stamp in realistic_pool(n)]
    if kind == "tags":
        return list(tags_pool(n))
    if kind == "purchase":
        return list(purchase_pool(n))
    if kind == "big":
        return list(big_pool(min(n, 20)))
    raise ValueError(f"unknown event kind {kind!r}")


def stamp_of(pool_stamp: float | None, index: int, size: int) -> float | None:
    """The timestamp of the ``index``-th event drawn from a pool of ``size``.

    An explicit timestamp moves on by one second each time the pool comes round,
    so that no two events of a run are the same event to the server's (and the
    API's) deduplication.
    """
    return None if pool_stamp is None else pool_stamp + index // size


# -- machine facts and the report ----------------------------------------------------


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def machine() -> dict[str, Any]:
    try:
        allowed = sorted(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        allowed = []
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpus_allowed": allowed,
        "loadavg_at_start": [round(x, 2) for x in load] if load else None,
    }


def source() -> dict[str, Any]:
    """The code measured: trackasync's version and the repository's state."""
    from importlib.metadata import PackageNotFoundError, version

    import trackasync

    info: dict[str, Any] = {"trackasync": trackasync.__version__}
    for package in ("aiohttp", "msgspec", "anyio"):
        with contextlib.suppress(PackageNotFoundError):
            info[package] = version(package)
    library = Path(trackasync.__file__).resolve().parent
    if library != (HERE.parent / "trackasync").resolve():
        # Another copy: a commit exported by ``run_all.py --snapshot``, or some
        # other install. The working tree's state says nothing about it.
        info["trackasync_path"] = str(library)
        snapshot = os.environ.get(SNAPSHOT_ENV)
        if snapshot:
            info["commit"] = snapshot
            info["snapshot"] = True
        return info
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=HERE,
            capture_output=True,
            text=True,
            timeout=10,
        )
        status = subprocess.run(
            ["git", "status", "--porcelain", "--", "trackasync"],
            cwd=HERE.parent,
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return info
    if commit.returncode == 0:
        info["commit"] = commit.stdout.strip()
        # Library files changed since that commit: the numbers are for those.
        info["library_changes_uncommitted"] = len(status.stdout.splitlines())
    return info


def header(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Command line, machine, date and code: the first keys of every report."""
    args = sys.argv if argv is None else argv
    return {
        "command": shlex.join([Path(sys.executable).name, *args]),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(
            timespec="seconds"
        ),
        "machine": machine(),
        "source": source(),
    }


def emit(report: dict[str, Any], out: str | None = None) -> None:
    """Print the report as JSON (and write it to ``out`` if given)."""
    text = json.dumps(report, indent=2)
    print(text, flush=True)
    if out:
        Path(out).write_text(text + "\n")


def publish(out: str | None, measure: Callable[[], dict[str, Any]]) -> int:
    """A script's end: the header (taken first, so its date and load are those
    of the start), then ``measure()``'s figures, printed and saved to ``out``."""
    report = header()
    report.update(measure())
    emit(report, out)
    return 0


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def spread(values: Sequence[float], scale: float = 1.0, digits: int = 3) -> dict:
    """Median, min and max of ``values`` times ``scale``, rounded."""
    return {
        "median": round(statistics.median(values) * scale, digits),
        "min": round(min(values) * scale, digits),
        "max": round(max(values) * scale, digits),
        "n": len(values),
    }


# -- CPU pinning and resource use --------------------------------------------------------


def pin(cpu: int) -> bool:
    """Pin this process to ``cpu`` when the machine has it; True if pinned."""
    if not hasattr(os, "sched_setaffinity") or (os.cpu_count() or 1) < 2:
        return False
    try:
        os.sched_setaffinity(0, {cpu})
    except OSError:  # no such core, or not ours to use
        return False
    return os.sched_getaffinity(0) == {cpu}


def cpu_seconds() -> float:
    """User + system CPU seconds of this process so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def max_rss_bytes() -> int:
    """Peak resident set size of this process (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def rss_bytes() -> int:
    """Current resident set size, from /proc/self/statm."""
    with open("/proc/self/statm") as statm:
        pages = int(statm.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE")


# -- waiting for a client -----------------------------------------------------------------


async def drain(client: Any, timeout: float = 30.0, poll: float = 0.001) -> Any:
    """``flush()``, then wait until every command taken in has an outcome.

    The second step does not rely on ``flush()`` alone: the benchmarks must not
    time or check a pipeline that still has work under way, whatever flush's
    own accounting says. Returns the client's final ``stats()``; raises
    ``RuntimeError`` after ``timeout`` seconds.
    """
    import asyncio

    deadline = time.monotonic() + timeout
    await client.flush(timeout=timeout)
    while True:
        stats = client.stats()
        if stats.delivered + sum(stats.failed.values()) >= stats.enqueued:
            return stats
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"the client still has work after {timeout} s: "
                f"{stats.enqueued} enqueued, {stats.delivered} delivered, "
                f"failed {dict(stats.failed)}"
            )
        await asyncio.sleep(poll)


async def produce(
    client: Any,
    pool: Pool,
    events: int,
    *,
    awaited: bool,
) -> None:
    """Feed ``events`` events from ``pool`` (from ``event_pool``) to ``client``,
    as a high-throughput producer would, in one of the two ways measured.

    ``awaited``: ``await client.track(...)`` for each event, which returns at
    once while the queue has room and waits when it is full. Otherwise
    ``track_nowait(...)``, yielding to the loop every 100 events, and waiting
    for room with ``await track(...)`` only when the queue is full. Events with
    a pool timestamp pass it (see ``stamp_of``); the others take the default.
    """
    import asyncio

    from trackasync import QueueFull

    size = len(pool)
    track = client.track
    explicit = pool[0][2] is not None
    if awaited and not explicit:
        for i in range(events):
            ids, props, _ = pool[i % size]
            await track(ids, TYPICAL_TYPE, props)
        return
    if awaited:
        for i in range(events):
            ids, props, stamp = pool[i % size]
            await track(ids, TYPICAL_TYPE, props, timestamp=stamp + i // size)
        return
    track_nowait = client.track_nowait
    for i in range(events):
        ids, props, stamp = pool[i % size]
        try:
            if explicit:
                track_nowait(ids, TYPICAL_TYPE, props, timestamp=stamp + i // size)
            else:
                track_nowait(ids, TYPICAL_TYPE, props)
        except QueueFull:
            await track(ids, TYPICAL_TYPE, props, timestamp=stamp_of(stamp, i, size))
        if i % 100 == 99:
            await asyncio.sleep(0)


async def post_bodies(
    server: Any,
    bodies: Sequence[bytes],
    transport: Any | None,
    in_flight: int = 4,
) -> float:
    """CPU seconds to post ``bodies`` to the server's ``/batch``, ``in_flight`` at
    a time: through ``transport`` (anything with trackasync's ``send``), or a
    bare ``aiohttp.ClientSession`` when it is None. Every answer must be 200.

    Tasks are started in waves of 8, so creating them does not dominate.
    """
    import asyncio

    import aiohttp

    from trackasync import PrivateKey, Request

    auth = PrivateKey(server.key_id, server.secret).header
    url = f"{server.base_url}/track/v2/projects/{server.project_token}/batch"
    headers = {
        "Authorization": auth,
        "Content-Type": "application/json",
        "Accept": "application/json",
    }
    slots = asyncio.Semaphore(in_flight)
    statuses: list[int] = []
    session = aiohttp.ClientSession()

    async def one(body: bytes) -> None:
        async with slots:
            if transport is None:
                async with session.post(url, data=body, headers=headers) as resp:
                    await resp.read()
                    statuses.append(resp.status)
            else:
                response = await transport.send(Request("POST", url, headers, body))
                statuses.append(response.status)

    start = cpu_seconds()
    tasks = []
    for body in bodies:
        tasks.append(asyncio.create_task(one(body)))
        if len(tasks) >= 8:
            await asyncio.gather(*tasks)
            tasks = []
    await asyncio.gather(*tasks)
    used = cpu_seconds() - start
    if transport is not None:
        await transport.aclose()
    await session.close()
    if statuses.count(200) != len(bodies):
        raise RuntimeError(f"statuses: {sorted(set(statuses))}")
    return used


# -- child processes ---------------------------------------------------------------------


def python_child(
    args: Sequence[str], *, cpu: int | None = None, timeout: float = 600.0
) -> dict[str, Any]:
    """Run ``python args...`` to completion and return the JSON it printed last.

    The child inherits nothing but the environment; ``cpu`` is passed as
    ``--cpu`` so it pins itself. Killed after ``timeout`` seconds.
    """
    cmd = [sys.executable, *args]
    if cpu is not None:
        cmd += ["--cpu", str(cpu)]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise RuntimeError(f"child timed out after {timeout} s: {cmd}\n{err}") from None
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if proc.returncode != 0:
        raise RuntimeError(f"child failed ({proc.returncode}): {cmd}\n{err}\n{out}")
    last = out.strip().splitlines()[-1]
    return json.loads(last)


class FakeServerProcess:
    """``benchmarks/_server.py`` in a child process, pinned to ``SERVER_CPU``.

    It serves ``FakeTrackingAPI`` on 127.0.0.1 and answers one-line commands on
    its stdin (``stats``, ``reset``, ``delay SECONDS``, ``quit``) with one JSON
    line. It also exits when its stdin closes, so it never outlives this process.
    """

    def __init__(
        self,
        *,
        rate_limit: float | None = None,
        rate_window: float = 60.0,
        response_delay: float = 0.0,
        cpu: int | None = SERVER_CPU,
        startup_timeout: float = 20.0,
    ) -> None:
        cmd = [
            sys.executable,
            str(SERVER_SCRIPT),
            "--response-delay",
            str(response_delay),
        ]
        if rate_limit is not None:
            cmd += ["--rate-limit", str(rate_limit), "--rate-window", str(rate_window)]
        if cpu is not None:
            cmd += ["--cpu", str(cpu)]
        self._lock = threading.Lock()
        self.proc = subprocess.Popen(
            cmd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        try:
            self.info = self._read_line(startup_timeout)
        except BaseException:
            self.close()
            raise
        self.base_url: str = self.info["base_url"]
        self.project_token: str = self.info["project_token"]
        self.key_id: str = self.info["key_id"]
        self.secret: str = self.info["secret"]
        self.pinned: bool = self.info["pinned"]

    def _read_line(self, timeout: float) -> dict[str, Any]:
        assert self.proc.stdout is not None
        result: list[str] = []
        reader = threading.Thread(
            target=lambda: result.append(self.proc.stdout.readline()),  # type: ignore[union-attr]
            daemon=True,
        )
        reader.start()
        reader.join(timeout)
        if not result or not result[0]:
            err = ""
            if self.proc.poll() is not None and self.proc.stderr is not None:
                err = self.proc.stderr.read()
            raise RuntimeError(f"fake server did not answer within {timeout} s\n{err}")
        return json.loads(result[0])

    def command(self, line: str, timeout: float = 30.0) -> dict[str, Any]:
        with self._lock:
            assert self.proc.stdin is not None
            self.proc.stdin.write(line + "\n")
            self.proc.stdin.flush()
            return self._read_line(timeout)

    def stats(self) -> dict[str, Any]:
        return self.command("stats")

    def reset(self) -> dict[str, Any]:
        return self.command("reset")

    def close(self) -> None:
        proc = self.proc
        if proc.poll() is None:
            with contextlib.suppress(OSError, ValueError):
                assert proc.stdin is not None
                proc.stdin.write("quit\n")
                proc.stdin.flush()
                proc.stdin.close()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.terminate()
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        for stream in (proc.stdout, proc.stderr, proc.stdin):
            with contextlib.suppress(OSError, ValueError):
                if stream is not None:
                    stream.close()

    def __enter__(self) -> FakeServerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextlib.contextmanager
def fake_server(**kwargs: Any) -> Iterator[FakeServerProcess]:
    server = FakeServerProcess(**kwargs)
    try:
        yield server
    finally:
        server.close()


def wait_for_count(
    server: FakeServerProcess, expected: int, timeout: float, poll: float = 0.05
) -> tuple[dict[str, Any], float]:
    """Poll the server until it stored ``expected`` events; (stats, seconds waited)."""
    start = time.perf_counter()
    deadline = start + timeout
    stats = server.stats()
    while stats["events"] + stats["duplicates"] < expected:
        if time.perf_counter() > deadline:
            break
        time.sleep(poll)
        stats = server.stats()
    return stats, time.perf_counter() - start
