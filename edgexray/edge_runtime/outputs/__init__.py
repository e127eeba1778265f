"""Where classified films go: each output is a sink of one interface.

A batch (`edge_runtime.batch`) or the DICOM node hands every classified film to its sinks
in order: records on a stream (records.py), heatmap files (heatmaps.py), the HTML report
(report.py), the node's Structured Reports (node/outbox.py). A sink may add fields to the
record for the sinks after it (heatmaps name their files in it, before the record is
written). A new output is one sink module; the batch and the node need no change beyond
adding it to their list.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from ..classifier import Classified
    from ..explain import Explanation


class Sink(Protocol):
    """One output of classified films."""

    # True when the sink shows where the model looked: the batch makes the film's
    # occlusion map once (explain.py) and hands it to every sink that needs it.
    needs_map: bool

    def add(self, film: Classified, explanation: Explanation | None) -> None:
        """Take one classified film (its explanation when needs_map and it was read)."""

    def close(self) -> None:
        """Finish, after the last film (a report is written then)."""
