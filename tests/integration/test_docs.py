"""The docs' samples, run or checked against the real thing.

- Every ``python`` block of a page runs, in page order, in one module namespace (a page
  reads like one session) on one event loop, against the test Redis
  (``ASYNCJOBS_REDIS_URL``). Top-level ``await`` and ``async with`` work, as in
  ``python -m asyncio``. A block titled with a file name (```` ```python
  title="myapp/jobs.py" ````) is written to that path in a temporary directory, which is
  importable and the current directory, instead of being run.
- Every fenced block names its language, and only languages in ``LANGUAGES``: what is not
  ``python`` is not run, so it must not pretend to be.
- ``toml`` blocks are worker settings files: each must load and describe valid capsules.
- ``asyncjobs ...`` lines in ``bash`` blocks must parse with the real CLI (no made-up
  commands or flags).
- ``json`` blocks of ``docs/cli.md`` titled with an ``asyncjobs ... --json`` command have
  the shape that command prints.
- The quickstart is followed end to end: its files, its ``asyncjobs worker`` command as a
  real subprocess, its Python, its inspection commands.
- The CLI reference is generated from the typer app by ``scripts/gen_cli_docs.py``.
"""

from __future__ import annotations

import ast
import asyncio
import dataclasses
import importlib.util
import inspect
import json
import re
import shlex
import signal
import subprocess
import sys
import time
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import asyncjobs
from asyncjobs import api
from tests.conftest import ROOT, subprocess_env

DOCS = ROOT / "docs"
PAGES = sorted(DOCS.rglob("*.md"))
LANGUAGES = {"python", "bash", "text", "toml", "json", "ini", "dockerfile", "yaml"}
SAMPLE_TIMEOUT = 60.0

_FENCE = re.compile(r"^(?P<indent>[ ]*)(?P<fence>```+|~~~+)(?P<info>.*)$")
_TITLE = re.compile(r"""title="([^"]*)\"""")


@dataclasses.dataclass(frozen=True)
class Block:
    page: Path
    line: int  # 1-based line of the block's first code line in the page
    lang: str
    title: str | None
    source: str

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def blocks(page: Path) -> list[Block]:
    """The fenced code blocks of a page, dedented to their fence."""
    out: list[Block] = []
    lines = page.read_text().splitlines()
    i = 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if m is None:
            i += 1
            continue
        indent, fence, info = len(m["indent"]), m["fence"], m["info"].strip()
        lang = info.split(maxsplit=1)[0] if info else ""
        title = _TITLE.search(info)
        body: list[str] = []
        j = i + 1
        while j < len(lines) and lines[j].strip() != fence:
            line = lines[j]
            body.append(line[indent:] if line[:indent].strip() == "" else line.lstrip())
            j += 1
        if j == len(lines):
            raise AssertionError(f"{page.relative_to(ROOT)}:{i + 1}: unclosed code fence")
        out.append(Block(page, i + 2, lang, title[1] if title else None, "\n".join(body) + "\n"))
        i = j + 1
    return out


def _page_id(page: Path) -> str:
    return str(page.relative_to(DOCS))


PYTHON_PAGES = [p for p in PAGES if any(b.lang == "python" for b in blocks(p))]


# -- running a page's Python --------------------------------------------------------------


def _module_name(page: Path) -> str:
    rel = page.relative_to(DOCS).with_suffix("")
    return "docs_" + "_".join(re.sub(r"\W", "_", part) for part in rel.parts)


def _forget_modules_under(root: Path) -> None:
    """Drop modules imported from ``root`` (the samples' files), so pages stay apart."""
    for name, module in list(sys.modules.items()):
        file = getattr(module, "__file__", None)
        paths = list(getattr(module, "__path__", []) or [])
        if any(str(p).startswith(str(root)) for p in [file, *paths] if p):
            del sys.modules[name]


_SNIPPET = re.compile(r'^--8<-- "([^"]+)"$')


def _included(block: Block) -> list[str]:
    """The files a block includes whole (``--8<-- "path"``, pymdownx.snippets), if that
    is all it holds."""
    lines = [line.strip() for line in block.source.splitlines() if line.strip()]
    matches = [_SNIPPET.match(line) for line in lines]
    return [m[1] for m in matches if m is not None] if lines and all(matches) else []


def _track_apps(monkeypatch: pytest.MonkeyPatch) -> list[asyncjobs.App]:
    """Every App the samples create, so that each is closed at the end of the page (a
    sample may replace ``app`` with a new one)."""
    created: list[asyncjobs.App] = []
    init = asyncjobs.App.__init__

    def tracking_init(self: asyncjobs.App, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        created.append(self)

    monkeypatch.setattr(asyncjobs.App, "__init__", tracking_init)
    return created


def run_python_blocks(page: Path, workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run a page's Python blocks in order; write titled blocks to ``workdir``."""
    module = types.ModuleType(_module_name(page))
    module.__file__ = str(page)
    sys.modules[module.__name__] = module
    namespace = module.__dict__
    apps = _track_apps(monkeypatch)
    try:
        with asyncio.Runner() as runner:
            try:
                for block in blocks(page):
                    if block.lang != "python":
                        continue
                    if _included(block):
                        continue  # a file of the repository, tested where it lives
                    if block.title is not None:
                        target = workdir / block.title
                        target.parent.mkdir(parents=True, exist_ok=True)
                        target.write_text(block.source)
                        continue
                    # Padding keeps the page's line numbers in tracebacks.
                    source = "\n" * (block.line - 1) + block.source
                    code = compile(source, str(page), "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
                    result = eval(code, namespace)
                    if inspect.iscoroutine(result):
                        runner.run(asyncio.wait_for(result, SAMPLE_TIMEOUT))
            finally:
                _forget_modules_under(workdir)
                for app in apps:
                    runner.run(app.aclose())
    finally:
        sys.modules.pop(module.__name__, None)


@pytest.fixture
def sample_env(redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """What a reader has: Redis in the environment, a project directory to work in."""
    monkeypatch.setenv("ASYNCJOBS_REDIS_URL", redis_url)
    monkeypatch.delenv("REDIS_URL", raising=False)
    monkeypatch.delenv("ASYNCJOBS_APP", raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path


@pytest.mark.parametrize("page", PYTHON_PAGES, ids=_page_id)
def test_python_samples_run(page: Path, sample_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run_python_blocks(page, sample_env, monkeypatch)


INCLUDED = sorted({path for p in PAGES for b in blocks(p) for path in _included(b)})


@pytest.mark.parametrize("path", INCLUDED)
def test_included_python_files_are_tested_elsewhere(path: str) -> None:
    """A Python file shown whole in the docs is imported by a test of its own."""
    assert (ROOT / path).is_file(), f"the docs include {path}, which does not exist"
    module = path.removesuffix(".py").replace("/", ".")
    package, _, name = module.rpartition(".")
    imports = re.compile(
        rf"^\s*(import {re.escape(module)}\b|from {re.escape(module)} import"
        rf"|from {re.escape(package)} import [^\n]*\b{name}\b)",
        re.MULTILINE,
    )
    tests = [t for t in (ROOT / "tests").rglob("test_*.py") if t.name != "test_docs.py"]
    assert any(imports.search(t.read_text()) for t in tests), f"no test imports {module}"


# -- what is not run is still checked ------------------------------------------------------


@pytest.mark.parametrize("page", PAGES, ids=_page_id)
def test_every_block_names_a_known_language(page: Path) -> None:
    for block in blocks(page):
        assert block.lang in LANGUAGES, (
            f"{block.where}: fence language {block.lang!r}; use one of {sorted(LANGUAGES)}"
        )


TOML_BLOCKS = [b for p in PAGES for b in blocks(p) if b.lang == "toml"]


@pytest.mark.parametrize("block", TOML_BLOCKS, ids=lambda b: b.where)
def test_toml_samples_are_valid_worker_settings(block: Block, tmp_path: Path) -> None:
    from asyncjobs._settings import capsules_from, load_settings

    path = tmp_path / "asyncjobs.toml"
    path.write_text(block.source)
    capsules_from(load_settings(path))


_COMMAND = re.compile(r"^(?:\S*/)?(asyncjobs\s+.*)$")  # at the start, or after a path
_ARRAY = re.compile(r'\[\s*"(?:[^"]*/)?asyncjobs"\s*,.*\]')


def _command_lines(block: Block) -> list[str]:
    """``asyncjobs ...`` commands of a shell block, a unit file, a Dockerfile or a
    manifest (a line, or an exec-form JSON list), without the shell around them."""
    text = block.source.replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        line = re.split(r"\s#\s", line.strip().removeprefix("$ "))[0]  # no comments
        line = re.sub(r"^(ExecStart=|sudo\s+|exec\s+)", "", line)
        array = _ARRAY.search(line)
        if array is not None:
            out.append(shlex.join(["asyncjobs", *json.loads(array[0])[1:]]))
            continue
        m = _COMMAND.search(line)
        if m is None:
            continue
        command = m[1]
        for end in (" | ", " && ", " > ", " $("):  # the command, not the shell around it
            command = command.split(end, 1)[0]
        out.append(command.strip())
    return out


SHELL_LIKE = {"bash", "text", "ini", "dockerfile", "yaml"}
COMMANDS = [
    (b, line)
    for p in PAGES
    for b in blocks(p)
    if b.lang in SHELL_LIKE
    for line in _command_lines(b)
]


@pytest.mark.parametrize("block,line", COMMANDS, ids=[f"{b.where} {c}" for b, c in COMMANDS])
def test_documented_commands_parse(block: Block, line: str) -> None:
    import typer.main

    from asyncjobs.cli import app

    root: Any = typer.main.get_command(app)
    args = shlex.split(line)[1:]
    assert args, f"{block.where}: {line!r} names no command"
    ctx = root.make_context("asyncjobs", [], resilient_parsing=True)
    name, rest = args[0], args[1:]
    cmd = root.get_command(ctx, name)
    assert cmd is not None, f"{block.where}: no command {name!r}"
    cmd.make_context(name, rest, parent=ctx)  # raises on an unknown or malformed flag


# -- the CLI page ------------------------------------------------------------------------


def _load_generator() -> Any:
    spec = importlib.util.spec_from_file_location("gen_cli_docs", ROOT / "scripts/gen_cli_docs.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cli_reference_is_generated_from_the_typer_app() -> None:
    import typer.main

    from asyncjobs.cli import app

    gen = _load_generator()
    page = (DOCS / "cli.md").read_text()
    assert gen.MARKER in page, "docs/cli.md must keep the marker the hook fills"
    assert "scripts/gen_cli_docs.py" in (ROOT / "mkdocs.yml").read_text(), "hook not enabled"
    reference = gen.render()
    root: Any = typer.main.get_command(app)
    ctx = root.make_context("asyncjobs", [], resilient_parsing=True)
    for name in root.list_commands(ctx):
        cmd = root.get_command(ctx, name)
        assert f"`asyncjobs {name}`" in reference
        for param in cmd.params:
            for opt in [*param.opts, *param.secondary_opts]:
                if opt.startswith("-") and opt != "--help":
                    assert opt in reference, f"{name} {opt} missing from the reference"
    # The hook fills the marker of cli.md and leaves other pages alone.
    page_obj = types.SimpleNamespace(file=types.SimpleNamespace(src_uri="cli.md"))
    assert gen.on_page_markdown(page, page_obj, None, None) == page.replace(gen.MARKER, reference)
    other = types.SimpleNamespace(file=types.SimpleNamespace(src_uri="index.md"))
    assert gen.on_page_markdown(gen.MARKER, other, None, None) == gen.MARKER


def _shape(value: Any) -> Any:
    """Keys, recursively: what a consumer of the JSON relies on. Dates as keys fold."""
    if isinstance(value, dict):
        if value and all(re.fullmatch(r"\d{4}-\d\d-\d\d", k) for k in value):
            return {"<day>": _shape(next(iter(value.values())))}
        return {k: _shape(v) for k, v in value.items()}
    if isinstance(value, list):
        shapes = [_shape(v) for v in value if isinstance(v, dict | list)]
        return [shapes[0]] if shapes else []
    return None


JSON_BLOCKS = [
    b
    for b in blocks(DOCS / "cli.md")
    if b.lang == "json" and b.title is not None and b.title.startswith("asyncjobs ")
]


async def test_json_shapes_match_the_cli(redis_url: str) -> None:
    """Each documented ``--json`` shape is what the command prints, with every kind of
    entry present: a processed job, a scheduled one, a retry, a dead one, a live worker."""
    assert {b.title for b in JSON_BLOCKS} >= {
        f"asyncjobs {c} --json"
        for c in ("stats", "queues", "scheduled", "retries", "dead", "processes", "batches")
    }
    # The jobs of the samples in docs/cli.md, so that even their arguments match.
    app = asyncjobs.App(redis_url)

    @app.job(name="myapp.jobs.resize")
    async def resize(image_id: int, size: str = "thumb") -> None:
        pass

    @app.job(name="myapp.jobs.charge", queue="critical", retry=5, retry_in=lambda c, e: 3600)
    async def charge(order_id: int, amount: str) -> None:
        raise ConnectionError("payment provider timed out")

    @app.job(name="myapp.jobs.import_contacts", retry=0)
    async def import_contacts(user_id: int, csv_url: str) -> None:
        raise ValueError(f"{csv_url} is not a CSV file")

    @app.job(name="myapp.jobs.import_done")
    async def import_done(bid: str) -> None:
        pass

    app.periodic(resize, "0 3 * * *", args={"image_id": 1, "size": "large"}, name="nightly-resize")

    try:
        async with app.run_worker(["critical", "default"]) as worker:
            await resize.defer(42, size="large")
            await resize.configure(delay=3600).defer(7)
            await charge.defer(1001, "49.90")
            async with app.batch(description="nightly import", on_complete=import_done):
                await import_contacts.defer(7, "https://example.com/contacts.png")
            await resize.configure(queue="low").defer(8)  # waits: no worker on "low"
            deadline = time.monotonic() + 5
            while (s := worker.statistics())["processed"] + s["failed"] < 4:
                assert time.monotonic() < deadline, s
                await asyncio.sleep(0.01)
            await worker.wait_idle()
            await api.run_periodic(app, "nightly-resize")  # a run in its history
            for block in JSON_BLOCKS:
                assert block.title is not None
                args = shlex.split(block.title)[1:]
                r = await asyncio.to_thread(
                    subprocess.run,
                    [sys.executable, "-m", "asyncjobs", *args],
                    env=subprocess_env(redis_url),
                    capture_output=True,
                    timeout=30,
                )
                assert r.returncode == 0, r.stderr.decode()
                actual = json.loads(r.stdout)
                documented = json.loads(block.source)
                assert _shape(actual) == _shape(documented), block.where
    finally:
        await app.aclose()


# -- the quickstart, end to end -------------------------------------------------------------


def test_quickstart_end_to_end(
    sample_env: Path, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Follow docs/quickstart.md: its files, its worker command, its Python, its checks."""
    page = DOCS / "quickstart.md"
    shell = [line for b in blocks(page) if b.lang == "bash" for line in _command_lines(b)]
    worker_cmd = [line for line in shell if line.startswith("asyncjobs worker ")]
    assert len(worker_cmd) == 1, worker_cmd
    expected = [  # the messages, without the jids that differ from run to run
        re.sub(r" \[jid=\w+ ", " [jid=", line.split(" INFO asyncjobs.job: ", 1)[1])
        for b in blocks(page)
        if b.lang == "text" and b.title == "worker output"
        for line in b.source.splitlines()
        if " INFO asyncjobs.job: " in line
    ]
    assert expected, "the quickstart shows the worker's output"
    # The page's files first (the worker imports them), then the worker, then its Python.
    for block in blocks(page):
        if block.lang == "python" and block.title:
            (sample_env / block.title).parent.mkdir(parents=True, exist_ok=True)
            (sample_env / block.title).write_text(block.source)
    env = subprocess_env(redis_url)
    log_path = sample_env / "worker.log"
    with log_path.open("wb") as log_file:
        worker = subprocess.Popen(
            [sys.executable, "-m", "asyncjobs", *shlex.split(worker_cmd[0])[1:]],
            cwd=sample_env,
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    try:

        async def wait_for(condition: Any) -> None:
            admin = asyncjobs.App(redis_url)
            try:
                async with asyncio.timeout(20):
                    while not await condition(admin):
                        assert worker.poll() is None, log_path.read_text()
                        await asyncio.sleep(0.05)
            finally:
                await admin.aclose()

        async def started(admin: asyncjobs.App) -> bool:
            return bool(await api.ProcessSet(admin).list())

        async def all_done(admin: asyncjobs.App) -> bool:
            stats = await api.Stats.fetch(admin)
            log = log_path.read_text()
            log = re.sub(r" \[jid=\w+ ", " [jid=", log)
            return stats.enqueued == 0 and stats.busy == 0 and all(m in log for m in expected)

        asyncio.run(wait_for(started))
        run_python_blocks(page, sample_env, monkeypatch)
        asyncio.run(wait_for(all_done))
        for line in shell:
            if line.startswith("asyncjobs worker "):
                continue
            r = subprocess.run(
                [sys.executable, "-m", "asyncjobs", *shlex.split(line)[1:]],
                cwd=sample_env,
                env=env,
                capture_output=True,
                timeout=30,
            )
            assert r.returncode == 0, f"{line}: {r.stderr.decode()}"
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=30)
    assert worker.returncode == 0, log_path.read_text()


def test_changelog_page_includes_the_file() -> None:
    """docs/changelog.md includes CHANGELOG.md (resolved at build time) rather than a copy."""
    assert (DOCS / "changelog.md").read_text().strip() == '--8<-- "CHANGELOG.md"'


# -- the deployment guide's ACL user -------------------------------------------------------


async def test_acl_user_of_the_deployment_guide_can_run_everything(tmp_path: Path) -> None:
    """The ``users.acl`` line of docs/guides/deployment.md lets a client defer, a worker
    run, retry and kill jobs, and every inspection command work, and nothing else."""
    from tests.devserver import RedisProcess

    [block] = [b for b in blocks(DOCS / "guides/deployment.md") if b.title == "users.acl"]
    user_line = block.source.strip()
    m = re.match(r"user (\S+) on >(\S+) ", user_line)
    assert m is not None, user_line
    server = RedisProcess()
    acl_file = server.dir / "users.acl"
    acl_file.write_text(f"user default off resetpass resetkeys -@all\n{user_line}\n")
    server.args += ["--aclfile", str(acl_file)]
    with server:
        url = server.make_url(username=m[1], password=m[2])
        app = asyncjobs.App(url)
        ran: list[int] = []

        @app.job(name="myapp.jobs.resize")
        async def resize(image_id: int) -> None:
            ran.append(image_id)

        @app.job(name="myapp.jobs.charge", retry=1, retry_in=lambda count, exc: 0.05)
        async def charge(order_id: int) -> None:
            raise ConnectionError("payment provider timed out")

        def cli(*args: str) -> subprocess.CompletedProcess[bytes]:
            return subprocess.run(
                [sys.executable, "-m", "asyncjobs", *args],
                env=subprocess_env(url),
                capture_output=True,
                timeout=30,
            )

        try:
            async with app.run_worker(embedded=False):  # quiet --all must reach it
                await resize.defer(1)
                await resize.defer_many([(2,), (3,)])
                await resize.configure(delay=0.1).defer(4)
                await charge.defer(5)
                await resize.configure(delay=3600).defer(6)
                async with asyncio.timeout(10):
                    while len(ran) < 4 or await api.DeadSet(app).size() < 1:
                        await asyncio.sleep(0.02)
                # Rate limiters (#13): each kind's script, and their state.
                for kind in ("concurrent", "window", "bucket", "leaky"):
                    lim = app.limiter(f"acl-{kind}", kind, 2, per=3600)
                    async with lim, app.limiter("acl-sliding", "window", 9, sliding=True):
                        assert round((await lim.state()).used) == 1
                for command in ("stats", "queues", "scheduled", "retries", "dead", "processes"):
                    r = await asyncio.to_thread(cli, command, "--json")
                    assert r.returncode == 0, (command, r.stderr.decode())
                [dead] = await api.DeadSet(app).entries()
                r = await asyncio.to_thread(cli, "retry", dead.jid)
                assert r.returncode == 0, r.stderr.decode()
                [scheduled] = await api.ScheduledSet(app).entries()
                r = await asyncio.to_thread(cli, "kill", scheduled.jid)
                assert r.returncode == 0, r.stderr.decode()
                # Clears (RENAME aside, then chunks) that release unique jobs' locks.
                unique = resize.configure(queue="held", unique=True)
                assert await unique.defer(7) is not None
                later = resize.configure(queue="held", unique=True, delay=3600)
                assert await later.defer(8) is not None
                r = await asyncio.to_thread(cli, "queues", "--clear", "held", "--yes")
                assert r.returncode == 0, r.stderr.decode()
                r = await asyncio.to_thread(cli, "scheduled", "--clear", "--yes")
                assert r.returncode == 0, r.stderr.decode()
                assert await api.unique_lock(app, unique, 7) is None
                assert await api.unique_lock(app, unique, 8) is None
                r = await asyncio.to_thread(cli, "quiet", "--all")
                assert r.returncode == 0, r.stderr.decode()
            # ... and no more than its namespace.
            client = await app.connect()
            import redis.exceptions

            with pytest.raises(redis.exceptions.NoPermissionError):
                await client.set("someone-elses-key", "1")
        finally:
            await app.aclose()
