"""Per-request figures of each client with metrics wired, shared by the exporters.

``stats()`` keeps no figure per request; the request histograms need one. A
client with metrics wired gets one ``RequestLog``: the sender appends each
request to it (``Counters.observers``: an append, nothing more, in the
client's loop), and the exporters aggregate it when they read. No metrics
library is imported here.
"""

from __future__ import annotations

import logging
import os
import threading
import weakref
from bisect import bisect_left
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ._client import Client, ClientState
from ._stats import Counters, Stats
from ._sync import SyncClient

logger = logging.getLogger("trackasync")

AnyClient = Client | SyncClient

#: Request duration buckets, in seconds: OpenTelemetry's advice for HTTP
#: client durations.
DURATION_BUCKETS: tuple[float, ...] = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.075,
    0.1,
    0.25,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    7.5,
    10.0,
)
#: Commands per request buckets (a batch holds at most 50).
COMMAND_BUCKETS: tuple[float, ...] = (1, 2, 5, 10, 20, 30, 40, 50)


# Looked up once per request: cheaper than formatting.
_CLASSES = {status: f"{status // 100}xx" for status in range(100, 600)}


def status_class(status: int | None) -> str:
    """``"2xx"``... ``"5xx"``, or ``"error"`` for a request without an answer."""
    return _CLASSES.get(status, "error")  # type: ignore[arg-type]


class Buckets:
    """A fixed-bucket histogram: per-bucket counts, a sum and a count."""

    __slots__ = ("bounds", "count", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        # One more than the bounds: the last counts what is above them all.
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        # bisect_left: a value equal to a bound falls in that bound's bucket
        # ("le", less than or equal, as Prometheus and OpenTelemetry count).
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value
        self.count += 1

    def copy(self) -> Buckets:
        other = Buckets(self.bounds)
        other.counts = list(self.counts)
        other.sum = self.sum
        other.count = self.count
        return other

    def cumulative(self) -> list[tuple[float, int]]:
        """(upper bound, observations at or below it), ending with +inf."""
        total = 0
        out: list[tuple[float, int]] = []
        for bound, count in zip((*self.bounds, float("inf")), self.counts):
            total += count
            out.append((bound, total))
        return out


@dataclass(frozen=True, slots=True)
class RequestSeries:
    """The requests of one route and status class: durations and sizes."""

    route: str
    status_class: str
    duration: Buckets
    commands: Buckets


#: Called for each request with (route, status class, seconds, commands).
Listener = Callable[[str, str, float, int], None]


#: Requests a log holds unaggregated before the sender's own call aggregates
#: them (when nothing reads the metrics for that long).
MAX_PENDING = 10_000


class RequestLog:
    """Per-request figures of one client, fed by its sender, read by exporters.

    The sender only appends each request to a queue (a deque: thread-safe, and
    the cheapest thing it can do in the client's loop). The exporters, in their
    own threads (a scrape, the SDK's reader), aggregate the queue when they
    read: into the buckets, and through the listeners (the OpenTelemetry
    histograms), under a lock so that each read is whole. A bound keeps the
    queue small when nothing reads.
    """

    def __init__(self, client: AnyClient) -> None:
        self._client = weakref.ref(client)
        self._lock = threading.Lock()
        self._pending: deque[tuple[str, int | None, float, int]] = deque()
        self._series: dict[tuple[str, str], RequestSeries] = {}
        self._listeners: list[Listener] = []
        self._counters: Counters | None = None
        self._failing = False
        self.attach()

    def client(self) -> AnyClient | None:
        """The client, or None once it was garbage-collected."""
        return self._client()

    def stats(self) -> Stats | None:
        client = self._client()
        return None if client is None else client.stats()

    def closed(self) -> bool:
        """Whether the client is gone or closed (its name may be taken over)."""
        client = self._client()
        if client is None:
            return True
        if isinstance(client, SyncClient):
            return client._closed
        return client.state is ClientState.CLOSED

    def listen(self, listener: Listener) -> None:
        """Also call ``listener`` for each request (an OpenTelemetry histogram),
        when the requests are aggregated."""
        with self._lock:
            self._listeners.append(listener)

    def attach(self) -> None:
        """Observe the client's current counters (new ones after a fork)."""
        client = self._client()
        if client is None:
            return
        counters = _counters_of(client)
        if counters is self._counters:
            return
        if self.observe not in counters.observers:
            counters.observers.append(self.observe)
        self._counters = counters

    def reset(self) -> None:
        """Forget every request: a forked child starts from zero, as stats() do."""
        self._lock = threading.Lock()  # the parent's may have been held
        self._pending.clear()
        self._series = {}
        self._counters = None
        self.attach()

    def observe(
        self,
        route: str,
        status: int | None,
        seconds: float,
        commands: int,
        body_bytes: int,
    ) -> None:
        """One request: the sender's observer (``Counters.observers``)."""
        pending = self._pending
        pending.append((route, status, seconds, commands))
        if len(pending) > MAX_PENDING:
            self.aggregate()

    def aggregate(self) -> None:
        """Move the queued requests into the buckets and to the listeners."""
        pending = self._pending
        with self._lock:
            listeners = self._listeners
            while pending:
                try:
                    route, status, seconds, commands = pending.popleft()
                except IndexError:  # taken by the loop's own aggregate()
                    return
                sclass = status_class(status)
                series = self._series.get((route, sclass))
                if series is None:
                    series = self._series[route, sclass] = RequestSeries(
                        route,
                        sclass,
                        Buckets(DURATION_BUCKETS),
                        Buckets(COMMAND_BUCKETS),
                    )
                series.duration.observe(seconds)
                series.commands.observe(commands)
                for listener in listeners:
                    try:
                        listener(route, sclass, seconds, commands)
                    except Exception:
                        # Metrics must never break delivery (this may run in
                        # the sender) nor a scrape. Say it once, not per request.
                        if not self._failing:
                            self._failing = True
                            logger.exception(
                                "trackasync: recording request metrics failed"
                            )

    def series(self) -> list[RequestSeries]:
        """A consistent copy of every route and status class seen so far."""
        # A safety net: the fork hook re-attaches, this catches anything else
        # that gave the client new counters.
        self.attach()
        self.aggregate()
        with self._lock:
            return [
                RequestSeries(
                    s.route, s.status_class, s.duration.copy(), s.commands.copy()
                )
                for s in self._series.values()
            ]


def _counters_of(client: AnyClient) -> Counters:
    # Read each time: a client gets new counters in a forked child, and a
    # SyncClient a new inner client.
    inner = client._client if isinstance(client, SyncClient) else client
    return inner._pipeline.counters


# One log per client, whatever exporters it is wired to (weak: a log never
# keeps a client alive).
_logs: weakref.WeakKeyDictionary[Any, RequestLog] = weakref.WeakKeyDictionary()
_fork_hook = False


def request_log(client: AnyClient) -> RequestLog:
    """The client's ``RequestLog``, created and attached on first use."""
    global _fork_hook
    log = _logs.get(client)
    if log is None:
        log = _logs[client] = RequestLog(client)
    if not _fork_hook and hasattr(os, "register_at_fork"):
        # Registered after trackasync._fork's hook (registered at import), so it
        # runs after it in the child: the clients have their new counters then.
        os.register_at_fork(after_in_child=_after_fork_in_child)
        _fork_hook = True
    return log


def _after_fork_in_child() -> None:
    for log in list(_logs.values()):
        try:
            log.reset()
        except Exception:
            logger.exception("trackasync: resetting request metrics after fork failed")
