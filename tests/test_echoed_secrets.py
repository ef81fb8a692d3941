"""A server that echoes the request's Authorization header (proxies and gateways
do) never gets the client's credentials into an exception, a log line or a
report: every shape of answer, over a real socket, with the real transport."""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import AsyncIterator, Callable

import pytest
from aiohttp import web

from trackasync import (
    Client,
    DeliveryFailed,
    PrivateKey,
    PublicToken,
    RequestError,
    Retry,
)

KEY_ID = "key-id-1"
# "???" encodes to "Pz8/": the base64 form has a slash, which some JSON
# encoders escape as "\/".
SECRET = "s3cret???-0123456789"
TOKEN = "public-token-0123456789"
PAIR = f"{KEY_ID}:{SECRET}"
B64 = base64.b64encode(PAIR.encode()).decode()
assert "/" in B64

Answer = Callable[[str], web.Response]


def _json(status: int, data: object, *, escape_slashes: bool = False) -> web.Response:
    text = json.dumps(data)
    if escape_slashes:
        text = text.replace("/", "\\/")
    return web.Response(status=status, text=text, content_type="application/json")


CASES: dict[str, tuple[Answer, str]] = {
    # name: (answer built from the echoed header, mode)
    "400 errors list": (lambda a: _json(400, {"errors": [f"bad header {a}"]}), "auto"),
    "401 error string": (lambda a: _json(401, {"error": a}), "auto"),
    "403 message": (lambda a: _json(403, {"message": f"no access for {a}"}), "auto"),
    "429 errors": (lambda a: _json(429, {"errors": [a]}), "auto"),
    "500 plain text": (
        lambda a: web.Response(status=500, text=f"upstream failed; Authorization: {a}"),
        "auto",
    ),
    "502 HTML page": (
        lambda a: web.Response(
            status=502,
            text=f"<html><body><h1>Bad gateway</h1><pre>Authorization: {a}\n"
            f"{a.partition(' ')[2]}</pre></body></html>",
            content_type="text/html",
        ),
        "auto",
    ),
    "200 success false": (
        lambda a: _json(200, {"success": False, "errors": [f"denied: {a}"]}),
        "single",
    ),
    "200 HTML page": (
        lambda a: web.Response(text=f"<html>{a}</html>", content_type="text/html"),
        "single",
    ),
    "200 escaped slashes": (
        lambda a: _json(
            200, {"success": False, "error": a.partition(" ")[2]}, escape_slashes=True
        ),
        "single",
    ),
    "batch results": (
        lambda a: _json(
            200,
            {
                "success": True,
                "results": [
                    {"success": False, "command_id": "0", "errors": [a]},
                    {"success": False, "command_id": "1", "error": f"bad {a}"},
                ],
            },
        ),
        "batch",
    ),
}


@pytest.fixture
async def echo() -> AsyncIterator[tuple[str, dict[str, Answer]]]:
    """An API that answers every route with ``answer[0](Authorization)``."""
    answer: dict[str, Answer] = {}

    async def handle(request: web.Request) -> web.Response:
        return answer["now"](request.headers.get("Authorization", ""))

    app = web.Application()
    app.router.add_route("*", "/track/v2/projects/{token}/{route:.*}", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}", answer
    finally:
        await runner.cleanup()


def _forbidden(auth: PrivateKey | PublicToken) -> list[str]:
    if isinstance(auth, PrivateKey):
        return [SECRET, PAIR, B64, B64.replace("/", "\\/")]
    return [TOKEN]


def _texts(error: BaseException) -> list[str]:
    """Every text an application could show of an error and what it carries."""
    texts = [str(error), repr(error)]
    seen: list[BaseException] = []
    item: BaseException | None = error
    while item is not None and item not in seen:
        seen.append(item)
        texts += [str(item), repr(item)]
        for name in ("errors", "body"):
            value = getattr(item, name, None)
            if isinstance(value, bytes):
                texts.append(value.decode("utf-8", "replace"))
            elif value:
                texts.append(repr(value))
        nested = getattr(item, "error", None)
        item = nested if isinstance(nested, BaseException) else item.__cause__
    return texts


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("kind", ["private key", "public token"])
async def test_echoed_credentials_are_scrubbed_everywhere(
    echo: tuple[str, dict[str, Answer]],
    caplog: pytest.LogCaptureFixture,
    case: str,
    kind: str,
) -> None:
    """Each failed command's DeliveryFailed, its error, the API's strings, the
    kept body and every log line are free of the credentials sent."""
    caplog.set_level(logging.DEBUG, logger="trackasync")
    base_url, answer = echo
    make, mode = CASES[case]
    answer["now"] = make
    auth = PrivateKey(KEY_ID, SECRET) if kind == "private key" else PublicToken(TOKEN)
    client = Client(
        base_url,
        "project",
        auth=auth,
        mode=mode,  # type: ignore[arg-type]
        linger=60.0,
        rate_limit=None,
        retry=Retry(attempts=2, wait_initial=0.0, wait_max=0.0, max_retry_after=0.0),
    )
    async with client:
        deliveries = [
            client.track_nowait({"registered": "a"}, "view") for _ in range(2)
        ]
        await client.flush()
    failures: list[BaseException] = []
    for delivery in deliveries:
        with pytest.raises(DeliveryFailed) as info:
            await delivery
        failures.append(info.value)
    texts = [text for failure in failures for text in _texts(failure)]
    texts.append(caplog.text)
    # The answers did carry the header: the scrubbed texts show where it was.
    assert any("***" in text for text in texts), texts
    for secret in _forbidden(auth):
        for text in texts:
            assert secret not in text, (secret, text)


async def test_system_time_error_is_scrubbed(
    echo: tuple[str, dict[str, Answer]],
) -> None:
    """A RequestError raised straight at the caller is scrubbed too."""
    base_url, answer = echo
    answer["now"] = CASES["401 error string"][0]
    async with Client(
        base_url, "project", auth=PrivateKey(KEY_ID, SECRET), rate_limit=None
    ) as client:
        with pytest.raises(RequestError) as info:
            await client.system_time()
    for secret in _forbidden(PrivateKey(KEY_ID, SECRET)):
        for text in _texts(info.value):
            assert secret not in text
    assert str(info.value) == "HTTP 401: Basic ***"
