"""Delivering one group of commands: building the request, retrying, settling results.

The batcher decides which commands travel together; the sender decides how they
get there. It never re-encodes a command: a batch body is the commands' own
bytes joined into an envelope, and a retry of the same commands sends the very
same body object.
"""

from __future__ import annotations

import logging
import random
import time
from typing import Literal

import anyio

from ._config import MAX_BATCH_COMMANDS, Retry
from ._delivery import Accepted, Delivery, Kind
from ._exceptions import APIError, BadRequest, DeliveryFailed, RateLimited, RequestError
from ._ledger import Ledger
from ._ratelimit import RateLimiter
from ._results import (
    batch_all_accepted,
    batch_answer,
    body_errors,
    error_for,
    errors_of,
    match_results,
    request_id,
    single_accepted,
)
from ._retry import backoff, is_retryable, parse_retry_after
from ._stats import Counters
from ._transport import Request, Response, Transport

logger = logging.getLogger("trackasync")

Mode = Literal["auto", "batch", "single"]
MODES: tuple[Mode, ...] = ("auto", "batch", "single")

# Looked up at call time, so tests can replace them and drive retries without
# real waiting.
_sleep = anyio.sleep
_monotonic = time.monotonic

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
    """The ``/batch`` body for ``commands``, from their already-encoded bytes."""
    parts: list[bytes] = []
    append = parts.append
    for index, command in enumerate(commands):
        append(_PREFIXES[command.kind][index])
        append(command.body)
    append(_BATCH_END)
    return b"".join(parts)


class Sender:
    """Sends groups of commands, with retries, and records their outcomes."""

    def __init__(
        self,
        *,
        transport: Transport,
        base: str,
        headers: dict[str, str],
        mode: Mode,
        retry: Retry,
        rate: RateLimiter,
        ledger: Ledger,
        counters: Counters,
        rng: random.Random | None = None,
    ) -> None:
        self._transport = transport
        self._urls: dict[str, str] = {kind: f"{base}/{kind}" for kind in _KINDS}
        self._batch_url = f"{base}/batch"
        self._headers = headers
        self._mode = mode
        self._retry = retry
        self._rate = rate
        self._ledger = ledger
        self._counters = counters
        self._rng = rng or random.Random()
        #: Groups handed over and not yet finished, so ``flush`` and ``aclose``
        #: can find them.
        self.in_flight: dict[int, list[Delivery]] = {}

    def hand_over(self, commands: list[Delivery]) -> None:
        """The batcher cut ``commands`` for delivery: they are in flight from now."""
        self.in_flight[id(commands)] = commands
        self._counters.in_flight += len(commands)

    def abandon(self) -> list[Delivery]:
        """Forget every group still in flight (the client is closing) and return
        their commands; ``deliver`` will not run for them any more."""
        stranded = [command for group in self.in_flight.values() for command in group]
        self.in_flight.clear()
        self._counters.in_flight -= len(stranded)
        return stranded

    async def deliver(self, commands: list[Delivery]) -> None:
        """Deliver ``commands`` (already handed over); each has an outcome on return.

        The first request's rate-limit slot was taken by the caller.
        """
        try:
            await self._deliver(commands)
        except Exception as exc:
            # A bug of ours must not lose commands silently: report them.
            logger.exception(
                "unexpected error while delivering %d commands", len(commands)
            )
            for command in commands:
                self._ledger.failed(
                    command,
                    DeliveryFailed(
                        "gave_up",
                        f"internal error: {exc!r}",
                        attempts=command.attempts,
                    ),
                )
        finally:
            if self.in_flight.pop(id(commands), None) is not None:
                self._counters.in_flight -= len(commands)
            for command in commands:
                if not command.done():  # cancelled: the client is closing
                    self._ledger.failed(
                        command,
                        DeliveryFailed(
                            "closed",
                            "the client closed before the API answered",
                            attempts=command.attempts,
                        ),
                    )

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
            try:
                response = await self._transport.send(request)
            except RequestError as exc:
                error: RequestError = exc
                retry = pending
            else:
                settled = self._settle(pending, response, single)
                if settled is None:
                    return
                retry, error = settled
                retry_after = parse_retry_after(response.header("retry-after"))
            if retry_after is not None:
                delay = min(retry_after, policy.max_retry_after)
            else:
                delay = backoff(policy, attempt, self._rng)
            if isinstance(error, RateLimited):
                counters.rate_limited += 1
                # The pause applies to every request, so it gets the same cap.
                self._rate.rate_limited(None if retry_after is None else delay)
            keep = self._still_worth_trying(retry, error, delay)
            if not keep:
                return
            logger.debug(
                "retrying %d commands in %.3f s after %s", len(keep), delay, error
            )
            await _sleep(delay)
            if len(keep) != len(pending):
                pending = keep
                request, single = self._request(pending)

    def _still_worth_trying(
        self, retry: list[Delivery], error: RequestError, delay: float
    ) -> list[Delivery]:
        """The commands that may be retried; the rest are given up, with the error."""
        policy = self._retry
        resume = _monotonic() + delay
        keep: list[Delivery] = []
        for command in retry:
            if command.attempts >= policy.attempts:
                why = f"gave up after {command.attempts} attempts"
            elif resume > command.enqueued_at + policy.timeout:
                why = f"gave up: the retry deadline of {policy.timeout} s would pass"
            else:
                keep.append(command)
                continue
            self._ledger.failed(
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
        return keep

    def _settle(
        self, commands: list[Delivery], response: Response, single: bool
    ) -> tuple[list[Delivery], RequestError] | None:
        """Record final outcomes; return the commands to retry and why, if any."""
        status = response.status
        if not 200 <= status < 300:
            error = error_for(response)
            if is_retryable(error):
                return commands, error
            self._reject(commands, error)
            return None
        rid = request_id(response)
        if single:
            if single_accepted(response):
                self._accept(commands, status, rid)
            else:
                self._reject(commands, error_for_refusal(response, status, rid))
            return None
        if batch_all_accepted(response.body, len(commands)):
            # The common answer, recognised by its text: settle all at once.
            self._accept(commands, status, rid)
            return None
        answer = batch_answer(response)
        if answer is None or answer.results is None:
            if answer is not None and answer.success is False:
                self._reject(commands, error_for_refusal(response, status, rid))
                return None
            # No per-command results: nothing says the commands were taken.
            return commands, APIError(
                "the batch answer had no results", status=status, request_id=rid
            )
        matched = match_results(answer.results, len(commands))
        accepted: list[Delivery] = []
        retry: list[Delivery] = []
        for command, result in zip(commands, matched):
            if result is None:
                retry.append(command)
            elif result.success is True:
                accepted.append(command)
            else:
                errors = errors_of({"errors": result.errors}) or ["command failed"]
                self._reject(
                    [command],
                    BadRequest(
                        "; ".join(errors),
                        status=status,
                        request_id=rid,
                        errors=errors,
                    ),
                )
        if accepted:
            self._accept(accepted, status, rid)
        if retry:
            return retry, APIError(
                f"the batch answer had no result for {len(retry)} commands",
                status=status,
                request_id=rid,
            )
        return None

    def _accept(self, commands: list[Delivery], status: int, rid: str | None) -> None:
        self._rate.accepted()
        self._ledger.accepted(commands, Accepted(status, rid, _monotonic()))

    def _reject(self, commands: list[Delivery], error: RequestError) -> None:
        errors = error.errors if isinstance(error, APIError) else ()
        for command in commands:
            self._ledger.failed(
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


def error_for_refusal(response: Response, status: int, rid: str | None) -> BadRequest:
    """The error for a 200 answer whose body says ``"success": false``."""
    errors = body_errors(response.body)
    detail = "; ".join(errors) if errors else "no error message"
    return BadRequest(
        f"HTTP {status}: {detail}",
        status=status,
        request_id=rid,
        errors=errors,
        body=response.body,
    )
