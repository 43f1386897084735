"""The worker's look at the Redis server before it starts: a version too old for the
scripts is refused, an evicting ``maxmemory-policy`` is warned about.

One ``INFO`` at startup (an ACL user that may not run it skips the look, silently: the
scripts fail loudly later if the server cannot run them)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .._errors import ConfigError
from .._redis import mask_url, transient

if TYPE_CHECKING:
    from .._store import Store

log = logging.getLogger("asyncjobs.worker")

# RPOP with a count (fetch.lua), LMOVE/BLMOVE (the idle fetcher, the landing list) and
# ZRANGE ... BYSCORE/REV (the api's paging) came with Redis 6.2.
MIN_VERSION = (6, 2)


def _version(text: str) -> tuple[int, ...]:
    parts = []
    for p in text.split(".")[:3]:
        digits = "".join(c for c in p if c.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts)


def _servers(info: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The INFO of each server: one, or (a Cluster reply) one per node."""
    if "redis_version" in info:
        return [info]
    return [v for v in info.values() if isinstance(v, Mapping) and "redis_version" in v]


def problems(info: Mapping[str, Any], url: str) -> tuple[str | None, list[str]]:
    """From an ``INFO`` reply: why the worker must not start (None if it may), and the
    warnings to log."""
    refusal = None
    warnings: list[str] = []
    for server in _servers(info):
        found = str(server.get("redis_version", ""))
        if found and _version(found) < MIN_VERSION:
            refusal = (
                f"Redis {found} at {url} is too old: asyncjobs needs Redis "
                f"{'.'.join(map(str, MIN_VERSION))} or newer (LMOVE/BLMOVE, RPOP with a "
                "count); upgrade Redis"
            )
        policy = server.get("maxmemory_policy")
        if policy is not None and policy != "noeviction":
            warnings.append(
                f"Redis at {url} has maxmemory-policy {policy}: when it is full it evicts "
                "keys, and an evicted key is lost jobs; set maxmemory-policy noeviction "
                "(see the deployment guide)"
            )
    return refusal, sorted(set(warnings))


async def check(store: Store) -> None:
    """Refuse a Redis too old (:class:`ConfigError`, one line), warn about eviction."""
    try:
        info = await store.server_info("default")
    except Exception as exc:
        if transient(exc):
            raise
        log.debug("preflight: INFO refused (%s); not checking the server", exc)
        return
    refusal, warnings = problems(info, mask_url(store.url))
    if refusal is not None:
        raise ConfigError(refusal)
    for w in warnings:
        log.warning("%s", w)
