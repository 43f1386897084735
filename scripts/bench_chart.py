"""Draw docs/img/bench-summary.png from the first results table of docs/benchmarks.md.

The chart of `python -m benchmarks --chart` has a panel per metric and is meant for a
screen; this one has the four figures a reader compares first, in type that stays
readable when the page shrinks the image to its column.

    python scripts/bench_chart.py      # needs matplotlib (pip install -e '.[bench]')
"""

from __future__ import annotations

import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "docs" / "benchmarks.md"
OUT = ROOT / "docs" / "img" / "bench-summary.png"

# (column of the table, panel title, log scale)
PANELS = [
    ("drain jobs/s", "drain: jobs/s, more is better", False),
    ("enqueue /s", "enqueue: jobs/s, more is better", False),
    ("pickup ms p50", "idle pickup p50: ms, less is better", False),
    ("cmds/job", "commands per job: less is better", True),
]


def table() -> list[dict[str, str]]:
    """The first Markdown table of the page whose header names a system."""
    rows: list[list[str]] = []
    for line in PAGE.read_text().splitlines():
        if line.startswith("| system |"):
            rows = [[c.strip() for c in line.strip("|").split("|")]]
        elif rows and line.startswith("|"):
            if not line.startswith("|---"):
                rows.append([c.strip() for c in line.strip("|").split("|")])
        elif rows:
            break
    header, *body = rows
    return [dict(zip(header, row, strict=True)) for row in body]


def number(cell: str) -> float | None:
    m = re.match(r"[\d,.]+", cell.replace("`", ""))
    return float(m[0].replace(",", "")) if m else None


def label(v: float) -> str:
    return f"{v:,.0f}" if v >= 100 else f"{v:.2f}" if v >= 0.1 else f"{v:.3f}"


def main() -> None:
    rows = table()
    plt.rcParams.update({"font.size": 11})
    fig, axes = plt.subplots(2, 2, figsize=(10, 6.5), layout="constrained")
    for ax, (column, title, log) in zip(axes.flat, PANELS, strict=True):
        points = [(r["system"], number(r[column])) for r in rows]
        shown = [(name, v) for name, v in points if v is not None]
        names = [name for name, _ in shown][::-1]
        values = [v for _, v in shown][::-1]
        colors = [
            "tab:green"
            if n.startswith("asyncjobs")
            else "tab:gray"
            if "floor" in n or "redis-py" in n
            else "tab:blue"
            for n in names
        ]
        bars = ax.barh(names, values, color=colors)
        ax.bar_label(bars, labels=[label(v) for v in values], padding=3)
        ax.set_title(title)
        if log:
            ax.set_xscale("log")
        ax.margins(x=0.25)
    fig.savefig(OUT, dpi=120)
    print(f"wrote {OUT.relative_to(ROOT)}")  # noqa: T201


if __name__ == "__main__":
    main()
