"""The node's per-film HTML pages (--reports): the batch report of one film, heatmap
included, in STATE/reports/UID.html; the record names it ("report")."""

from __future__ import annotations

import logging
from pathlib import Path

from ..explain import input_grid, legend_html
from ..outputs.files import PRIVATE, write_atomic
from ..outputs.report import entry, render
from .spool import private_folder

log = logging.getLogger("edgexray.node")


class ReportPages:
    """The per-film page sink. A page that cannot be written is logged: the record matters
    more than its page."""

    needs_map = True

    def __init__(self, folder: Path, sidecar: dict, model_path: Path):
        self.folder, self.sidecar, self.model_path = Path(folder), sidecar, model_path

    def add(self, film, explanation) -> None:
        if film.film is None:
            return
        record = film.record
        # Named by the film's UID: a film classified again after a crash rewrites its page.
        path = self.folder / f"{record['sop_instance_uid']}.html"
        try:
            private_folder(self.folder)
            page = entry(film, explanation, float(self.sidecar["threshold"]))
            legend = legend_html(input_grid(self.sidecar["input"]))  # the worker's default grid
            html = render([page], self.sidecar, self.model_path, legend)
            write_atomic(path, html.encode("utf-8"), PRIVATE)
        except Exception as err:
            log.error("no HTML report for %s: %s", Path(record["path"]).name, err)
            return
        record["report"] = str(path)

    def close(self) -> None:
        pass
