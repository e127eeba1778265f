"""Whose film it is: the identity on every record and report, and output for sharing without it.

A DICOM film whose identifying attributes are all filled (with values found nowhere
else) goes through `predict` and `explain` with records as JSON lines and CSV and the HTML
report: each output names the patient and the study; with --deidentify none of those
values appears in any byte written (records, report, heatmap file names).
"""

from __future__ import annotations

import csv
import io
import json
import os
import stat
from pathlib import Path

import pytest
from node_support import small_films, write_film
from typer.testing import CliRunner

from edgexray.cli import app
from edgexray.edge_runtime.outputs import deidentify
from edgexray.edge_runtime.readers import identity

runner = CliRunner()

# Every identifying attribute, each with a value that appears nowhere else.
PHI = {
    "PatientName": "Zanzibar^Quixotia^Marvella",
    "PatientID": "PID-778899",
    "PatientBirthDate": "20191123",
    "PatientAge": "004Y",
    "PatientSex": "F",
    "AccessionNumber": "ACC-556612",
    "StudyDate": "20240214",
    "StudyTime": "101112",
    "StudyDescription": "THORAX Quixotia follow-up",
    "StudyID": "STUDY-3141",
    "ReferringPhysicianName": "Oddfellow^Barnabus",
    "InstitutionName": "Wimbleton Cottage Hospital",
    "OtherPatientIDs": "OPID-24680",
    "BodyPartExamined": "CHEST",
    "ViewPosition": "PA",
}
# Attributes a de-identified output may keep, and the short ones too common to search for.
SHAREABLE = ("PatientSex", "BodyPartExamined", "ViewPosition", "PatientAge")


@pytest.fixture(scope="module")
def phi_film(tmp_path_factory) -> tuple[Path, dict]:
    """A DICOM film named after its patient, with every PHI attribute filled: (path, values)."""
    folder = tmp_path_factory.mktemp("ward") / "Zanzibar films"
    folder.mkdir()
    path = folder / "Zanzibar Quixotia chest.dcm"
    values = dict(PHI)
    from pydicom import dcmread

    write_film(path, small_films(96)[2], **values)
    dataset = dcmread(path)
    for keyword in ("SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID"):
        values[keyword] = str(dataset.get(keyword))
    return path, values


def secrets(values: dict, path: Path) -> list[str]:
    """Every text a shared output must not hold: the PHI values, name parts, UIDs, file name."""
    found = [str(v) for k, v in values.items() if k not in SHAREABLE]
    found += values["PatientName"].split("^") + values["ReferringPhysicianName"].split("^")
    found += [
        path.name,
        path.stem,
        path.parent.name,
        "20191123",
        "2019-11-23",
        "20240214",
        "2024-02-14",
    ]
    return found


def test_a_dicom_record_carries_the_patient_and_study_and_a_jpeg_its_file_name(phi_film, tmp_path):
    path, values = phi_film
    jpeg = tmp_path / "plain film.jpeg"
    from PIL import Image

    Image.fromarray(small_films(96)[0]).save(jpeg)
    result = runner.invoke(app, ["predict", str(path), str(jpeg)])
    assert result.exit_code == 0, result.output
    dicom_record, jpeg_record = [json.loads(line) for line in result.output.splitlines()]
    expected = {
        "patient_name": "Zanzibar^Quixotia^Marvella",
        "patient_id": "PID-778899",
        "patient_birth_date": "20191123",
        "patient_age": "004Y",
        "patient_sex": "F",
        "accession_number": "ACC-556612",
        "study_date": "20240214",
        "study_description": "THORAX Quixotia follow-up",
        "body_part": "CHEST",
        "view": "PA",
        "study_instance_uid": values["StudyInstanceUID"],
        "series_instance_uid": values["SeriesInstanceUID"],
        "sop_instance_uid": values["SOPInstanceUID"],
    }
    assert {k: dicom_record[k] for k in identity.FIELDS} == expected
    assert list(dicom_record)[: len(expected) + 1] == ["path", *identity.FIELDS]
    assert jpeg_record["path"] == str(jpeg) and not set(identity.FIELDS) & set(jpeg_record)


def test_the_csv_has_a_column_for_each_identity_field(phi_film):
    path, values = phi_film
    result = runner.invoke(app, ["predict", "--format", "csv", str(path)])
    assert result.exit_code == 0, result.output
    (row,) = csv.DictReader(io.StringIO(result.output))
    assert row["patient_id"] == "PID-778899" and row["accession_number"] == "ACC-556612"
    assert row["sop_instance_uid"] == values["SOPInstanceUID"]


def test_the_report_titles_films_by_patient_and_study_and_folds_engineering_fields(
    phi_film, tmp_path
):
    path, _ = phi_film
    page_path = tmp_path / "ward report.html"
    result = runner.invoke(app, ["predict", str(path), "--report", str(page_path)])
    assert result.exit_code == 0, result.output
    page = page_path.read_text()
    title = page[page.index('<h3 class="patient">') :]
    title = title[: title.index("</p>")]
    for shown in (
        "Zanzibar, Quixotia Marvella",
        "ID PID-778899",
        "4 years",
        "born 2019-11-23",
        "study · 2024-02-14 · THORAX Quixotia follow-up · accession ACC-556612 · 1 film",
    ):
        assert shown in title, (shown, title)
    card = page[page.index('<section class="film') :]
    assert "<h4>1. PA CHEST</h4>" in card
    details = card[card.index("<details>") : card.index("</details>")]
    assert all(field in details for field in ("latency_ms", "rendering", "sop_instance_uid"))
    assert str(path) in details and str(path) not in card[: card.index("<details>")]


def test_films_of_one_study_are_grouped_under_it(tmp_path):
    films = small_films(96)
    shared = {"PatientID": "P-1", "PatientName": "Doe^Jane", "StudyInstanceUID": "1.2.3.4.5"}
    paths = []
    for number, view in enumerate(("PA", "AP")):
        paths.append(tmp_path / f"film {number}.dcm")
        write_film(paths[-1], films[2 + number], ViewPosition=view, **shared)
    paths.append(tmp_path / "other patient.dcm")
    write_film(paths[-1], films[0], PatientID="P-2", PatientName="Roe^Rick")
    page_path = tmp_path / "report.html"
    result = runner.invoke(app, ["predict", *map(str, paths), "--report", str(page_path)])
    assert result.exit_code == 0, result.output
    page = page_path.read_text()
    assert page.count('<div class="study">') == 2 and "2 films" in page
    jane = page.index("Doe, Jane")
    assert jane < page.index("PA CHEST</h4>") and jane < page.index("AP CHEST</h4>")


def _key_file(folder: Path) -> Path:
    key = folder / "site.key"
    key.write_bytes(os.urandom(32))
    return key


def test_deidentified_output_holds_no_phi_value_of_the_film(phi_film, tmp_path):
    path, values = phi_film
    key = _key_file(tmp_path)
    written = {}
    for command, fmt in (("predict", "jsonl"), ("predict", "csv"), ("explain", None)):
        page_path = tmp_path / f"{command} {fmt} report.html"
        args = [command, str(path), "--report", str(page_path), "--deidentify", str(key)]
        args += ["--format", fmt] if fmt else ["--out", str(tmp_path / "shared maps")]
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output
        written[f"{command} {fmt} records"] = result.output
        written[f"{command} {fmt} report"] = page_path.read_text()
    written["heatmap names"] = " ".join(os.listdir(tmp_path / "shared maps"))
    for name, text in written.items():
        for secret in secrets(values, path):
            assert secret not in text, (name, secret)
    record = json.loads(written["explain None records"])
    hashed = deidentify.keyed_hash(deidentify.load_key(key), "PID-778899")
    assert record["patient_id"] == hashed and len(hashed) == deidentify.HASH_CHARS
    assert record["patient_age"] == "4" and record["patient_sex"] == "F"
    assert record["path"].startswith("film-") and record["path"].endswith(".dcm")
    assert f"ID {hashed}" in written["explain None report"]
    assert Path(record["overlay"]).name.startswith("film-")


def test_the_same_patient_gets_the_same_hash_and_another_key_another(tmp_path):
    first, second = os.urandom(32), os.urandom(32)
    record = {"path": "/x/a.dcm", "patient_id": "P-1", "patient_name": "Doe^Jane"}
    shared = deidentify.deidentified(record, first)
    assert shared == deidentify.deidentified(dict(record, path="/x/a.dcm"), first)
    assert shared["patient_id"] != deidentify.deidentified(record, second)["patient_id"]
    assert "patient_name" not in shared


@pytest.mark.parametrize(
    "record, age",
    [
        ({"patient_age": "094Y"}, "90 or more"),
        ({"patient_birth_date": "19800301", "study_date": "20240229"}, "43"),
        ({"patient_age": "006M"}, "0"),
        ({"patient_birth_date": "notadate"}, None),
    ],
)
def test_a_shared_age_is_whole_years_and_ninety_or_more(record, age):
    shared = deidentify.deidentified({"path": "f.dcm", **record}, b"k" * 32)
    assert shared.get("patient_age") == age
    assert "patient_birth_date" not in shared and "study_date" not in shared


def test_an_error_that_quotes_a_removed_value_has_it_removed():
    record = {
        "path": "/films/Doe Jane.dcm",
        "patient_name": "Doe^Jane",
        "error": "refused: /films/Doe Jane.dcm is a colour image",
    }
    shared = deidentify.deidentified(record, b"k" * 32)
    assert shared["error"] == f"refused: {deidentify.REMOVED} is a colour image"


@pytest.mark.parametrize("content", [b"", b"short", b"   \n"])
def test_a_key_too_short_is_refused_in_one_line(tmp_path, phi_film, content):
    key = tmp_path / "weak.key"
    key.write_bytes(content)
    result = runner.invoke(app, ["predict", str(phi_film[0]), "--deidentify", str(key)])
    assert result.exit_code == 2 and result.output.count("error:") == 1
    assert "head -c 32 /dev/urandom" in result.output


def test_reports_and_heatmaps_are_private_whatever_the_umask(phi_film, tmp_path):
    path, _ = phi_film
    previous = os.umask(0)
    try:
        page_path = tmp_path / "report.html"
        maps = tmp_path / "maps"
        args = ["explain", str(path), "--out", str(maps), "--report", str(page_path)]
        result = runner.invoke(app, args)
    finally:
        os.umask(previous)
    assert result.exit_code == 0, result.output
    for written in (page_path, *maps.iterdir()):
        assert stat.S_IMODE(written.stat().st_mode) == 0o600, written
