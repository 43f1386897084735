"""Many worker objects of a one-queue peer in one process, for the queues curve.

    BENCH_QUEUES=q0,q2,... BENCH_CONCURRENCY=1 python -m benchmarks.many_queues \\
        benchmarks.jobs_arq

arq, saq, streaq and taskiq serve one queue per worker. Up to 10 queues the queues
curve runs one worker process per queue; above that it runs one worker *object* per
queue, all in one event loop, in a few processes (``adapters.base.grouped_queues``).
This imports the job module and calls its ``serve_queues(queues, slots)``, which builds
the system's own worker for each queue through its public API and runs them together
until the process is killed.
"""

from __future__ import annotations

import importlib
import os
import sys


def main(argv: list[str]) -> None:
    if len(argv) != 1:
        raise SystemExit("usage: python -m benchmarks.many_queues JOB_MODULE")
    queues = [q for q in os.environ["BENCH_QUEUES"].split(",") if q]
    slots = int(os.environ.get("BENCH_CONCURRENCY", "1"))
    module = importlib.import_module(argv[0])
    module.serve_queues(queues, slots)


if __name__ == "__main__":
    main(sys.argv[1:])
