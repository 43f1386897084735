"""Output of the admin commands: tables, JSON, times, a job's arguments."""

from __future__ import annotations

import sys
from typing import Any

import typer


def _print_json(data: Any) -> None:
    import json

    typer.echo(json.dumps(data, indent=2, sort_keys=True, default=str))


def _console() -> Any:
    from rich.console import Console

    # Piped into grep or a file, a row stays on one line whatever the width: the
    # 80 columns rich assumes without a terminal would wrap jids and backtraces.
    width = None if sys.stdout.isatty() else 100_000
    return Console(width=width, highlight=False, soft_wrap=width is not None)


def _table(headers: list[str], rows: list[list[Any]], *, header: bool = True) -> None:
    """Rows under their headers (rich), or ``(none)``."""
    from rich import box
    from rich.table import Table
    from rich.text import Text

    table = Table(
        *headers, box=box.SIMPLE_HEAD, show_header=header, show_edge=False, pad_edge=False
    )
    for r in rows:
        table.add_row(*(Text(str(c)) for c in r))  # Text: a job's "[1]" is not markup
    if rows:
        _console().print(table)
    else:
        typer.echo("(none)")


def _when(ts: float | None) -> str:
    if not ts:
        return "-"
    import datetime as dt

    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def _args(args: Any, width: int = 40) -> str:
    """A job's arguments on one line, cut to ``width`` characters. Arguments are an
    object; a string is what stands for them (``<encrypted>``), shown as it is."""
    import json

    if isinstance(args, str):
        return args

    out = json.dumps(args, default=str, separators=(",", ":"))
    return out if len(out) <= width else out[: width - 1] + "…"


def _ago(ts: float | None) -> str:
    """Seconds since ``ts``, as ``12.3s``, ``4m05s`` or ``2h03m``."""
    if not ts:
        return "-"
    import time

    s = max(0.0, time.time() - ts)
    if s < 60:
        return f"{s:.1f}s"
    if s < 3600:
        return f"{int(s // 60)}m{int(s % 60):02d}s"
    return f"{int(s // 3600)}h{int(s % 3600 // 60):02d}m"
