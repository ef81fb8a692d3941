"""Delivering one group of commands: building the request, retrying, settling results.

The batcher decides which commands travel together; the sender decides how they
get there. It never re-encodes a command: a batch body is the commands' own
bytes joined into an envelope, and a retry of the same commands sends the very
same body object.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Coroutine
from typing import Any

import anyio

from ._alarm import Alarm
from ._config import MAX_BATCH_COMMANDS, Retry
from ._delivery import Accepted, Delivery, Kind
from ._exceptions import APIError, BadRequest, DeliveryFailed, RateLimited, RequestError
from ._hooks import HookRunner
from ._options import Mode
from ._ratelimit import RateLimiter
from ._results import (
    batch_all_accepted,
    batch_answer,
    error_for,
    match_results,
    read_single,
    refusal_error,
    request_id,
    result_errors,
)
from ._retry import backoff, is_retryable, parse_retry_after
from ._stats import Counters
from ._table import CommandTable
from ._transport import Request, Response, Transport

logger = logging.getLogger("trackasync")


# Looked up at call time, so tests can replace them and drive retries without
# real waiting.
_sleep = anyio.sleep
_time = time.time

_KINDS: tuple[Kind, ...] = ("customers/events", "customers")


def _item_prefixes(kind: Kind) -> list[bytes]:
    """Envelope bytes before the i-th command's data: its name and command_id.

    Precomputed so that joining a batch body is a single ``bytes.join``.
    """
    prefixes = [b'{"commands":[{"name":"%s","command_id":"0","data":' % kind.encode()]
    prefixes += [
        b'},{"name":"%s","command_id":"%d","data":' % (kind.encode(), index)
        for index in range(1, MAX_BATCH_COMMANDS)
    ]
    return prefixes


_PREFIXES = {kind: _item_prefixes(kind) for kind in _KINDS}
_BATCH_END = b"}]}"


def batch_body(commands: list[Delivery]) -> bytes:
    """The ``/batch`` body for ``commands``, from their already-encoded bytes.

    The envelope and the bodies are interleaved by slice assignment, in C: a
    loop over the commands in Python cost about as much as the join itself.
    """
    count = len(commands)
    kinds = {command.kind for command in commands}
    if len(kinds) == 1:
        prefixes = _PREFIXES[commands[0].kind][:count]
    else:  # events and customer updates in one request
        prefixes = [_PREFIXES[c.kind][index] for index, c in enumerate(commands)]
    parts: list[bytes] = [_BATCH_END] * (2 * count + 1)
    parts[0:-1:2] = prefixes
    parts[1::2] = [command.body for command in commands]
    return b"".join(parts)


class Sender:
    """Sends groups of commands, with retries, and settles them in the store.

    It alone owns concurrency (at most ``max_in_flight`` requests, each with its
    retries, sent by as many long-lived workers), the rate limiter's slots (the
    first request's and every retry's) and the retry rules.
    """

    def __init__(
        self,
        *,
        transport: Transport,
        base: str,
        headers: dict[str, str],
        mode: Mode,
        retry: Retry,
        rate: RateLimiter,
        table: CommandTable,
        spawn: Callable[[Coroutine[Any, Any, None], str], asyncio.Task[None]],
        counters: Counters,
        max_in_flight: int,
        hooks: HookRunner | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self._transport = transport
        self._urls: dict[str, str] = {kind: f"{base}/{kind}" for kind in _KINDS}
        self._batch_url = f"{base}/batch"
        self._headers = headers
        self._mode = mode
        self._retry = retry
        self._rate = rate
        self._table = table
        self._spawn = spawn
        # When this run started (UNIX seconds): the retry deadline of a command
        # an earlier run left counts from here.
        self._started = _time()
        self._counters = counters
        self._hooks = hooks
        self._rng = rng or random.Random()
        # asyncio's primitives, not anyio's: these run once per request on the
        # hot path, and anyio's checkpoints cost several times more.
        self._slots = asyncio.Semaphore(max_in_flight)
        self._max_workers = max_in_flight
        self._jobs: asyncio.Queue[list[Delivery] | None] = asyncio.Queue()
        #: The workers, so the client can wait for them or cancel them.
        self.workers: set[asyncio.Task[None]] = set()
        #: Makes failing requests loud at once; the close summary reads it.
        self.alarm = Alarm()

    async def reserve(self) -> None:
        """Wait for a free request slot, then for the rate limiter's next slot.

        The batcher calls this *before* cutting a batch, so under load the queue
        keeps filling meanwhile and requests leave as full as they can be.
        """
        await self._slots.acquire()
        try:
            await self._rate.acquire()
        except BaseException:
            self._slots.release()
            raise

    def release(self) -> None:
        """Give back a reserved slot that found nothing to send."""
        self._slots.release()

    def start(self, commands: list[Delivery]) -> None:
        """Deliver ``commands`` (taken from the store) in a reserved slot.

        Requests go out through long-lived workers rather than a task per
        request: starting a task costs more than a batch's bookkeeping. Workers
        start with the first requests, so a client that never sends starts none.
        """
        if len(self.workers) < self._max_workers:
            worker = self._spawn(self._work(), "trackasync-sender")
            self.workers.add(worker)
            worker.add_done_callback(self.workers.discard)
        self._jobs.put_nowait(commands)

    def stop(self) -> None:
        """Let each worker end after the requests already started."""
        for _ in range(len(self.workers)):
            self._jobs.put_nowait(None)

    async def _work(self) -> None:
        jobs = self._jobs
        while True:
            batch = await jobs.get()
            if batch is None:
                return
            try:
                await self.deliver(batch)
            finally:
                self._slots.release()

    async def deliver(self, commands: list[Delivery]) -> None:
        """Deliver ``commands``; each has an outcome on return, unless cancelled
        (then the table still holds them in flight, for the client to close).

        The first request's rate-limit slot was taken by ``reserve``.
        """
        try:
            await self._deliver(commands)
        except Exception as exc:
            # A bug of ours must not lose commands silently: report them.
            logger.exception(
                "unexpected error while delivering %d commands", len(commands)
            )
            self._table.settle(
                failed=[
                    (
                        command,
                        DeliveryFailed(
                            "gave_up",
                            f"internal error: {type(exc).__name__}",
                            attempts=command.attempts,
                        ),
                    )
                    for command in commands
                    if not command.done()
                ]
            )
        if self._hooks is not None:
            # Backpressure: a slow on_result hook slows sending, not memory.
            await self._hooks.room()

    def _request(self, commands: list[Delivery]) -> tuple[Request, bool]:
        # The batcher cuts groups of one in "single" mode, so one rule serves both.
        single = len(commands) == 1 and self._mode != "batch"
        if single:
            command = commands[0]
            url, body = self._urls[command.kind], command.body
        else:
            url, body = self._batch_url, batch_body(commands)
        return Request("POST", url, self._headers, body), single

    async def _deliver(self, commands: list[Delivery]) -> None:
        counters = self._counters
        policy = self._retry
        pending = commands
        request, single = self._request(pending)
        attempt = 0
        while True:
            attempt += 1
            if attempt > 1:
                await self._rate.acquire()
                counters.retries += 1
            for command in pending:
                command.attempts += 1
            counters.requests += 1
            counters.bytes_sent += len(request.body or b"")
            retry_after: float | None = None
            outcome = Outcome()
            try:
                response = await self._send(request, pending, single)
            except RequestError as exc:
                error: RequestError | None = exc
                retry = pending
            else:
                retry, error = self._read(pending, response, single, outcome)
                retry_after = parse_retry_after(response.header("retry-after"))
            keep: list[Delivery] = []
            delay = 0.0
            if error is not None:
                if retry_after is not None:
                    delay = min(retry_after, policy.max_retry_after)
                else:
                    delay = backoff(policy, attempt, self._rng)
                if isinstance(error, RateLimited):
                    counters.rate_limited += 1
                    # The pause applies to every request, so it gets the same cap.
                    self._rate.rate_limited(None if retry_after is None else delay)
                keep = self._still_worth_trying(retry, error, delay, outcome)
            # Every outcome this answer brought, in one step.
            self._table.settle(outcome.delivered, outcome.receipt, outcome.failed)
            if not keep:
                return
            assert error is not None  # keep is empty without one
            self.alarm.failed(error, len(keep))
            logger.debug(
                "retrying %d commands in %.3f s after %s", len(keep), delay, error
            )
            await _sleep(delay)
            if len(keep) != len(pending):
                pending = keep
                request, single = self._request(pending)

    async def _send(
        self, request: Request, commands: list[Delivery], single: bool
    ) -> Response:
        """Send ``request``; with per-request observers (metrics), time it and
        report it to them: route, status (None without an answer), seconds,
        commands, body bytes. Never the URL: it holds the project token."""
        observers = self._counters.observers
        if not observers:
            return await self._transport.send(request)
        route = commands[0].kind if single else "batch"
        started = time.perf_counter()
        answer: Response | RequestError
        try:
            answer = await self._transport.send(request)
        except RequestError as exc:
            answer = exc
        seconds = time.perf_counter() - started
        size = len(request.body or b"")
        for observe in observers:
            observe(route, answer.status, seconds, len(commands), size)
        if isinstance(answer, RequestError):
            raise answer
        return answer

    def _still_worth_trying(
        self,
        retry: list[Delivery],
        error: RequestError,
        delay: float,
        outcome: Outcome,
    ) -> list[Delivery]:
        """The commands that may be retried; the rest are given up, with the error."""
        policy = self._retry
        resume = _time() + delay
        # The deadline counts from the command's creation, or from this run's
        # start for a command an earlier run left (it had its own deadline there).
        started = self._started
        keep: list[Delivery] = []
        for command in retry:
            if command.attempts >= policy.attempts:
                why = f"gave up after {command.attempts} attempts"
            elif resume > max(command.created, started) + policy.timeout:
                why = f"gave up: the retry deadline of {policy.timeout} s would pass"
            else:
                keep.append(command)
                continue
            outcome.failed.append(
                (
                    command,
                    DeliveryFailed(
                        "gave_up",
                        f"{why}; last error: {error}",
                        errors=error.errors if isinstance(error, APIError) else (),
                        status=error.status,
                        attempts=command.attempts,
                        request_id=error.request_id,
                        error=error,
                    ),
                )
            )
        return keep

    def _read(
        self,
        commands: list[Delivery],
        response: Response,
        single: bool,
        outcome: Outcome,
    ) -> tuple[list[Delivery], RequestError | None]:
        """Read an answer into ``outcome``; return the commands to retry and why."""
        status = response.status
        if not 200 <= status < 300:
            error = error_for(response)
            if is_retryable(error):
                return commands, error
            outcome.reject(commands, error)
            return [], None
        rid = request_id(response)
        if single:
            # None: accepted; BadRequest: refused (final); else unknown: retried.
            answer = read_single(response)
            if answer is None:
                self._accept(outcome, commands, status, rid)
            elif isinstance(answer, BadRequest):
                outcome.reject(commands, answer)
            else:
                return commands, answer
            return [], None
        if batch_all_accepted(response.body, len(commands)):
            # The common answer, recognised by its text: settle all at once.
            self._accept(outcome, commands, status, rid)
            return [], None
        batch = batch_answer(response)
        if batch is None or batch.results is None:
            if batch is not None and batch.success is False:
                outcome.reject(commands, refusal_error(response))
                return [], None
            # No per-command results: nothing says the commands were taken.
            return commands, APIError(
                "the batch answer had no results", status=status, request_id=rid
            )
        matched = match_results(batch.results, len(commands))
        accepted: list[Delivery] = []
        retry: list[Delivery] = []
        for command, result in zip(commands, matched):
            if result is None:
                retry.append(command)
            elif result.success is True:
                accepted.append(command)
            else:
                errors = result_errors(result, response) or ["command failed"]
                outcome.reject(
                    [command],
                    BadRequest(
                        "; ".join(errors),
                        status=status,
                        request_id=rid,
                        errors=errors,
                    ),
                )
        if accepted:
            self._accept(outcome, accepted, status, rid)
        if retry:
            return retry, APIError(
                f"the batch answer had no result for {len(retry)} commands",
                status=status,
                request_id=rid,
            )
        return [], None

    def _accept(
        self,
        outcome: Outcome,
        commands: list[Delivery],
        status: int,
        rid: str | None,
    ) -> None:
        self._rate.accepted()
        outcome.delivered = commands
        outcome.receipt = Accepted(status, rid, _time())


class Outcome:
    """The final outcomes one answer brought, settled in the table in one step."""

    __slots__ = ("delivered", "failed", "receipt")

    def __init__(self) -> None:
        self.delivered: list[Delivery] = []
        self.receipt: Accepted | None = None
        self.failed: list[tuple[Delivery, DeliveryFailed]] = []

    def reject(self, commands: list[Delivery], error: RequestError) -> None:
        errors = error.errors if isinstance(error, APIError) else ()
        self.failed.extend(
            (
                command,
                DeliveryFailed(
                    "rejected",
                    f"the API rejected the command: {error}",
                    errors=errors,
                    status=error.status,
                    attempts=command.attempts,
                    request_id=error.request_id,
                    error=error,
                ),
            )
            for command in commands
        )
