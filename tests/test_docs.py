"""The repository's Markdown: every relative link points at a file that exists."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = sorted(p for p in ROOT.rglob("*.md")
               if not {".git", "runs", "build", ".pytest_cache"} & set(p.relative_to(ROOT).parts))
LINK = re.compile(r"\]\(([^)\s]+)\)")


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(page):
    targets = [m.group(1).split("#")[0] for m in LINK.finditer(page.read_text())]
    missing = [t for t in targets
               if t and not t.startswith(("http://", "https://", "mailto:"))
               and not (page.parent / t).exists()]
    assert not missing, f"{page.relative_to(ROOT)} links to missing files: {missing}"
