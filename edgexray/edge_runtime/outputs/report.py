"""One HTML page per batch of films, for the clinician who reads them.

Self-contained on purpose: the pictures are data: URIs, the style is inline, there is no
script and no link to any server, so the file opens the same from a USB stick on a ward
PC with no network, and nothing it shows can change after it was written. It says which
model and threshold gave each answer (from the sidecar), and that the tool is a
screening aid.

Films are grouped by patient and study, each group titled by who and what it is (name,
ID, sex, age; study date, description, accession number) when the film carries it; a JPEG
or PNG film is its own group, titled by its file name. The order is the reading order:
studies with a film at or above the threshold, most probable first; then studies with a
film the model gave no answer for (unreadable, out of scope, blank), which a person must
look at; then the rest, most probable first. Engineering fields (latency, rendering, scope
distance, paths and UIDs) are in a folded "details" block under each film.
"""

from __future__ import annotations

import base64
import html
import time
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from ..errors import InferenceError
from ..explain import (
    Explanation,
    Grid,
    colour_scale,
    display_size,
    input_grid,
    jpeg_bytes,
    legend_html,
    overlay,
)
from .files import PRIVATE, write_atomic

DISCLAIMER = (
    "Screening aid for research and engineering, not a diagnostic device: it has no "
    "regulatory clearance. A clinician reads every film; a film below the threshold is not "
    "ruled out."
)
# Record fields shown in their own place on a card or in its study's title; every other
# field (engineering ones, a newer runtime's) is listed in the card's folded details, so
# nothing a record says is hidden.
SHOWN_FIELDS = (
    "probability",
    "label",
    "threshold",
    "error",
    "in_scope",
    "patient_name",
    "patient_id",
    "patient_birth_date",
    "patient_age",
    "patient_sex",
    "accession_number",
    "study_date",
    "study_description",
    "body_part",
    "view",
)
# A film's identity beyond its file name (readers.identity): it is grouped by patient and
# study, and titled by them.
PATIENT_FIELDS = ("patient_id", "patient_name", "study_instance_uid", "accession_number")
AGE_UNITS = {"Y": "years", "M": "months", "W": "weeks", "D": "days"}
SHA256_SHOWN = 12
# A de-identified report leaves out pictures with text burned into them (the name, often).
BURNED_IN_NOTE = "pictures left out: the film has text burned into it (BurnedInAnnotation)"
# The report shows each film and its overlay at this longest side.
REPORT_SIDE = 360


@dataclass(frozen=True)
class Entry:
    """One film of the report: its record and, when it could be read, two JPEGs."""

    record: dict
    film_jpeg: bytes | None = None
    overlay_jpeg: bytes | None = None
    scale: float | None = None  # the logit drop at the overlay's brightest colour
    note: str | None = None  # why the pictures are left out, when they are


@dataclass(frozen=True)
class Section:
    """A group of films in reading order; `holds` says whether a record belongs to it."""

    key: str
    title: str
    note: str
    holds: object = field(repr=False)


def no_answer(record: dict) -> str | None:
    """Why the record carries no usable answer (unreadable, out of scope, blank), or None."""
    if "error" in record:
        return f"could not be read: {record['error']}"
    if record.get("in_scope") is False or record.get("label") == "OUT_OF_SCOPE":
        reason = record.get("scope_reason") or "not a film the model was trained on"
        return f"out of scope: {reason}"
    if "quality_warning" in record:
        return f"image quality: {record['quality_warning']}"
    return None


def _above(record: dict) -> bool:
    probability, threshold = record.get("probability"), record.get("threshold")
    return probability is not None and threshold is not None and probability >= threshold


SECTIONS = (
    Section(
        "above",
        "At or above the threshold",
        "most probable first",
        lambda r: not no_answer(r) and _above(r),
    ),
    Section(
        "no-answer",
        "No answer: a person must read these",
        "unreadable, out of scope or blank; the model's number, if any, means nothing",
        no_answer,
    ),
    Section(
        "below",
        "Below the threshold",
        "most probable first; not ruled out",
        lambda r: not no_answer(r) and not _above(r),
    ),
)


def _order(entry: Entry) -> tuple:
    record = entry.record
    return (-float(record.get("probability", -1.0)), str(record["path"]))


def _section_of(entry: Entry) -> int:
    return next(i for i, section in enumerate(SECTIONS) if section.holds(entry.record))


@dataclass(frozen=True)
class Study:
    """The films of one patient's study (or one film without identity), reading order."""

    entries: tuple[Entry, ...]

    @property
    def record(self) -> dict:
        """The first film's record: the study's identity."""
        return self.entries[0].record


def study_key(record: dict) -> tuple:
    """Films with the same key are one patient's study; a film without identity is its own."""
    if any(record.get(field) for field in PATIENT_FIELDS):
        study = record.get("study_instance_uid") or record.get("accession_number") or ""
        return ("study", record.get("patient_id", ""), record.get("patient_name", ""), study)
    return ("file", str(record["path"]))


def sections(entries) -> list[tuple[Section, list[Study]]]:
    """Studies grouped by SECTIONS: a study goes where its most urgent film does (above
    the threshold, then no answer, then below); in a section, the study with the most
    probable such film first; in a study, its films in the same order."""
    studies: dict[tuple, list[Entry]] = {}
    for entry in entries:
        studies.setdefault(study_key(entry.record), []).append(entry)
    groups: list[tuple[Section, list[Study]]] = [(section, []) for section in SECTIONS]
    for members in studies.values():
        members.sort(key=lambda e: (_section_of(e), *_order(e)))
        groups[_section_of(members[0])][1].append(Study(tuple(members)))
    for _, members in groups:
        members.sort(key=lambda study: _order(study.entries[0]))
    return groups


def calibration_promise(block: dict) -> str:
    """What a sidecar's calibration block promises, in one phrase (the report and the
    bundle READMEs say it the same way)."""
    if block.get("guarantee"):
        confidence = f"{100 * float(block.get('confidence', 0)):g}%"
        return (
            f"pneumonia recall >= {block.get('target_recall')} with {confidence} confidence "
            f"({block.get('method')})"
        )
    return (
        f"an empirical pneumonia recall >= {block.get('target_recall')} on that sample: a "
        "POINT ESTIMATE with no confidence guarantee (too few pneumonia films)"
    )


def threshold_origin(sidecar: dict) -> str:
    """Where the sidecar's threshold came from, in one sentence."""
    block = sidecar.get("calibration")
    if not isinstance(block, dict):
        return (
            f"chosen on the training hospital's validation films for a pneumonia recall of "
            f"{sidecar.get('target_recall', 'unknown')}; not calibrated at this site"
        )
    sample = block.get("sample") or {}
    return (
        f"calibrated at a site on {block.get('calibrated_at', 'an unknown date')} on "
        f"{sample.get('n')} local films ({sample.get('pneumonia')} pneumonia, "
        f"{sample.get('normal')} normal): {calibration_promise(block)}; validation had "
        f"chosen {block.get('source_threshold')}"
    )


def shown(value) -> str:
    """Text as the report shows it: HTML-escaped, with invisible format and control
    characters written out (U+202E shown as <U+202E>). A right-to-left override in a file
    or patient name would otherwise make it read as another name."""
    text = "".join(
        f"<U+{ord(c):04X}>" if unicodedata.category(c) in ("Cf", "Cc") else c for c in str(value)
    )
    return html.escape(text)


def _data_uri(jpeg: bytes) -> str:
    return "data:image/jpeg;base64," + base64.b64encode(jpeg).decode("ascii")


def _bar(probability: float, threshold: float) -> str:
    return (
        '<div class="bar" role="img" aria-label="probability '
        f'{probability:.3f} against threshold {threshold:.3f}">'
        f'<div class="fill" style="width:{100 * probability:.1f}%"></div>'
        f'<div class="mark" style="left:{100 * threshold:.1f}%"></div></div>'
    )


def _person_name(value: str) -> str:
    """A DICOM person name (Family^Given^Middle^Prefix^Suffix) as people write it."""
    family, *rest = str(value).split("^")
    given = " ".join(part for part in rest if part)
    return f"{family}, {given}" if family and given else family or given


def _date(value: str) -> str:
    text = str(value)
    return f"{text[:4]}-{text[4:6]}-{text[6:8]}" if len(text) == 8 and text.isdigit() else text


def _age(value: str) -> str:
    """A DICOM age (054Y) or a shared one (54, "90 or more") in words."""
    text = str(value).strip()
    if len(text) == 4 and text[:3].isdigit() and text[3] in AGE_UNITS:
        return f"{int(text[:3])} {AGE_UNITS[text[3]]}"
    return f"{text} years"


def study_title(study: Study, rank: int) -> str:
    """The study's heading: the patient, then the study, from its first film's record."""
    record, e = study.record, shown
    if study_key(record)[0] == "file":
        return f"<h3>{rank}. {e(str(record['path']))}</h3>"
    who = []
    if record.get("patient_name"):
        who.append(f"<b>{e(_person_name(record['patient_name']))}</b>")
    if record.get("patient_id"):
        who.append(f"ID {e(record['patient_id'])}")
    if record.get("patient_sex"):
        who.append(e(record["patient_sex"]))
    if record.get("patient_age"):
        who.append(e(_age(record["patient_age"])))
    if record.get("patient_birth_date"):
        who.append(f"born {e(_date(record['patient_birth_date']))}")
    what = ["study"]
    if record.get("study_date"):
        what.append(e(_date(record["study_date"])))
    if record.get("study_description"):
        what.append(e(record["study_description"]))
    if record.get("accession_number"):
        what.append(f"accession {e(record['accession_number'])}")
    count = len(study.entries)
    what.append(f"{count} film{'s' if count != 1 else ''}")
    return (
        f'<h3 class="patient">{" · ".join(who) or "patient not named"}</h3>'
        f'<p class="study-line">{" · ".join(what)}</p>'
    )


def film_title(record: dict, rank: int) -> str:
    """A film's heading inside its study: what view of what it is."""
    view = " ".join(str(record[k]) for k in ("view", "body_part") if record.get(k))
    return f"<h4>{rank}. {shown(view or 'film')}</h4>"


def _card(rank: int, entry: Entry, positive: str, title: str) -> str:
    record, e = entry.record, shown
    why = no_answer(record)
    lines = [f'<section class="film{" flagged" if why else ""}">']
    if title:
        lines.append(title)
    if why:
        lines.append(f'<p class="why">{e(why)}</p>')
    if "probability" in record and "threshold" in record:
        probability, threshold = float(record["probability"]), float(record["threshold"])
        label = record.get("label", "")
        lines.append(
            f'<p class="answer"><b>{e(str(label))}</b>: probability of {e(positive)} '
            f"{probability:.3f}, threshold {threshold:.3f}</p>{_bar(probability, threshold)}"
        )
    if "in_scope" in record:
        flag = {True: "yes", False: "NO"}.get(record["in_scope"], "not checked")
        reason = record.get("scope_reason")
        detail = f" ({e(str(reason))})" if reason and record["in_scope"] is not True else ""
        lines.append(f"<p>in scope: <b>{flag}</b>{detail}</p>")
    if entry.note:
        lines.append(f'<p class="note">{e(entry.note)}</p>')
    if entry.film_jpeg:
        lines.append('<div class="pictures">')
        lines.append(
            f'<figure><img alt="film" src="{_data_uri(entry.film_jpeg)}">'
            "<figcaption>film</figcaption></figure>"
        )
        if entry.overlay_jpeg:
            caption = f"where the model looked (colour scale 0 to {entry.scale:.2f} logit)"
            lines.append(
                f'<figure><img alt="heatmap" src="{_data_uri(entry.overlay_jpeg)}">'
                f"<figcaption>{e(caption)}</figcaption></figure>"
            )
        lines.append("</div>")
    others = {k: v for k, v in record.items() if k not in SHOWN_FIELDS}
    if others:
        lines.append(
            f'<details><summary>details</summary><table class="fields">'
            f"{_rows(others.items())}</table></details>"
        )
    lines.append("</section>")
    return "\n".join(lines)


def _study(rank: int, study: Study, positive: str) -> tuple[str, int]:
    """A study's block and the rank of its last film."""
    alone = study_key(study.record)[0] == "file"
    parts = ['<div class="study">', study_title(study, rank + 1)]
    for entry in study.entries:
        rank += 1
        parts.append(_card(rank, entry, positive, "" if alone else film_title(entry.record, rank)))
    parts.append("</div>")
    return "\n".join(parts), rank


def _rows(pairs) -> str:
    e = shown
    return "".join(f"<tr><th>{e(str(k))}</th><td>{e(str(v))}</td></tr>" for k, v in pairs)


def _model_block(sidecar: dict, model_path: str | Path) -> str:
    rows = [
        ("model file", f"{Path(model_path).name} ({sidecar.get('method', 'unknown method')})"),
        ("sha256", f"{str(sidecar.get('sha256', ''))[:SHA256_SHOWN]}…"),
        ("made by", f"edgexray {sidecar.get('edgexray_version', 'unknown')}"),
        ("threshold", f"{float(sidecar['threshold']):.4f}: {threshold_origin(sidecar)}"),
    ]
    block = sidecar.get("calibration")
    if isinstance(block, dict):
        sample = block.get("sample") or {}
        low, high = block.get("expected_specificity_ci") or (None, None)
        rows.append(
            (
                "calibration sample",
                f"{sample.get('folder')} (file list sha256 "
                f"{str(sample.get('files_sha256', ''))[:SHA256_SHOWN]}…)",
            )
        )
        if block.get("recall_lower_bound") is not None:
            rows.append(("recall lower bound", f"{block['recall_lower_bound']:.4f}"))
        if None not in (block.get("expected_specificity"), low, high):
            rows.append(
                (
                    "expected specificity",
                    f"{block['expected_specificity']:.3f} "
                    f"({block.get('interval', 'CI')}: {low:.3f}–{high:.3f})",
                )
            )
    return f'<table class="model">{_rows(rows)}</table>'


STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#111;max-width:1100px}
.disclaimer{border:2px solid #b00;background:#fff3f3;padding:.6em 1em;font-weight:600}
table{border-collapse:collapse;margin:.5em 0}th,td{text-align:left;padding:2px 10px 2px 0;
vertical-align:top}th{font-weight:600;color:#444}
.film{border-top:1px solid #bbb;padding:.6em 0;break-inside:avoid}
.flagged{background:#fff8e0}.why{color:#a00;font-weight:600}
.bar{position:relative;height:14px;width:360px;background:#e4e4e4;border:1px solid #888}
.fill{position:absolute;left:0;top:0;bottom:0;background:#c03a2b}
.mark{position:absolute;top:-4px;bottom:-4px;width:3px;background:#000}
.pictures{display:flex;gap:12px;flex-wrap:wrap}figure{margin:.4em 0}
figcaption{font-size:85%;color:#444}img{max-width:360px;height:auto;display:block}
.fields{font-size:85%;color:#333}details{font-size:90%;color:#333;margin:.3em 0}
.study{border-top:2px solid #666;margin-top:1em}.study-line{margin:.2em 0;color:#333}
.film h4{margin:.4em 0}.note{color:#555;font-style:italic}.study>h3+.film{border-top:none}
.scale{height:12px;width:360px;border:1px solid #888}
h3,h4,p,td,li{overflow-wrap:anywhere}
"""


def render(entries, sidecar: dict, model_path: str | Path, legend: str = "") -> str:
    """The report as one HTML string (see the module docstring for what it holds)."""
    e = shown
    positive = str(sidecar["labels"][1])
    groups = sections(entries)
    count = sum(len(study.entries) for _, members in groups for study in members)
    summary = "".join(
        f'<li><a href="#{s.key}">{e(s.title)}</a>: {_films_in(members)}</li>'
        for s, members in groups
    )
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>edgexray report: {count} films</title><style>{STYLE}</style></head><body>",
        f"<h1>{e(positive.capitalize())} screening report: {count} films</h1>",
        f'<p class="disclaimer">{e(DISCLAIMER)}</p>',
        f"<p>Written {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}.</p>",
        f"<ul>{summary}</ul>",
        "<h2>Model</h2>",
        _model_block(sidecar, model_path),
    ]
    if legend:
        parts.append(f"<h2>Reading the heatmaps</h2>{legend}")
    rank = 0
    for section, members in groups:
        parts.append(f'<h2 id="{section.key}">{e(section.title)} ({_films_in(members)})</h2>')
        parts.append(f"<p>{e(section.note)}</p>")
        if not members:
            parts.append("<p>none</p>")
        for study in members:
            block, rank = _study(rank, study, positive)
            parts.append(block)
    parts.append(f'<p class="disclaimer">{e(DISCLAIMER)}</p></body></html>')
    return "\n".join(parts) + "\n"


def _films_in(studies: list[Study]) -> str:
    films = sum(len(study.entries) for study in studies)
    if films == len(studies):
        return str(films)
    return f"{films} films of {len(studies)} studies"


def check_writable(path: str | Path) -> None:
    """Refuse a report path that exists (a user's file is never overwritten) or whose
    folder is missing, before any film is processed.

    Raises:
        InferenceError: the report cannot be written there.
    """
    path = Path(path)
    if path.exists():
        raise InferenceError(f"{path} exists: give a new file name for the report")
    if not path.parent.is_dir():
        raise InferenceError(f"{path.parent} is not a folder: cannot write the report")


def write(path: str | Path, entries, sidecar: dict, model_path: str | Path, legend="") -> None:
    """Write the report to path (a temporary file renamed into place).

    Raises:
        OutputError: it could not be written.
    """
    check_writable(path)
    page = render(entries, sidecar, model_path, legend).encode("utf-8")
    write_atomic(Path(path), page, PRIVATE)  # it names patients: the owner's alone


def entry(film, explanation: Explanation | None, threshold: float) -> Entry:
    """The report's entry of one classified film: its record and, when it was read and
    explained, small JPEGs of the film and its overlay."""
    burned = str((film.info.get("tags") or {}).get("BurnedInAnnotation") or "").upper()
    if film.info.get("deidentified") and burned == "YES":
        return Entry(film.record, note=BURNED_IN_NOTE)
    if film.film is None or explanation is None:
        return Entry(film.record)
    pixels = film.film
    height, width = display_size(*pixels.shape, REPORT_SIDE)
    shown = Image.fromarray(pixels).resize((width, height), Image.Resampling.BILINEAR)
    picture = overlay(pixels, explanation, threshold, REPORT_SIDE, legend=False)
    return Entry(film.record, jpeg_bytes(shown), jpeg_bytes(picture), colour_scale(explanation))


class Report:
    """The report sink: one HTML page of the batch, written when it is closed."""

    needs_map = True

    def __init__(
        self, path: str | Path, sidecar: dict, model_path: str | Path, grid: Grid | None = None
    ):
        check_writable(path)
        self.path, self.sidecar, self.model_path = Path(path), sidecar, model_path
        self.grid = grid or input_grid(sidecar["input"])  # what the legend says the maps used
        self.entries: list[Entry] = []

    def add(self, film, explanation: Explanation | None) -> None:
        self.entries.append(entry(film, explanation, float(self.sidecar["threshold"])))

    def close(self) -> None:
        write(self.path, self.entries, self.sidecar, self.model_path, legend_html(self.grid))
