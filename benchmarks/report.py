"""Summaries, the table (rich when importable, else plain text), JSON and the chart."""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.adapters import FLOORS, OURS
from benchmarks.runner import Outcome, disturbance, percentile

REFERENCE = "asyncjobs"


@dataclass(frozen=True)
class Metric:
    key: str
    title: str
    scenario: str
    field: str  # metric field of the outcome, or "p50"/"p99"/"min" of pooled samples
    higher_is_better: bool
    log_scale: bool = True


METRICS: tuple[Metric, ...] = (
    Metric("enqueue", "enqueue /s", "enqueue", "rate", True),
    Metric("bulk", "bulk enqueue /s", "bulk", "rate", True),
    Metric("drain", "drain jobs/s", "drain", "rate", True),
    Metric("drain_cmds", "cmds/job (drain)", "drain", "cmds_per_job", False),
    Metric("drain_writes", "round trips/job (drain)", "drain", "writes_per_job", False),
    Metric("enqueue_cmds", "cmds/job (enqueue)", "enqueue", "cmds_per_job", False),
    Metric("pickup_p50", "pickup p50 ms", "latency", "p50", False),
    Metric("pickup_p99", "pickup p99 ms", "latency", "p99", False),
    Metric("sched_p50", "sched late p50 ms", "scheduled", "p50", False),
    Metric("sched_p99", "sched late p99 ms", "scheduled", "p99", False),
    Metric("sched_min", "sched earliest ms", "scheduled", "min", False, log_scale=False),
    Metric("rss", "worker RSS MiB", "drain", "rss_mib", False, log_scale=False),
)
METRIC_BY_KEY = {m.key: m for m in METRICS}

# Table columns: (title, metric keys shown in the cell, joined with " / ")
COLUMNS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("enqueue /s", ("enqueue",)),
    ("bulk /s", ("bulk",)),
    ("drain jobs/s", ("drain",)),
    ("cmds/job\ndrain", ("drain_cmds",)),
    ("round trips\n/job drain", ("drain_writes",)),
    ("cmds/job\nenqueue", ("enqueue_cmds",)),
    ("pickup ms\np50 / p99", ("pickup_p50", "pickup_p99")),
    ("sched late ms\np50 / p99", ("sched_p50", "sched_p99")),
    ("sched\nearliest ms", ("sched_min",)),
    ("worker\nRSS MiB", ("rss",)),
)

Cell = float | str  # a figure, or why there is none


def summarize(results: dict[str, dict[str, list[Outcome]]]) -> dict[str, dict[str, Cell]]:
    """Per system and metric: the median over rounds (pooled percentiles for latency)."""
    summary: dict[str, dict[str, Cell]] = {}
    for system, scenarios in results.items():
        row: dict[str, Cell] = {}
        for metric in METRICS:
            outcomes = scenarios.get(metric.scenario)
            if not outcomes:
                row[metric.key] = "not run"
                continue
            ok = [o for o in outcomes if o.status == "ok"]
            if not ok:
                first = outcomes[0]
                reason = first.reason
                if first.status != "n/a" or not reason.startswith("n/a"):
                    reason = f"{first.status}: {reason}"
                row[metric.key] = reason
                continue
            if metric.field in ("p50", "p99", "min"):
                pooled = [x for o in ok for x in o.samples]
                if metric.field == "min":
                    row[metric.key] = min(pooled)
                else:
                    row[metric.key] = percentile(pooled, 50 if metric.field == "p50" else 99)
            else:
                values = [o.metrics[metric.field] for o in ok if metric.field in o.metrics]
                row[metric.key] = statistics.median(values) if values else "n/a"
        summary[system] = row
    return summary


def fmt_value(value: float) -> str:
    if math.isnan(value):
        return "nan"
    mag = abs(value)
    if mag >= 1000:
        return f"{value:,.0f}"
    if mag >= 100:
        return f"{value:.0f}"
    if mag >= 10:
        return f"{value:.1f}"
    if mag >= 1:
        return f"{value:.2f}"
    if mag >= 0.01:
        return f"{value:.3f}"
    if mag == 0:
        return "0"
    return f"{value:.4f}"


def fmt_ratio(value: float, ref: float) -> str:
    if ref <= 0 or value < 0 or math.isnan(value) or math.isnan(ref):
        return "—"
    r = value / ref
    if r >= 100:
        return f"{r:,.0f}×"
    if r >= 10:
        return f"{r:.1f}×"
    if r >= 0.01 or r == 0:
        return f"{r:.2f}×"
    return f"{r:.2g}×"


class Notes:
    """Footnotes for cells that hold a reason rather than a figure."""

    def __init__(self) -> None:
        self.items: list[str] = []

    def ref(self, text: str) -> str:
        if text == "not run":
            return "—"
        kind = text.partition(":")[0]
        if kind not in ("n/a", "error", "missing"):
            kind = "n/a"
        if text not in self.items:
            self.items.append(text)
        return f"{kind} [{self.items.index(text) + 1}]"


def build_rows(
    summary: dict[str, dict[str, Cell]], systems: list[str], ratios: bool, notes: Notes
) -> list[list[str]]:
    ref = summary.get(REFERENCE, {})
    rows = []
    for system in systems:
        row = summary.get(system)
        if row is None:
            continue
        cells = [system]
        for _title, keys in COLUMNS:
            parts = []
            for key in keys:
                value = row.get(key, "not run")
                if isinstance(value, str):
                    parts.append(notes.ref(value))
                elif ratios and key == "sched_min":
                    parts.append("—")  # a signed offset: no meaningful ratio
                elif ratios:
                    ref_value = ref.get(key)
                    parts.append(
                        fmt_ratio(value, ref_value) if isinstance(ref_value, float) else "—"
                    )
                else:
                    parts.append(fmt_value(value))
            if len(set(parts)) == 1 and len(parts) > 1 and not parts[0][0].isdigit():
                parts = parts[:1]
            cells.append(" / ".join(parts))
        rows.append(cells)
    return rows


def targets(summary: dict[str, dict[str, Cell]]) -> list[tuple[str, str, bool | None]]:
    """The issue's targets, as ratios measured in this run: (what, measured, met)."""
    ours = summary.get(REFERENCE)
    if not ours:
        return []

    def num(system: str, key: str) -> float | None:
        value = summary.get(system, {}).get(key)
        return value if isinstance(value, float) and not math.isnan(value) else None

    out: list[tuple[str, str, bool | None]] = []
    peers = [s for s in summary if s not in FLOORS and s not in OURS]

    def ratio_check(label: str, a: float | None, b: float | None, bound: float) -> None:
        if a is None or b is None or b == 0:
            out.append((label, "not measured", None))
        else:
            out.append((label, f"{a / b:.2f}×", a / b >= bound))

    best_peer_drain = max((v for s in peers if (v := num(s, "drain")) is not None), default=None)
    best_name = next((s for s in peers if num(s, "drain") == best_peer_drain), "?")
    ratio_check(
        f"drain ≥ 20× the fastest peer ({best_name})", num(REFERENCE, "drain"), best_peer_drain, 20
    )
    ratio_check(
        "drain ≥ 0.5× the framework-free floor", num(REFERENCE, "drain"), num("floor", "drain"), 0.5
    )
    ratio_check(
        "--processes 2 drain ≥ 1.6× one process",
        num("asyncjobs-2p", "drain"),
        num(REFERENCE, "drain"),
        1.6,
    )
    ratio_check(
        "defer ≥ 0.9× bare LPUSH loop", num(REFERENCE, "enqueue"), num("redis-py", "enqueue"), 0.9
    )
    ratio_check(
        "defer_many ≥ 0.8× pipelined LPUSH", num(REFERENCE, "bulk"), num("redis-py", "bulk"), 0.8
    )
    for key, label in (("pickup_p50", "p50"), ("pickup_p99", "p99")):
        mine = num(REFERENCE, key)
        best = min((v for s in peers if (v := num(s, key)) is not None), default=None)
        floor = num("redis-py", key)
        if mine is None or best is None:
            out.append((f"pickup {label} ≤ best peer's", "not measured", None))
        else:
            out.append(
                (f"pickup {label} ≤ best peer's", f"{mine:.2f} vs {best:.2f} ms", mine <= best)
            )
        if mine is None or floor is None:
            out.append((f"pickup {label} ≤ 1.5× BRPOP floor", "not measured", None))
        else:
            out.append(
                (f"pickup {label} ≤ 1.5× BRPOP floor", f"{mine / floor:.2f}×", mine <= 1.5 * floor)
            )
    for key, bound in (("sched_p50", 2.0), ("sched_p99", 10.0)):
        mine = num(REFERENCE, key)
        out.append(
            (
                f"scheduled lateness {key[-3:]} ≤ {bound:g} ms",
                "not measured" if mine is None else f"{mine:.2f} ms",
                None if mine is None else mine <= bound,
            )
        )
    early = num(REFERENCE, "sched_min")
    out.append(
        (
            "scheduled jobs never early",
            "not measured" if early is None else f"earliest {early:+.2f} ms",
            None if early is None else early >= 0,
        )
    )
    rtt = num(REFERENCE, "drain_writes")
    out.append(
        (
            "round trips per job at load ≤ 0.05",
            "not measured" if rtt is None else f"{rtt:.3f}",
            None if rtt is None else rtt <= 0.05,
        )
    )
    return out


# --------------------------------------------------------------------------- output


def print_report(
    summary: dict[str, dict[str, Cell]],
    systems: list[str],
    labels: dict[str, str],
    workers: dict[str, str],
    header: str,
    remarks: list[str] | None = None,
) -> None:
    notes = Notes()
    for remark in remarks or []:
        notes.items.append(remark)
    absolute = build_rows(summary, systems, False, notes)
    ratios = build_rows(summary, systems, True, notes)
    goals = targets(summary)
    legend = [
        f"{s}: {labels.get(s, '')}" + (f" — {workers[s]}" if s in workers else "") for s in systems
    ]
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        _print_plain(header, absolute, ratios, notes, goals, legend)
        return
    console = Console(width=None if Console().is_terminal else 200)
    console.print(header)
    for title, rows in (
        ("Absolute figures (medians of rounds; latency percentiles over pooled samples)", absolute),
        (f"Ratio to {REFERENCE} (system ÷ {REFERENCE}, per metric)", ratios),
    ):
        table = Table(title=title, title_justify="left", show_lines=False)
        table.add_column("system", style="bold")
        for col_title, _keys in COLUMNS:
            table.add_column(col_title, justify="right")
        for row in rows:
            style = "green" if row[0] == REFERENCE else None
            table.add_row(*row, style=style)
        console.print(table)
    if notes.items:
        console.print("Notes:")
        for i, text in enumerate(notes.items, 1):
            console.print(f"  [{i}] {text}", markup=False, highlight=False)
    if goals:
        table = Table(title="Targets of issue 6 (ratios in this run)", title_justify="left")
        table.add_column("target")
        table.add_column("measured", justify="right")
        table.add_column("met")
        for what, measured, met in goals:
            mark = "—" if met is None else ("[green]yes[/]" if met else "[red]no[/]")
            table.add_row(what, measured, mark)
        console.print(table)
    console.print("Systems:")
    for line in legend:
        console.print(f"  {line}", markup=False, highlight=False)


def _print_plain(
    header: str,
    absolute: list[list[str]],
    ratios: list[list[str]],
    notes: Notes,
    goals: list[tuple[str, str, bool | None]],
    legend: list[str],
) -> None:
    print(header)
    heads = ["system"] + [t.replace("\n", " ") for t, _ in COLUMNS]
    for title, rows in (("Absolute figures", absolute), (f"Ratio to {REFERENCE}", ratios)):
        widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(heads)]
        print(f"\n{title}")
        print("  ".join(h.rjust(w) for h, w in zip(heads, widths, strict=True)))
        for row in rows:
            print("  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)))
    if notes.items:
        print("\nNotes:")
        for i, text in enumerate(notes.items, 1):
            print(f"  [{i}] {text}")
    if goals:
        print("\nTargets of issue 6 (ratios in this run):")
        for what, measured, met in goals:
            mark = "—" if met is None else ("yes" if met else "NO")
            print(f"  {what:45} {measured:>24}  {mark}")
    print("\nSystems:")
    for line in legend:
        print(f"  {line}")


def remarks_for(
    results: dict[str, dict[str, list[Outcome]]], jobs: int, threshold: float = 10.0
) -> list[str]:
    """Notes on measurements that deserve one: drains cut short by the time budget, and
    scenarios during which something else kept the machine busy."""
    out = []
    busy: list[tuple[str, float]] = []
    measured = 0
    for system, per in results.items():
        for scenario, outcomes in per.items():
            for rnd, o in enumerate(outcomes, 1):
                if o.status != "ok" or scenario == "scheduled":
                    continue
                measured += 1
                other = disturbance(o)
                if other >= threshold:
                    busy.append((f"{system} {scenario} r{rnd} {other:.0f}%", other))
    if busy:
        shares = sorted(b[1] for b in busy)
        where = (
            ": " + ", ".join(b[0] for b in busy)
            if len(busy) <= 6
            else f" (median {statistics.median(shares):.0f}%, max {shares[-1]:.0f}%;"
            " per measurement in the JSON, extra.cpu)"
        )
        out.append(
            f"other work (or hypervisor steal) used ≥ {threshold:g}% of the machine during"
            f" {len(busy)} of {measured} measurements{where}:"
            " on a shared machine, compare ratios within this run rather than absolutes"
        )
    for system, per in results.items():
        for scenario, key, what in (
            ("latency", "misses", "latency jobs did not run within 5 s"),
            ("scheduled", "missing", "scheduled jobs did not run within 15 s of their time"),
        ):
            lost = sum(int(o.metrics.get(key, 0)) for o in per.get(scenario, []))
            if lost:
                out.append(f"{system}: {lost} {what} (left out of the percentiles)")
        partial = [o for o in per.get("drain", []) if o.metrics.get("partial")]
        if partial:
            done = ", ".join(f"{int(o.metrics['jobs']):,}" for o in partial)
            out.append(
                f"{system}: drain stopped at the time budget after {done} of {jobs:,} jobs;"
                " its rate is that of the jobs it ran"
            )
    return out


def write_json(path: Path, payload: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=1, default=str))


def write_chart(
    path: Path, summary: dict[str, dict[str, Cell]], systems: list[str], title: str
) -> bool:
    """Bars per system per metric; returns False when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import matplotlib.ticker
    except ImportError:
        return False
    metrics = [
        m for m in METRICS if any(isinstance(summary.get(s, {}).get(m.key), float) for s in systems)
    ]
    if not metrics:
        return False
    cols = 3
    rows = math.ceil(len(metrics) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(6 * cols, 0.35 * len(systems) * rows + 2 * rows))
    flat = list(axes.flat) if hasattr(axes, "flat") else [axes]
    for ax, metric in zip(flat, metrics, strict=False):
        names, values, colors = [], [], []
        for system in systems:
            value = summary.get(system, {}).get(metric.key)
            if isinstance(value, float) and not math.isnan(value):
                names.append(system)
                values.append(value)
                colors.append(
                    "tab:green"
                    if system in OURS
                    else ("tab:gray" if system in FLOORS else "tab:blue")
                )
        ax.barh(names, values, color=colors)
        ax.invert_yaxis()
        better = "higher is better" if metric.higher_is_better else "lower is better"
        ax.set_title(f"{metric.title} ({better})", fontsize=10)
        if metric.log_scale and values and min(values) > 0:
            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        for i, value in enumerate(values):
            ax.text(value, i, " " + fmt_value(value), va="center", fontsize=7)
        ax.tick_params(axis="y", labelsize=8)
        ax.tick_params(axis="x", labelsize=7)
    for ax in flat[len(metrics) :]:
        ax.axis("off")
    fig.suptitle(title, fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
