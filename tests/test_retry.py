"""Tests for ``trackasync._retry`` and the ``Retry``/``Limits`` settings."""

from __future__ import annotations

import math
import random
from datetime import datetime, timezone
from typing import Any

import pytest
from hypothesis import given, settings, strategies as st

from trackasync._config import Limits, Retry
from trackasync._exceptions import (
    APIError,
    AuthError,
    BadRequest,
    ConfigError,
    RateLimited,
    RequestError,
    RequestTimeout,
    ServerError,
    TransportError,
)
from trackasync._retry import backoff, is_retryable, parse_retry_after

# -- backoff ---------------------------------------------------------------------


def _draws(policy: Retry, attempt: int, count: int = 400) -> list[float]:
    rng = random.Random(1234)
    return [backoff(policy, attempt, rng) for _ in range(count)]


@pytest.mark.parametrize(
    ("attempt", "ceiling"), [(1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (5, 8.0)]
)
def test_backoff_is_full_jitter_under_a_growing_ceiling(
    attempt: int, ceiling: float
) -> None:
    """Waits are spread over [0, wait_initial * base ** (n - 1)]."""
    policy = Retry(wait_initial=0.5, wait_exp_base=2.0, wait_max=100.0)
    draws = _draws(policy, attempt)
    assert all(0.0 <= wait <= ceiling for wait in draws)
    # Full jitter: the whole range is used, not just its top or bottom.
    assert min(draws) < 0.05 * ceiling
    assert max(draws) > 0.95 * ceiling
    assert len(set(draws)) == len(draws)


def test_backoff_ceiling_grows_by_the_base() -> None:
    """Each retry's ceiling is wait_exp_base times the previous one."""
    policy = Retry(wait_initial=0.1, wait_exp_base=3.0, wait_max=1000.0)
    tops = [max(_draws(policy, attempt)) for attempt in range(1, 6)]
    for attempt, top in enumerate(tops, start=1):
        ceiling = 0.1 * 3.0 ** (attempt - 1)
        assert 0.95 * ceiling < top <= ceiling


def test_backoff_is_capped_at_wait_max() -> None:
    """No wait exceeds wait_max, however many retries came before."""
    policy = Retry(wait_initial=1.0, wait_exp_base=2.0, wait_max=3.0)
    for attempt in (3, 4, 10, 60):
        draws = _draws(policy, attempt)
        assert max(draws) <= 3.0
        assert max(draws) > 2.85


def test_backoff_survives_huge_attempt_numbers() -> None:
    """A retry count past float range still yields a wait within wait_max."""
    policy = Retry(attempts=100_000, wait_initial=0.5, wait_max=30.0)
    for attempt in (1025, 5000, 99_999):
        assert 0.0 <= backoff(policy, attempt, random.Random(1)) <= 30.0
    zero = Retry(attempts=100_000, wait_initial=0.0, wait_max=30.0)
    assert backoff(zero, 5000, random.Random(1)) == 0.0


def test_backoff_with_base_one_is_constant_ceiling() -> None:
    """wait_exp_base=1 keeps the ceiling at wait_initial."""
    policy = Retry(wait_initial=2.0, wait_exp_base=1.0, wait_max=100.0)
    assert max(_draws(policy, 20)) <= 2.0


def test_backoff_without_waits_is_zero() -> None:
    """wait_initial=0 or wait_max=0 means retrying at once."""
    rng = random.Random(5)
    assert backoff(Retry(wait_initial=0.0), 3, rng) == 0.0
    assert backoff(Retry(wait_max=0.0), 3, rng) == 0.0


def test_backoff_is_reproducible_with_a_seed() -> None:
    """The same seed gives the same waits: the rng passed in is the only source."""
    policy = Retry()
    first = [backoff(policy, n, random.Random(42)) for n in range(1, 8)]
    second = [backoff(policy, n, random.Random(42)) for n in range(1, 8)]
    other = [backoff(policy, n, random.Random(43)) for n in range(1, 8)]
    assert first == second
    assert first != other


# -- Retry-After -----------------------------------------------------------------

HTTP_DATE = "Wed, 21 Oct 2015 07:28:00 GMT"
HTTP_DATE_EPOCH = datetime(2015, 10, 21, 7, 28, tzinfo=timezone.utc).timestamp()


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("120", 120.0),
        ("0", 0.0),
        (" 7 ", 7.0),
        ("2.5", 2.5),
        ("0.001", 0.001),
        ("-0", 0.0),
    ],
)
def test_retry_after_seconds(header: str, expected: float) -> None:
    """Delta-seconds are read as floats."""
    result = parse_retry_after(header)
    assert result == expected
    assert math.copysign(1.0, result) == 1.0  # type: ignore[arg-type]


@pytest.mark.parametrize("header", ["-5", "-0.5", "-1e9", " -3 "])
def test_retry_after_negative_is_none(header: str) -> None:
    """A negative delay is nonsense, not "retry now": None, so the normal
    backoff applies."""
    assert parse_retry_after(header) is None


@pytest.mark.parametrize(
    "header", [None, "", "   ", "soon", "1s", "nan", "NaN", "inf", "-inf", "Infinity"]
)
def test_retry_after_unreadable_is_none(header: str | None) -> None:
    """A missing, empty, non-numeric or non-finite header gives None."""
    assert parse_retry_after(header) is None


def test_retry_after_http_date_in_the_future() -> None:
    """An HTTP date gives the seconds from ``now`` until it."""
    assert parse_retry_after(HTTP_DATE, now=HTTP_DATE_EPOCH - 30) == 30.0
    assert parse_retry_after(HTTP_DATE, now=HTTP_DATE_EPOCH - 0.5) == 0.5


def test_retry_after_http_date_variants() -> None:
    """Dates with an explicit -0000 or +0000 zone are read as GMT too."""
    now = HTTP_DATE_EPOCH - 10
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 -0000", now=now) == 10.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 +0000", now=now) == 10.0
    assert parse_retry_after("Wed, 21 Oct 2015 08:28:00 +0100", now=now) == 10.0


@pytest.mark.parametrize("after", [3600.0, 0.5, 0.0])
def test_retry_after_http_date_not_in_the_future_is_none(after: float) -> None:
    """A date that already passed (or is now) is None, so the normal backoff
    applies instead of an immediate retry."""
    assert parse_retry_after(HTTP_DATE, now=HTTP_DATE_EPOCH + after) is None


def test_retry_after_http_date_uses_the_clock_by_default() -> None:
    """Without ``now`` the date is compared with the clock: 2015 is past."""
    assert parse_retry_after(HTTP_DATE) is None
    future = "Fri, 01 Jan 2100 00:00:00 GMT"
    assert parse_retry_after(future) > 365 * 24 * 3600  # type: ignore[operator]


@pytest.mark.parametrize(
    "header",
    [
        "Wed, 32 Oct 2015 07:28:00 GMT",
        "Wed, 21 Foo 2015 07:28:00 GMT",
        "Wed, 21 Oct 2015 25:28:00 GMT",
        "Wed, 21 Oct",
        "21/10/2015",
    ],
)
def test_retry_after_garbage_date_is_none(header: str) -> None:
    """A malformed HTTP date gives None instead of raising."""
    assert parse_retry_after(header, now=HTTP_DATE_EPOCH) is None


@settings(max_examples=300, deadline=None, database=None)
@given(st.one_of(st.text(max_size=40), st.from_regex(r"\A[ -~]{0,40}\Z")))
def test_retry_after_never_raises(header: str) -> None:
    """Any header text gives None or a finite, non-negative number of seconds."""
    result = parse_retry_after(header, now=HTTP_DATE_EPOCH)
    assert result is None or (math.isfinite(result) and result >= 0.0)


# -- is_retryable ------------------------------------------------------------------


@pytest.mark.parametrize(
    "error",
    [
        TransportError("connection reset"),
        RequestTimeout("timed out"),
        ServerError("HTTP 500", status=500),
        ServerError("HTTP 503", status=503),
        RateLimited("HTTP 429"),
        APIError("HTTP 408", status=408),
    ],
    ids=lambda error: type(error).__name__,
)
def test_retryable_errors(error: RequestError) -> None:
    """Transport failures, timeouts, 5xx, 429 and 408 are retried."""
    assert is_retryable(error) is True


@pytest.mark.parametrize(
    "error",
    [
        BadRequest("HTTP 400", status=400),
        BadRequest("HTTP 200 success false", status=200),
        BadRequest("HTTP 413", status=413),
        AuthError("HTTP 401", status=401),
        AuthError("HTTP 403", status=403),
        APIError("HTTP 418", status=418),
        RequestError("unknown"),
    ],
    ids=lambda error: f"{type(error).__name__}-{error.status}",
)
def test_permanent_errors(error: RequestError) -> None:
    """4xx other than 408/429, 200 refusals and unknown errors are not retried."""
    assert is_retryable(error) is False


# -- settings validation -------------------------------------------------------------


def test_retry_defaults_and_none() -> None:
    """The defaults are valid and Retry.none() makes a single attempt."""
    default = Retry()
    assert default.attempts == 10
    assert default.wait_max == 30.0
    assert Retry.none().attempts == 1
    edges = Retry(wait_initial=0, wait_max=0, max_retry_after=0, wait_exp_base=1)
    assert (edges.wait_initial, edges.wait_max, edges.wait_exp_base) == (0, 0, 1)


@pytest.mark.parametrize(
    "options",
    [
        {"attempts": 0},
        {"attempts": -1},
        {"attempts": 1.5},
        {"attempts": True},
        {"timeout": 0},
        {"timeout": -1.0},
        {"timeout": math.nan},
        {"timeout": math.inf},
        {"wait_initial": -0.1},
        {"wait_initial": math.nan},
        {"wait_initial": math.inf},
        {"wait_max": -1},
        {"wait_max": math.nan},
        {"max_retry_after": -1},
        {"max_retry_after": math.inf},
        {"wait_exp_base": 0.5},
        {"wait_exp_base": 0},
        {"wait_exp_base": math.nan},
        {"wait_exp_base": math.inf},
    ],
    ids=repr,
)
def test_bad_retry_settings_raise_config_error(options: dict[str, Any]) -> None:
    """Each out-of-range Retry setting raises ConfigError naming it."""
    with pytest.raises(ConfigError, match=next(iter(options))):
        Retry(**options)


def test_config_error_is_a_value_error() -> None:
    """ConfigError can be caught as ValueError."""
    with pytest.raises(ValueError, match="attempts"):
        Retry(attempts=0)


def test_limits_defaults() -> None:
    """The default limits are the API's documented ones."""
    limits = Limits()
    assert limits.max_command_bytes == 800_000
    assert limits.max_value_bytes == 16_000
    assert limits.max_batch_commands == 50


@pytest.mark.parametrize(
    "options",
    [
        {"max_command_bytes": 1},
        {"max_command_bytes": 1000.0},
        {"max_command_bytes": "1000"},
        {"max_value_bytes": 0},
        {"max_value_bytes": True},
        {"max_batch_bytes": 1},
        {"max_batch_commands": 0},
        {"max_batch_commands": 51},
        {"max_batch_commands": 2.5},
        {"max_batch_commands": True},
    ],
    ids=repr,
)
def test_bad_limits_raise_config_error(options: dict[str, Any]) -> None:
    """Each out-of-range or non-int Limits setting raises ConfigError naming it."""
    with pytest.raises(ConfigError, match=next(iter(options))):
        Limits(**options)


def test_batch_bytes_must_fit_one_full_command() -> None:
    """max_batch_bytes needs 256 bytes more than max_command_bytes."""
    with pytest.raises(ConfigError, match="max_batch_bytes"):
        Limits(max_command_bytes=1000, max_batch_bytes=1255)
    assert Limits(max_command_bytes=1000, max_batch_bytes=1256).max_batch_bytes == 1256
    assert Limits(max_batch_commands=1).max_batch_commands == 1
