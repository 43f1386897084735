"""``python -m benchmarks``: asyncjobs against its peers and two floors, in one run.

Examples::

    python -m benchmarks                          # every system, every scenario
    python -m benchmarks --quick                  # 2,000 jobs, 1 round: a smoke test
    python -m benchmarks --systems asyncjobs,dramatiq,floor --scenarios drain
    python -m benchmarks --json out.json --chart out.png

Peers come from the ``bench`` extra (see ``benchmarks/README.md``); a peer that is not
installed gets a row that says so.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import importlib.metadata
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from benchmarks import _uvloop, report
from benchmarks.adapters import DEFAULT_SYSTEMS, SYSTEMS, load_adapter
from benchmarks.curves import CURVES
from benchmarks.runner import SCENARIOS, Runner, Settings, machine_facts

RESULTS_DIR = Path(__file__).resolve().parent / "results"
BASE_PACKAGES = ("redis", "hiredis", "msgspec", "uvloop", "anyio", "rich", "matplotlib")


def parse_list(value: str, allowed: list[str] | tuple[str, ...], what: str) -> list[str]:
    if value in ("all", ""):
        return list(allowed)
    if value == "default" and what == "system":
        return list(DEFAULT_SYSTEMS)
    items = [v.strip() for v in value.split(",") if v.strip()]
    unknown = [v for v in items if v not in allowed]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown {what}: {', '.join(unknown)} (choose from {', '.join(allowed)})"
        )
    return [v for v in allowed if v in items] if what == "scenario" else items


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Benchmark asyncjobs against its peers on a private redis-server.",
    )
    parser.add_argument(
        "--systems",
        default="default",
        help=f"comma-separated systems; 'default' (all but rq-simple) or 'all': "
        f"{', '.join(SYSTEMS)}",
    )
    parser.add_argument(
        "--scenarios",
        default="all",
        help=f"comma-separated scenarios, or 'all' (default): {', '.join(SCENARIOS)}",
    )
    parser.add_argument("--jobs", type=int, default=None, help="jobs per run (default 20000)")
    parser.add_argument(
        "--concurrency", type=int, default=100, help="worker concurrency (default 100)"
    )
    parser.add_argument("--rounds", type=int, default=None, help="interleaved rounds (default 3)")
    parser.add_argument(
        "--latency-samples", type=int, default=None, help="pickup samples per round (200)"
    )
    parser.add_argument(
        "--sched-samples", type=int, default=None, help="scheduled samples per round (100)"
    )
    parser.add_argument(
        "--drain-budget",
        type=float,
        default=None,
        help="seconds a drain may run before its rate is taken from the jobs done so far"
        " (default 30; --quick 8)",
    )
    parser.add_argument(
        "--busy-threshold",
        type=float,
        default=10.0,
        help="percent of the machine used by other work during a measurement above which"
        " it is repeated (default 10)",
    )
    parser.add_argument(
        "--retries",
        type=int,
        default=None,
        help="how often a disturbed measurement is repeated (default 1; --quick 0)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke test: 2,000 jobs, 1 round, 50 pickup and 20 scheduled samples",
    )
    parser.add_argument("--json", type=Path, default=None, help="write results here")
    parser.add_argument("--chart", type=Path, default=None, help="write a PNG/SVG chart here")
    parser.add_argument(
        "--no-files",
        action="store_true",
        help="write no JSON or chart (by default both go to benchmarks/results/ unless"
        " --json or --chart says where)",
    )
    parser.add_argument(
        "--asyncjobs-launch",
        choices=("auto", "cli", "inprocess"),
        default="auto",
        help="start the asyncjobs worker with its CLI, in-process (app.worker(...).run()),"
        " or the CLI when it exists (default)",
    )
    parser.add_argument(
        "--log-dir", type=Path, default=None, help="keep worker and redis-server logs here"
    )
    parser.add_argument(
        "--profile",
        choices=("pyinstrument", "cprofile"),
        default=None,
        help="run each drain's worker under this profiler and write its profile to"
        " benchmarks/results/ (the figures of a profiled run are slower: use it with"
        " --scenarios drain to find where the time goes, not to compare)",
    )
    parser.add_argument(
        "--curves",
        default=None,
        help="run these curves instead of the scenarios (comma-separated, or 'all'): "
        + ", ".join(CURVES)
        + "; a table per curve, JSON and a PNG per curve under benchmarks/results/",
    )
    parser.add_argument(
        "--curve-scale",
        type=float,
        default=1.0,
        help="multiply every curve's number of jobs by this (default 1)",
    )
    parser.add_argument("--list", action="store_true", help="list systems and exit")
    return parser


def versions(systems: list[str]) -> dict[str, str | None]:
    names: list[str] = list(BASE_PACKAGES)
    for system in systems:
        with contextlib.suppress(Exception):
            for pkg in load_adapter(system).packages:
                if pkg not in names:
                    names.append(pkg)
    out: dict[str, str | None] = {}
    for name in names:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


@contextlib.contextmanager
def progress_display(total: int) -> Iterator[Callable[[str, bool], None]]:
    """A rich progress bar on stderr (plain lines when rich is missing or not a tty)."""
    try:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )
    except ImportError:
        Console = None  # type: ignore[assignment,misc]
    done = 0
    if Console is None or not Console(stderr=True).is_terminal:

        def plain(msg: str, step_done: bool) -> None:
            nonlocal done
            done += step_done
            print(f"[{done}/{total}] {msg}", file=sys.stderr, flush=True)

        yield plain
        return
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
    ) as progress:
        task = progress.add_task("starting", total=total)

        def update(msg: str, step_done: bool) -> None:
            progress.update(task, description=msg, advance=1 if step_done else 0)

        yield update
        progress.update(task, completed=total, description="done")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.list:
        for name in SYSTEMS:
            try:
                cls = load_adapter(name)
                missing = cls.missing()
                print(f"{name:14} {cls.label}" + (f"  [{missing}]" if missing else ""))
            except Exception as exc:
                print(f"{name:14} [{type(exc).__name__}: {exc}]")
        return 0
    try:
        systems = parse_list(args.systems, list(SYSTEMS), "system")
        scenarios = parse_list(args.scenarios, SCENARIOS, "scenario")
    except argparse.ArgumentTypeError as exc:
        parser.error(str(exc))
    curves: list[str] = []
    if args.curves is not None:
        try:
            curves = parse_list(args.curves, CURVES, "curve")
        except argparse.ArgumentTypeError as exc:
            parser.error(str(exc))
    quick = args.quick
    settings = Settings(
        systems=systems,
        scenarios=scenarios,
        jobs=args.jobs or (2_000 if quick else 20_000),
        concurrency=args.concurrency,
        rounds=args.rounds or (1 if quick else 3),
        latency_samples=args.latency_samples or (50 if quick else 200),
        sched_samples=args.sched_samples or (20 if quick else 100),
        stall_timeout=10.0 if quick else 20.0,
        drain_budget=args.drain_budget or (8.0 if quick else 30.0),
        profiler=args.profile,
        busy_threshold=args.busy_threshold,
        retries=args.retries if args.retries is not None else (0 if quick else 1),
        asyncjobs_launch=args.asyncjobs_launch,
        log_dir=args.log_dir,
    )
    if curves:
        return run_curves(args, settings, curves)
    started = dt.datetime.now(dt.UTC)
    t0 = time.monotonic()
    # progress steps: one per scenario per system per round
    total = settings.rounds * len(systems) * len(scenarios)
    with Runner(settings) as runner, progress_display(total) as progress:
        runner.progress = progress
        _uvloop.run(runner.run())
        redis_version = runner.redis_version
    elapsed = time.monotonic() - t0

    summary = report.summarize(runner.results)
    facts = machine_facts(redis_version)
    header = (
        f"asyncjobs benchmark · {settings.jobs:,} jobs · concurrency {settings.concurrency} · "
        f"{settings.rounds} round(s) · {facts['cpu_count']} CPU ({facts['cpu_model']}) · "
        f"Python {sys.version.split()[0]} · redis-server {redis_version} · {elapsed:.0f}s"
    )
    remarks = report.remarks_for(runner.results, settings.jobs, settings.busy_threshold)
    report.print_report(summary, systems, runner.labels, runner.workers_desc, header, remarks)

    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    # default files only when neither path was given (and not --no-files)
    defaults = not (args.no_files or args.json or args.chart)
    json_path = args.json or (RESULTS_DIR / f"bench-{stamp}.json" if defaults else None)
    chart_path = args.chart or (RESULTS_DIR / f"bench-{stamp}.png" if defaults else None)
    payload: dict[str, Any] = {
        "started": started.isoformat(),
        "elapsed_s": elapsed,
        "settings": {
            "systems": systems,
            "scenarios": scenarios,
            "jobs": settings.jobs,
            "concurrency": settings.concurrency,
            "rounds": settings.rounds,
            "latency_samples": settings.latency_samples,
            "sched_samples": settings.sched_samples,
            "sched_lead_s": settings.sched_lead,
            "sched_gap_s": settings.sched_gap,
            "quick": quick,
            "drain_budget_s": settings.drain_budget,
            "profiler": settings.profiler,
            "busy_threshold_pct": settings.busy_threshold,
            "retries": settings.retries,
            "asyncjobs_launch": settings.asyncjobs_launch,
        },
        "machine": facts,
        "versions": versions(systems),
        "systems": {
            s: {"label": runner.labels.get(s, ""), "worker": runner.workers_desc.get(s, "")}
            for s in systems
        },
        "summary": summary,
        "targets": [
            {"target": t, "measured": m, "met": ok} for t, m, ok in report.targets(summary)
        ],
        "results": {
            system: {sc: [o.as_json() for o in outs] for sc, outs in per.items()}
            for system, per in runner.results.items()
        },
    }
    for system, path in runner.profiles.items():
        print(f"profile of {system}'s drain: {path}")
    if json_path:
        report.write_json(json_path, payload)
        print(f"JSON: {json_path}")
    if chart_path:
        if report.write_chart(chart_path, summary, systems, header):
            print(f"chart: {chart_path}")
        else:
            print("chart: skipped (matplotlib not installed)")
    return 0


def run_curves(args: argparse.Namespace, settings: Settings, names: list[str]) -> int:
    """``--curves``: each curve's table, and its JSON and PNG under benchmarks/results/."""
    from benchmarks.curves import Curves

    started = dt.datetime.now(dt.UTC)
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    t0 = time.monotonic()
    with Runner(settings) as runner, progress_display(0) as progress:
        runner.progress = progress
        curves = Curves(runner, settings.systems, args.curve_scale)

        async def main() -> None:
            runner.sut_admin = aioredis.Redis.from_url(runner.sut.url)
            runner.ctrl_client = aioredis.Redis.from_url(runner.ctrl.url)
            try:
                await curves.run(names)
            finally:
                await runner.sut_admin.aclose()
                await runner.ctrl_client.aclose()

        import uvloop

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as loop_runner:
            loop_runner.run(main())
        redis_version = runner.redis_version
    facts = machine_facts(redis_version)
    for curve in curves.curves.values():
        header = (
            f"{curve.name} · {facts['cpu_count']} CPU · Python {sys.version.split()[0]} · "
            f"redis-server {redis_version} · {started:%Y-%m-%d %H:%M} UTC"
        )
        print(f"\n## {curve.name}: {curve.title}\n")
        print(curves.table(curve))
        for note in curve.notes:
            print(f"- {note}")
        if args.no_files:
            continue
        base = RESULTS_DIR / f"curve-{curve.name}-{stamp}"
        report.write_json(
            base.with_suffix(".json"),
            {
                "started": started.isoformat(),
                "curve": curve.name,
                "scale": args.curve_scale,
                "machine": facts,
                "versions": versions(settings.systems),
                "systems": {
                    s: {"label": runner.labels.get(s, ""), "worker": runner.workers_desc.get(s, "")}
                    for s in settings.systems
                },
                **curves.as_json(curve),
            },
        )
        print(f"JSON: {base.with_suffix('.json')}")
        if curves.chart(curve, base.with_suffix(".png"), header):
            print(f"chart: {base.with_suffix('.png')}")
    print(f"\n{time.monotonic() - t0:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
