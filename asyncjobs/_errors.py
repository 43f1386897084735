"""The exception hierarchy of asyncjobs.

```
AsyncJobsError
├── ConfigError         bad URL, settings, capsule spec (one line, no traceback)
├── EnqueueError
│   ├── ArgumentError   names job, argument, expected type (msgspec path)
│   ├── UnknownJobError
│   └── UniqueConflict  a unique job's lock is held (on_conflict="raise")
├── PayloadError        undecodable; the worker dead-sets it and goes on
│   └── DecryptionError sealed arguments that cannot be opened (no key, tampered)
├── JobTimeout          a job ran past its timeout
├── NotReplicated       durable mode: a deferred job reached too few replicas in time
├── RedisUnavailable    Redis unreachable: refused, reset, timed out, loading
└── RedisRefused        Redis answered with an error: out of memory, a read-only
                        replica (READONLY), or another; the message names the fix
```

Foreign exceptions are mapped at the boundary, ``from exc``: every Redis call goes
through the store (``_store/``), which maps redis-py's errors with
``_redis.map_error``. Bad credentials, an ACL denial, a DB number out of range and a
server that does not speak RESP are :class:`ConfigError`.
"""

from __future__ import annotations

__all__ = [
    "ArgumentError",
    "AsyncJobsError",
    "BatchError",
    "ConfigError",
    "DecryptionError",
    "EnqueueError",
    "JobTimeout",
    "NotReplicated",
    "PayloadError",
    "RedisRefused",
    "RedisUnavailable",
    "UniqueConflict",
    "UnknownJobError",
]


class AsyncJobsError(Exception):
    """The root of every error asyncjobs raises."""


class ConfigError(AsyncJobsError):
    """A bad setting: Redis URL, capsule spec, config file, CLI flag."""


class EnqueueError(AsyncJobsError):
    """A job could not be enqueued; nothing reached Redis."""


class ArgumentError(EnqueueError, TypeError):
    """The arguments given to ``defer`` do not fit the job's signature or type hints."""

    def __init__(self, job: str, argument: str | None, message: str) -> None:
        self.job = job
        self.argument = argument
        super().__init__(message)


class UnknownJobError(EnqueueError, LookupError):
    """No job is registered under this name."""


class UniqueConflict(EnqueueError):
    """A unique job was deferred while its lock is held by another (``Unique(
    on_conflict="raise")``); nothing was enqueued. ``holder`` is the jid holding it."""

    def __init__(self, job: str, holder: str, message: str) -> None:
        self.job = job
        self.holder = holder
        super().__init__(message)

    def __reduce__(self) -> tuple[type[UniqueConflict], tuple[str, str, str]]:
        return type(self), (self.job, self.holder, str(self))


class BatchError(AsyncJobsError, LookupError):
    """A batch cannot be read or reopened: it does not exist (never made, or expired
    after its TTL), or it completed already (``bid`` names it)."""

    def __init__(self, bid: str, message: str) -> None:
        self.bid = bid
        super().__init__(message)

    def __reduce__(self) -> tuple[type[BatchError], tuple[str, str]]:
        return type(self), (self.bid, str(self))


class PayloadError(AsyncJobsError):
    """A payload read from Redis cannot be decoded."""


class DecryptionError(PayloadError):
    """A job's sealed arguments (``encrypt=True``) cannot be opened: the key version
    that sealed them is not configured, the ``cryptography`` package is missing, or
    they fail authentication (tampered, or moved to another job). The worker sends the
    job to the dead set with this error and goes on. ``reason`` is ``"no_key"``,
    ``"no_cryptography"``, ``"tampered"`` or ``"malformed"``."""

    def __init__(self, message: str, reason: str = "malformed") -> None:
        self.reason = reason
        super().__init__(message)

    def __reduce__(self) -> tuple[type[DecryptionError], tuple[str, str]]:
        return type(self), (str(self), self.reason)


class JobTimeout(AsyncJobsError, TimeoutError):
    """A job ran longer than its ``timeout`` and was cancelled."""


class RedisUnavailable(AsyncJobsError, ConnectionError):
    """Redis could not be reached (connection refused, reset or timed out)."""


class NotReplicated(AsyncJobsError):
    """Durable mode (``App(min_replicas=n)``): the job was written to the master, but
    fewer than ``n`` replicas acknowledged it within ``replica_timeout``. It is enqueued
    and runs, unless a failover comes before a replica has it (which would lose it);
    deferring it again may run it twice. ``acked``: how many replicas did."""

    def __init__(self, message: str, acked: int = 0, wanted: int = 0) -> None:
        self.acked = acked
        self.wanted = wanted
        super().__init__(message)

    def __reduce__(self) -> tuple[type[NotReplicated], tuple[str, int, int]]:
        return type(self), (str(self), self.acked, self.wanted)


class RedisRefused(AsyncJobsError):
    """Redis answered a command with an error: it is out of memory (``maxmemory``
    reached), a read-only replica (``READONLY``, as after a failover), or another
    refusal. The message names the cause and what to do; ``reason`` is ``"oom"``,
    ``"readonly"`` or ``"error"``. Nothing was written by the refused command."""

    def __init__(self, message: str, reason: str = "error") -> None:
        self.reason = reason
        super().__init__(message)

    def __reduce__(self) -> tuple[type[RedisRefused], tuple[str, str]]:
        return type(self), (str(self), self.reason)  # keeps the reason when pickled
