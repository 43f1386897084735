"""Worker memory over many jobs: does RSS stay flat after warm-up?

    python -m benchmarks.memory [--jobs 200000]

Runs an in-process worker (uvloop, concurrency 100) against a private redis-server and
feeds it jobs in chunks of 10,000 (one in ten awaits, so tasks are made too), printing
the process's RSS after each chunk and the growth between the 20,000th job and the last.
"""

from __future__ import annotations

import argparse
import asyncio
import os

import asyncjobs
from tests.devserver import RedisProcess

app = asyncjobs.App(namespace="memory")
done = 0


@app.job(name="memory.work")
async def work(n: int) -> None:
    global done
    done += 1
    if n % 10 == 0:
        await asyncio.sleep(0)


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


async def run(url: str, jobs: int) -> None:
    app.redis_url = url
    samples: list[tuple[int, float]] = []
    async with app.run_worker(concurrency=100):
        for chunk in range(0, jobs, 10_000):
            await work.defer_many([(i,) for i in range(chunk, chunk + 10_000)])
            while done < chunk + 10_000:
                await asyncio.sleep(0.05)
            samples.append((done, rss_mib()))
    await app.aclose()
    for n, mib in samples:
        print(f"{n:>8,} jobs  RSS {mib:.1f} MiB")
    base = samples[1][1] if len(samples) > 1 else samples[0][1]
    print(f"growth from 20,000 jobs to {samples[-1][0]:,}: {samples[-1][1] - base:+.1f} MiB")


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--jobs", type=int, default=200_000)
    args = ap.parse_args()
    import uvloop

    with RedisProcess() as server:
        uvloop.run(run(server.url, args.jobs))


if __name__ == "__main__":
    main()
