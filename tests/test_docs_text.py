"""What the docs say, checked against what a reader has and what the code does."""

from __future__ import annotations

import re

import asyncjobs
from tests.conftest import ROOT
from tests.integration.test_docs import blocks

DOCS = ROOT / "docs"
PAGES = sorted(DOCS.rglob("*.md"))


def _paragraphs(text: str) -> list[str]:
    return [" ".join(p.split()) for p in re.split(r"\n\s*\n", text)]


def test_no_page_refers_to_documents_the_reader_does_not_have() -> None:
    offenders = [
        f"{page.relative_to(ROOT)}: {m[0]!r}"
        for page in PAGES
        for m in re.finditer(r"DESIGN\.md|design document|the issue'?s? targets?", page.read_text())
    ]
    assert not offenders


def test_no_page_says_sentinel_is_not_supported() -> None:
    """Sentinel is supported (docs/guides/topologies.md): no page may say otherwise."""
    offenders = [
        f"{page.relative_to(ROOT)}: {para[:100]}"
        for page in PAGES
        for para in _paragraphs(page.read_text())
        if "Sentinel" in para and "not supported" in para and "TLS" not in para
    ]
    assert not offenders


def test_the_sentinel_url_the_docs_show_is_the_one_parsed() -> None:
    page = (DOCS / "guides" / "topologies.md").read_text()
    form = "redis+sentinel://[[user]:password@]host1[:port1][,host2[:port2]...]/master[/db]"
    assert form in page
    app = asyncjobs.App("redis+sentinel://:pw@h1,h2:26380/mymaster/2?sentinel_password=sp")
    assert "redis+sentinel://:***@h1,h2:26380/mymaster/2?sentinel_password=***" in repr(app)


def test_the_home_pages_samples_fit_its_column() -> None:
    long = [
        f"{b.where}: {line}"
        for b in blocks(DOCS / "index.md")
        for line in b.source.splitlines()
        if len(line) > 70
    ]
    assert not long


def test_the_benchmarks_page_opens_with_a_table_and_a_chart() -> None:
    """Before the method: its figures, as a table and as a chart made for the page."""
    text = (DOCS / "benchmarks.md").read_text()
    top = text[: text.index("## How benchmarks of job runners mislead")]
    assert "| system |" in top
    images = re.findall(r"\]\((img/[^)]+\.png)\)", top)
    assert images and all((DOCS / image).is_file() for image in images)
