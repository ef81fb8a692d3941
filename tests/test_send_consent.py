"""``trackasync send``: consent lines are checked and stamped like consent()."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from ._fake_thread import ThreadedFake, threaded_fake
from .test_send import lines, read_rejects, run

IDS = {"registered": "ann@example.com"}


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
        "TRACKASYNC_LINGER": "0.05",
    }.items():
        monkeypatch.setenv(name, value)
    return fake


def consent(**properties: object) -> dict[str, object]:
    return {"customer_ids": IDS, "event_type": "consent", "properties": properties}


def test_consent_lines_are_checked_and_ordered(
    env: ThreadedFake, tmp_path: Path
) -> None:
    """A bad consent line is rejected as invalid, naming its field; an accept
    and a reject with the same timestamp are stamped apart, the reject last."""
    rejected = tmp_path / "rejected.jsonl"
    status, out, _ = run(
        ["-", "--rejected", str(rejected)],
        stdin=lines(
            consent(action="accept", category="news", valid_until="unlimited")
            | {"timestamp": 1_700_000_000},
            consent(action="reject", category="news") | {"timestamp": 1_700_000_000},
            consent(action="Accept", category="news", valid_until="unlimited"),
            consent(action="accept", category="news"),  # no valid_until
            {"customer_ids": IDS, "event_type": "consent"},  # no properties
        ),
    )
    assert status == 1, out
    by_line = {r["line"]: (r["reason"], r["error"]) for r in read_rejects(rejected)}
    assert set(by_line) == {3, 4, 5}
    assert by_line[3][0] == "invalid"
    assert "action" in by_line[3][1]
    assert by_line[4][0] == "invalid"
    assert "valid_until" in by_line[4][1]
    assert by_line[5][0] == "malformed"
    consents = env.call(lambda: env.api.consents)
    assert [c.action for c in consents] == ["accept", "reject"]
    assert consents[1].timestamp > consents[0].timestamp
    in_force = env.call(lambda: env.api.consent_in_force(IDS, "news"))
    assert in_force is not None
    assert in_force.action == "reject"


def test_dry_run_checks_consent_lines(env: ThreadedFake) -> None:
    """--dry-run applies the same checks and counts a consent as an event."""
    status, out, _ = run(
        ["-", "--dry-run"],
        stdin=lines(
            consent(action="reject", category="sms", message="unsubscribed"),
            consent(action="accept", category="sms", valid_until=-1),
        ),
    )
    assert status == 1
    assert "1 valid (1 events" in out
    assert "line 2: invalid" in out
