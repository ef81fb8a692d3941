"""A mutation run over the risky logic: does the suite notice when a rule breaks?

Each mutant below is one small, deliberate bug: a file, an exact snippet of it
(found exactly once) and what replaces it, and the test files that must fail
because of it. For each mutant in turn the script copies the project to a
scratch directory (never touching the working tree), applies the mutant there,
runs the named tests against that copy with a time limit, and counts the
mutant *killed* if the run fails. It prints one line per mutant, then the
score (killed/total) and the survivors.

Run it from the project's root, in the project's virtual environment::

    .venv/bin/python tools/mutate.py              # every mutant, one at a time
    .venv/bin/python tools/mutate.py --jobs 2     # two at a time
    .venv/bin/python tools/mutate.py --only take_tail_goes_last sync_slot_waits_for_poll
    .venv/bin/python tools/mutate.py --list       # names, files, tests
    .venv/bin/python tools/mutate.py --only linger_ignored --tests tests/test_x.py

Before the mutants, the named tests run once unmutated: if they do not pass
there, the score would mean nothing and the script stops (exit status 2). The
exit status is 1 when any mutant survives or a snippet is not found (a
snippet moved by a refactoring must be re-pointed here), 0 otherwise.

A snippet is kept short and distinctive, so that it survives edits around it;
when the code it names moves, update ``original``/``replacement`` here.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# What a scratch copy leaves out: caches and environments, never sources.
_IGNORE = shutil.ignore_patterns(
    ".git",
    ".venv",
    "venv",
    "__pycache__",
    ".mypy_cache",
    ".ruff_cache",
    ".pytest_cache",
    ".hypothesis",
    "*.egg-info",
    ".coverage*",
    "htmlcov",
)


@dataclass(frozen=True)
class Mutant:
    name: str
    #: What the bug would mean, in words.
    means: str
    file: str
    original: str
    replacement: str
    #: Test files (or node ids) that must fail under this mutant.
    tests: tuple[str, ...]


PIPELINE = "tests/test_mutants_pipeline.py"
SYNC = "tests/test_mutants_sync.py"
BYTES = "tests/test_queue_bytes.py"
FORK = "tests/test_mutants_fork.py"
VALUES = "tests/test_encoding_fast.py"

MUTANTS: tuple[Mutant, ...] = (
    # -- the 17 that an earlier run found the suite blind to ---------------------------
    Mutant(
        "retry_skips_rate_limiter",
        "retries bypass the rate limiter",
        "trackasync/_sender.py",
        "await self._rate.acquire()\n                counters.retries += 1",
        "counters.retries += 1",
        (PIPELINE,),
    ),
    Mutant(
        "429_not_told_to_limiter",
        "a 429 does not slow the limiter",
        "trackasync/_sender.py",
        "self._rate.rate_limited(None if retry_after is None else delay)",
        "pass",
        (PIPELINE,),
    ),
    Mutant(
        "take_tail_goes_last",
        "take() puts an over-the-byte-cap tail at the end of the queue",
        "trackasync/_table.py",
        "items.extendleft(reversed(batch[kept:]))",
        "items.extend(batch[kept:])",
        (PIPELINE,),
    ),
    Mutant(
        "newcomer_waits_first",
        "a producer that starts waiting overtakes those already waiting",
        "trackasync/_table.py",
        "self._putters.append(entry)",
        "self._putters.appendleft(entry)",
        (PIPELINE,),
    ),
    Mutant(
        "woken_slots_not_reserved",
        "slots reserved for woken waiters are ignored",
        "trackasync/_table.py",
        "else self.maxsize - self._woken",
        "else self.maxsize",
        (PIPELINE,),
    ),
    Mutant(
        "flush_marks_nothing_urgent",
        "flush() marks nothing urgent",
        "trackasync/_batcher.py",
        "self._urgent = max(self._urgent, len(self._table))",
        "pass",
        (PIPELINE,),
    ),
    Mutant(
        "internal_error_leaves_no_outcome",
        "the sender's internal-error path leaves commands without an outcome",
        "trackasync/_sender.py",
        "for command in commands\n                    if not command.done()",
        "for command in ()\n                    if not command.done()",
        (PIPELINE,),
    ),
    Mutant(
        "parked_hook_keeps_backpressure",
        "a parked hook does not lift backpressure",
        "trackasync/_hooks.py",
        "while not self._room.is_set() and not self._parked:",
        "while not self._room.is_set():",
        (PIPELINE,),
    ),
    Mutant(
        "park_does_not_wake_sender",
        "a hook that parks does not wake a sender already waiting for room",
        "trackasync/_hooks.py",
        "self._parked.add(task)\n        self._room.set()",
        "self._parked.add(task)",
        (PIPELINE,),
    ),
    Mutant(
        "hook_room_never_reopens",
        "the hook room never reopens after one full backlog",
        "trackasync/_hooks.py",
        "HOOK_BACKLOG // 2:\n                self._room.set()",
        "HOOK_BACKLOG // 2:\n                pass",
        (PIPELINE,),
    ),
    Mutant(
        "parked_hooks_hold_slots",
        "parked hooks count toward the concurrency limit",
        "trackasync/_hooks.py",
        "len(self._active) - len(self._parked) >= HOOK_CONCURRENCY",
        "len(self._active) >= HOOK_CONCURRENCY",
        (PIPELINE,),
    ),
    Mutant(
        "skip_threshold_off_by_one",
        "the hook backlog skips one call late",
        "trackasync/_hooks.py",
        "if len(backlog) >= 2 * HOOK_BACKLOG:",
        "if len(backlog) > 2 * HOOK_BACKLOG:",
        (PIPELINE,),
    ),
    Mutant(
        "done_callback_inline",
        "a done callback on a settled delivery runs inline",
        "trackasync/_delivery.py",
        "if self._outcome is not None:\n            _soon(fn, self)",
        "if self._outcome is not None:\n            fn(self)",
        (PIPELINE,),
    ),
    Mutant(
        "cancelled_awaiter_left_behind",
        "a cancelled awaiter leaves its waiter behind",
        "trackasync/_delivery.py",
        "if self._waiters is not None and waiter in self._waiters:",
        "if False:",
        (PIPELINE,),
    ),
    Mutant(
        "sync_slot_waits_for_poll",
        "a freed SyncClient slot wakes a blocked producer only at the poll",
        "trackasync/_table.py",
        "every waiter checks.\n                self._room.notify_all()",
        "every waiter checks.\n                pass",
        (SYNC,),
    ),
    Mutant(
        "child_keeps_used_transport",
        "a forked child keeps the parent's used transport",
        "trackasync/_client.py",
        "if self._options.transport is None:\n            self._transport = self._own_transport()",
        "if False:\n            self._transport = self._own_transport()",
        (FORK,),
    ),
    Mutant(
        "closed_client_reopens_in_child",
        "a closed client reopens in the child",
        "trackasync/_client.py",
        "if was is CLOSING or was is CLOSED:",
        "if False:",
        (FORK,),
    ),
    Mutant(
        "child_closes_parent_runtimes",
        "the child closes the parent's runtimes at exit",
        "trackasync/_sync.py",
        "_fork.keep_forever(runtime)\n        _running.clear()",
        "_fork.keep_forever(runtime)",
        (FORK,),
    ),
    # -- the queue ------------------------------------------------------------------------
    Mutant(
        "queue_holds_one_more",
        "the queue takes one command over max_queue",
        "trackasync/_table.py",
        "if len(items) >= self._limit or (nbytes",
        "if len(items) > self._limit or (nbytes",
        ("tests/test_table.py", "tests/test_e2e_flow.py"),
    ),
    Mutant(
        "drop_policies_swapped",
        "drop_new drops the oldest and drop_old the newest",
        "trackasync/_table.py",
        'if self.overflow == "drop_new":',
        'if self.overflow != "drop_new":',
        ("tests/test_table.py", "tests/test_e2e_flow.py"),
    ),
    Mutant(
        "drop_old_drops_newest_queued",
        "drop_old drops the newest queued command",
        "trackasync/_table.py",
        "oldest = items.popleft()",
        "oldest = items.pop()",
        ("tests/test_table.py", "tests/test_e2e_flow.py"),
    ),
    Mutant(
        "taken_bytes_not_subtracted",
        "the queue's byte count never shrinks",
        "trackasync/_table.py",
        "self.nbytes -= total",
        "self.nbytes -= 0",
        ("tests/test_table.py", "tests/test_client_delivery.py"),
    ),
    Mutant(
        "put_timeout_not_queue_full",
        "a wait for room that times out raises TimeoutError, not QueueFull",
        "trackasync/_table.py",
        "if isinstance(exc, asyncio.TimeoutError):",
        "if False:",
        ("tests/test_table.py", "tests/test_e2e_flow.py"),
    ),
    Mutant(
        "cancelled_woken_keeps_slot",
        "a woken producer cancelled before it runs keeps its slot from the next",
        "trackasync/_table.py",
        "self._woken_bytes -= size\n                self._wake_putters()",
        "self._woken_bytes -= size",
        ("tests/test_table.py",),
    ),
    Mutant(
        "close_leaves_waiters",
        "closing leaves producers waiting for room",
        "trackasync/_table.py",
        "for waiter, _ in putters:\n            if not waiter.done():",
        "for waiter, _ in ():\n            if not waiter.done():",
        ("tests/test_table.py", "tests/test_client_close.py"),
    ),
    Mutant(
        "close_forgets_in_flight",
        "closing settles only the queued commands, not those in flight",
        "trackasync/_table.py",
        "stranded = self.pending()",
        "stranded = list(self._items)",
        ("tests/test_table.py", "tests/test_client_close.py"),
    ),
    Mutant(
        "wake_ignores_reserved",
        "room freed is handed out twice (woken waiters not subtracted)",
        "trackasync/_table.py",
        "room = self.maxsize - len(self._items) - self._woken",
        "room = self.maxsize - len(self._items)",
        ("tests/test_table.py", PIPELINE),
    ),
    Mutant(
        "take_wakes_nobody",
        "taking a batch wakes no producer waiting for room",
        "trackasync/_table.py",
        "if self._putters:\n                self._wake_putters()",
        "if False:\n                self._wake_putters()",
        ("tests/test_table.py", PIPELINE),
    ),
    # -- the batcher's cut rules ------------------------------------------------------------
    Mutant(
        "linger_ignored",
        "commands leave at once whatever linger says",
        "trackasync/_batcher.py",
        "delay = min(oldest.created + self._linger - _time(), self._linger)",
        "delay = 0.0",
        ("tests/test_client_delivery.py", PIPELINE),
    ),
    Mutant(
        "full_batch_waits_for_linger",
        "a full batch waits for the linger",
        "trackasync/_batcher.py",
        "self._urgent > 0 or table.ready()):",
        "self._urgent > 0):",
        ("tests/test_client_delivery.py", PIPELINE),
    ),
    Mutant(
        "close_waits_for_linger",
        "closing waits for the linger instead of sending what is queued",
        "trackasync/_batcher.py",
        "if not (self._closing or",
        "if not (False or",
        ("tests/test_client_close.py", PIPELINE),
    ),
    Mutant(
        "urgent_never_spent",
        "once flushed, every later command is urgent too",
        "trackasync/_batcher.py",
        "self._urgent = max(0, self._urgent - len(batch))",
        "self._urgent = max(0, self._urgent)",
        (PIPELINE, "tests/test_client_delivery.py"),
    ),
    Mutant(
        "await_linger_ignored",
        "awaiting a command does not shorten its linger",
        "trackasync/_batcher.py",
        "if expedite_at is not None:\n            window",
        "if False:\n            window",
        ("tests/test_client_delivery.py", "tests/test_client_close.py"),
    ),
    Mutant(
        "batcher_never_stops",
        "the batcher does not end when closed with an empty queue",
        "trackasync/_batcher.py",
        "if self._closing:\n                return True",
        "if False:\n                return True",
        ("tests/test_client_close.py",),
    ),
    # -- the sender's retry and settle rules ----------------------------------------------
    Mutant(
        "one_attempt_too_many",
        "a command is tried once more than Retry.attempts",
        "trackasync/_sender.py",
        "if command.attempts >= policy.attempts:",
        "if command.attempts > policy.attempts:",
        ("tests/test_retry.py", "tests/test_e2e_retry.py"),
    ),
    Mutant(
        "retry_deadline_ignored",
        "the retry deadline (Retry.timeout) is ignored",
        "trackasync/_sender.py",
        "elif resume > max(command.created, started) + policy.timeout:",
        "elif False:",
        ("tests/test_retry.py", "tests/test_e2e_retry.py"),
    ),
    Mutant(
        "retry_after_uncapped",
        "Retry-After is obeyed beyond max_retry_after",
        "trackasync/_sender.py",
        "delay = min(retry_after, policy.max_retry_after)",
        "delay = retry_after",
        ("tests/test_retry_after_client.py", "tests/test_e2e_retry.py"),
    ),
    Mutant(
        "retry_resends_settled",
        "a retry resends the commands of the batch that were already settled",
        "trackasync/_sender.py",
        "if len(keep) != len(pending):",
        "if False:",
        ("tests/test_answer_outcomes.py", "tests/test_e2e_retry.py"),
    ),
    Mutant(
        "every_error_retried",
        "answers that must not be retried (400, 401) are retried",
        "trackasync/_sender.py",
        "if is_retryable(error):",
        "if True:",
        ("tests/test_answer_outcomes.py", "tests/test_e2e_retry.py"),
    ),
    Mutant(
        "missing_result_means_accepted",
        "a batch answer without a command's result counts it delivered",
        "trackasync/_sender.py",
        "if result is None:\n                retry.append(command)",
        "if result is None:\n                accepted.append(command)",
        ("tests/test_answer_outcomes.py", "tests/test_hostile_answers.py"),
    ),
    Mutant(
        "refused_command_accepted",
        "a command the batch answer refused counts delivered",
        "trackasync/_sender.py",
        "elif result.success is True:",
        "elif True:",
        ("tests/test_answer_outcomes.py", "tests/test_results.py"),
    ),
    Mutant(
        "limiter_never_recovers",
        "accepted requests do not bring the rate back up after a 429",
        "trackasync/_sender.py",
        "self._rate.accepted()",
        "pass",
        (PIPELINE,),
    ),
    Mutant(
        "single_route_never_used",
        "a lone command goes to /batch in mode 'auto'",
        "trackasync/_sender.py",
        'single = len(commands) == 1 and self._mode != "batch"',
        "single = False",
        ("tests/test_client_delivery.py", "tests/test_send.py"),
    ),
    # -- the ledger ---------------------------------------------------------------------------
    Mutant(
        "failure_not_counted",
        "a failed command is missing from stats().failed",
        "trackasync/_ledger.py",
        "self.counters.failed[reason] += 1",
        "pass",
        ("tests/test_client_close.py", "tests/test_delivery.py"),
    ),
    Mutant(
        "closed_not_reported",
        "commands that end 'closed' are missing from the close report",
        "trackasync/_ledger.py",
        "self.closed.append(delivery)",
        "pass",
        ("tests/test_client_close.py",),
    ),
    Mutant(
        "losses_not_logged",
        "drops, refusals and give-ups are not logged",
        "trackasync/_ledger.py",
        "elif reason in self._logs:",
        "elif False:",
        ("tests/test_client_lifecycle.py", "tests/test_e2e_flow.py"),
    ),
    Mutant(
        "hooks_for_first_accepted_only",
        "the hook is called for one command of each accepted batch",
        "trackasync/_ledger.py",
        "hooks.push_many(settled)",
        "hooks.push_many(settled[:1])",
        ("tests/test_client_delivery.py", PIPELINE),
    ),
    # -- fork ------------------------------------------------------------------------------
    Mutant(
        "fork_hook_failure_stops_others",
        "one failing after-fork hook stops the others",
        "trackasync/_fork.py",
        "        try:\n            obj._after_fork_in_child()\n        except Exception:",
        "        try:\n            obj._after_fork_in_child()\n        except ZeroDivisionError:",
        ("tests/test_fork_hook.py",),
    ),
    Mutant(
        "discarded_at_fork_not_counted",
        "the child does not count what it inherited and discarded",
        "trackasync/_client.py",
        "self._pipeline.counters.discarded_at_fork = discarded",
        "pass",
        ("tests/test_fork.py",),
    ),
    Mutant(
        "sync_child_reuses_inherited_client",
        "a forked SyncClient runs the parent's inner client again",
        "trackasync/_sync.py",
        "self._client = Client._from_options(self._client._options)",
        "pass",
        ("tests/test_sync_process.py",),
    ),
    # -- SyncClient's intake ---------------------------------------------------------------
    Mutant(
        "sync_intake_never_drops",
        "a SyncClient whose loop fell behind never drops at the call",
        "trackasync/_table.py",
        "elif len(self._inbox) >= self.maxsize:",
        "elif False:",
        ("tests/test_sync_client.py", SYNC),
    ),
    Mutant(
        "sync_slot_never_taken",
        "SyncClient's 'raise' and 'wait' never see the queue full",
        "trackasync/_table.py",
        ") or self._has_ticket(size):\n                    self._tickets -= 1\n",
        ") or self._has_ticket(size):\n",
        ("tests/test_sync_client.py", SYNC),
    ),
    # -- the command table's seam for a durable log ----------------------------------
    Mutant(
        "keeping_close_fails_closed",
        "a close that keeps fails the unsent commands 'closed' instead",
        "trackasync/_table.py",
        "if keep and self._persistent:",
        "if False:",
        ("tests/test_owner.py",),
    ),
    Mutant(
        "recovered_not_counted",
        "commands recovered from an earlier run are not counted",
        "trackasync/_table.py",
        "counters.recovered += len(commands)",
        "pass",
        ("tests/test_owner.py",),
    ),
    Mutant(
        "log_settled_per_command",
        "the log is told of outcomes command by command, not once per answer",
        "trackasync/_sender.py",
        "self._table.settle(outcome.delivered, outcome.receipt, outcome.failed)",
        "[self._table.settle((d,), outcome.receipt) for d in outcome.delivered]\n"
        "            self._table.settle(failed=outcome.failed)",
        ("tests/test_owner.py",),
    ),
    Mutant(
        "expedite_every_client",
        "awaiting one client's command expedites every client",
        "trackasync/_delivery.py",
        "ref = _awaited.get(self.owner)\n            expedite = None if ref is None else ref()\n"
        "            if expedite is not None:\n                expedite()",
        "for ref in list(_awaited.values()):\n                expedite = ref()\n"
        "                if expedite is not None:\n                    expedite()",
        ("tests/test_owner.py",),
    ),
    Mutant(
        "dead_thread_leaves_waiters",
        "producers blocked for room wait on after the loop's thread died",
        "trackasync/_table.py",
        "if self._broken is not None:\n                    raise self._broken",
        "if False:\n                    raise self._broken",
        ("tests/test_sync_edges.py",),
    ),
    Mutant(
        "sync_drops_skip_the_ledger",
        "commands dropped at the call are never counted, logged or hooked",
        "trackasync/_table.py",
        "assert isinstance(error, DeliveryFailed)\n                failed(delivery, error)",
        "assert isinstance(error, DeliveryFailed)",
        ("tests/test_owner.py", "tests/test_sync_client.py"),
    ),
    # -- the queue's bound in bytes (max_queue_bytes) ---------------------------------
    Mutant(
        "bytes_bound_ignored_at_offer",
        "the loop's intake fills the queue past max_queue_bytes",
        "trackasync/_table.py",
        "if len(items) >= self._limit or (nbytes > self._byte_limit and items):",
        "if len(items) >= self._limit:",
        (BYTES,),
    ),
    Mutant(
        "empty_queue_refuses_a_big_command",
        "a command bigger than the byte bound is refused even by an empty queue",
        "trackasync/_table.py",
        "if len(items) >= self._limit or (nbytes > self._byte_limit and items):",
        "if len(items) >= self._limit or nbytes > self._byte_limit:",
        (BYTES,),
    ),
    Mutant(
        "drop_old_drops_one_whatever_the_bytes",
        "drop_old drops one old command even when the new one needs more room",
        "trackasync/_table.py",
        "        while items and self._over(size):",
        "        if items and self._over(size):",
        (BYTES,),
    ),
    Mutant(
        "waiters_woken_whatever_their_bytes",
        "a waiter for room is let in though its bytes do not fit",
        "trackasync/_table.py",
        "if size > room_bytes and (self._items or self._woken):",
        "if False:",
        (BYTES,),
    ),
    Mutant(
        "thread_hand_over_ignores_bytes",
        "SyncClient's threads fill the queue past max_queue_bytes",
        "trackasync/_table.py",
        "self._tickets > 0 and size <= self._ticket_bytes",
        "self._tickets > 0",
        (BYTES,),
    ),
    # -- the proof that property values are sent as encoded (_values.sent_as_is) -----
    Mutant(
        "containers_not_checked",
        "the lists and objects of an event are proven without looking into them",
        "trackasync/_values.py",
        "        _convert((containers,), _Containers)\n",
        "        pass\n",
        (VALUES,),
    ),
    Mutant(
        "convert_refusal_trusted",
        "what convert refuses is proven anyway, without the exact check",
        "trackasync/_values.py",
        "        return _exact_proof(containers, AS_IS_DEPTH)",
        "        return True",
        (VALUES,),
    ),
    Mutant(
        "top_datetime_any_zone",
        "a property's datetime is proven whatever its time zone",
        "trackasync/_values.py",
        "            if value.tzinfo is not _UTC:\n                return False\n"
        "        else:\n            return False\n    if not containers:",
        "            pass\n        else:\n            return False\n    if not containers:",
        (VALUES,),
    ),
)


@dataclass
class Outcome:
    mutant: Mutant
    status: str  # "killed", "survived", "not found"
    seconds: float
    detail: str = ""


def scratch_copy() -> Path:
    """A fresh copy of the project, in a temporary directory."""
    where = Path(tempfile.mkdtemp(prefix="trackasync-mutant-"))
    tree = where / "tree"
    shutil.copytree(ROOT, tree, ignore=_IGNORE, symlinks=True)
    return tree


def run_tests(tree: Path, tests: tuple[str, ...], timeout: float) -> tuple[bool, str]:
    """Run ``tests`` against ``tree``; True when they all pass."""
    env = dict(os.environ)
    # The copy comes first on the path, before the editable install's entry.
    env["PYTHONPATH"] = os.pathsep.join(
        [str(tree), *filter(None, [env.get("PYTHONPATH")])]
    )
    env.pop("COVERAGE_PROCESS_START", None)
    command = [
        sys.executable,
        "-m",
        "pytest",
        "-x",
        "-q",
        "-p",
        "no:cacheprovider",
        "-p",
        "no:randomly",
        "--timeout",
        "60",
        *tests,
    ]
    try:
        done = subprocess.run(
            command,
            cwd=tree,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return False, f"timed out after {timeout:g} s"
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    return done.returncode == 0, lines[-1] if lines else done.stderr[-200:]


def apply(tree: Path, mutant: Mutant) -> bool:
    path = tree / mutant.file
    text = path.read_text()
    if text.count(mutant.original) != 1:
        return False
    path.write_text(text.replace(mutant.original, mutant.replacement))
    return True


def try_mutant(mutant: Mutant, timeout: float) -> Outcome:
    started = time.monotonic()
    tree = scratch_copy()
    try:
        if not apply(tree, mutant):
            return Outcome(mutant, "not found", 0.0, "snippet not found exactly once")
        passed, last = run_tests(tree, mutant.tests, timeout)
    finally:
        shutil.rmtree(tree.parent, ignore_errors=True)
    status = "survived" if passed else "killed"
    return Outcome(mutant, status, time.monotonic() - started, last)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="+", metavar="NAME", help="run these mutants")
    parser.add_argument("--list", action="store_true", help="list the mutants")
    parser.add_argument("--jobs", type=int, default=1, help="mutants run at once")
    parser.add_argument(
        "--timeout", type=float, default=300.0, help="seconds per mutant's test run"
    )
    parser.add_argument(
        "--no-baseline", action="store_true", help="skip the unmutated run"
    )
    parser.add_argument(
        "--tests",
        nargs="+",
        metavar="TEST",
        help="run these tests (files or node ids) instead of each mutant's own",
    )
    args = parser.parse_args(argv)
    mutants = list(MUTANTS)
    if args.tests:
        mutants = [replace(m, tests=tuple(args.tests)) for m in MUTANTS]
    if args.only:
        unknown = set(args.only) - {m.name for m in mutants}
        if unknown:
            parser.error(f"unknown mutants: {', '.join(sorted(unknown))}")
        mutants = [m for m in mutants if m.name in args.only]
    if args.list:
        for m in mutants:
            print(f"{m.name:36} {m.file:26} {' '.join(m.tests)}\n    {m.means}")
        return 0
    tests = tuple(sorted({t for m in mutants for t in m.tests}))
    if not args.no_baseline:
        tree = scratch_copy()
        try:
            passed, last = run_tests(tree, tests, args.timeout * 4)
        finally:
            shutil.rmtree(tree.parent, ignore_errors=True)
        if not passed:
            print(f"the unmutated tests fail ({last}); no score", file=sys.stderr)
            return 2
        print(f"baseline: {len(tests)} test files pass unmutated ({last})")
    started = time.monotonic()
    outcomes: list[Outcome] = []
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        for outcome in pool.map(lambda m: try_mutant(m, args.timeout), mutants):
            outcomes.append(outcome)
            print(
                f"{outcome.status:9} {outcome.mutant.name:36} "
                f"{outcome.seconds:6.1f} s  {outcome.detail}",
                flush=True,
            )
    killed = [o for o in outcomes if o.status == "killed"]
    survived = [o for o in outcomes if o.status == "survived"]
    missing = [o for o in outcomes if o.status == "not found"]
    print(
        f"\nscore: {len(killed)}/{len(outcomes)} killed "
        f"in {time.monotonic() - started:.0f} s"
    )
    for o in survived:
        print(f"  survived: {o.mutant.name}: {o.mutant.means}")
    for o in missing:
        print(f"  not found (re-point it): {o.mutant.name} in {o.mutant.file}")
    return 1 if survived or missing else 0


if __name__ == "__main__":
    sys.exit(main())
