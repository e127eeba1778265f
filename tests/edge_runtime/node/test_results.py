"""What the node sends the PACS, object by object: the TID 1500 report and the heatmap
Secondary Capture, for a DICOM film and for a film made from a JPEG with `to-dicom`; every
object validated by dicom3tools' dciodvfy (zero errors)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from node_support import SHARED_TEST, SOURCES, report_values, small_films, source_of, write_film
from orthanc_support import skip_unless_available
from typer.testing import CliRunner

from edgexray.cli import app
from edgexray.edge_runtime import REFERENCE_MODEL
from edgexray.edge_runtime.classifier import Classifier
from edgexray.edge_runtime.explain import occlusion_map
from edgexray.edge_runtime.node import evidence, heatmap, sr
from edgexray.edge_runtime.node.films import SyntheticFilm, write_test_film

pytest.importorskip("highdicom")
needs_dciodvfy = skip_unless_available(
    shutil.which("dciodvfy") is not None,
    "dicom3tools is not installed: apt-get install -y dicom3tools (.ci/run installs it)",
)
PATIENT = {
    "PatientName": "Doe^Jane",
    "PatientID": "P-123",
    "PatientBirthDate": "20220301",
    "PatientSex": "F",
    "AccessionNumber": "ACC-9",
    "PatientOrientation": ["L", "F"],
}


@pytest.fixture(scope="module")
def classifier() -> Classifier:
    return Classifier(REFERENCE_MODEL)


@pytest.fixture(scope="module")
def films(tmp_path_factory) -> dict[str, Path]:
    """A CR film from a modality (patient filled) and a film made from a JPEG by to-dicom."""
    folder = tmp_path_factory.mktemp("result films")
    modality = folder / "modality film.dcm"
    write_film(modality, small_films(96)[2], **PATIENT)
    converted = folder / "from jpeg.dcm"
    write_test_film(SHARED_TEST / SOURCES[2], converted, SyntheticFilm(view="AP"))
    return {"DICOM film": modality, "JPEG-sourced film": converted}


def dciodvfy_errors(path: Path) -> list[str]:
    result = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=60)
    lines = (result.stdout + result.stderr).splitlines()
    return [line for line in lines if line.startswith("Error")]


def results_of(classifier: Classifier, film: Path, folder: Path) -> dict[str, Path]:
    """The report and the heatmap of a film, as the node builds them, saved under folder."""
    classified = classifier.classify_film(film)
    header = evidence.read_header(film)
    report = sr.structured_report(header, classified.record, classifier.sidecar)
    explanation = occlusion_map(classifier, classified.resized)
    capture = heatmap.heatmap_capture(header, classified.film, explanation, classifier.sidecar)
    written = {}
    folder.mkdir(parents=True, exist_ok=True)
    for name, dataset in (("report", report), ("heatmap", capture)):
        written[name] = folder / f"{film.stem} {name}.dcm"
        dataset.save_as(written[name], enforce_file_format=True)
    return written


@needs_dciodvfy
@pytest.mark.parametrize("kind", ["DICOM film", "JPEG-sourced film"])
def test_the_report_and_the_heatmap_validate_with_dciodvfy(classifier, films, tmp_path, kind):
    written = results_of(classifier, films[kind], tmp_path)
    for name, path in written.items():
        assert dciodvfy_errors(path) == [], (kind, name)


@needs_dciodvfy
@pytest.mark.parametrize(
    "record",
    [
        {"error": "quarantined: the node stopped 2 times"},
        {"probability": 0.9, "label": "OUT_OF_SCOPE", "threshold": 0.2, "in_scope": False},
        {"probability": 0.1, "label": "NORMAL", "threshold": 0.2, "quality_warning": "flat"},
    ],
    ids=["not classified", "out of scope", "quality warning"],
)
def test_reports_without_a_plain_answer_validate_too(classifier, films, tmp_path, record):
    header = evidence.read_header(films["DICOM film"])
    path = tmp_path / "report.dcm"
    sr.structured_report(header, {"path": "x", **record}, classifier.sidecar).save_as(path)
    assert dciodvfy_errors(path) == []


def test_the_report_states_the_finding_in_snomed_and_the_probability_in_ucum(
    classifier, films, tmp_path
):
    written = results_of(classifier, films["DICOM film"], tmp_path)
    from pydicom import dcmread

    report = dcmread(written["report"])
    assert report.SOPClassUID == sr.COMPREHENSIVE_SR
    assert report.ContentTemplateSequence[0].TemplateIdentifier == "1500"
    values = report_values(report)
    record = classifier.classify(films["DICOM film"])
    assert record["label"] == "PNEUMONIA" and values["Pneumonia"] == "Present"
    assert values["Finding"] == "Pneumonia" and values["Finding Site"] == "Lung"
    assert values["Probability"] == pytest.approx(record["probability"])
    assert values["Threshold Value"] == pytest.approx(record["threshold"])
    assert values["Within the model's scope"] == "Yes"
    sha = classifier.sidecar["sha256"]
    assert f"model sha256 {sha}" in values["Algorithm Parameters"]
    assert any(p.startswith("decision threshold 0.2215: ") for p in values["Algorithm Parameters"])
    assert values["Algorithm Name"] == [sr.ALGORITHM] and sr.NOTICE in values["Comment"]
    codes = {
        (str(item.ConceptNameCodeSequence[0].CodeValue), item.get("ValueType"))
        for item in report.ContentSequence[-1].ContentSequence[0].ContentSequence
    }
    assert ("233604007", "CODE") in codes  # the finding's evaluation, by its SNOMED CT code
    units = _units(report)
    assert units == {("1", "UCUM")}
    assert [s.CodingSchemeDesignator for s in report.CodingSchemeIdentificationSequence] == [
        sr.PRIVATE_SCHEME
    ]
    for keyword in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex"):
        assert str(report.get(keyword)) == str(PATIENT[keyword])
    assert source_of(report) == evidence.read_header(films["DICOM film"]).SOPInstanceUID


def _units(report) -> set[tuple[str, str]]:
    found = set()

    def walk(items):
        for item in items:
            if item.ValueType == "NUM":
                unit = item.MeasuredValueSequence[0].MeasurementUnitsCodeSequence[0]
                found.add((str(unit.CodeValue), str(unit.CodingSchemeDesignator)))
            walk(item.get("ContentSequence", []))

    walk(report.ContentSequence)
    return found


def test_the_heatmap_is_a_secondary_capture_in_its_own_series_of_the_films_study(
    classifier, films, tmp_path
):
    from pydicom import dcmread

    film = dcmread(films["DICOM film"], stop_before_pixels=True)
    written = results_of(classifier, films["DICOM film"], tmp_path)
    capture = dcmread(written["heatmap"])
    assert capture.SOPClassUID == evidence.SECONDARY_CAPTURE
    assert capture.StudyInstanceUID == film.StudyInstanceUID
    assert capture.SeriesInstanceUID not in (film.SeriesInstanceUID, "")
    assert capture.BurnedInAnnotation == "YES"
    assert capture.PhotometricInterpretation == "RGB" and capture.SamplesPerPixel == 3
    assert capture.PatientOrientation == ["L", "F"]
    assert source_of(capture) == film.SOPInstanceUID
    for keyword in ("PatientName", "PatientID", "PatientBirthDate", "AccessionNumber"):
        assert capture.get(keyword) == film.get(keyword)
    assert capture.pixel_array.shape[2] == 3 and capture.pixel_array.std() > 10


def test_a_result_built_twice_is_the_same_instance(classifier, films, tmp_path):
    first = results_of(classifier, films["DICOM film"], tmp_path / "first")
    second = results_of(classifier, films["DICOM film"], tmp_path / "second")
    from pydicom import dcmread

    for name in ("report", "heatmap"):
        one, two = dcmread(first[name]), dcmread(second[name])
        assert one.SOPInstanceUID == two.SOPInstanceUID
        assert one.SeriesInstanceUID == two.SeriesInstanceUID


def test_to_dicom_writes_a_monochrome_film_a_plain_storescu_can_send(tmp_path):
    from pydicom import dcmread

    out = tmp_path / "first film.dcm"
    picture = SHARED_TEST / SOURCES[0]
    result = CliRunner().invoke(app, ["to-dicom", str(picture), str(out), "--view", "PA"])
    assert result.exit_code == 0, result.output
    film = dcmread(out)
    assert film.PhotometricInterpretation == "MONOCHROME2" and film.BitsStored == 8
    assert film.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"
    assert str(film.PatientName) == "TEST^FILM" and film.PatientID.startswith("TEST-")
    record = Classifier(REFERENCE_MODEL).classify(out)
    assert record["label"] in ("NORMAL", "PNEUMONIA") and record["view"] == "PA"
    again = CliRunner().invoke(app, ["to-dicom", str(picture), str(out)])
    assert again.exit_code == 2 and "exists" in again.output


@pytest.mark.parametrize(
    "source, says",
    [("film.dcm", "DICOM already"), ("notes.png", "not a JPEG, PNG or DICOM image")],
)
def test_to_dicom_refuses_what_it_cannot_convert_in_one_line(tmp_path, source, says):
    path = tmp_path / source
    if source.endswith(".dcm"):
        write_film(path, small_films(32)[0])
    else:
        path.write_text("not an image\n")
    result = CliRunner().invoke(app, ["to-dicom", str(path), str(tmp_path / "out.dcm")])
    assert result.exit_code == 2 and result.output.count("error:") == 1 and says in result.output
    assert not (tmp_path / "out.dcm").exists()


def test_a_colour_dicom_film_is_refused_with_how_to_convert_it(tmp_path):
    import numpy as np

    path = tmp_path / "colour.dcm"
    rgb = np.zeros((16, 16, 3), np.uint8)
    write_film(
        path,
        np.zeros((16, 16), np.uint8),
        SamplesPerPixel=3,
        PhotometricInterpretation="RGB",
        PlanarConfiguration=0,
        PixelData=rgb.tobytes(),
    )
    record = Classifier(REFERENCE_MODEL).classify(path)
    assert "a colour image" in record["error"] and "edgexray to-dicom" in record["error"]


def test_the_device_writes_the_same_test_film_with_infer_py(tmp_path, capsys):
    from pydicom import dcmread

    from edgexray.edge_runtime.cli import main

    out = tmp_path / "pi film.dcm"
    args = ["to-dicom", str(SHARED_TEST / SOURCES[1]), str(out), "--patient-id", "PI-1"]
    assert main(args) == 0
    assert "MONOCHROME2 film, patient PI-1" in capsys.readouterr().out
    assert dcmread(out).PatientID == "PI-1"
    assert main(args) == 2 and "exists" in capsys.readouterr().err
