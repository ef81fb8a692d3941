"""Backoff arithmetic and ``Retry-After`` parsing. Pure functions, no I/O."""

from __future__ import annotations

import math
import random
import time
from datetime import timezone
from email.utils import parsedate_to_datetime

from ._config import Retry
from ._exceptions import RateLimited, RequestError, ServerError, TransportError

# 408 is not in the API's tables, but it means the server gave up waiting for
# the request: nothing was processed, so sending it again is safe.
RETRYABLE_STATUSES = frozenset((408, 429))


def is_retryable(error: RequestError) -> bool:
    """Whether a request that failed this way may succeed if sent again."""
    if isinstance(error, (TransportError, ServerError, RateLimited)):
        return True
    return error.status in RETRYABLE_STATUSES


def backoff(policy: Retry, attempt: int, rng: random.Random) -> float:
    """Full-jitter wait before retry number ``attempt`` (1 = the first retry)."""
    try:
        grown = policy.wait_initial * policy.wait_exp_base ** (attempt - 1)
    except OverflowError:  # the power left float range: the cap applies anyway
        grown = policy.wait_max if policy.wait_initial else 0.0
    return rng.uniform(0.0, min(policy.wait_max, grown))


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delta-seconds or HTTP date.

    Returns ``None`` for a missing or unreadable header, and for one that asks
    for no wait by nonsense: a negative delay or a date not in the future. The
    caller then uses its normal backoff: a broken header must not turn into
    immediate retries. ``"0"`` is read as asked, 0 seconds.
    """
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:  # "-0000": HTTP dates are GMT by definition
            when = when.replace(tzinfo=timezone.utc)
        seconds = when.timestamp() - (time.time() if now is None else now)
        if seconds <= 0.0:
            return None
    if math.isnan(seconds) or math.isinf(seconds) or seconds < 0.0:
        return None
    return seconds + 0.0  # "-0" reads as 0.0, not -0.0
