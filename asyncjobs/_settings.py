"""Worker settings from a TOML file, environment and flags (pure).

Flags override the file; the file overrides defaults. Unknown keys are errors.
"""

from __future__ import annotations

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
