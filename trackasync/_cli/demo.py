"""``trackasync demo``: the real client against the fake API, with faults, checked.

It starts ``FakeTrackingAPI`` on 127.0.0.1, sends a realistic stream of events
and customer updates through a real ``Client`` while the server injects faults,
shows progress, and ends with a summary and a reconciliation: every delivered
command must be stored exactly once, and nothing else may be stored except
commands whose fate was ambiguous (a connection dropped after the server stored
them, and the client then gave up).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time
import zlib
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, TextIO

import msgspec

from .._client import Client
from .._config import Retry
from .._delivery import Delivery
from ..testing._fake_api import FakeTrackingAPI

_EVENT_TYPES = ("view_item", "view_item", "view_item", "add_to_cart", "purchase")
_CATEGORIES = ("shoes", "shirts", "bags", "hats", "socks")
_canonical = msgspec.json.Encoder(order="deterministic").encode


def parser() -> argparse.ArgumentParser:
    """The demo's command-line options."""
    p = argparse.ArgumentParser(
        prog="trackasync demo",
        description="Send events through the real client to a fake Tracking API "
        "that injects faults, then check the server holds what was delivered.",
    )
    p.add_argument(
        "--count",
        type=int,
        default=20_000,
        help="commands to send (default: %(default)s)",
    )
    p.add_argument(
        "--rate",
        type=float,
        default=0.0,
        help="commands per second, 0 for as fast as possible (default: %(default)s)",
    )
    p.add_argument(
        "--fault-rate",
        type=float,
        default=0.1,
        help="share of requests the server fails (default: %(default)s)",
    )
    p.add_argument(
        "--reject-rate",
        type=float,
        default=0.005,
        help="share of commands the server rejects (default: %(default)s)",
    )
    p.add_argument(
        "--updates",
        type=float,
        default=0.1,
        help="share of commands that are customer updates (default: %(default)s)",
    )
    p.add_argument(
        "--customers",
        type=int,
        default=2_000,
        help="distinct customers (default: %(default)s)",
    )
    p.add_argument(
        "--seed", type=int, default=7, help="random seed (default: %(default)s)"
    )
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    return p


@dataclass
class _Plan:
    """What the demo sends, and what it learns about each command."""

    deliveries: list[Delivery] = field(default_factory=list)


def _event(
    rng: random.Random, n: int, customers: int
) -> tuple[dict[str, str], str, dict[str, Any]]:
    customer = rng.randrange(customers)
    ids = {"registered": f"customer-{customer}@example.com"}
    if rng.random() < 0.3:
        ids["cookie"] = f"cookie-{customer:06d}"
    event_type = rng.choice(_EVENT_TYPES)
    props: dict[str, Any] = {
        "item_id": f"SKU-{rng.randrange(10_000):05d}",
        "category": rng.choice(_CATEGORIES),
        "price": round(rng.uniform(1, 200), 2),
        "quantity": rng.randrange(1, 4),
        "currency": "EUR",
        "source": rng.choice(("web", "app", "email")),
        "seq": n,
        "in_stock": rng.random() < 0.9,
    }
    return ids, event_type, props


def _progress(out: TextIO, client: Client, sent: int, started: float) -> None:
    s = client.stats()
    elapsed = time.monotonic() - started
    out.write(
        f"  {elapsed:6.1f}s  sent {sent:>7}  delivered {s.delivered:>7}  "
        f"rejected {s.rejected:>5}  queued {s.queued:>6}  in flight {s.in_flight:>4}  "
        f"requests {s.requests:>5}  retries {s.retries:>4}\n"
    )
    out.flush()


async def run(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """Run the demo; returns the process exit code (0 when the check passes)."""
    out = sys.stdout if out is None else out
    rng = random.Random(args.seed)
    reject_threshold = args.reject_rate
    async with FakeTrackingAPI() as api:
        if args.fault_rate > 0:
            api.chaos(args.fault_rate, seed=args.seed, delay=0.05)
        if reject_threshold > 0:
            # Decided by the command's content, as the real API's validation is:
            # a retry of a command gets the same verdict as its first attempt.
            api.reject_commands(
                lambda name, data: (
                    zlib.crc32(_canonical(data)) % 10_000 < reject_threshold * 10_000
                ),
                error="Not authorized to add event of specified type",
            )
        out.write(
            f"trackasync demo: {args.count} commands to a fake Tracking API at "
            f"{api.base_url} failing {args.fault_rate:.0%} of requests\n"
        )
        client = Client(
            api.base_url,
            api.project_token,
            auth=api.auth,
            linger=0.05,
            max_queue=max(1_000, args.count // 4),
            # Quick retries keep the demo short; the defaults are patient.
            retry=Retry(
                attempts=12,
                timeout=120.0,
                wait_initial=0.05,
                wait_max=1.0,
                max_retry_after=1.0,
            ),
        )
        plan = _Plan()
        started = time.monotonic()
        async with client:
            ticker = asyncio.get_running_loop().create_task(
                _ticker(out, client, plan, started, args.quiet)
            )
            try:
                await _produce(client, plan, args, rng)
                await client.flush()
            finally:
                ticker.cancel()
        elapsed = time.monotonic() - started
        return _summary(out, client, plan, api, elapsed)


async def _produce(
    client: Client, plan: _Plan, args: argparse.Namespace, rng: random.Random
) -> None:
    interval = 1.0 / args.rate if args.rate > 0 else 0.0
    next_at = time.monotonic()
    for n in range(args.count):
        if rng.random() < args.updates:
            customer = rng.randrange(args.customers)
            delivery = await client.update_customer(
                {"registered": f"customer-{customer}@example.com"},
                {"last_seq": n, "tier": rng.choice(("bronze", "silver", "gold"))},
            )
        else:
            ids, event_type, props = _event(rng, n, args.customers)
            delivery = await client.track(ids, event_type, props)
        plan.deliveries.append(delivery)
        if interval:
            next_at += interval
            delay = next_at - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
        elif n % 500 == 499:
            await asyncio.sleep(0)  # let the pipeline breathe, as a real app would


async def _ticker(
    out: TextIO, client: Client, plan: _Plan, started: float, quiet: bool
) -> None:
    while not quiet:
        await asyncio.sleep(1.0)
        _progress(out, client, len(plan.deliveries), started)


def _event_key(data: dict[str, Any]) -> bytes:
    ids = sorted(data["customer_ids"].items())
    return _canonical([ids, data["event_type"], data["timestamp"], data["properties"]])


def _summary(
    out: TextIO, client: Client, plan: _Plan, api: FakeTrackingAPI, elapsed: float
) -> int:
    stats = client.stats()
    outcomes = Counter(
        "delivered" if d.delivered() else d.exception().reason  # type: ignore[union-attr]
        for d in plan.deliveries
    )
    reasons = Counter(
        error
        for d in plan.deliveries
        if not d.delivered() and d.exception() is not None
        for error in (d.exception().errors or (d.exception().reason,))  # type: ignore[union-attr]
    )
    requests = max(1, stats.requests)
    faults = Counter(r.fault for r in api.requests if r.fault)
    out.write("\nsummary\n")
    out.write(f"  commands sent        {len(plan.deliveries)}\n")
    out.write(f"  delivered            {outcomes['delivered']}\n")
    out.write(f"  rejected             {outcomes['rejected']}\n")
    for reason, count in reasons.most_common(5):
        out.write(f"      {count:>6} x {reason}\n")
    for reason in ("gave_up", "dropped", "closed"):
        out.write(f"  {reason:<20} {outcomes[reason]}\n")
    out.write(
        f"  requests             {stats.requests} ({stats.retries} retries, {stats.rate_limited} rate-limited)\n"
    )
    out.write(f"  faults injected      {sum(faults.values())} {dict(faults)}\n")
    out.write(f"  commands per request {stats.delivered / requests:.1f}\n")
    out.write(
        f"  time                 {elapsed:.2f} s ({len(plan.deliveries) / elapsed:,.0f} commands/s)\n"
    )
    return _reconcile(out, plan, api)


def _reconcile(out: TextIO, plan: _Plan, api: FakeTrackingAPI) -> int:
    """Check the server against the client's outcomes; 0 if they agree."""
    stored = Counter(
        _event_key(
            {
                "customer_ids": e.customer_ids,
                "event_type": e.event_type,
                "timestamp": e.timestamp,
                "properties": e.properties,
            }
        )
        for e in api.events
    )
    problems: list[str] = []
    ambiguous = 0
    latest: dict[str, tuple[int, Delivery]] = {}
    for delivery in plan.deliveries:
        data = delivery.data()
        if delivery.kind == "customers":
            if delivery.delivered():
                key = data["customer_ids"]["registered"]
                seq = data["properties"]["last_seq"]
                if key not in latest or latest[key][0] < seq:
                    latest[key] = (seq, delivery)
            continue
        copies = stored.get(_event_key(data), 0)
        if delivery.delivered() and copies != 1:
            problems.append(f"delivered event stored {copies} times: {data}")
        elif not delivery.delivered() and copies:
            error = delivery.exception()
            if error is not None and error.reason == "gave_up":
                ambiguous += 1  # the connection dropped after the server stored it
            else:
                problems.append(
                    f"{error.reason if error else '?'} event was stored: {data}"
                )
    for key, (seq, _) in latest.items():
        properties = api.customer({"registered": key}) or {}
        if properties.get("last_seq") != seq:
            problems.append(
                f"customer {key}: last_seq {properties.get('last_seq')} != {seq}"
            )
    out.write(f"  server duplicates    {api.duplicates} absorbed by deduplication\n")
    if problems:
        out.write(f"check FAILED: {len(problems)} problems\n")
        for problem in problems[:10]:
            out.write(f"  {problem}\n")
        return 1
    out.write(
        "check passed: every delivered command is stored exactly once"
        + (
            f" ({ambiguous} given-up commands were stored before the connection dropped)"
            if ambiguous
            else ""
        )
        + "\n"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``trackasync demo``."""
    args = parser().parse_args(argv)
    return asyncio.run(run(args))
