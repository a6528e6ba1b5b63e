"""Every test the documentation names exists: a page may not vouch for a behaviour with a test nobody wrote."""
from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def defined_tests() -> set[str]:
    """Test functions and test modules under tests/."""
    names: set[str] = set()
    for path in (ROOT / "tests").rglob("test_*.py"):
        names.add(path.stem)
        names |= set(re.findall(r"^\s*(?:async\s+)?def\s+(test_\w+)", path.read_text(), re.MULTILINE))
    return names


def test_every_test_a_page_names_exists() -> None:
    known = defined_tests()
    cited = {(page.name, name) for page in PAGES for name in re.findall(r"\btest_\w+", page.read_text())}
    missing = sorted((page, name) for page, name in cited if name.removesuffix(".py") not in known)
    assert len(cited) > 20 and not missing, missing


def test_every_file_a_page_names_exists() -> None:
    """A page that points at `harness/bench/run.py` after the file moved sends a newcomer nowhere."""
    pattern = r"\b(?:gateway|kb|shared|tools|harness|tests|deploy|clients)/[\w/.~-]+\.(?:py|md|json|yaml|yml|cs|conf)\b"
    cited = {(page.name, path) for page in PAGES for path in re.findall(pattern, page.read_text())}
    missing = sorted((page, path) for page, path in cited if not (ROOT / path).exists())
    assert len(cited) > 50 and not missing, missing
