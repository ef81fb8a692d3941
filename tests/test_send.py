"""``trackasync send``: a JSON Lines file through the client, against the fake API."""

from __future__ import annotations

import gzip
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from trackasync._cli import main as cli
from trackasync._cli.send import send

from ._fake_thread import ThreadedFake, threaded_fake

EVENT = {"customer_ids": {"registered": "a"}, "event_type": "purchase"}


@pytest.fixture
def fake() -> Iterator[ThreadedFake]:
    with threaded_fake() as server:
        yield server


@pytest.fixture
def env(fake: ThreadedFake, monkeypatch: pytest.MonkeyPatch) -> ThreadedFake:
    api = fake.api
    for name, value in {
        "TRACKASYNC_BASE_URL": api.base_url,
        "TRACKASYNC_PROJECT_TOKEN": api.project_token,
        "TRACKASYNC_KEY_ID": api.key_id,
        "TRACKASYNC_SECRET": api.secret,
        "TRACKASYNC_LINGER": "0.01",
    }.items():
        monkeypatch.setenv(name, value)
    return fake


def lines(*records: Any) -> bytes:
    return b"".join(
        (r if isinstance(r, bytes) else json.dumps(r).encode()) + b"\n" for r in records
    )


def run(argv: list[str], stdin: bytes = b"", tty: bool = False) -> tuple[int, str, str]:
    out = io.StringIO()
    err = _TTY() if tty else io.StringIO()
    status = send(
        argv, stdin=io.BufferedReader(io.BytesIO(stdin)), stdout=out, stderr=err
    )
    return status, out.getvalue(), err.getvalue()


def read_rejects(path: Path) -> list[dict[str, Any]]:
    """The rejects file as records: each comment line with the line after it."""
    records: list[dict[str, Any]] = []
    for text in path.read_text().splitlines():
        if text.startswith("# line "):
            number, reason, error = text[len("# line ") :].split(": ", 2)
            records.append({"line": int(number), "reason": reason, "error": error})
        else:
            records[-1]["data"] = text
    return records


class _TTY(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_sends_events_and_customer_updates(env: ThreadedFake, tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_bytes(
        lines(
            {**EVENT, "properties": {"price": 3}, "timestamp": 1_700_000_000.5},
            b"",
            {"customer_ids": {"registered": "a"}, "properties": {"tier": "gold"}},
            {**EVENT, "event_type": "view"},
        )
    )
    status, out, err = run([str(path)])
    assert status == 0, out + err
    assert "3 commands: 3 delivered, 0 not delivered" in out
    events = env.events()
    assert sorted(e.event_type for e in events) == ["purchase", "view"]
    assert any(e.timestamp == 1_700_000_000.5 for e in events)
    assert env.call(lambda: env.api.customer({"registered": "a"})) == {"tier": "gold"}
    assert "Traceback" not in err


def test_reads_gzip_and_stdin(env: ThreadedFake, tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl.gz"
    path.write_bytes(gzip.compress(lines(EVENT, EVENT | {"event_type": "b"})))
    assert run([str(path)])[0] == 0
    assert run(["-"], stdin=lines(EVENT | {"event_type": "c"}))[0] == 0
    # gzip on stdin is recognised by its magic bytes.
    assert run(["-"], stdin=gzip.compress(lines(EVENT | {"event_type": "d"})))[0] == 0
    assert sorted(e.event_type for e in env.events()) == ["b", "c", "d", "purchase"]


def test_bad_lines_are_reported_and_the_rest_is_sent(
    env: ThreadedFake, tmp_path: Path
) -> None:
    env.call(
        lambda: env.api.reject_commands(
            lambda _name, data: data.get("event_type") == "refused"
        )
    )
    rejected = tmp_path / "rejected.jsonl"
    status, out, _ = run(
        ["-", "--rejected", str(rejected)],
        stdin=lines(
            EVENT,
            b"{not json",
            {"customer_ids": {}, "event_type": "x"},  # invalid: no ids
            [1, 2],
            {**EVENT, "colour": "red"},
            {**EVENT, "event_type": "refused"},
            {"customer_ids": {"registered": "a"}},  # update without properties
            EVENT | {"event_type": "last"},
        ),
    )
    assert status == 1
    records = read_rejects(rejected)
    by_line = {r["line"]: r["reason"] for r in records}
    assert by_line == {
        2: "malformed",
        3: "invalid",
        4: "malformed",
        5: "malformed",
        6: "rejected",
        7: "malformed",
    }
    assert records[0]["data"] == "{not json"
    assert "colour" in next(r["error"] for r in records if r["line"] == 5)
    assert "8 commands: 2 delivered, 6 not delivered" in out
    assert sorted(e.event_type for e in env.events()) == ["last", "purchase"]


def test_undelivered_lines_are_written_with_reason_closed(
    env: ThreadedFake, tmp_path: Path
) -> None:
    env.call(lambda: setattr(env.api, "response_delay", 3.0))
    rejected = tmp_path / "rejected.jsonl"
    status, out, _ = run(
        ["-", "--rejected", str(rejected), "--timeout", "0.2"], stdin=lines(EVENT)
    )
    assert status == 1
    assert "1 commands: 0 delivered, 1 not delivered" in out
    [record] = read_rejects(rejected)
    assert (record["line"], record["reason"]) == (1, "closed")


def test_dry_run_sends_nothing(env: ThreadedFake, tmp_path: Path) -> None:
    status, out, _ = run(
        ["-", "--dry-run"],
        stdin=lines(EVENT, {"customer_ids": {"r": "a"}, "properties": {"a": 1}}),
    )
    assert status == 0
    assert "2 valid (1 events, 1 customer updates" in out
    assert "nothing was sent" in out
    status, out, _ = run(["-", "--dry-run"], stdin=lines(EVENT, b"oops"))
    assert status == 1
    assert "line 2: malformed" in out
    assert env.call(lambda: len(env.api.requests)) == 0


def test_dry_run_needs_no_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("TRACKASYNC_BASE_URL", "TRACKASYNC_KEY_ID", "TRACKASYNC_SECRET"):
        monkeypatch.delenv(name, raising=False)
    status, out, _ = run(["-", "--dry-run"], stdin=lines(EVENT))
    assert (status, "1 valid" in out) == (0, True)


def test_missing_credentials_name_the_variable(
    fake: ThreadedFake, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TRACKASYNC_BASE_URL", fake.base_url)
    monkeypatch.setenv("TRACKASYNC_PROJECT_TOKEN", fake.api.project_token)
    monkeypatch.setenv("TRACKASYNC_KEY_ID", "kid")
    monkeypatch.delenv("TRACKASYNC_SECRET", raising=False)
    monkeypatch.delenv("TRACKASYNC_PUBLIC_TOKEN", raising=False)
    status, _, err = run(["-"], stdin=lines(EVENT))
    assert status == 2
    assert "TRACKASYNC_SECRET" in err


def test_credentials_from_options(
    fake: ThreadedFake, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("TRACKASYNC_BASE_URL", "TRACKASYNC_KEY_ID", "TRACKASYNC_SECRET"):
        monkeypatch.delenv(name, raising=False)
    api = fake.api
    status, _, err = run(
        [
            "-",
            "--base-url",
            api.base_url,
            "--project-token",
            api.project_token,
            "--public-token",
            api.public_token,
        ],
        stdin=lines(EVENT),
    )
    assert status == 0, err
    assert fake.event_count == 1
    status, _, err = run(["-", "--public-token", "x", "--key-id", "k"], stdin=b"")
    assert status == 2
    assert "not both" in err


def test_unwritable_rejected_file_is_a_clear_error(
    env: ThreadedFake, tmp_path: Path
) -> None:
    target = tmp_path / "missing" / "rejected.jsonl"
    status, _, err = run(["-", "--rejected", str(target)], stdin=lines(EVENT))
    assert status == 2
    assert "cannot write" in err
    assert "Traceback" not in err
    assert env.event_count == 0


def test_bulk_warning_above_the_threshold(env: ThreadedFake) -> None:
    status, _, err = run(
        ["-", "--bulk-threshold", "2"],
        stdin=lines(*[{**EVENT, "properties": {"i": i}} for i in range(3)]),
    )
    assert status == 0
    assert err.count("more than 2 lines") == 1


def test_progress_on_a_terminal_and_in_a_log(env: ThreadedFake, tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_bytes(lines(*[{**EVENT, "properties": {"i": i}} for i in range(20)]))
    status, _, err = run([str(path)], tty=True)
    assert status == 0
    assert "\r\x1b[K" in err
    assert "20 delivered" in err
    assert "100% of the input" in err
    status, _, err = run([str(path)])
    assert "\r" not in err
    assert err.startswith("trackasync send: ")
    _, _, err = run([str(path), "--quiet"])
    assert err == ""


class _CountingInput:
    """Yields lines one at a time, noting how far ahead of the server it is."""

    def __init__(self, fake: ThreadedFake, count: int) -> None:
        self.fake = fake
        self.count = count
        self.ahead = 0

        self._lines = self._generate()

    def _generate(self) -> Iterator[bytes]:
        for i in range(self.count):
            if i % 25 == 0:
                self.ahead = max(self.ahead, i - self.fake.event_count)
            yield json.dumps({**EVENT, "properties": {"i": i}}).encode() + b"\n"

    def readline(self, size: int = -1) -> bytes:
        return next(self._lines, b"")


def test_memory_is_bounded_by_the_queue(
    env: ThreadedFake, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TRACKASYNC_MAX_QUEUE", "40")
    env.call(lambda: setattr(env.api, "response_delay", 0.02))
    source = _CountingInput(env, 600)
    out_buffer = io.StringIO()
    status = send(["-", "--quiet"], stdin=source, stdout=out_buffer)  # type: ignore[arg-type]
    assert status == 0, out_buffer.getvalue()
    assert env.event_count == 600
    # The reader never ran further ahead of the server than the queue plus what
    # the requests under way can carry (max_in_flight 4 x 50 commands).
    assert 0 < source.ahead <= 40 + 4 * 50 + 1


def test_cli_dispatches_send(env: ThreadedFake, tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_bytes(lines(EVENT))
    assert cli(["send", str(path), "--quiet"]) == 0
    assert env.event_count == 1
