"""Redis commands per master per job on a 3-master Redis Cluster, unsharded and with
``App(shards=3)`` (issue #15).

``python benchmarks/shard_costs.py [JOBS]``: starts a private 3-master cluster
(``tests.servers.RedisCluster``), and for ``shards=1`` then ``shards=3`` defers JOBS jobs
(2,000 by default) with ``defer`` and runs them with one worker (concurrency 30), reading
``INFO commandstats`` on every master before and after. Prints, for each master, the
commands it ran per job (commands run inside scripts included), and the share of the
total each master carried. Wall time is not measured: on a small machine the masters
share the same cores, so only the division of the work is meaningful.
"""

from __future__ import annotations

import asyncio
import sys
from collections import Counter

import redis.asyncio as aioredis

import asyncjobs
from tests.servers import RedisCluster

JOBS = 2000


async def _calls(port: int) -> Counter[str]:
    r = aioredis.Redis(port=port)
    try:
        info = await r.info("commandstats")
    finally:
        await r.aclose()
    # Everything but INFO itself (this script's reads).
    return Counter(
        {k.removeprefix("cmdstat_"): v["calls"] for k, v in info.items() if k != "cmdstat_info"}
    )


details: list[str] = []


async def measure(cluster: RedisCluster, masters: list[int], shards: int, jobs: int) -> None:
    app = asyncjobs.App(cluster.url, shards=shards, namespace=f"costs{shards}")
    done = 0

    @app.job(name="shard_costs.noop")
    async def noop(n: int) -> None:
        nonlocal done
        done += 1

    await app.connect()
    before = [await _calls(p) for p in masters]
    for i in range(jobs):
        await noop.defer(i)
    async with app.run_worker(concurrency=30, heartbeat_interval=60, scheduler_poll=60):
        while done < jobs:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.3)  # the last acknowledgements land
    after = [await _calls(p) for p in masters]
    await app.aclose()
    diffs = [a - b for a, b in zip(after, before, strict=True)]
    per = [sum(d.values()) / jobs for d in diffs]
    total = sum(per)
    cells = " | ".join(f"{x:.2f} ({x / total:.0%})" for x in per)
    print(f"| shards={shards} | {cells} | {total:.2f} |")
    by_command = sum(diffs, Counter())
    detail = {k: round(v / jobs, 2) for k, v in sorted(by_command.items()) if v / jobs >= 0.01}
    details.append(f"shards={shards}: {detail}")


async def main(jobs: int) -> None:
    with RedisCluster() as cluster:
        rows = [r for r in cluster.nodes_table() if "master" in r["flags"]]
        rows.sort(key=lambda r: int(r["slots"].split("-")[0]))  # by slot range
        masters = [int(r["port"]) for r in rows]
        print(f"{jobs} jobs; commands per job on each master (share of the total)")
        print("| | master 1 | master 2 | master 3 | total |")
        print("|---|---|---|---|---|")
        for shards in (1, 3):
            await measure(cluster, masters, shards, jobs)
        print("\ncommands per job, all masters:")
        for line in details:
            print(line)


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else JOBS))
