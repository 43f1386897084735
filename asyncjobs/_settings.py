"""Worker settings from a TOML file, environment and flags (pure).

Flags override the file; the file overrides defaults. Unknown keys are errors.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import msgspec

from ._errors import ConfigError
from ._queues import parse_queue_spec

__all__ = [
    "CapsuleSettings",
    "CapsuleSpec",
    "Settings",
    "capsules_from",
    "load_settings",
    "parse_size",
]


class CapsuleSpec(msgspec.Struct, frozen=True):
    """A capsule's configuration: name, ``(queue, weight)`` pairs, concurrency, order."""

    name: str
    queues: Sequence[tuple[str, int]]
    concurrency: int = 10
    strict: bool = False


class CapsuleSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    name: str
    queues: list[str]
    concurrency: int = 10
    strict: bool = False


class Settings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Everything ``asyncjobs worker`` can be configured with (see docs/configuration.md)."""

    app: str | None = None
    redis_url: str | None = None
    namespace: str | None = None
    queues: list[str] = []
    concurrency: int = 10
    strict: bool = False
    timeout: float = 25.0
    capsules: list[CapsuleSettings] = []
    heartbeat_interval: float = 5.0
    heartbeat_ttl: float = 30.0
    scheduler_poll: float = 5.0
    max_recoveries: int = 3
    prefetch: int | None = None  # jobs fetched ahead per capsule; default concurrency // 4
    processes: int | str = 1
    log_level: str = "INFO"
    log_format: str = "text"
    tag: str = ""  # a label in the process record (Sidekiq's tag)
    max_memory: str | None = None  # RSS over which a worker is replaced, e.g. "500MB"


# Binary multiples, as systemd's MemoryMax= and ps: K, M, G (and KiB, Ki...) are powers
# of 1024; the SI spellings (kB, KB, MB, GB) are powers of 1000.
_SIZE_UNITS = {
    "b": 1,
    "k": 1024,
    "ki": 1024,
    "kib": 1024,
    "kb": 1000,
    "m": 1024**2,
    "mi": 1024**2,
    "mib": 1024**2,
    "mb": 1000**2,
    "g": 1024**3,
    "gi": 1024**3,
    "gib": 1024**3,
    "gb": 1000**3,
    "t": 1024**4,
    "ti": 1024**4,
    "tib": 1024**4,
    "tb": 1000**4,
}
_SIZE = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([a-zA-Z]*)\s*")
# Below this, no Python worker could run at all: the limit is surely a mistake.
MIN_MAX_MEMORY = 16 * 1024**2


def parse_size(value: str, *, what: str = "--max-memory") -> int:
    """Bytes in ``500MB``, ``1.5GiB``, ``800M`` (K, M, G, T and KiB... are powers of
    1024; kB, MB, GB, TB powers of 1000). :class:`ConfigError` for anything else: a
    number needs its unit (500 alone could be bytes or megabytes)."""
    m = _SIZE.fullmatch(value) if isinstance(value, str) else None
    unit = m.group(2).lower() if m else ""
    if m is None or unit not in _SIZE_UNITS:
        hint = " (a number needs a unit)" if m is not None and not unit else ""
        raise ConfigError(
            f"invalid {what} {value!r}{hint}: a size such as 500MB, 1.5GiB or 800M "
            "(K, M, G: powers of 1024; kB, MB, GB: powers of 1000)"
        )
    size = int(float(m.group(1)) * _SIZE_UNITS[unit])
    if size < MIN_MAX_MEMORY:
        raise ConfigError(
            f"invalid {what} {value!r}: {size} bytes is less than any Python worker "
            f"needs; give at least {MIN_MAX_MEMORY // 1024**2}MiB"
        )
    return size


def load_settings(path: str | Path | None) -> Settings:
    """Read a TOML settings file (a ``[asyncjobs]`` table, or top-level keys)."""
    if path is None:
        return Settings()
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read config file {str(p)!r}: {exc.strerror}") from None
    try:
        raw = msgspec.toml.decode(data)
    except msgspec.DecodeError as exc:
        raise ConfigError(f"config file {str(p)!r} is not valid TOML: {exc}") from None
    if isinstance(raw, dict) and isinstance(raw.get("asyncjobs"), dict) and len(raw) == 1:
        raw = raw["asyncjobs"]
    try:
        return msgspec.convert(raw, Settings)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"config file {str(p)!r}: {exc}") from None


def capsules_from(settings: Settings) -> list[CapsuleSpec]:
    """The capsules a settings object describes: ``queues`` form the default capsule."""
    if settings.heartbeat_ttl <= settings.heartbeat_interval:
        raise ConfigError(
            f"heartbeat_ttl ({settings.heartbeat_ttl:g}s) must be longer than "
            f"heartbeat_interval ({settings.heartbeat_interval:g}s), or live workers "
            "would be taken for dead; three intervals or more is safe"
        )
    specs: list[CapsuleSpec] = []
    if settings.concurrency < 1:
        raise ConfigError(f"concurrency must be at least 1, got {settings.concurrency}")
    if settings.queues or not settings.capsules:
        queues = [parse_queue_spec(q) for q in (settings.queues or ["default"])]
        specs.append(
            CapsuleSpec(
                name="default",
                queues=queues,
                concurrency=settings.concurrency,
                strict=settings.strict,
            )
        )
    for c in settings.capsules:
        if c.concurrency < 1:
            raise ConfigError(f"capsule {c.name!r}: concurrency must be at least 1")
        if any(s.name == c.name for s in specs):
            raise ConfigError(f"two capsules are named {c.name!r}")
        specs.append(
            CapsuleSpec(
                name=c.name,
                queues=[parse_queue_spec(q) for q in c.queues],
                concurrency=c.concurrency,
                strict=c.strict,
            )
        )
    return specs
