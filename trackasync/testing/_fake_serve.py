"""Serve :class:`FakeTrackingAPI` on a port until interrupted (``trackasync fake-server``)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import signal
import sys
from typing import TextIO

from .._config import is_loopback
from ._fake_api import (
    DEFAULT_KEY_ID,
    DEFAULT_PROJECT_TOKEN,
    DEFAULT_PUBLIC_TOKEN,
    DEFAULT_SECRET,
    REAL_RATE_WINDOW,
    FakeTrackingAPI,
)
from ._fake_server import STATE_PATH

__all__ = ["run_fake_server", "serve"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="trackasync fake-server",
        description=(
            "Serve a fake Bloomreach Tracking API for demos, benchmarks and "
            "tests of an application running in another process. It keeps what "
            f"it accepts in memory; GET {STATE_PATH} returns it as JSON."
        ),
    )
    add = parser.add_argument
    add("--host", default="127.0.0.1", help="address to bind (default: %(default)s)")
    add(
        "--port",
        type=int,
        default=8080,
        help="port to bind, 0 for any (default: %(default)s)",
    )
    add(
        "--allow-remote",
        action="store_true",
        help="allow binding a non-loopback address",
    )
    add("--project-token", default=DEFAULT_PROJECT_TOKEN, help="default: %(default)s")
    add("--key-id", default=DEFAULT_KEY_ID, help="default: %(default)s")
    add("--secret", default=DEFAULT_SECRET, help="default: %(default)s")
    add("--public-token", default=DEFAULT_PUBLIC_TOKEN, help="default: %(default)s")
    add(
        "--rate-limit",
        type=float,
        metavar="RPS",
        help="answer 429 beyond RPS requests per second (real API: 100); default: off",
    )
    add(
        "--rate-window",
        type=float,
        default=REAL_RATE_WINDOW,
        metavar="SECONDS",
        help="sliding window of the rate limit (default: %(default)s)",
    )
    add(
        "--chaos",
        type=float,
        default=0.0,
        metavar="RATE",
        help="share of requests (0-1) that get a random fault (default: none)",
    )
    add("--seed", type=int, help="seed for --chaos, to repeat a run")
    add(
        "--single-route-error-status",
        type=int,
        default=200,
        metavar="STATUS",
        help="status of single-route validation errors (default: %(default)s)",
    )
    return parser


async def run_fake_server(
    api: FakeTrackingAPI,
    *,
    stop: asyncio.Event | None = None,
    out: TextIO | None = None,
) -> None:
    """Start ``api``, print where and how to connect, and serve until ``stop`` is set.

    Without ``stop`` it serves until cancelled (Ctrl-C) or sent SIGTERM.
    """
    out = sys.stdout if out is None else out
    stop = asyncio.Event() if stop is None else stop
    loop = asyncio.get_running_loop()
    async with api:
        print(f"Fake Bloomreach Tracking API listening on {api.base_url}", file=out)
        print(f"  project token  {api.project_token}", file=out)
        print(f"  key id         {api.key_id}", file=out)
        print(f"  secret         {api.secret}", file=out)
        print(f"  public token   {api.public_token}", file=out)
        print(f"  Authorization  {api.auth.header}", file=out)
        print(f"  stored data    GET {api.base_url}{STATE_PATH}", file=out)
        print("Stop with Ctrl-C.", file=out, flush=True)
        # Signal handlers only work in the main thread, and not on Windows.
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(signal.SIGTERM, stop.set)
        try:
            await stop.wait()
        finally:
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.remove_signal_handler(signal.SIGTERM)
            print(
                f"Stopped: {len(api.requests)} requests, {api.event_count} events "
                f"stored, {api.duplicates} duplicates, {len(api.customers)} customers.",
                file=out,
                flush=True,
            )


def _flag_problem(args: argparse.Namespace) -> str | None:
    """What is wrong with the options, in terms of the command-line flags.

    The constructor's own messages speak of keyword arguments, which a user of
    the command never wrote.
    """
    if not args.allow_remote and not is_loopback(args.host):
        return (
            f"refusing to bind {args.host!r}: the fake server accepts anyone's "
            "data; add --allow-remote to serve beyond the loopback interface"
        )
    if not (args.project_token and args.key_id and args.secret and args.public_token):
        return (
            "--project-token, --key-id, --secret and --public-token must be non-empty"
        )
    if args.rate_limit is not None and not args.rate_limit > 0:
        return f"--rate-limit must be positive, got {args.rate_limit:g}"
    if not args.rate_window > 0:
        return f"--rate-window must be positive, got {args.rate_window:g}"
    if not 0.0 <= args.chaos <= 1.0:
        return f"--chaos must be between 0 and 1, got {args.chaos:g}"
    if not 0 <= args.port <= 65535:
        return f"--port must be between 0 and 65535, got {args.port}"
    return None


def serve(argv: list[str] | None = None) -> int:
    """Run the fake server from command-line arguments; returns the exit status."""
    args = _parser().parse_args(argv)
    problem = _flag_problem(args)
    if problem is not None:
        print(f"trackasync fake-server: {problem}", file=sys.stderr)
        return 2
    try:
        api = FakeTrackingAPI(
            host=args.host,
            port=args.port,
            allow_remote=args.allow_remote,
            project_token=args.project_token,
            key_id=args.key_id,
            secret=args.secret,
            public_token=args.public_token,
            rate_limit=args.rate_limit,
            rate_window=args.rate_window,
            single_route_error_status=args.single_route_error_status,
        )
        if args.chaos:
            api.chaos(args.chaos, seed=args.seed)
    except ValueError as exc:
        print(f"trackasync fake-server: {exc}", file=sys.stderr)
        return 2
    try:
        asyncio.run(run_fake_server(api))
    except KeyboardInterrupt:
        pass
    except OSError as exc:  # typically: the port is taken
        hint = ""
        if exc.errno == errno.EADDRINUSE:
            hint = "; choose another --port (0 picks a free one)"
        print(f"trackasync fake-server: {exc.strerror or exc}{hint}", file=sys.stderr)
        return 1
    return 0
