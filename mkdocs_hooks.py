"""mkdocs hooks: repository files outside docs/ that the site shows as pages.

benchmarks/README.md (every measurement) and the shipped model card live beside what they
describe, and docs/ links to them as a reader on GitHub follows them (`../benchmarks/
README.md#heatmaps`). The site mounts them under their repository paths, with the result
files they link to, and points those links at the mounted copies, so `mkdocs build
--strict` checks every such link and anchor too. Nothing is copied into the repository.
"""

from __future__ import annotations

import logging
import posixpath
import re
from pathlib import Path

from mkdocs.structure.files import File, Files

log = logging.getLogger("mkdocs.plugins.edgexray")
REPO = Path(__file__).resolve().parent
MOUNTED = ("benchmarks/README.md", "edgexray/models/MODEL_CARD.md")
# A Markdown link or image: [text](target#anchor) or [text](target).
LINK = re.compile(r"\[(?P<text>[^\]]*)\]\((?P<target>[^)\s#]+)(?P<anchor>#[^)\s]*)?\)")


def _is_relative(target: str) -> bool:
    return "://" not in target and not target.startswith(("mailto:", "/"))


def _repository_path(src_uri: str, target: str, *, in_docs: bool) -> str:
    folder = posixpath.dirname(src_uri)
    return posixpath.normpath(posixpath.join("docs" if in_docs else "", folder, target))


def on_files(files: Files, config) -> Files:
    for page in MOUNTED:
        paths = {page}
        for match in LINK.finditer((REPO / page).read_text(encoding="utf-8")):
            target = match.group("target")
            path = _repository_path(page, target, in_docs=False)
            if _is_relative(target) and (REPO / path).is_file():
                paths.add(path)
        for path in sorted(paths):
            if files.get_file_from_path(path) is None:
                files.append(File.generated(config, path, abs_src_path=str(REPO / path)))
    return files


def on_page_markdown(markdown: str, page, config, files: Files) -> str:
    src_uri = page.file.src_uri
    if page.file.generated_by:
        # A mounted page's link to a repository folder (a run's results) has no page in
        # the site: it keeps its text.
        def unlinked(match: re.Match) -> str:
            path = _repository_path(src_uri, match.group("target"), in_docs=False)
            if _is_relative(match.group("target")) and (REPO / path).is_dir():
                return f"{match.group('text')} (`{path}/` in the repository)"
            return match.group(0)

        return LINK.sub(unlinked, markdown)

    def mounted(match: re.Match) -> str:
        target = match.group("target")
        if not _is_relative(target):
            return match.group(0)
        in_repository = _repository_path(src_uri, target, in_docs=True)
        if in_repository.startswith("docs/"):
            in_site = files.get_file_from_path(in_repository.removeprefix("docs/"))
            if in_site is not None and in_site.generated_by:
                # Resolves in the site only: on GitHub docs/benchmarks/ does not exist.
                log.warning(f"{src_uri}: link '{target}' works in the site only: write ../")
            return match.group(0)
        if files.get_file_from_path(in_repository) is None:
            return match.group(0)  # left for mkdocs to report as not found
        new_target = posixpath.relpath(in_repository, posixpath.dirname(src_uri) or ".")
        return f"[{match.group('text')}]({new_target}{match.group('anchor') or ''})"

    return LINK.sub(mounted, markdown)
