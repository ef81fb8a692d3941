"""The options of ``trackasync send``: parsed, checked, and turned into client settings.

Every option is checked here, before the input is opened: a bad value never
costs a line read.
"""

from __future__ import annotations

import argparse
import math
from typing import Any

from .._auth import PrivateKey, PublicToken
from .._env import client_kwargs
from .._exceptions import ConfigError
from .._ratelimit import parse_rate_budget

#: Lines above which the command reminds that bulk loads belong to Imports.
DEFAULT_BULK_THRESHOLD = 100_000


def _above_zero(raw: str, unit: str) -> float:
    """A finite number above 0, or an argparse error that says ``unit``."""
    try:
        value = float(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {raw!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(
            f"must be a finite number of {unit} above 0, got {raw!r}"
        )
    return value


def _seconds(raw: str) -> float:
    return _above_zero(raw, "seconds")


def _positive(raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {raw!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, got {raw!r}")
    return value


def _rate(raw: str) -> float | str:
    if raw.strip().lower() in ("none", "off"):
        return "off"
    return _above_zero(raw, "requests per second (or 'off')")


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="trackasync send",
        description=(
            "Send a JSON Lines file of events and customer updates to the "
            "Tracking API. Credentials come from the options or from the "
            "TRACKASYNC_* environment variables (prefer the environment for "
            "secrets: options show in the process list)."
        ),
        epilog=(
            "Exit status: 0 every line delivered; 1 some lines not delivered "
            "(see --rejected); 2 bad options, or nothing could be sent; 3 "
            "stopped early (credentials refused, or the input is damaged); "
            "130 interrupted."
        ),
    )
    add = parser.add_argument
    add("file", help="the JSON Lines file ('-' for standard input; .gz is read too)")
    add("--base-url", help="the API's address (TRACKASYNC_BASE_URL)")
    add("--project-token", help="(TRACKASYNC_PROJECT_TOKEN)")
    add("--key-id", help="private key id (TRACKASYNC_KEY_ID)")
    add("--secret", help="private key secret (TRACKASYNC_SECRET)")
    add("--public-token", help="a public token instead (TRACKASYNC_PUBLIC_TOKEN)")
    add(
        "--dry-run",
        action="store_true",
        help="validate and encode every line, send nothing",
    )
    add(
        "--rejected",
        metavar="FILE",
        help="write each line not delivered here, as it was, after a comment "
        "line with its line number and reason; send can read it back",
    )
    add(
        "--from-line",
        type=_positive,
        default=1,
        metavar="N",
        help="skip the lines before line N (to resume a stopped run)",
    )
    add(
        "--timeout",
        type=_seconds,
        default=60.0,
        help="seconds to wait at the end for what is still queued "
        "(default: %(default)s)",
    )
    add(
        "--rate-limit",
        type=_rate,
        metavar="PER_SECOND",
        help="requests per second at most, or 'off' (TRACKASYNC_RATE_LIMIT)",
    )
    add(
        "--rate-budget",
        metavar="URL",
        help="share one rate budget with other processes, e.g. redis://host/0 "
        "(TRACKASYNC_RATE_BUDGET)",
    )
    add(
        "--proxy",
        metavar="URL",
        help="send through this HTTP(S) proxy (TRACKASYNC_PROXY; prefer the "
        "variable for a proxy with a password)",
    )
    add(
        "--no-trust-env",
        action="store_true",
        help="ignore HTTPS_PROXY/NO_PROXY from the environment (TRACKASYNC_TRUST_ENV=0)",
    )
    add(
        "--tls",
        metavar="CA_BUNDLE",
        help="trust the CAs in this PEM file instead of the system's (TRACKASYNC_TLS)",
    )
    add(
        "--spool",
        metavar="DIR",
        help="keep accepted lines in this spool directory until delivered "
        "(TRACKASYNC_SPOOL; TRACKASYNC_DURABILITY=interval for speed)",
    )
    add(
        "--max-in-flight",
        type=_positive,
        metavar="N",
        help="requests in flight at most (TRACKASYNC_MAX_IN_FLIGHT)",
    )
    add(
        "--bulk-threshold",
        type=int,
        default=DEFAULT_BULK_THRESHOLD,
        metavar="LINES",
        help="warn above this many lines (default: %(default)s)",
    )
    add("--quiet", action="store_true", help="no progress, only the summary")
    return parser


def client_options(args: argparse.Namespace) -> dict[str, Any]:
    overrides: dict[str, Any] = {}
    if args.base_url:
        overrides["base_url"] = args.base_url
    if args.project_token:
        overrides["project_token"] = args.project_token
    if args.public_token and (args.key_id or args.secret):
        raise ConfigError("give --key-id/--secret or --public-token, not both")
    if args.public_token:
        overrides["auth"] = PublicToken(args.public_token)
    elif args.key_id or args.secret:
        if not (args.key_id and args.secret):
            raise ConfigError("--key-id and --secret go together")
        overrides["auth"] = PrivateKey(args.key_id, args.secret)
    for option in ("rate_limit", "max_in_flight"):
        value = getattr(args, option)
        if value is not None:
            overrides[option] = None if value == "off" else value
    if args.rate_budget is not None:
        overrides["rate_budget"] = parse_rate_budget(args.rate_budget, "--rate-budget")
    if args.proxy is not None:
        overrides["proxy"] = args.proxy
    if args.no_trust_env:
        overrides["trust_env"] = False
    if args.tls is not None:
        overrides["tls"] = args.tls
    if args.spool:
        overrides["spool"] = args.spool
    return client_kwargs(overrides)
