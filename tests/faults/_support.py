"""Helpers of the fault suite: worker subprocesses with logs, their CPU time, the
evidence jobs of ``tests.apps.faulty`` leave in Redis, and a short-heartbeat config."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import redis.asyncio as aioredis
import redis.exceptions as rexc
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff

import asyncjobs
from tests.apps import faulty
from tests.conftest import WORKER_CMD, subprocess_env, text

NS = "{asyncjobs}"
QUEUE = f"{NS}:queue:default"
DEAD = f"{NS}:dead"
RETRY = f"{NS}:retry"
PROCESSES = f"{NS}:processes"
INFLIGHT = f"{NS}:inflight:"
# A process's in-flight record: its in-flight hash, and (where the worker has one) the
# landing list an idle fetcher moves a job into before it is in the hash.
LANDING = f"{NS}:landing:"
APP = "tests.apps.faulty:app"

# Short heartbeats, so that a dead worker is noticed within a few seconds.
HEARTBEAT_INTERVAL = 0.5
HEARTBEAT_TTL = 2.0

_TICK = os.sysconf("SC_CLK_TCK")


def client(url: str) -> aioredis.Redis:
    """The test's own client: it retries across a Redis restart (redis-py does not by
    default), so that reading the evidence never fails because of the fault."""
    return aioredis.Redis.from_url(
        url,
        retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), 20),
        retry_on_error=[rexc.ConnectionError, rexc.TimeoutError],
    )


def write_config(directory: Path, name: str = "worker.toml", **settings: Any) -> Path:
    """A worker TOML file with short heartbeats; ``settings`` override or add keys."""
    values: dict[str, Any] = {
        "heartbeat_interval": HEARTBEAT_INTERVAL,
        "heartbeat_ttl": HEARTBEAT_TTL,
        "scheduler_poll": 0.5,
        "concurrency": 10,
        "timeout": 5.0,
        **settings,
    }
    lines = []
    for key, value in values.items():
        if isinstance(value, str):
            lines.append(f'{key} = "{value}"')
        elif isinstance(value, list):
            lines.append(f"{key} = [{', '.join(repr(v) for v in value)}]".replace("'", '"'))
        else:
            lines.append(f"{key} = {value!r}")
    path = directory / name
    path.write_text("\n".join(lines) + "\n")
    return path


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a running process, from ``/proc/<pid>/stat``."""
    with open(f"/proc/{pid}/stat") as f:
        stat = f.read()
    fields = stat[stat.rindex(")") + 2 :].split()
    # fields[0] is field 3 (state); utime and stime are fields 14 and 15.
    return (int(fields[11]) + int(fields[12])) / _TICK


class WorkerProc:
    """One ``asyncjobs worker`` subprocess; its output goes to a log file."""

    def __init__(
        self,
        url: str,
        config: Path,
        log: Path,
        *extra: str,
        prefix: Sequence[str] = (),
        app: str = APP,
    ) -> None:
        self.log = log
        with open(log, "ab") as out:
            self.popen = subprocess.Popen(
                [*prefix, *WORKER_CMD, "worker", app, "--config", str(config), *extra],
                env=subprocess_env(url),
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self.pid = self.popen.pid
        self.started = time.monotonic()
        self.process_id: str | None = None

    def alive(self) -> bool:
        return self.popen.poll() is None

    def signal(self, sig: signal.Signals) -> None:
        self.popen.send_signal(sig)

    def kill(self) -> None:
        """SIGKILL and reap (an unreaped zombie still looks alive to ``kill(pid, 0)``)."""
        if self.alive():
            self.popen.kill()
        self.popen.wait(10)

    def cpu(self) -> float:
        return cpu_seconds(self.pid)

    def output(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""

    async def registered(self, redis: aioredis.Redis) -> str | None:
        """This worker's process id once its heartbeat is in Redis, else None."""
        if self.process_id is None:
            for member in await redis.smembers(PROCESSES):
                pid = text(member)
                if pid.split(":")[-2:-1] == [str(self.pid)]:
                    self.process_id = pid
        return self.process_id


class Fleet:
    """The worker subprocesses a test starts; :meth:`close` kills what is left."""

    def __init__(self, url: str, config: Path, logs: Path) -> None:
        self.url = url
        self.config = config
        self.logs = logs
        self.procs: list[WorkerProc] = []

    def start(
        self,
        *extra: str,
        url: str | None = None,
        prefix: Sequence[str] = (),
        app: str = APP,
    ) -> WorkerProc:
        """Start a worker of ``app`` (``prefix``: a command line to run it under)."""
        w = WorkerProc(
            url or self.url,
            self.config,
            self.logs / f"worker-{len(self.procs)}.log",
            *extra,
            prefix=prefix,
            app=app,
        )
        self.procs.append(w)
        return w

    def close(self) -> None:
        for w in self.procs:
            w.kill()

    def tails(self, chars: int = 3000) -> str:
        return "\n".join(
            f"--- {w.log.name} (pid {w.pid})\n{w.output()[-chars:]}" for w in self.procs
        )


@dataclass(frozen=True)
class Run:
    n: int
    pid: int
    ts: float


async def runs(redis: aioredis.Redis, key: str = "test:ran") -> list[Run]:
    """The evidence ``tests.apps.faulty.record`` left: one entry per started/ended run."""
    out = []
    for value in (await redis.hgetall(key)).values():
        n, pid, ts = text(value).split()
        out.append(Run(int(n), int(pid), float(ts)))
    return out


def counts(entries: Iterable[Run]) -> Counter[int]:
    return Counter(e.n for e in entries)


async def inflight(redis: aioredis.Redis, process_id: str) -> dict[str, Any]:
    """What a process holds in flight (its in-flight hash and landing list, read in one
    transaction): jid → decoded payload."""
    import json

    async with redis.pipeline(transaction=True) as pipe:
        pipe.hgetall(INFLIGHT + process_id)
        pipe.lrange(LANDING + process_id, 0, -1)
        hashed, landing = await pipe.execute()
    out = {text(k): json.loads(v) for k, v in hashed.items()}
    for raw in landing:
        payload = json.loads(raw)
        out[payload["jid"]] = payload
    return out


async def held(redis: aioredis.Redis, process_id: str) -> int:
    """How many jobs a process holds in flight."""
    async with redis.pipeline(transaction=True) as pipe:
        pipe.hlen(INFLIGHT + process_id)
        pipe.llen(LANDING + process_id)
        counts_ = await pipe.execute()
    return int(sum(counts_))


async def anything_in_flight(redis: aioredis.Redis) -> int:
    """How many jobs all processes together hold in flight."""
    total = 0
    for key in await redis.keys(INFLIGHT + "*"):
        total += int(await redis.hlen(key))
    for key in await redis.keys(LANDING + "*"):
        total += int(await redis.llen(key))
    return total


async def where_are(redis: aioredis.Redis, ns: set[int]) -> dict[str, int]:
    """Where the jobs ``ns`` of ``record`` sit in Redis now: every list, hash and sorted
    set of the namespace is searched (queues, retry, dead, in-flight records, whatever
    else holds payloads). The reads are one transaction, so a job moving meanwhile is
    seen in one place."""
    import json

    found: Counter[str] = Counter()

    def look(place: str, raws: Iterable[Any]) -> None:
        for raw in raws:
            try:
                n = json.loads(raw)["args"]["n"]
            except (ValueError, KeyError, TypeError):
                continue
            if n in ns:
                found[place] += 1

    keys = [text(k) for k in await redis.keys(NS + ":*")]
    async with redis.pipeline(transaction=False) as pipe:
        for key in keys:
            pipe.type(key)
        types = [text(t) for t in await pipe.execute()]
    readers = {"list": "lrange", "zset": "zrange", "hash": "hvals"}
    wanted = [(k, t) for k, t in zip(keys, types, strict=True) if t in readers]
    async with redis.pipeline(transaction=True) as pipe:
        for key, kind in wanted:
            if kind == "hash":
                pipe.hvals(key)
            elif kind == "list":
                pipe.lrange(key, 0, -1)
            else:
                pipe.zrange(key, 0, -1)
        values = await pipe.execute()
    for (key, _), raws in zip(wanted, values, strict=True):
        name = key[len(NS) + 1 :]
        look("queue" if name.startswith("queue:") else name, raws)
    return dict(found)


async def enqueue(url: str, items: Sequence[tuple[int, float]], chunk: int = 2000) -> list[str]:
    """``record.defer_many(items)`` against ``url``, in chunks; returns the jids."""
    faulty.app.redis_url = url
    jids: list[str] = []
    try:
        for i in range(0, len(items), chunk):
            sent = await faulty.record.defer_many(items[i : i + chunk])
            jids += [j for j in sent if j is not None]
    finally:
        await faulty.app.aclose()
    return jids


@dataclass
class Producer:
    """Defers ``record`` jobs one by one until told to stop; a job is *accepted* when
    ``defer`` returned. Run it as a task, with ``faulty.app.redis_url`` set."""

    job_sleep: float = 0.005
    pause: float = 0.005  # between two defers
    accepted: list[int] = field(default_factory=list)
    refused: int = 0
    slowest_refusal: float = 0.0
    stop: bool = False

    async def run(self) -> None:
        n = 0
        while not self.stop:
            t0 = time.monotonic()
            try:
                await faulty.record.defer(n, self.job_sleep)
            except asyncjobs.RedisUnavailable:
                self.refused += 1
                self.slowest_refusal = max(self.slowest_refusal, time.monotonic() - t0)
                await anyio.sleep(0.05)
            else:
                self.accepted.append(n)
                await anyio.sleep(self.pause)
            n += 1


def report(test: str, **figures: Any) -> None:
    """Print the figures a fault test measured (shown with ``pytest -rA`` or ``-s``)."""
    import json

    print(f"FIGURES {test} {json.dumps(figures, default=str)}")  # noqa: T201
