"""The all-success recogniser of batch answers: it may say "yes" only where the
full parse would accept every command, and must fall back on any doubt.

Each crafted answer is checked against the full parse (``batch_answer`` and
``match_results``), which stays the reference: a false "all succeeded" would
lose data.
"""

from __future__ import annotations

import json
import random

import pytest

from trackasync import Response
from trackasync._results import batch_all_accepted, batch_answer, match_results
from trackasync.testing import FakeTrackingAPI

from .test_e2e import IDS, client_for, flagged
from .test_e2e_results import TapTransport

TIMES = '"start_time":1722458972.7475243,"end_time":1722458972.7502902'


def ok(index: int) -> str:
    return f'{{"success":true,"command_id":"{index}"}}'


def answer(results: list[str], *, success: str = "true", sep: str = ",") -> bytes:
    return f'{{"results":[{sep.join(results)}],{TIMES},"success":{success}}}'.encode()


def all_ok(count: int) -> list[str]:
    return [ok(i) for i in range(count)]


def full_parse_accepts_all(body: bytes, count: int) -> bool:
    """What the sender's full path concludes: every command accepted?"""
    parsed = batch_answer(Response(200, body))
    if parsed is None or parsed.results is None:
        return False
    matched = match_results(parsed.results, count)
    return all(result is not None and result.success is True for result in matched)


def check(body: bytes, count: int) -> bool:
    """The recogniser's verdict, after checking it never contradicts the full parse."""
    verdict = batch_all_accepted(body, count)
    if verdict:
        assert full_parse_accepts_all(body, count), body
    return verdict


@pytest.mark.parametrize("count", [1, 2, 9, 10, 11, 49, 50])
def test_the_compact_all_success_answer_is_recognised(count: int) -> None:
    assert check(answer(all_ok(count)), count)


@pytest.mark.parametrize("count", [1, 10, 50])
def test_the_common_spellings_are_recognised(count: int) -> None:
    spaced = [f'{{"success": true, "command_id": "{i}"}}' for i in range(count)]
    swapped = [f'{{"command_id":"{i}","success":true}}' for i in range(count)]
    results = [{"success": True, "command_id": str(i)} for i in range(count)]
    dumped = json.dumps(
        {"results": results, "start_time": 1.5, "end_time": 2.5, "success": True}
    ).encode()
    assert check(answer(spaced, sep=", "), count)
    assert check(answer(swapped), count)
    assert check(dumped, count)
    # Key order of the envelope does not matter.
    assert check(b'{"success":true,"results":[%s]}' % ",".join(swapped).encode(), count)


@pytest.mark.parametrize("count", [1, 2, 50])
def test_one_failure_at_any_position_is_never_taken_for_success(count: int) -> None:
    failure = '{"success":false,"command_id":"%d","errors":["Not authorized"]}'
    for position in range(count):
        results = all_ok(count)
        results[position] = failure % position
        body = answer(results)
        assert not check(body, count)
        assert not full_parse_accepts_all(body, count)


def test_a_failure_spelled_like_a_success_is_not_taken_for_one() -> None:
    results = all_ok(50)
    results[17] = '{"success":true,"command_id":"17","errors":["Not authorized"]}'
    assert not check(answer(results), 50)
    results[17] = '{"success":"true","command_id":"17"}'
    assert not check(answer(results), 50)
    results[17] = '{"success":1,"command_id":"17"}'
    assert not check(answer(results), 50)


def test_an_answer_for_another_count_is_not_recognised() -> None:
    for sent, answered in [(50, 49), (49, 50), (2, 1), (1, 2), (10, 0)]:
        assert not check(answer(all_ok(answered)), sent)


def test_reordered_or_renumbered_results_fall_back_to_the_full_parse() -> None:
    reordered = all_ok(50)
    reordered[3], reordered[4] = reordered[4], reordered[3]
    body = answer(reordered)
    assert not batch_all_accepted(body, 50)
    assert full_parse_accepts_all(body, 50)  # matched by command_id instead
    skipped = [ok(i) for i in range(51) if i != 7]
    assert not check(answer(skipped), 50)
    repeated = all_ok(50)
    repeated[8] = ok(7)
    assert not check(answer(repeated), 50)
    as_ints = [f'{{"success":true,"command_id":{i}}}' for i in range(50)]
    assert not batch_all_accepted(answer(as_ints), 50)
    no_ids = ['{"success":true}'] * 50
    assert not batch_all_accepted(answer(no_ids), 50)
    escaped = all_ok(50)
    escaped[0] = '{"success":true,"command_id":"\\u0030"}'
    assert not batch_all_accepted(answer(escaped), 50)


def test_other_whitespace_falls_back_to_the_full_parse() -> None:
    pretty = json.dumps(
        {"results": [{"success": True, "command_id": str(i)} for i in range(50)]},
        indent=2,
    ).encode()
    assert not batch_all_accepted(pretty, 50)
    tabs = answer([ok(i).replace(",", ",\t") for i in range(50)])
    assert not batch_all_accepted(tabs, 50)


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"null",
        b"[]",
        b"true",
        b"OK",
        b"<html>502 Bad Gateway</html>",
        b'{"success":true}',
        b'{"results":null,"success":true}',
        b'{"results":{},"success":true}',
        b'{"results":"[]","success":true}',
        b'{"results":[' + ok(0).encode() + b"]",  # truncated
        b'{"results":[' + ok(0).encode() + b'],"success":true}}',  # trailing junk
        b'{"results":[' + ok(0).encode() + b'],"success":true} x',
        b'{"results":[' + ok(0).encode() + b"],\xff}",
    ],
)
def test_garbage_is_never_recognised(body: bytes) -> None:
    assert not check(body, 1)


def test_the_envelope_must_say_success() -> None:
    assert not batch_all_accepted(answer(all_ok(5), success="false"), 5)
    assert not batch_all_accepted(answer(all_ok(5), success="null"), 5)
    no_success = b'{"results":[%s]}' % ",".join(all_ok(5)).encode()
    assert not batch_all_accepted(no_success, 5)


def test_duplicate_results_keys_are_read_as_the_full_parse_reads_them() -> None:
    failing = all_ok(3)
    failing[1] = '{"success":false,"command_id":"1"}'
    good, bad = ",".join(all_ok(3)), ",".join(failing)
    last_fails = b'{"results":[%s],"results":[%s],"success":true}' % (
        good.encode(),
        bad.encode(),
    )
    assert not check(last_fails, 3)
    assert not full_parse_accepts_all(last_fails, 3)
    last_good = b'{"results":[%s],"results":[%s],"success":true}' % (
        bad.encode(),
        good.encode(),
    )
    assert check(last_good, 3)


def test_the_results_text_elsewhere_in_the_body_is_not_enough() -> None:
    failing = all_ok(2)
    failing[0] = '{"success":false,"command_id":"0"}'
    nested = b'{"debug":{"results":[%s],"success":true},"results":[%s],"success":true}'
    body = nested % (",".join(all_ok(2)).encode(), ",".join(failing).encode())
    assert not check(body, 2)
    quoted = json.dumps(
        {"note": answer(all_ok(2)).decode(), "results": [], "success": True}
    ).encode()
    assert not check(quoted, 2)


def test_counts_outside_a_batch_are_refused() -> None:
    assert not batch_all_accepted(answer([]), 0)
    assert not batch_all_accepted(answer(all_ok(51)), 51)
    assert not batch_all_accepted(answer(all_ok(1)), -1)


def test_random_damage_never_yields_a_false_yes() -> None:
    """Bytes flipped, dropped or repeated anywhere in a good answer: whatever the
    recogniser says "yes" to, the full parse accepts too."""
    rng = random.Random(20261201)
    good = answer(all_ok(50))
    alphabet = b'{}[],:"0123456789 tfalsenurce_id\\'
    yes = 0
    for _ in range(3000):
        data = bytearray(good)
        for _ in range(rng.randint(1, 3)):
            at = rng.randrange(len(data))
            how = rng.randrange(3)
            if how == 0:
                data[at] = rng.choice(alphabet)
            elif how == 1:
                del data[at]
            else:
                data.insert(at, rng.choice(alphabet))
        yes += check(bytes(data), 50)
    # Damage inside the times still leaves a good answer: some "yes" must remain,
    # or this test would pass on a recogniser that always says no.
    assert yes > 0


# -- against the fake server's real answers ------------------------------------------


@pytest.mark.parametrize("count", [2, 17, 50])
async def test_the_fake_servers_all_success_answers_are_recognised(
    fake_tracking_api: FakeTrackingAPI, count: int
) -> None:
    tap = TapTransport()
    async with client_for(fake_tracking_api, linger=60.0, transport=tap) as client:
        deliveries = [client.track_nowait(IDS, "view", {"n": n}) for n in range(count)]
        await client.flush()
    assert all(delivery.delivered() for delivery in deliveries)
    [(request, response)] = tap.exchanges
    assert request.url.endswith("/batch")
    assert batch_all_accepted(response.body, count)
    assert full_parse_accepts_all(response.body, count)


async def test_the_fake_servers_answers_with_failures_are_not_recognised(
    fake_tracking_api: FakeTrackingAPI,
) -> None:
    api = fake_tracking_api
    api.reject_commands(flagged, error="Not authorized to add event of specified type")
    tap = TapTransport()
    for bad in (0, 9, 19):
        tap.exchanges.clear()
        async with client_for(api, linger=60.0, transport=tap) as client:
            deliveries = [
                client.track_nowait(IDS, "view", {"n": n, "reject": n == bad})
                for n in range(20)
            ]
            await client.flush()
        [(_, response)] = tap.exchanges
        assert not batch_all_accepted(response.body, 20)
        outcomes = [delivery.delivered() for delivery in deliveries]
        assert outcomes == [n != bad for n in range(20)]


async def test_a_batch_settled_in_bulk_reaches_every_handle_and_counter(
    fake_tracking_api: FakeTrackingAPI,
) -> None:
    seen: list[int] = []
    tap = TapTransport()
    async with client_for(
        fake_tracking_api,
        linger=60.0,
        transport=tap,
        on_result=lambda delivery: seen.append(id(delivery)),
    ) as client:
        deliveries = [client.track_nowait(IDS, "view", {"n": n}) for n in range(50)]
        await client.flush()
        stats = client.stats()
    assert [request.url.rsplit("/", 1)[-1] for request in tap.sent] == ["batch"]
    assert stats.delivered == 50
    assert sorted(seen) == sorted(id(delivery) for delivery in deliveries)
    receipts = [delivery.result() for delivery in deliveries]
    assert {(receipt.status, receipt.attempts) for receipt in receipts} == {(200, 1)}
