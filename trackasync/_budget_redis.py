"""The rate budget of a fleet: one Redis key shared by every process on every host.

The API's limit is per source IP, and a fleet behind one egress (a NAT gateway,
a cluster's egress) is one source IP. Each request slot is reserved by one Lua
script run atomically by the Redis server: the same step as the file budget's
(``_budget_shared.step``), on the server's clock (``TIME``), so hosts whose
clocks disagree still share one timeline. One round trip per request.

The key is ``trackasync:rate:<API scheme://host:port>:<egress>``; ``egress``
defaults to ``default`` and is set with ``?egress=<name>`` on the URL (one
budget per egress IP), or the whole key with ``?key=<key>``.

Redis out of reach, slow (``STEP_TIMEOUT``) or restarted: the process paces
itself alone (see ``_budget_shared``) and tries again every second. The
``redis`` package (the ``trackasync[redis]`` extra) is imported only here, when
a ``redis://`` budget is made. The URL may carry a password: it is never
repeated in a message, a log line or a repr.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import weakref
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from . import _fork
from ._budget_shared import LIMIT_TTL, MAX_PAUSE, SharedLimiter, logger, max_ahead
from ._exceptions import ConfigError
from ._ratelimit import _CUT_SPACING, _FLOOR_SHARE, _RECOVERY_SHARE, api_address

#: Seconds a step may take before the budget counts as out of reach.
STEP_TIMEOUT = 0.25
#: Consecutive slots one step reserves: a round trip to Redis per request
#: would cap each process at one request per round trip.
SLOTS_PER_STEP = 4
# An idle budget's key expires: nothing is left behind in Redis.
_KEY_TTL = 600

# The step of _budget_shared.step, in Lua: keep the two in line.
# KEYS[1]: the budget's key. ARGV: pace, cut (0/1), pause, accepted, reserve
# (0/1), max_ahead, floor, recovery, cut spacing, limit ttl, clock slack, max
# pause, key ttl, slots, catch-up slots. Returns {wait, factor, interval} as strings (Lua numbers would be
# truncated to integers on the way back).
_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local pace = tonumber(ARGV[1])
local cut = ARGV[2] == '1'
local pause = tonumber(ARGV[3])
local accepted = tonumber(ARGV[4])
local reserve = ARGV[5] == '1'
local ahead = tonumber(ARGV[6])
local floor = tonumber(ARGV[7])
local recovery = tonumber(ARGV[8])
local spacing = tonumber(ARGV[9])
local limit_ttl = tonumber(ARGV[10])
local slack = tonumber(ARGV[11])
local max_pause = tonumber(ARGV[12])
local function finite(x)
  return x ~= nil and x == x and x ~= math.huge and x ~= -math.huge
end
local nxt, factor, last_cut, limit, limit_at = now, 1.0, now - spacing, pace, now
local s = redis.call('HMGET', KEYS[1], 'next', 'factor', 'last_cut', 'limit', 'limit_at', 'written_at')
local v = {}
local sound = true
for i = 1, 6 do
  v[i] = tonumber(s[i])
  if not finite(v[i]) then sound = false end
end
if sound and v[6] <= now + slack then
  if v[1] <= now + ahead then nxt = v[1] end
  factor = math.min(1.0, math.max(floor, v[2]))
  if v[3] <= now then last_cut = v[3] end
  if v[4] > pace and v[4] <= pace / floor and v[5] >= now - limit_ttl then
    limit, limit_at = v[4], v[5]
  end
end
if cut and now - last_cut >= spacing then
  last_cut = now
  factor = math.max(floor, factor / 2)
end
if pause > 0 then nxt = math.max(nxt, now + math.min(pause, max_pause)) end
if accepted > 0 then factor = math.min(1.0, factor + accepted * recovery) end
local interval = 1.0 / (limit * factor)
nxt = math.max(nxt, now - tonumber(ARGV[15]) * interval)
local wait = nxt - now
if reserve then nxt = nxt + tonumber(ARGV[14]) * interval end
redis.call('HSET', KEYS[1], 'next', string.format('%.17g', nxt),
  'factor', string.format('%.17g', factor), 'last_cut', string.format('%.17g', last_cut),
  'limit', string.format('%.17g', limit), 'limit_at', string.format('%.17g', limit_at),
  'written_at', string.format('%.17g', now))
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[13]))
return {string.format('%.17g', wait), string.format('%.17g', factor),
  string.format('%.17g', interval)}
"""

# Budgets alive in this process: a forked child must not use their
# connections (they are the parent's sockets).
_live: weakref.WeakSet[RedisBudget] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for budget in list(_live):
        budget._forget_client()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def split_url(url: str, base_url: str) -> tuple[str, str, str]:
    """(URL for the redis client, key, a description without credentials)."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    own = {name: value for name, value in query if name in ("key", "egress")}
    rest = [(name, value) for name, value in query if name not in ("key", "egress")]
    egress = own.get("egress") or "default"
    key = own.get("key") or f"trackasync:rate:{api_address(base_url)}:{egress}"
    client_url = urlunsplit(parts._replace(query=urlencode(rest)))
    try:
        host, port = parts.hostname or "", parts.port
    except ValueError:
        raise ConfigError("rate_budget: the Redis URL has a bad port") from None
    where = f"{parts.scheme}://{host}{'' if port is None else f':{port}'}{parts.path}"
    return client_url, key, f"{where} key {key}"


class RedisBudget(SharedLimiter):
    """A rate budget shared through one Redis key by processes on any host."""

    __slots__ = (
        "__weakref__",
        "_client",
        "_key",
        "_loop",
        "_push_task",
        "_script",
        "_url",
        "_where",
    )

    def __init__(self, rate: float, url: str, base_url: str) -> None:
        try:
            import redis.asyncio  # noqa: F401  (checked now, used on first step)
        except ImportError:
            raise ConfigError(
                "a redis:// rate_budget needs the redis package: "
                "pip install 'trackasync[redis]'"
            ) from None
        super().__init__(rate)
        self._url, self._key, self._where = split_url(url, base_url)
        self._client: Any = None
        self._script: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._push_task: asyncio.Task[None] | None = None
        _live.add(self)
        logger.info("rate budget shared through %s", self._where)

    @property
    def key(self) -> str:
        """The Redis key that holds the budget."""
        return self._key

    @property
    def where(self) -> str:
        return self._where

    def __repr__(self) -> str:
        return f"<RedisBudget {self._where} rate={self._rate}>"

    def _forget_client(self) -> None:
        """In a forked child: the connections are the parent's; never touch them."""
        if self._client is not None:
            _fork.keep_forever(self._client)
        self._client = self._script = self._loop = self._push_task = None

    def _connect(self) -> Any:
        loop = asyncio.get_running_loop()
        if self._client is not None and self._loop is not loop:
            # Bound to another (finished) loop: it cannot be closed from here.
            _fork.keep_forever(self._client)
            self._client = None
        if self._client is None:
            from redis.asyncio import Redis
            from redis.asyncio.retry import Retry
            from redis.backoff import NoBackoff

            # No retries of our own: a failed step falls back to local pacing
            # at once, and the budget is tried again a second later.
            self._client = Redis.from_url(
                self._url,
                socket_timeout=STEP_TIMEOUT,
                socket_connect_timeout=STEP_TIMEOUT,
                retry=Retry(NoBackoff(), 0),
                max_connections=8,
            )
            self._script = self._client.register_script(_SCRIPT)
            self._loop = loop
        return self._script

    slots_per_step = SLOTS_PER_STEP

    async def _step(
        self,
        cut: bool,
        pause: float,
        accepted: int,
        reserve: bool = True,
        count: int = 1,
    ) -> tuple[float, float, float] | None:
        args = (
            repr(self._pace),
            "1" if cut else "0",
            repr(pause),
            str(accepted),
            "1" if reserve else "0",
            repr(max_ahead(self._pace)),
            repr(_FLOOR_SHARE),
            repr(_RECOVERY_SHARE),
            repr(_CUT_SPACING),
            repr(LIMIT_TTL),
            "1.0",
            repr(MAX_PAUSE),
            str(_KEY_TTL),
            str(count),
            str(self._catch_up),
        )
        try:
            script = self._connect()
            reply = await asyncio.wait_for(
                script(keys=[self._key], args=args), STEP_TIMEOUT * 2
            )
            wait, factor, interval = (float(value) for value in reply)
        except Exception as exc:
            # Never the exception's text: it may quote the URL. The WARNING
            # that follows names the budget without its credentials.
            logger.debug("rate budget step failed: %s", type(exc).__name__)
            return None
        self._factor = factor
        return wait, factor, interval

    def _push(self) -> None:
        if self._push_task is not None and not self._push_task.done():
            return  # one already under way carries the newest signals too
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self._push_task = loop.create_task(self._push_now(), name="trackasync-budget")

    async def _push_now(self) -> None:
        cut, pause, accepted = self._take_signals()
        if await self._step(cut, pause, accepted, reserve=False) is None:
            self._keep_signals(cut, accepted)

    async def aclose(self) -> None:
        task, self._push_task = self._push_task, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
        client, self._client = self._client, None
        self._script = None
        if client is not None and self._loop is asyncio.get_running_loop():
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.aclose(), STEP_TIMEOUT * 2)
