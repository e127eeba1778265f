"""The README's links work where it is read without the site (GitHub, a checkout): every
relative link names a file of the repository, and every anchor a heading of that file.
Links between the docs pages are checked by `mkdocs build --strict` (.ci/run)."""

from __future__ import annotations

import re

from conftest import REPO

LINK = re.compile(r"\]\((?P<target>[^)\s#]*)(?:#(?P<anchor>[^)\s]+))?\)")
FENCE = re.compile(r"^```.*?^```", re.M | re.S)


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces as -."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(markdown: str) -> set[str]:
    text = FENCE.sub("", markdown)
    return {github_anchor(line.lstrip("#")) for line in text.splitlines() if line.startswith("#")}


def test_github_anchor_is_what_github_makes():
    assert github_anchor(" Data: citation and licence") == "data-citation-and-licence"
    assert github_anchor("Results on `test/`") == "results-on-test"


def test_readme_links_name_files_and_headings_that_exist():
    readme = REPO / "README.md"
    broken = []
    for match in LINK.finditer(FENCE.sub("", readme.read_text())):
        target, anchor = match.group("target"), match.group("anchor")
        if "://" in target or target.startswith("mailto:"):
            continue
        path = (readme.parent / target) if target else readme
        if not path.exists():
            broken.append(f"{target}: no such file")
        elif anchor and path.suffix == ".md" and anchor not in anchors(path.read_text()):
            broken.append(f"{target}#{anchor}: no such heading")
    assert not broken, broken
