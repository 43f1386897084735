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
