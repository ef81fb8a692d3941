"""``trackasync send`` never destroys nor doubles a line: stops, damage, bad options."""

from __future__ import annotations

import gzip
import io
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from trackasync import ConfigError
from trackasync._cli.send import send

from ._fake_thread import ThreadedFake, threaded_fake
from .test_send import EVENT, lines, read_rejects, run


@pytest.fixture
def fake() -> Iterator[ThreadedFake]:
    with threaded_fake() as server:
        yield server


def environ(fake: ThreadedFake, **extra: str) -> dict[str, str]:
    api = fake.api
    return {
        "TRACKASYNC_BASE_URL": api.base_url,
        "TRACKASYNC_PROJECT_TOKEN": api.project_token,
        "TRACKASYNC_KEY_ID": api.key_id,
        "TRACKASYNC_SECRET": api.secret,
        "TRACKASYNC_LINGER": "0.01",
        **extra,
    }


@pytest.fixture
def env(fake: ThreadedFake, monkeypatch: pytest.MonkeyPatch) -> ThreadedFake:
    for name, value in environ(fake).items():
        monkeypatch.setenv(name, value)
    return fake


def numbered(count: int) -> bytes:
    """``count`` distinct events without a timestamp (the client would stamp them)."""
    return lines(*[{**EVENT, "properties": {"n": n}} for n in range(count)])


def stored_numbers(fake: ThreadedFake) -> Counter[int]:
    return Counter(e.properties["n"] for e in fake.events())


def cli(*args: str, env: dict[str, str], **popen: Any) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "trackasync", "send", *args],
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **popen,
    )


class _Unreadable(io.RawIOBase):
    """An input that fails the test if anything reads it."""

    def readable(self) -> bool:
        return True

    def readline(self, size: int | None = -1) -> bytes:
        raise AssertionError("the input was read")


# -- the rejects file never destroys the input ------------------------------------------


@pytest.mark.parametrize("how", ["same", "symlink", "hardlink"])
def test_a_rejects_file_that_is_the_input_is_refused(
    env: ThreadedFake, tmp_path: Path, how: str
) -> None:
    """--rejected naming the input (by any link) is refused, the input untouched."""
    source = tmp_path / "in.jsonl"
    content = numbered(20)
    source.write_bytes(content)
    target = tmp_path / "out.jsonl"
    if how == "same":
        target = source
    elif how == "symlink":
        target.symlink_to(source)
    else:
        os.link(source, target)
    status, _, err = run([str(source), "--rejected", str(target)])
    assert status == 2
    assert "is the input file" in err
    assert source.read_bytes() == content
    assert env.event_count == 0


def test_a_rejects_file_that_is_standard_input_is_refused(
    env: ThreadedFake, tmp_path: Path
) -> None:
    """``send - --rejected F < F`` is refused too, and F is kept."""
    source = tmp_path / "in.jsonl"
    content = numbered(5)
    source.write_bytes(content)
    with source.open("rb") as stdin:
        status = send(
            ["-", "--rejected", str(source)],
            stdin=stdin,
            stdout=io.StringIO(),
            stderr=io.StringIO(),
        )
    assert status == 2
    assert source.read_bytes() == content


# -- a stopped run resumes without a loss or a double ---------------------------------------


# Three runs of the command line, each in its own interpreter: slow under a
# coverage run on a loaded machine.
@pytest.mark.timeout(240)
def test_an_interrupted_run_resumes_with_every_event_stored_once(
    fake: ThreadedFake, tmp_path: Path
) -> None:
    """Ctrl-C, then the rejects file and --from-line: every line stored exactly once.

    Answers are slow and the close budget short, so lines are stored by the
    server after the client gave up on them: resending those must not double them.
    """
    count = 3000
    source = tmp_path / "in.jsonl"
    source.write_bytes(numbered(count))
    rejected = tmp_path / "rejected.jsonl"
    fake.call(lambda: setattr(fake.api, "response_delay", 0.5))
    # A short queue: the reader is mid-file when the interrupt comes.
    env = environ(fake, TRACKASYNC_MAX_QUEUE="200")
    proc = cli(str(source), "--rejected", str(rejected), "--timeout", "0.3", env=env)
    deadline = time.monotonic() + 60
    while fake.event_count < 150 and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=90)
    assert proc.returncode == 130, out + err
    assert out.startswith("stopped: interrupted"), out
    assert "Traceback" not in err
    [resume] = re.findall(r"--from-line (\d+)", out)
    assert 1 < int(resume) < count
    # The last progress line tells how far into the input it got, not 100%.
    last = err.strip().splitlines()[-1]
    assert "of the input" in last
    assert "100%" not in last
    first_stored = stored_numbers(fake)
    assert 0 < sum(first_stored.values()) < count

    fake.call(lambda: setattr(fake.api, "response_delay", 0.0))
    again = cli(str(rejected), "--quiet", env=env)
    out2, err2 = again.communicate(timeout=90)
    assert again.returncode == 0, out2 + err2
    rest = cli(str(source), "--from-line", resume, "--quiet", env=env)
    out3, err3 = rest.communicate(timeout=120)
    assert rest.returncode == 0, out3 + err3

    stored = stored_numbers(fake)
    assert sorted(stored) == list(range(count))
    assert max(stored.values()) == 1


def test_a_second_interrupt_during_the_close_still_prints_the_summary(
    fake: ThreadedFake, tmp_path: Path
) -> None:
    """Ctrl-C twice: no waiting for the last answers, every line still accounted for."""
    source = tmp_path / "in.jsonl"
    source.write_bytes(numbered(400))
    rejected = tmp_path / "rejected.jsonl"
    fake.call(lambda: fake.api.delay_next(1000, 30.0, route="batch"))
    proc = cli(str(source), "--rejected", str(rejected), "--quiet", env=environ(fake))
    deadline = time.monotonic() + 60
    while fake.call(lambda: fake.api.pending_faults) == 1000:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    time.sleep(1.0)  # into the 60 s close
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, out + err
    assert "Traceback" not in err
    assert out.startswith("stopped: interrupted")
    reported = read_rejects(rejected)
    assert reported, out
    # Each line read is either delivered or in the rejects file, once.
    numbers = [r["line"] for r in reported]
    assert len(numbers) == len(set(numbers))
    summary = out.splitlines()[1]
    assert f"{len(numbers)} not delivered" in summary.replace(",", "")


# -- refused credentials, an unreachable API ------------------------------------------------


def test_refused_credentials_stop_the_run_and_say_so_first(
    env: ThreadedFake, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 403 with no success after it stops the run: exit 3, the reason first."""
    monkeypatch.setenv("TRACKASYNC_SECRET", "wrong")
    monkeypatch.setenv("TRACKASYNC_MAX_QUEUE", "100")
    source = tmp_path / "in.jsonl"
    source.write_bytes(lines({"customer_ids": {}, "event_type": "x"}) + numbered(5000))
    status, out, _ = run([str(source), "--quiet", "--rejected", str(tmp_path / "r")])
    assert status == 3
    assert out.startswith("stopped: the API refused the credentials"), out
    assert "--from-line" in out
    # It stopped early: far fewer requests than the 100 batches of the file.
    assert len(env.call(lambda: env.api.requests)) < 40
    assert env.event_count == 0


def test_an_unreachable_api_is_said_within_seconds(tmp_path: Path) -> None:
    """Connection refused: a clear message and exit 2 long before the retry deadline."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    source = tmp_path / "in.jsonl"
    source.write_bytes(numbered(10))
    env = {
        "TRACKASYNC_BASE_URL": f"http://127.0.0.1:{port}",
        "TRACKASYNC_PROJECT_TOKEN": "p",
        "TRACKASYNC_KEY_ID": "k",
        "TRACKASYNC_SECRET": "s",
    }
    started = time.monotonic()
    proc = cli(str(source), env=env)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 2, out + err
    assert "cannot reach the API" in err
    assert "Traceback" not in err
    # Generous for a loaded machine; the retry deadline it replaces is a minute.
    assert time.monotonic() - started < 25


# -- input that is damaged, huge or odd ------------------------------------------------------


def test_a_line_over_the_command_limit_is_rejected_without_being_held(
    tmp_path: Path,
) -> None:
    """A 150 MB line (gzip-compressed to almost nothing) costs no memory to reject."""

    def peak_rss(path: Path) -> tuple[int, str]:
        proc = subprocess.Popen(
            [sys.executable, "-m", "trackasync", "send", str(path), "--dry-run"],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert proc.stdout is not None
        with proc.stdout:
            out = proc.stdout.read()
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        return usage.ru_maxrss, out  # kilobytes on Linux

    small = tmp_path / "small.jsonl.gz"
    with gzip.open(small, "wb") as f:
        f.write(numbered(2))
    bomb = tmp_path / "bomb.jsonl.gz"
    with gzip.open(bomb, "wb", compresslevel=1) as f:
        f.write(numbered(1))
        chunk = b"a" * (1 << 20)
        for _ in range(150):
            f.write(chunk)
        f.write(b"\n" + numbered(1))
    baseline, _ = peak_rss(small)
    peak, out = peak_rss(bomb)
    assert "1 rejected" in out, out
    assert "line 2: too_long" in out
    assert "2 valid" in out
    assert peak - baseline < 40 * 1024, (baseline, peak)


@pytest.mark.parametrize("damage", ["truncated", "bad_crc"])
def test_a_damaged_gzip_input_ends_with_a_message_and_a_summary(
    env: ThreadedFake, tmp_path: Path, damage: str
) -> None:
    """What was read is sent, the damage is named, and the exit status is 3."""
    data = gzip.compress(numbered(5000))
    if damage == "truncated":
        data = data[: len(data) // 2]
    else:
        data = data[:-8] + bytes(b ^ 0xFF for b in data[-8:-4]) + data[-4:]
    path = tmp_path / "in.jsonl.gz"
    path.write_bytes(data)
    status, out, err = run([str(path), "--quiet"])
    assert status == 3, out + err
    assert out.startswith("stopped: ")
    assert ("truncated" if damage == "truncated" else "damaged") in out
    delivered = env.event_count
    assert delivered > 0
    assert f"{delivered:,} delivered" in out


@pytest.mark.parametrize(
    "option",
    [
        ["--timeout", "nan"],
        ["--timeout", "-1"],
        ["--timeout", "0"],
        ["--max-in-flight", "0"],
        ["--rate-limit", "-2"],
        ["--rate-budget", "bogus://x"],
    ],
)
def test_bad_options_are_refused_before_the_first_line_is_read(
    env: ThreadedFake, option: list[str]
) -> None:
    """Nothing is read nor sent when an option is wrong: exit status 2 either way.

    argparse refuses what it can check alone; the client's own settings (the
    rate budget's URL) are refused when it is built, still before any reading.
    """
    try:
        status = send(
            ["-", *option],
            stdin=_Unreadable(),
            stdout=io.StringIO(),
            stderr=io.StringIO(),
        )
    except SystemExit as exc:
        status = exc.code  # type: ignore[assignment]
    assert status == 2
    assert env.call(lambda: env.api.requests) == []


def test_a_closed_standard_input_is_a_clear_error(
    env: ThreadedFake, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``send -`` with no stdin at all says so instead of a traceback."""
    monkeypatch.setattr(sys, "stdin", None)
    err = io.StringIO()
    assert send(["-"], stdout=io.StringIO(), stderr=err) == 2
    assert "standard input is closed" in err.getvalue()


def test_the_rejects_file_is_sent_again_as_it_is(
    env: ThreadedFake, tmp_path: Path
) -> None:
    """Rejected lines keep their text, and send reads the file back as input."""
    env.call(
        lambda: env.api.reject_commands(lambda _n, data: data.get("event_type") == "no")
    )
    original = b'{"customer_ids": {"registered": "a"},  "event_type": "no"}'
    rejected = tmp_path / "rejected.jsonl"
    status, out, _ = run(
        ["-", "--rejected", str(rejected)],
        stdin=b"\n" + original + b"\n\n" + lines(EVENT) + b"# a note\n",
    )
    assert status == 1
    assert "2 blank lines skipped" in out
    assert "1 comment line skipped" in out
    text = rejected.read_bytes()
    assert text.startswith(b"# line 2: rejected: ")
    [record] = read_rejects(rejected)
    # The client stamped nothing on it: the line keeps its timestamp from send.
    data = record["data"]
    assert (
        data.startswith('{"customer_ids":{"registered":"a"}')
        or data == original.decode()
    )
    env.call(lambda: env.api.clear_faults())
    status, out, _ = run([str(rejected)])
    assert status == 0, out
    assert "1 commands: 1 delivered" in out


def test_rate_and_concurrency_flags_reach_the_client() -> None:
    """--rate-limit, --max-in-flight and --rate-budget become client options."""
    from trackasync._cli.send_options import (
        client_options as _options,
        parser as _parser,
    )

    env = {
        "TRACKASYNC_BASE_URL": "https://api.example",
        "TRACKASYNC_PROJECT_TOKEN": "p",
        "TRACKASYNC_PUBLIC_TOKEN": "t",
    }
    with pytest.MonkeyPatch.context() as mp:
        for name, value in env.items():
            mp.setenv(name, value)
        mp.setenv("TRACKASYNC_RATE_LIMIT", "50")
        budget = "redis://127.0.0.1:1/0"
        args = _parser().parse_args(
            [
                "-",
                "--rate-limit",
                "off",
                "--max-in-flight",
                "3",
                "--rate-budget",
                budget,
            ]
        )
        options = _options(args)
        assert options["rate_limit"] is None
        assert options["max_in_flight"] == 3
        assert options["rate_budget"] == budget
        options = _options(_parser().parse_args(["-", "--rate-limit", "2.5"]))
        assert options["rate_limit"] == 2.5
        assert "proxy" not in options
        assert "trust_env" not in options
        # A budget that is no keyword, URL or path is refused before any line.
        with pytest.raises(ConfigError, match="--rate-budget"):
            _options(_parser().parse_args(["-", "--rate-budget", "banana"]))


def test_network_flags_reach_the_client(tmp_path: Path) -> None:
    """--proxy, --no-trust-env and --tls become client options."""
    from trackasync._cli.send_options import (
        client_options as _options,
        parser as _parser,
    )

    bundle = tmp_path / "ca.pem"
    bundle.write_text("")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TRACKASYNC_BASE_URL", "https://api.example")
        mp.setenv("TRACKASYNC_PROJECT_TOKEN", "p")
        mp.setenv("TRACKASYNC_PUBLIC_TOKEN", "t")
        args = _parser().parse_args(
            [
                "-",
                "--proxy",
                "http://127.0.0.1:3128",
                "--no-trust-env",
                "--tls",
                str(bundle),
            ]
        )
        options = _options(args)
    assert options["proxy"] == "http://127.0.0.1:3128"
    assert options["trust_env"] is False
    assert options["tls"] == str(bundle)


class _Ahead(io.RawIOBase):
    """Long lines, noting how many were read ahead of what the server stored."""

    def __init__(self, fake: ThreadedFake, count: int) -> None:
        self.fake = fake
        self.ahead = 0
        big = {f"p{i}": "x" * 15_000 for i in range(6)}  # ~90 KB a line
        self._lines = iter(
            lines(
                *[{**EVENT, "properties": {**big, "n": n}} for n in range(count)]
            ).splitlines(keepends=True)
        )
        self._read = 0

    def readable(self) -> bool:
        return True

    def readline(self, size: int | None = -1) -> bytes:
        line = next(self._lines, b"")
        if line:
            self._read += 1
            self.ahead = max(self.ahead, self._read - self.fake.event_count)
        return line


def test_long_lines_are_held_back_by_bytes_not_only_by_the_queue(
    env: ThreadedFake, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The reader waits while the lines without an outcome are over the byte budget."""
    from trackasync._cli import send as send_module

    monkeypatch.setattr(send_module, "PENDING_BYTES", 300_000)
    env.call(lambda: setattr(env.api, "response_delay", 0.05))
    source = _Ahead(env, 30)
    out = io.StringIO()
    assert send(["-", "--quiet"], stdin=source, stdout=out) == 0, out.getvalue()  # type: ignore[arg-type]
    assert env.event_count == 30
    # 300 KB holds three 90 KB lines; the fourth waits (plus one being read).
    assert 0 < source.ahead <= 5


def test_a_silent_api_is_reported_within_seconds(
    env: ThreadedFake, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Connections dropped mid-run: a warning while the client retries quietly."""
    from trackasync._cli import send as send_module

    monkeypatch.setattr(send_module, "SILENCE", 0.5)
    env.call(lambda: env.api.drop_next(1000, route="batch"))
    out, err = io.StringIO(), io.StringIO()
    status = send(
        ["-", "--timeout", "2", "--quiet"],
        stdin=io.BufferedReader(io.BytesIO(numbered(3))),
        stdout=out,
        stderr=err,
    )
    assert status == 1
    assert "warning: no answer from the API for" in err.getvalue(), err.getvalue()
    assert "3 not delivered" in out.getvalue()
