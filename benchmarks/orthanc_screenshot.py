"""The node's results where the clinic reads them: Orthanc's own web page, in headless Chromium.

    python benchmarks/orthanc_screenshot.py [--data ../shared/data/chest_xray] [--out docs]

Starts Orthanc (tests/orthanc_support.py: its own folder, on 127.0.0.1 only) and
`edgexray serve --pacs ORTHANC@... --explain`, makes a DICOM film from a test/ JPEG with
`edgexray to-dicom` (a synthetic patient), pushes it with dcmtk's storescu to Orthanc (as
the X-ray unit would) and to the node, waits for the report and the heatmap in the
film's study, then photographs Orthanc Explorer: the study's page (the film, the report
and the heatmap as three series) and Orthanc's own rendering of the heatmap. Writes
OUT/orthanc-study.png and OUT/orthanc-heatmap.png, and prints each command with its output
(docs/node.md shows them). Needs orthanc, dcmtk, chromium and the node extra.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import node_support  # noqa: E402
import orthanc_support  # noqa: E402
from PIL import Image  # noqa: E402

EDGEXRAY = str(Path(sys.executable).with_name("edgexray"))
CHROMIUM_FLAGS = (
    "--headless --no-sandbox --disable-gpu --disable-quic --no-first-run "
    "--disable-background-networking --disable-component-update --disable-sync"
).split()


def shown(command: list[str], cwd: Path) -> str:
    """Run command in cwd, print it and its output as a console would; return the output."""
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=300)
    output = (result.stdout + result.stderr).strip()
    print("$ " + " ".join(command))
    if output:
        print(output)
    if result.returncode:
        raise SystemExit(f"{command[0]} exited {result.returncode}")
    return output


def screenshot(url: str, out: Path, size: str, work: Path) -> None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        raise SystemExit("chromium not found (apt-get install chromium)")
    raw = work / "shot.png"
    subprocess.run(
        [
            chromium,
            *CHROMIUM_FLAGS,
            f"--user-data-dir={work / 'profile'}",
            f"--screenshot={raw}",
            f"--window-size={size}",
            "--virtual-time-budget=8000",
            url,
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    # A 256-colour palette keeps the PNG small for the README.
    shot = Image.open(raw).convert("RGB")
    shot.quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data/chest_xray"))
    parser.add_argument("--out", type=Path, default=Path("docs"))
    args = parser.parse_args()
    if not (node_support.have_dcmtk() and orthanc_support.available()):
        raise SystemExit(f"{node_support.DCMTK_MISSING}; or {orthanc_support.MISSING}")
    picture = (args.data / "test/PNEUMONIA/person101_bacteria_483.jpeg").resolve()
    out = args.out.resolve()
    with tempfile.TemporaryDirectory(prefix="orthanc demo ") as tmp:
        work = Path(tmp)
        pacs = orthanc_support.Orthanc(work / "orthanc").start()
        port = node_support.free_port()
        serve = [EDGEXRAY, "serve", "--state", "node-state", "--allow-ae", "XRAY1"]
        serve += ["--host", "127.0.0.1", "--port", str(port), "--pacs", pacs.destination]
        serve += ["--explain"]
        log = open(work / "node.log", "w")
        node = subprocess.Popen(serve, cwd=work, stdout=log, stderr=subprocess.STDOUT)
        try:
            convert = [EDGEXRAY, "to-dicom", str(picture), "film.dcm"]
            shown([*convert, "--patient-name", "DOE^JANE", "--patient-id", "DEMO-0001"], work)
            assert node_support.wait_for(lambda: _listening(port), 60, 0.2)
            storescu = [node_support.dcmtk("storescu"), "-aet", "XRAY1"]
            shown(
                [*storescu, "-aec", pacs.ae_title, "127.0.0.1", str(pacs.dicom_port), "film.dcm"],
                work,
            )
            shown([*storescu, "-aec", "EDGEXRAY", "127.0.0.1", str(port), "film.dcm"], work)
            study = _wait_for_results(pacs)
            shown(["tail", "-1", "node-state/results.jsonl"], work)
            report = next(s for s in study["Series"] if _modality(pacs, s) == "SR")
            instance = pacs.get(f"/series/{report}")["Instances"][0]
            (work / "report.dcm").write_bytes(pacs.get(f"/instances/{instance}/file"))
            shown(["dsrdump", "report.dcm"], work)
            base = f"http://127.0.0.1:{pacs.http_port}"
            args.out.mkdir(parents=True, exist_ok=True)
            screenshot(
                f"{base}/app/explorer.html#study?uuid={study['ID']}",
                out / "orthanc-study.png",
                "1000,620",
                work,
            )
            heatmap = next(
                s
                for s in study["Series"]
                if _modality(pacs, s) == "OT" and s != _film_series(pacs, study)
            )
            image = pacs.get(f"/series/{heatmap}")["Instances"][0]
            screenshot(
                f"{base}/instances/{image}/preview", out / "orthanc-heatmap.png", "640,760", work
            )
            print(f"wrote {out / 'orthanc-study.png'} and {out / 'orthanc-heatmap.png'}")
        finally:
            node.terminate()
            node.wait(60)
            pacs.stop()


def _listening(port: int) -> bool:
    import socket

    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def _modality(pacs, series: str) -> str:
    return pacs.get(f"/series/{series}")["MainDicomTags"].get("Modality", "")


def _film_series(pacs, study: dict) -> str:
    """The series that holds the film itself (its description says it came from a JPEG)."""
    for series in study["Series"]:
        description = pacs.get(f"/series/{series}")["MainDicomTags"].get("SeriesDescription", "")
        if not description.startswith("edgexray"):
            return series
    return ""


def _wait_for_results(pacs) -> dict:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        studies = pacs.studies()
        if studies and len(studies[0]["Series"]) >= 3:
            return studies[0]
        time.sleep(0.5)
    raise SystemExit("the report and the heatmap did not reach Orthanc in 2 minutes")


if __name__ == "__main__":
    main()
