"""What a 2xx answer the client does not fully understand leads to.

Only a readable success delivers; the API's documented refusal
(``"success": false``) is final; anything else is unknown and retried, on the
single routes as in a batch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import msgspec
import pytest

from trackasync import (
    APIError,
    BadRequest,
    Client,
    DeliveryFailed,
    Request,
    Response,
)
from trackasync.testing import RecordingTransport, commands_of

from .conftest import IDS

MakeClient = Callable[..., Client]

OK = Response(200, b'{"success": true}')

#: 200 answers that are not the API's: none may count as a delivery.
GARBAGE = {
    "HTML proxy page": b"<html><body><h1>502 Bad Gateway</h1></body></html>",
    "empty body": b"",
    "truncated JSON": b'{"success": tr',
    "success as a string": b'{"success": "false"}',
    "errors without success": b'{"errors": ["Invalid customer_id"]}',
    "JSON that is not an object": b"[true]",
}


def answers(*scripted: Response) -> Callable[[Request], Response]:
    """Answer with ``scripted`` in turn, then accept everything."""
    queue: Iterator[Response] = iter(scripted)

    def answer(request: Request) -> Response:
        return next(queue, OK)

    return answer


@pytest.mark.parametrize("case", list(GARBAGE))
async def test_unreadable_single_answer_is_retried(
    make_client: MakeClient, case: str
) -> None:
    """A 200 whose body is not the API's answer is retried, not delivered."""
    transport = RecordingTransport(answers(Response(200, GARBAGE[case])))
    async with make_client(transport=transport, mode="single") as client:
        receipt = await client.track_and_wait(IDS, "view")
    assert receipt.attempts == 2
    assert len(transport.requests) == 2
    assert transport.requests[0].body == transport.requests[1].body


async def test_unreadable_single_answer_gives_up_as_unknown(
    make_client: MakeClient,
) -> None:
    """Always unreadable: the command gives up (not "rejected"), and its error
    is a plain APIError saying the answer was not the API's."""
    page = GARBAGE["HTML proxy page"]
    transport = RecordingTransport(lambda request: Response(200, page))
    async with make_client(transport=transport, mode="single") as client:
        with pytest.raises(DeliveryFailed) as caught:
            await client.track_and_wait(IDS, "view")
    failed = caught.value
    assert failed.reason == "gave_up"
    assert failed.attempts == 4
    assert type(failed.error) is APIError
    assert failed.error.status == 200
    assert failed.errors == ()
    assert "not an answer of the API" in str(failed)
    assert "502 Bad Gateway" in str(failed)


async def test_answer_cut_at_the_cap_is_retried(make_client: MakeClient) -> None:
    """An answer the transport cut is unknown even if what was read parses."""
    cut = Response(200, b'{"success": true}', truncated=True)
    transport = RecordingTransport(answers(cut))
    async with make_client(transport=transport, mode="single") as client:
        receipt = await client.track_and_wait(IDS, "view")
    assert receipt.attempts == 2


async def test_single_refusal_stays_final(make_client: MakeClient) -> None:
    """ "success": false with the API's errors is still a final rejection."""
    body = b'{"success": false, "errors": ["Invalid customer_id"]}'
    transport = RecordingTransport(answers(Response(200, body)))
    async with make_client(transport=transport, mode="single") as client:
        with pytest.raises(DeliveryFailed) as caught:
            await client.track_and_wait(IDS, "view")
    assert caught.value.reason == "rejected"
    assert isinstance(caught.value.error, BadRequest)
    assert caught.value.errors == ("Invalid customer_id",)
    assert len(transport.requests) == 1


@pytest.mark.parametrize(
    "result",
    [
        {"success": "true"},
        {"success": "false", "errors": ["x"]},
        {"success": None},
        {},
    ],
    ids=["string true", "string false", "null", "no success"],
)
async def test_unreadable_batch_result_is_retried(
    make_client: MakeClient, result: dict[str, object]
) -> None:
    """A per-command result without a boolean "success" is missing, not a
    rejection: that command alone is sent again; its neighbour is delivered."""

    def first_unreadable(request: Request) -> Response:
        commands = commands_of(request)
        results: list[dict[str, object]] = [
            {"success": True, "command_id": command["command_id"]}
            for command in commands
        ]
        if len(transport.requests) == 1:
            results[0] = {**result, "command_id": commands[0]["command_id"]}
        return Response(200, msgspec.json.encode({"success": True, "results": results}))

    transport = RecordingTransport(first_unreadable)
    async with make_client(transport=transport, mode="batch", linger=60.0) as client:
        first = client.track_nowait(IDS, "one")
        second = client.track_nowait(IDS, "two")
        await client.flush()
    assert first.result().attempts == 2
    assert second.result().attempts == 1
    assert [c["data"]["event_type"] for c in commands_of(transport.requests[1])] == [
        "one"
    ]


async def test_single_and_batch_agree(make_client: MakeClient) -> None:
    """The same verdicts on both routes: success delivers, "success": false
    rejects, an unreadable answer is retried."""
    verdicts: dict[str, list[str]] = {}
    for mode in ("single", "batch"):
        for name, payload in (
            ("ok", {"success": True}),
            ("refused", {"success": False, "errors": ["no"]}),
            ("unreadable", {"success": "true"}),
        ):

            def answer(request: Request, payload: object = payload) -> Response:
                if request.url.endswith("/batch"):
                    body = {"success": True, "results": [payload]}
                    return Response(200, msgspec.json.encode(body))
                return Response(200, msgspec.json.encode(payload))

            transport = RecordingTransport(answer)
            async with make_client(transport=transport, mode=mode) as client:
                delivery = client.track_nowait(IDS, "view")
                await client.flush()
            error = delivery.exception()
            outcome = "delivered" if error is None else error.reason
            verdicts.setdefault(name, []).append(outcome)
    assert verdicts == {
        "ok": ["delivered", "delivered"],
        "refused": ["rejected", "rejected"],
        "unreadable": ["gave_up", "gave_up"],
    }


@pytest.mark.parametrize(
    "body",
    [
        b'{"success": true, "time": NaN}',
        b'{"success": true, "time": Infinity}',
        b'{"success": true, "time": true}',
        b'{"success": false, "time": 1700000000.5}',
        b"<html>maintenance</html>",
    ],
)
async def test_system_time_raises_on_nonsense(
    make_client: MakeClient, body: bytes
) -> None:
    """system_time() raises a typed error instead of returning NaN, infinity,
    1.0 or a time the API said was a failure."""
    transport = RecordingTransport(lambda request: Response(200, body))
    async with make_client(transport=transport) as client:
        with pytest.raises(APIError) as caught:
            await client.system_time()
    assert caught.value.status == 200
    assert isinstance(caught.value, BadRequest) == (b'"success": false' in body)
