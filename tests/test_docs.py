"""The documentation: the site builds strictly, and the README's links resolve.

``mkdocs build --strict`` turns every warning into an error: a link to a page
or an anchor that does not exist, a nav entry without its page, a page left out
of the nav, a docstring the API reference cannot parse, a cross-reference that
does not resolve.
"""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def _slug(heading: str) -> str:
    """The anchor GitHub and MkDocs give a heading (lower case, punctuation dropped, spaces -> '-')."""
    text = re.sub(r"`", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    anchors, fence = set(), False
    for line in path.read_text().splitlines():
        if line.lstrip().startswith("```"):
            fence = not fence
        elif not fence and line.startswith("#"):
            anchors.add(_slug(line.lstrip("#")))
    return anchors


def _broken_links(page: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)  # links inside code blocks are code
    bad = []
    for target in LINK.findall(text):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        path_part, _, anchor = target.partition("#")
        dest = (page.parent / path_part).resolve() if path_part else page
        if ROOT not in dest.parents and dest != ROOT:
            bad.append(f"{target}: outside the repository")
        elif not dest.exists():
            bad.append(f"{target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
            bad.append(f"{target}: no heading #{anchor} in {dest.relative_to(ROOT)}")
    return bad


def test_readme_links_resolve():
    assert not _broken_links(ROOT / "README.md")


def test_the_link_check_finds_broken_links(tmp_path, monkeypatch):
    page = ROOT / "docs" / "design.md"
    assert "one-vocabulary" in _anchors(page)
    fake = tmp_path / "page.md"
    fake.write_text("[a](nope.md) [b](#missing) [c](https://example.org) [d](../../../../etc/passwd)\n"
                    "```\n[in code](ignored.md)\n```\n# Missing heading\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    assert _broken_links(fake) == ["nope.md: no such file", "#missing: no heading #missing in page.md",
                                   "../../../../etc/passwd: outside the repository"]
    fake.write_text("[c](#missing-heading) [d](page.md#missing-heading)\n# Missing heading\n")
    assert _broken_links(fake) == []


def test_readme_is_a_front_page():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 300
    for command in ("make run", "make test"):
        assert command in text
    assert "../shared" not in text


def test_site_builds_strictly(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(ROOT / "mkdocs.yml"),
         "--site-dir", str(tmp_path / "site")],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    warnings = [line for line in proc.stderr.splitlines() if "WARNING" in line or "ERROR" in line]
    assert proc.returncode == 0, "mkdocs build --strict failed:\n" + "\n".join(warnings or [proc.stderr[-3000:]])
    assert (tmp_path / "site" / "index.html").exists()
    assert (tmp_path / "site" / "api" / "kit" / "index.html").exists()  # the API reference was rendered
