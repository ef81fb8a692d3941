"""Client settings read from ``TRACKASYNC_*`` environment variables.

Credentials and the API's address come from the environment in most
deployments (twelve-factor apps, containers, serverless functions); this module
turns those variables into ``Client`` keyword arguments, and says which
variable is wrong when one is. Messages name variables, never their values for
the credentials.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from typing import Any

from ._auth import PrivateKey, PublicToken
from ._contract import limits_from_env
from ._exceptions import ConfigError
from ._options import Options, check_names
from ._ratelimit import env_rate_budget

PREFIX = "TRACKASYNC_"
BASE_URL = "TRACKASYNC_BASE_URL"
PROJECT_TOKEN = "TRACKASYNC_PROJECT_TOKEN"
KEY_ID = "TRACKASYNC_KEY_ID"
SECRET = "TRACKASYNC_SECRET"
PUBLIC_TOKEN = "TRACKASYNC_PUBLIC_TOKEN"


def _number(name: str, raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from None
    if math.isnan(value) or math.isinf(value):
        raise ConfigError(f"{name} must be a finite number, got {raw!r}")
    return value


def _optional_number(name: str, raw: str) -> float | None:
    if raw.strip().lower() in ("none", "off"):
        return None
    return _number(name, raw)


def _integer(name: str, raw: str) -> int:
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a whole number, got {raw!r}") from None


def _boolean(name: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name} must be true or false (1/0, yes/no), got {raw!r}")


def _text(name: str, raw: str) -> str:
    return raw.strip()


def _optional_text(name: str, raw: str) -> str | None:
    value = raw.strip()
    return None if value.lower() in ("none", "off") else value


#: Tuning options read from the environment: the variable is
#: ``TRACKASYNC_`` + the option's name in capitals (e.g. TRACKASYNC_MAX_QUEUE).
TUNING: dict[str, Callable[[str, str], Any]] = {
    "max_queue": _integer,
    "max_queue_bytes": _integer,
    "overflow": _text,
    "queue_timeout": _optional_number,
    "linger": _number,
    "await_linger": _number,
    "mode": _text,
    "max_in_flight": _integer,
    "rate_limit": _optional_number,
    "rate_budget": env_rate_budget,
    "timeout": _number,
    "connect_timeout": _number,
    "shutdown_timeout": _number,
    "allow_http": _boolean,
    # Network (_network): a proxy URL (its credentials are secrets: no message
    # quotes it), whether HTTPS_PROXY/NO_PROXY are followed, a CA bundle path.
    "proxy": _text,
    "trust_env": _boolean,
    "tls": _text,
    "spool": _optional_text,
    "durability": _text,
    "spool_interval": _number,
    "spool_max_bytes": _integer,
}


def _get(environ: Mapping[str, str], name: str) -> str | None:
    """The variable's value; empty counts as unset (``VAR=`` in a .env file)."""
    value = environ.get(name)
    return value if value else None


def auth_from_env(environ: Mapping[str, str]) -> PrivateKey | PublicToken:
    """``PrivateKey`` from KEY_ID and SECRET, or ``PublicToken``; never both."""
    key_id, secret = _get(environ, KEY_ID), _get(environ, SECRET)
    public = _get(environ, PUBLIC_TOKEN)
    if public is not None and (key_id is not None or secret is not None):
        raise ConfigError(
            f"both {PUBLIC_TOKEN} and {KEY_ID}/{SECRET} are set: set either a "
            "private key (key id and secret) or a public token, not both"
        )
    if public is not None:
        return PublicToken(public)
    if key_id is not None and secret is None:
        raise ConfigError(f"{KEY_ID} is set but {SECRET} is missing")
    if secret is not None and key_id is None:
        raise ConfigError(f"{SECRET} is set but {KEY_ID} is missing")
    if key_id is None or secret is None:
        raise ConfigError(
            f"no credentials: set {KEY_ID} and {SECRET} (a private API key), "
            f"or {PUBLIC_TOKEN}"
        )
    return PrivateKey(key_id, secret)


def client_kwargs(
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Keyword arguments for ``Client``/``SyncClient`` from the environment.

    ``overrides`` (explicit keyword arguments) win over the variables; the
    credentials are read only when ``auth`` is not given.
    """
    env = os.environ if environ is None else environ
    options: dict[str, Any] = {}
    for option, parse in TUNING.items():
        name = PREFIX + option.upper()
        raw = _get(env, name)
        if raw is not None:
            options[option] = parse(name, raw)
    limits = limits_from_env(env)  # TRACKASYNC_MAX_VALUE_BYTES
    if limits is not None:
        options["limits"] = limits
    options.update(overrides or {})
    for option, name in (("base_url", BASE_URL), ("project_token", PROJECT_TOKEN)):
        if option not in options:
            value = _get(env, name)
            if value is None:
                raise ConfigError(f"{name} is not set (needed for {option})")
            options[option] = value.strip()
    if "auth" not in options:
        options["auth"] = auth_from_env(env)
    return options


def client_options(
    overrides: Mapping[str, Any], where: str = "Client.from_env"
) -> Options:
    """``Options`` from the environment, ``overrides`` winning; a keyword that
    is no option raises ``TypeError`` naming ``where``."""
    check_names(overrides, where)
    return Options(**client_kwargs(overrides))
