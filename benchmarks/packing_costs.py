"""What encrypted and compressed arguments cost (#15): bytes stored in Redis, ``defer``
time, Redis commands per defer, and the worker's time to open the arguments, for a
realistic 100 KB JSON argument and for a small one, with each option off and on.

``python -m benchmarks.packing_costs [REDIS_URL]``: without a URL, starts a private
``redis-server`` on a free port. With ``zstandard`` importable, also compares it with
zlib on the same argument (size and time), the measure behind choosing zlib.

Defer time is the median of 200 ``defer`` calls, each awaited (one round trip each),
on one connection; bytes are those of the payload as stored (``LINDEX``); commands
are ``INFO commandstats`` calls per defer (commands run inside scripts included).
"""

from __future__ import annotations

import asyncio
import base64
import json
import random
import statistics
import sys
import time
import zlib
from typing import Any

import msgspec
import redis.asyncio as aioredis

import asyncjobs
from benchmarks.flow_costs import _server, _stats

N = 200
KEY = base64.b64encode(bytes(range(32))).decode()


def rows(target: int, seed: int = 7) -> list[dict[str, Any]]:
    """Order records as a web app would pass them: ids, emails, names, amounts,
    timestamps, tags, free text; about ``target`` bytes of JSON."""
    rng = random.Random(seed)
    words = (
        "alpha beta gamma delta order shipped pending invoice paris lyon berlin red blue "
        "green item widget gadget"
    ).split()
    out: list[dict[str, Any]] = []
    size = 2
    while size < target:
        row = {
            "id": rng.randrange(10**9),
            "email": f"user{rng.randrange(10**6)}@example.com",
            "name": " ".join(rng.choice(words) for _ in range(2)).title(),
            "status": rng.choice(["pending", "shipped", "cancelled"]),
            "total": round(rng.uniform(1, 999), 2),
            "created_at": f"2026-11-{rng.randrange(1, 29):02d}T{rng.randrange(24):02d}:00:00Z",
            "tags": rng.sample(words, 3),
            "note": " ".join(rng.choice(words) for _ in range(rng.randrange(3, 12))),
        }
        out.append(row)
        size += len(json.dumps(row)) + 2
    return out


CONFIGS: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
    ("plain", {}, {}),
    ("compress", {"compress_over": 16 * 1024}, {}),
    ("compress zstd", {"compress_over": 16 * 1024, "compression": "zstd"}, {}),
    ("encrypt", {"encryption_keys": {1: KEY}}, {"encrypt": True}),
    (
        "encrypt+compress",
        {"encryption_keys": {1: KEY}, "compress_over": 16 * 1024},
        {"encrypt": True},
    ),
    (
        "encrypt+compress zstd",
        {"encryption_keys": {1: KEY}, "compress_over": 16 * 1024, "compression": "zstd"},
        {"encrypt": True},
    ),
]


async def measure(
    url: str, label: str, size: str, arg: Any, app_opts: dict[str, Any], job_opts: dict[str, Any]
) -> None:
    r = aioredis.Redis.from_url(url)
    await r.flushall()
    app = asyncjobs.App(url, max_payload_bytes=1 << 22, **app_opts)

    @app.job(name=f"packing.{label}", **job_opts)
    async def job(data: Any) -> None: ...

    await app.connect()
    for _ in range(20):  # warm up: connection, script load, cipher
        await job.defer(arg)
    await r.flushall()
    s0 = await _stats(r)
    times = []
    for _ in range(N):
        t = time.perf_counter()
        await job.defer(arg)
        times.append(time.perf_counter() - t)
    s1 = await _stats(r)
    raw = await r.lindex(app.keys.queue("default"), 0)
    assert raw is not None
    stored = msgspec.json.decode(raw)
    args = msgspec.json.encode(stored["args"])
    t = time.perf_counter()
    for _ in range(N):
        try:
            job.decode_call(args)
        except msgspec.ValidationError:
            job.decode_call(app.packer.unpack(args, job.name, stored["jid"]))
    open_us = (time.perf_counter() - t) / N * 1e6
    commands = sum(s1.values()) - sum(s0.get(k, 0) for k in s1)
    print(
        f"{size:6} {label:22} stored {len(raw):8,d} B   "
        f"defer p50 {statistics.median(times) * 1e6:7.0f} us   "
        f"commands/defer {commands / N:.2f}   worker decode {open_us:6.0f} us"
    )
    await app.aclose()
    await r.aclose()


def codecs(data: bytes) -> None:
    try:
        import zstandard
    except ImportError:
        print("zstandard not importable: codec comparison skipped")
        return

    def bench(name: str, comp: Any, dec: Any) -> None:
        t = time.perf_counter()
        for _ in range(N):
            c = comp(data)
        tc = (time.perf_counter() - t) / N * 1e6
        t = time.perf_counter()
        for _ in range(N):
            dec(c)
        td = (time.perf_counter() - t) / N * 1e6
        print(
            f"{name:8} {len(c):7,d} B ({len(c) / len(data):.0%})  "
            f"compress {tc:6.0f} us  decompress {td:5.0f} us"
        )

    print(f"codecs on {len(data):,d} B of JSON:")
    for level in (1, 6):
        bench(f"zlib-{level}", lambda d, lv=level: zlib.compress(d, lv), zlib.decompress)
    for level in (1, 3):
        c = zstandard.ZstdCompressor(level=level)
        bench(f"zstd-{level}", c.compress, zstandard.ZstdDecompressor().decompress)


async def main(url: str) -> None:
    big = rows(100_000)
    small = {"user_id": 42, "token": "tok_live_abcdef0123456789"}
    for size, arg in (("100KB", big), ("small", small)):
        for label, app_opts, job_opts in CONFIGS:
            await measure(url, label, size, arg, app_opts, job_opts)
    codecs(msgspec.json.encode({"data": big}))


if __name__ == "__main__":
    if len(sys.argv) > 1:
        asyncio.run(main(sys.argv[1]))
    else:
        with _server() as server_url:
            asyncio.run(main(server_url))
