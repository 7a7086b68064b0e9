"""The manual builds (`mkdocs build --strict`: a broken link or anchor, or a page missing from the nav, fails
it), README stays short and links into it, and README's headline numbers are the committed report's."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
README = (REPO / "README.md").read_text()


def table_after(text: str, marker: str) -> list[list[str]]:
    """The rows (cells stripped) of the first Markdown table after ``marker``, header row first."""
    rest = text[text.index(marker) + len(marker):]
    lines = [line for line in rest.strip().splitlines()]
    rows = []
    for line in lines:
        if not line.startswith("|"):
            break
        if not re.fullmatch(r"\|[-| :]+\|", line):
            rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return rows


def numbers(cell: str) -> list[float]:
    return [float(x) for x in re.findall(r"\d+\.\d+", cell)]


def test_readme_is_short_and_links_every_page():
    assert len(README.splitlines()) <= 150
    pages = sorted(p.name for p in (REPO / "docs").glob("*.md"))
    missing = [p for p in pages if f"docs/{p}" not in README]
    assert missing == [], f"README does not link {missing}"


def test_each_page_opens_with_when_to_read_it():
    for page in (REPO / "docs").glob("*.md"):
        first = [line for line in page.read_text().splitlines()[1:] if line.strip()][0]
        assert first.startswith("Read this"), f"{page.name}: {first!r}"


def test_readme_headline_numbers_are_the_reports():
    match = re.search(r"<!-- headline: (\S+) -->", README)
    report = (REPO / match.group(1)).read_text()
    ours = table_after(README, match.group(0))
    theirs = {row[0]: row for row in table_after(report, "## Headline")}
    assert ours[0][0] == "method" and len(ours) >= 4
    for row in ours[1:]:
        assert row[0] in theirs, f"{row[0]} is not in the report's headline"
        assert [numbers(c) for c in row[1:]] == [numbers(c) for c in theirs[row[0]][1:]], row[0]


def mkdocs(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mkdocs", *args], cwd=cwd, capture_output=True, text=True,
                          env={"NO_MKDOCS_2_WARNING": "1", "PATH": "/usr/bin:/bin"})


@pytest.fixture(scope="module")
def site_copy(tmp_path_factory):
    pytest.importorskip("material", reason="the manual needs the docs extra (mkdocs-material)")
    root = tmp_path_factory.mktemp("site")
    shutil.copytree(REPO / "docs", root / "docs")
    shutil.copy(REPO / "mkdocs.yml", root / "mkdocs.yml")
    shutil.copy(REPO / "README.md", root / "README.md")  # docs/index.md takes its first paragraphs
    return root


def test_the_manual_builds_strictly(site_copy):
    done = mkdocs(["build", "--strict", "--site-dir", str(site_copy / "out")], site_copy)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (site_copy / "out" / "checked-relay" / "index.html").is_file()
    assert "calibrated discourse cue" in (site_copy / "out" / "index.html").read_text()  # README's intro


@pytest.mark.parametrize("breakage", [
    ("cli.md", "[calibration](calibration.md)", "[calibration](calibrate.md)"),           # a missing page
    ("cli.md", "(litellm-serve.md#relaygen-serve)", "(litellm-serve.md#relaygen-serve-x)"),  # a missing anchor
])
def test_a_broken_link_fails_the_build(site_copy, tmp_path, breakage):
    page, old, new = breakage
    broken = tmp_path / "broken"
    shutil.copytree(site_copy / "docs", broken / "docs")
    shutil.copy(site_copy / "mkdocs.yml", broken / "mkdocs.yml")
    shutil.copy(site_copy / "README.md", broken / "README.md")
    text = (broken / "docs" / page).read_text()
    assert old in text
    (broken / "docs" / page).write_text(text.replace(old, new))
    done = mkdocs(["build", "--strict", "--site-dir", str(broken / "out")], broken)
    assert done.returncode != 0
