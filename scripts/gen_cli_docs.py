"""The CLI reference, generated from the typer app (``asyncjobs.cli.app``).

Used two ways:

* as a mkdocs hook (``hooks:`` in ``mkdocs.yml``): the marker ``<!-- cli-reference -->``
  in ``docs/cli.md`` is replaced, at every build, by the reference rendered from the
  commands, arguments and options the installed ``asyncjobs`` really has, so the page
  cannot drift from the code;
* as a script, ``python scripts/gen_cli_docs.py``, which prints the same Markdown.

Only the click API typer builds on is used (commands, params, ``get_help_record``), so
the text follows whatever typer renders for ``--help``.
"""

from __future__ import annotations

import html
import sys
from typing import Any

MARKER = "<!-- cli-reference -->"
PAGE = "cli.md"


def _cell(text: str) -> str:
    """A Markdown table cell: one line, pipes escaped."""
    return " ".join(text.split()).replace("|", "\\|")


def _code(text: str) -> str:
    """Inline code that survives a table (pipes escaped, HTML left to the code span)."""
    return "`" + _cell(text) + "`"


def _help_record(param: Any, ctx: Any) -> tuple[str, str]:
    record = param.get_help_record(ctx) if hasattr(param, "get_help_record") else None
    if record:
        return record[0], record[1] or ""
    # click's Argument has no help record: build one from its metavar.
    name = param.make_metavar(ctx) if hasattr(param, "make_metavar") else param.name.upper()
    return str(name), str(getattr(param, "help", "") or "")


def render() -> str:
    """The Markdown reference of every ``asyncjobs`` command."""
    import typer.main

    from asyncjobs.cli import app

    root: Any = typer.main.get_command(app)  # a group: typer types it as a Command
    ctx = root.make_context("asyncjobs", [], resilient_parsing=True)
    commands = [(name, root.get_command(ctx, name)) for name in root.list_commands(ctx)]
    commands = [(name, cmd) for name, cmd in commands if cmd is not None and not cmd.hidden]
    out = ["```text", root.get_usage(ctx).strip(), "```", ""]
    root_rows = [_help_record(p, ctx) for p in root.get_params(ctx)]
    root_rows = [r for r in root_rows if r[0] != "--help"]
    if root_rows:  # options of asyncjobs itself, as --version
        out.append("| option | description |")
        out.append("|---|---|")
        out.extend(
            f"| {_code(opt)} | {_cell(html.escape(text, quote=False))} |" for opt, text in root_rows
        )
        out.append("")
    out.append("| command | what it does |")
    out.append("|---|---|")
    out.extend(
        f"| [`{name}`](#{name}) | {_cell(html.escape(cmd.get_short_help_str(200), quote=False))} |"
        for name, cmd in commands
    )
    out.append("")
    for name, cmd in commands:
        _command(out, name, name, cmd, ctx)
    return "\n".join(out).rstrip() + "\n"


def _command(out: list[str], path: str, anchor: str, cmd: Any, ctx: Any) -> None:
    """The section of one command; a command group's subcommands follow it, each with
    a section of its own (``asyncjobs periodic list``)."""
    sub = cmd.make_context(path.split()[-1], [], parent=ctx, resilient_parsing=True)
    out.append(f"### `asyncjobs {path}` {{ #{anchor} }}")
    out.append("")
    if cmd.help:
        out.append(html.escape(cmd.help.strip(), quote=False))
        out.append("")
    out.append("```text")
    out.append(cmd.get_usage(sub).strip())
    out.append("```")
    out.append("")
    rows = [_help_record(p, sub) for p in cmd.get_params(sub)]
    rows = [r for r in rows if r[0] != "--help"]
    if rows:
        out.append("| argument or option | description |")
        out.append("|---|---|")
        out.extend(
            f"| {_code(opt)} | {_cell(html.escape(text, quote=False))} |" for opt, text in rows
        )
        out.append("")
    if hasattr(cmd, "list_commands"):
        for name in cmd.list_commands(sub):
            child = cmd.get_command(sub, name)
            if child is not None and not child.hidden:
                _command(out, f"{path} {name}", f"{anchor}-{name}", child, sub)


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    """mkdocs hook: fill the marker of ``docs/cli.md`` with the generated reference."""
    if page.file.src_uri != PAGE:
        return markdown
    if MARKER not in markdown:
        raise RuntimeError(f"docs/{PAGE} lost its {MARKER} marker: the CLI reference goes there")
    return markdown.replace(MARKER, render())


if __name__ == "__main__":
    sys.stdout.write(render())
