"""Redis Sentinel addresses: the ``redis+sentinel://`` URL, read and written (pure).

The URL names the Sentinels, not a server; the master is found by asking them::

    redis+sentinel://[[user]:password@]host1[:port1][,host2[:port2]...]/master[/db]
        [?sentinel_username=...&sentinel_password=...]

The credentials before ``@`` are the master's (and its replicas'), as in a ``redis://``
URL, and as Kombu/Celery read theirs; the Sentinels' own, when they require some, go in
the query. A port left out is 26379, the Sentinel's default; the database is 0 unless
given. ``App(sentinel=[...], sentinel_master=...)`` writes such a URL
(:func:`sentinel_url`), so the CLI, worker processes and error messages see one form.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import parse_qsl, quote, unquote, urlsplit

from ._errors import ConfigError

__all__ = [
    "DEFAULT_PORT",
    "SCHEMES",
    "SentinelSpec",
    "is_sentinel_url",
    "mask_sentinel_url",
    "parse_sentinel_url",
    "sentinel_url",
]

DEFAULT_PORT = 26379
SCHEMES = ("redis+sentinel",)
_QUERY = ("sentinel_username", "sentinel_password")
_FORM = "redis+sentinel://[:password@]host1:26379,host2:26379/mymaster/0"


@dataclass(frozen=True)
class SentinelSpec:
    """What a ``redis+sentinel://`` URL says."""

    sentinels: tuple[tuple[str, int], ...]
    master: str
    db: int = 0
    username: str | None = None
    password: str | None = None
    sentinel_username: str | None = None
    sentinel_password: str | None = None


def _scheme(url: str) -> str:
    head, sep, _ = url.partition("://")
    return head.lower() if sep else ""


def is_sentinel_url(url: str) -> bool:
    return _scheme(url) in SCHEMES or _scheme(url) == "rediss+sentinel"


def mask_sentinel_url(url: str) -> str:
    """``url`` with its passwords (the master's, the Sentinels') replaced by ``***``."""
    scheme, sep, rest = url.partition("://")
    netloc, slash, tail = rest.partition("/")
    userinfo, at, hosts = netloc.rpartition("@")
    if at and ":" in userinfo:
        netloc = f"{userinfo.split(':', 1)[0]}:***@{hosts}"
    tail = re.sub(r"(sentinel_password=)[^&#]*", r"\1***", tail)
    return f"{scheme}{sep}{netloc}{slash}{tail}"


def _bad(url: str, why: str) -> ConfigError:
    return ConfigError(f"invalid Sentinel URL {mask_sentinel_url(url)!r}: {why} (expected {_FORM})")


def _host_port(url: str, item: str) -> tuple[str, int]:
    m = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\](?::(\d*))?|([^:\[\]/@]+)(?::(\d*))?", item)
    if m is None:
        raise _bad(url, f"{item!r} is not a host[:port]")
    host = m[1] or m[3]
    port = m[2] if m[1] else m[4]
    if port is None or port == "":
        return host, DEFAULT_PORT
    number = int(port)
    if not 0 < number < 65536:
        raise _bad(url, f"port {number} of {host} is out of range")
    return host, number


def parse_sentinel_url(url: str) -> SentinelSpec:
    """The Sentinels, master name, database and credentials of ``url``; a
    :class:`ConfigError` naming what is wrong otherwise."""
    scheme = _scheme(url)
    if scheme == "rediss+sentinel":
        raise _bad(url, "TLS through Sentinel is not supported yet; use redis+sentinel://")
    if scheme not in SCHEMES:
        raise _bad(url, f"the scheme is {scheme or 'missing'}")
    rest = url.split("://", 1)[1]
    rest, _, query = rest.partition("?")
    rest = rest.split("#", 1)[0]
    netloc, _, path = rest.partition("/")
    userinfo, at, hosts = netloc.rpartition("@")
    username = password = None
    if at:
        user, colon, secret = userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(secret) if colon else None
    if not hosts:
        raise _bad(url, "no Sentinel address")
    sentinels = tuple(_host_port(url, h) for h in hosts.split(","))
    parts = [p for p in path.split("/") if p]
    if not parts:
        raise _bad(url, "no master name after the addresses")
    if len(parts) > 2:
        raise _bad(url, f"the path {'/' + path!r} has more than a master name and a database")
    master = unquote(parts[0])
    db = 0
    if len(parts) == 2:
        if not parts[1].isdigit():
            raise _bad(url, f"the database {parts[1]!r} is not a number")
        db = int(parts[1])
    options: dict[str, str] = {}
    for key, value in parse_qsl(query, keep_blank_values=True, strict_parsing=False):
        if key not in _QUERY:
            raise _bad(url, f"unknown option {key!r} (known: {', '.join(_QUERY)})")
        options[key] = value
    return SentinelSpec(
        sentinels=sentinels,
        master=master,
        db=db,
        username=username,
        password=password,
        sentinel_username=options.get("sentinel_username") or None,
        sentinel_password=options.get("sentinel_password") or None,
    )


def _address(item: object) -> tuple[str, int]:
    if isinstance(item, str):
        host, _, port = item.rpartition(":") if ":" in item else (item, "", "")
        host = host.strip("[]")
        if not host or (port and not port.isdigit()):
            raise ConfigError(f"sentinel address {item!r}: expected 'host:port' or (host, port)")
        return host, int(port) if port else DEFAULT_PORT
    if (
        isinstance(item, tuple | list)
        and len(item) == 2
        and isinstance(item[0], str)
        and isinstance(item[1], int)
    ):
        return item[0], item[1]
    raise ConfigError(f"sentinel address {item!r}: expected 'host:port' or (host, port)")


def sentinel_url(
    sentinels: Sequence[str | tuple[str, int]],
    master: str | None,
    *,
    redis_url: str | None = None,
    sentinel_password: str | None = None,
) -> str:
    """The ``redis+sentinel://`` URL of ``App(sentinel=..., sentinel_master=...)``.

    ``redis_url``, if given, brings the master's credentials and database only
    (``redis://:secret@/2``): its host must be left out, as the Sentinels name it."""
    if isinstance(sentinels, str) or not sentinels:
        raise ConfigError(
            "sentinel= takes a list of Sentinel addresses: [('10.0.0.1', 26379), ...]"
        )
    if not master:
        raise ConfigError("sentinel= needs sentinel_master=, the name the Sentinels monitor")
    addresses = [_address(s) for s in sentinels]
    hosts = ",".join(f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for h, p in addresses)
    auth, db = "", "0"
    if redis_url:
        try:
            parts = urlsplit(redis_url)
            hostname = parts.hostname
        except ValueError:
            parts, hostname = None, "?"
        if parts is None or parts.scheme != "redis" or hostname:
            raise ConfigError(
                "with sentinel=, redis_url may only give the master's credentials and "
                "database, with no host (redis://:password@/0): the Sentinels name the host"
            )
        if parts.username or parts.password:
            user = quote(unquote(parts.username or ""), safe="")
            auth = f"{user}:{quote(unquote(parts.password or ''), safe='')}@"
        db = parts.path.strip("/") or "0"
    query = f"?sentinel_password={quote(sentinel_password, safe='')}" if sentinel_password else ""
    url = f"redis+sentinel://{auth}{hosts}/{quote(master, safe='')}/{db}{query}"
    parse_sentinel_url(url)  # the same checks as a URL given as it is
    return url
