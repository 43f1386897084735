"""What a newcomer installs: the distribution's name, what the docs tell them to type."""

from __future__ import annotations

import re
import tomllib

from tests.conftest import ROOT

# The name "asyncjobs" on the package index belongs to an unrelated project.
TAKEN = "asyncjobs"


def _project() -> dict[str, object]:
    with (ROOT / "pyproject.toml").open("rb") as f:
        project: dict[str, object] = tomllib.load(f)["project"]
    return project


def test_the_distribution_is_not_named_after_the_taken_name() -> None:
    assert _project()["name"] == "asyncjobs-redis"


# `pip install asyncjobs`, `pip install 'asyncjobs[web]'`, `pip install "asyncjobs>=0.1"`:
# a requirement whose name is exactly the taken one.
_BARE = re.compile(r"""pip install\s+(?:-\S+\s+)*['"]?asyncjobs(?![\w-])""")


def test_no_page_tells_the_reader_to_install_the_taken_name() -> None:
    files = [
        ROOT / "README.md",
        *sorted((ROOT / "docs").rglob("*.md")),
        *sorted((ROOT / "examples").rglob("*.py")),
        *sorted((ROOT / "asyncjobs").rglob("*.py")),
    ]
    offenders = [
        f"{path.relative_to(ROOT)}:{n}: {line.strip()}"
        for path in files
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if _BARE.search(line) and "unrelated" not in line  # the warning against it
    ]
    assert not offenders, "\n".join(offenders)


def test_the_wheel_holds_no_test_tooling() -> None:
    """The wheel is the ``asyncjobs`` package; the checkout's tooling (tests/devserver.py,
    benchmarks, examples) stays out of it, and the package never imports it."""
    with (ROOT / "pyproject.toml").open("rb") as f:
        wheel = tomllib.load(f)["tool"]["hatch"]["build"]["targets"]["wheel"]
    assert wheel["packages"] == ["asyncjobs"]
    package = ROOT / "asyncjobs"
    assert not (package / "_devserver.py").exists()
    # (``asyncjobs bench`` imports benchmarks/ lazily, and says so when it is missing.)
    imports = re.compile(r"^\s*(from|import)\s+(tests|examples)\b", re.MULTILINE)
    offenders = [
        str(path.relative_to(ROOT))
        for path in sorted(package.rglob("*.py"))
        if imports.search(path.read_text())
    ]
    assert not offenders


def test_no_page_mentions_a_demo_command() -> None:
    """The demo is ``python examples/demo.py``; there is no ``asyncjobs demo`` command."""
    files = [ROOT / "README.md", ROOT / "pyproject.toml", *sorted((ROOT / "docs").rglob("*.md"))]
    files += sorted((ROOT / "examples").rglob("*.py")) + sorted((ROOT / "asyncjobs").rglob("*.py"))
    files += [ROOT / "tests" / "devserver.py"]
    offenders = [str(p.relative_to(ROOT)) for p in files if "asyncjobs demo" in p.read_text()]
    assert not offenders
