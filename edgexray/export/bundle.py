"""`edgexray bundle`: a folder (and optionally a zip) to copy to a Raspberry Pi or an Android app.

rpi      the model (its sidecar inside, and the readable copy), the edge runtime as the
         package folder edge_runtime/ with an infer.py launcher beside it, requirements.txt
         (and the optional requirements-dicom.txt and requirements-node.txt), a README with
         the Raspberry Pi OS steps, a watch-folder script with its systemd unit, the DICOM
         node's systemd unit, and check/ (check.py tests the installed runtime against the
         expected bytes and output).
android  the full-int8 model (uint8 input and output; its sidecar inside, and the readable
         copy), labels.txt, a README on the LiteRT Interpreter, EdgexrayModelFile.java (the
         threshold, labels and sidecar read out of the model file), EdgexrayPreprocess.java
         (the preprocessing, tested byte-identical to infer.py), EdgexrayScope.java (the
         out-of-scope guard, tested to decide as scope.py does), and check/ files to test
         an app's port.

Every bundle holds bundle.json (what was bundled, by which edgexray) and SHA256SUMS (for
`sha256sum -c SHA256SUMS`). The folder is built next to the target and renamed into place,
so a bundle is either whole or absent; the zip is written the same way. Re-bundling into
an earlier bundle replaces only the files its SHA256SUMS lists: what the user made there
(results.jsonl, .venv) is kept. The READMEs, scripts and unit are files in templates/. The
bundled model always carries its metadata: one from before models carried it gets it here.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import shutil
import tempfile
import zipfile
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path

import numpy as np
from PIL import Image

from edgexray import __version__, artifacts
from edgexray.edge_runtime import RUNTIME_ROOT, metadata, scope
from edgexray.edge_runtime.classifier import Classifier
from edgexray.edge_runtime.errors import InferenceError
from edgexray.edge_runtime.interpreter import input_batch
from edgexray.edge_runtime.options import option
from edgexray.edge_runtime.outputs import report
from edgexray.edge_runtime.preprocess import preprocess
from edgexray.edge_runtime.sidecar import copy_path, load_sidecar, sha256_of
from edgexray.errors import EdgexrayError
from edgexray.export.metadata import embed

log = logging.getLogger("edgexray")

TARGETS = ("rpi", "android")
CARD = "MODEL_CARD.md"  # in every bundle: the model's own, or one written from the model
BUNDLE_SCHEMA = "edgexray.bundle/1"
MANIFEST = artifacts.BUNDLE_MANIFEST  # bundle.json
CHECKSUMS = artifacts.BUNDLE_CHECKSUMS  # SHA256SUMS
CHECK_SIZE = (300, 260)  # height, width of the check image: both axes shrink, unequally
# The android preprocessing as Java, byte-identical to the runtime's
# (tests/export/test_android_preprocess.py).
ANDROID_PREPROCESS = Path(__file__).parent / "android" / "EdgexrayPreprocess.java"
# The out-of-scope guard as Java, the same decisions as scope.py
# (tests/export/test_android_scope.py).
ANDROID_SCOPE = Path(__file__).parent / "android" / "EdgexrayScope.java"
# The sidecar read out of the model file in plain Java (tests/export/test_model_file_java.py).
ANDROID_MODEL_FILE = Path(__file__).parent / "android" / "EdgexrayModelFile.java"
# The device runtime: the package edgexray/edge_runtime/, shipped as a package folder of
# this name, run by the launcher infer.py at the bundle's top.
RUNTIME_PACKAGE = "edge_runtime"
RUNTIME_SOURCE = RUNTIME_ROOT / RUNTIME_PACKAGE
CHECK_SCRIPT = RUNTIME_SOURCE / "check.py"  # the rpi bundle's check/check.py

# The files written into bundles (READMEs, the watch-folder script, its systemd unit,
# requirements.txt) are package data in templates/, so linters and reviewers see them.
TEMPLATES = "templates"
# Written into the rpi bundle as they are (its README and watch-folder.sh are filled in):
# the runtime's requirements (64-bit and 32-bit OS), the optional DICOM and DICOM-node ones,
# and the two systemd units.
RPI_TEMPLATES = (
    "requirements.txt",
    "requirements-armhf.txt",
    "requirements-dicom.txt",
    "requirements-node.txt",
    "edgexray-watch@.service",
    "edgexray-node.service",
)


def template(name: str) -> str:
    """The text of one file in edgexray/export/templates/."""
    return resources.files(__package__).joinpath(TEMPLATES, name).read_text(encoding="utf-8")


@dataclass(frozen=True)
class BundleConfig:
    """What to bundle for which device.

    Attributes:
        model: the .tflite file (carrying its sidecar, or with it beside it).
        target: "rpi" or "android".
        out: the bundle folder to write: absent, empty, or an earlier bundle (whose
            own files are replaced and the user's kept, see `_user_files`).
        zip: also write out + ".zip" holding the folder.
    """

    model: str
    target: str = option(help="Device: rpi or android.", choices=TARGETS)
    out: str = option(
        help="Bundle folder to write: new, empty, or an earlier bundle, whose own files "
        "(those in its SHA256SUMS) are replaced and yours (results.jsonl, .venv) kept."
    )
    zip: bool = option(False, "Also write OUT.zip holding the folder.")

    def __post_init__(self):
        if self.target not in TARGETS:
            raise EdgexrayError(f"unknown target {self.target!r}: choose {' or '.join(TARGETS)}")
        if not str(self.out).strip():
            raise EdgexrayError("give --out PATH for the bundle folder")


def non_builtin_ops(model_path: Path) -> list[str]:
    """Names of the model's custom and Flex (select TensorFlow) operators.

    Read from the flatbuffer's operator codes, the same table the interpreter resolves:
    an operator is a LiteRT builtin unless its code is CUSTOM (Flex ops are custom ops
    named "Flex...").
    """
    from ai_edge_litert import schema_py_generated as schema

    try:
        model = schema.Model.GetRootAs(Path(model_path).read_bytes(), 0)
        codes = [model.OperatorCodes(i) for i in range(model.OperatorCodesLength())]
        custom = [
            (code.CustomCode() or b"unnamed").decode()
            for code in codes
            if max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
            == schema.BuiltinOperator.CUSTOM
        ]
    except Exception as err:  # a damaged flatbuffer fails in many ways
        raise EdgexrayError(f"{model_path}: cannot read its operators ({err})") from None
    return sorted(set(custom))


def _load_model(config: BundleConfig) -> Classifier:
    model = Path(config.model)
    try:
        load_sidecar(model)  # exists and matches, before reading its operators
        others = non_builtin_ops(model)
        if others:
            raise EdgexrayError(
                f"{model} uses operators that are not LiteRT builtins "
                f"({', '.join(others)}); the device runtime cannot run it"
            )
        classifier = Classifier(model)
    except InferenceError as err:
        raise EdgexrayError(str(err)) from None
    if config.target == "android":
        interpreter = classifier.interpreter
        tensors = [interpreter.get_input_details()[0], interpreter.get_output_details()[0]]
        dtypes = [np.dtype(t["dtype"]).name for t in tensors]
        if dtypes != ["uint8", "uint8"]:
            raise EdgexrayError(
                f"{model} has {dtypes[0]} input and {dtypes[1]} output; the android "
                "bundle needs the full-int8 model (uint8 in and out): `edgexray quantize -m int8`"
            )
    return classifier


def _fill(template: str, **values) -> str:
    """Replace {{name}} markers (Kotlin and shell code keep their own braces)."""
    for name, value in values.items():
        template = template.replace("{{" + name + "}}", str(value))
    return template


def _model_facts(classifier: Classifier, model: Path) -> dict:
    sidecar = classifier.sidecar
    spec = sidecar["input"]
    return {
        "model": model.name,
        "model_arg": shlex.quote(model.name),
        "sidecar": copy_path(model).name,
        "sha256": sidecar["sha256"],
        "size_kb": f"{model.stat().st_size / 1024:.0f}",
        "method": sidecar.get("method", "unknown"),
        "height": spec["height"],
        "width": spec["width"],
        "normalization": spec["normalization"],
        "threshold": classifier.threshold,
        **calibration_facts(sidecar),
        **output_facts(classifier.output_kind),
        "negative": classifier.labels[0],
        "positive": classifier.labels[1],
        "version": __version__,
    }


def snippet(name: str) -> str:
    """A template that is filled into another one, without its final newline."""
    return template(name).rstrip("\n")


def output_facts(kind: str) -> dict:
    """How the android README reads the one output value, by the sidecar's output "kind"
    (logit or probability): what it means, and the Kotlin that turns it into a probability."""
    return {
        "output_meaning": snippet(f"android-output-{kind}.md"),
        "output_to_probability": snippet(f"android-output-{kind}.kt"),
    }


def calibration_facts(sidecar: dict) -> dict:
    """Where the threshold came from, for the READMEs: {{threshold_origin}}, {{calibration}}.

    A sidecar written by `edgexray calibrate` says on which site sample the threshold was
    re-chosen and what it guarantees; any other threshold was chosen on validation.
    """
    block = sidecar.get("calibration")
    if not isinstance(block, dict):
        target = sidecar.get("target_recall", "unknown")
        return {
            "threshold_origin": f"chosen for a pneumonia recall of {target} on validation",
            "calibration": "",
        }
    sample = block.get("sample", {})
    low, high = block.get("expected_specificity_ci") or (None, None)
    specificity = block.get("expected_specificity")
    expected = (
        f" Expected specificity there: {specificity:.3f} ({block.get('interval', 'CI')}: "
        f"{low:.3f}-{high:.3f})."
        if None not in (specificity, low, high)
        else ""
    )
    paragraph = _fill(
        template("calibration.md"),
        calibrated_at=block.get("calibrated_at", ""),
        source_threshold=block.get("source_threshold"),
        threshold=block.get("threshold"),
        **{key: sample.get(key) for key in ("n", "pneumonia", "normal", "folder", "files_sha256")},
        promise=report.calibration_promise(block),
        expected=expected,
    )
    return {
        "threshold_origin": f"calibrated on a local sample: see below; validation chose "
        f"{block.get('source_threshold')}",
        "calibration": paragraph,
    }


def runtime_modules() -> list[Path]:
    """Every module of the edge runtime package, its subpackages included, sorted."""
    return sorted(p for p in RUNTIME_SOURCE.rglob("*.py") if "__pycache__" not in p.parts)


def write_runtime(folder: Path) -> Path:
    """The edge runtime as a device holds it: folder/edge_runtime/ with every module of
    edgexray/edge_runtime/ (they import each other relatively), and folder/infer.py, the
    launcher that runs edge_runtime.cli.main(). Returns the launcher's path."""
    package = Path(folder) / RUNTIME_PACKAGE
    for module in runtime_modules():
        target = package / module.relative_to(RUNTIME_SOURCE)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(module, target)
    launcher = Path(folder) / "infer.py"
    launcher.write_text(template("infer-launcher.py"))
    launcher.chmod(0o755)
    return launcher


def _write_rpi(staging: Path, classifier: Classifier, model: Path) -> None:
    facts = _model_facts(classifier, model)
    write_runtime(staging)
    _write_check(staging, classifier)
    shutil.copyfile(CHECK_SCRIPT, staging / "check" / "check.py")
    for name in RPI_TEMPLATES:
        (staging / name).write_text(template(name))
    (staging / "README.md").write_text(_fill(template("rpi-README.md"), **facts))
    (staging / "watch-folder.sh").write_text(_fill(template("watch-folder.sh"), **facts))
    for script in ("infer.py", "watch-folder.sh"):
        (staging / script).chmod(0o755)


def check_image() -> Image.Image:
    """A fixed film-like test pattern: a vertical gradient, two dark lungs, an opacity."""
    height, width = CHECK_SIZE
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    image = 200 - 120 * y / height
    for cx in (0.3 * width, 0.7 * width):
        lung = ((x - cx) / (0.17 * width)) ** 2 + ((y - 0.5 * height) / (0.3 * height)) ** 2
        image -= 90 * (lung < 1)
    image += 70 * np.exp(-((x - 0.65 * width) ** 2 + (y - 0.6 * height) ** 2) / 400)
    image += 12 * np.sin(x / 3.0) * np.cos(y / 5.0)  # texture, so equalisation has work to do
    return Image.fromarray(np.clip(np.round(image), 0, 255).astype(np.uint8))


def _write_check(staging: Path, classifier: Classifier) -> dict:
    """check/: a test image, the exact input bytes it must become, and the expected output."""
    folder = staging / "check"
    folder.mkdir()
    check_image().save(folder / "image.png")
    interpreter = classifier.interpreter
    input_detail = interpreter.get_input_details()[0]
    image = preprocess(folder / "image.png", classifier.sidecar["input"])
    (folder / "input.u8").write_bytes(input_batch(image, input_detail).tobytes())
    probability = classifier.probability(folder / "image.png")
    raw_output = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    expected = {
        "image": "image.png",
        "input": "input.u8",
        "input_shape": [int(d) for d in input_detail["shape"]],
        "probability": probability,
        "label": classifier.labels[int(probability >= classifier.threshold)],
        # The scope guard's decision on the pattern (False: refused; None: no statistics).
        "in_scope": classifier.classify(folder / "image.png").get("in_scope"),
    }
    if raw_output.dtype == np.uint8:  # an rpi bundle may hold a float model
        expected["output_uint8"] = int(raw_output.reshape(-1)[0])
    (folder / "expected.json").write_text(json.dumps(expected, indent=2) + "\n")
    return expected


def _quantization_note(classifier: Classifier) -> str:
    unchanged = classifier.levels_are_input  # scale 1/255, zero point 0
    return snippet("android-input-unchanged.md" if unchanged else "android-input-requantized.md")


def _scope_status(classifier: Classifier) -> str:
    """What the android README says about this model's scope statistics."""
    block = classifier.scope
    if block is None:
        return (
            "**This model's sidecar has no scope block**: `fromSidecar` returns null, only "
            "the colour and flat checks run, and its answers must be shown as not checked."
        )
    return (
        f"This model gives its {block['feature_output']['size']} pooled features as output "
        f"{block['feature_output']['index']}; the cut-off is {block['cutoff']:.4f} "
        f"({block['cutoff_rule']})."
    )


def _write_android(staging: Path, classifier: Classifier, model: Path) -> None:
    facts = _model_facts(classifier, model)
    interpreter = classifier.interpreter
    in_scale, in_zero = interpreter.get_input_details()[0]["quantization"]
    out_scale, out_zero = interpreter.get_output_details()[0]["quantization"]
    expected = _write_check(staging, classifier)
    (staging / "labels.txt").write_text("\n".join(classifier.labels) + "\n")
    shutil.copyfile(ANDROID_PREPROCESS, staging / ANDROID_PREPROCESS.name)
    shutil.copyfile(ANDROID_SCOPE, staging / ANDROID_SCOPE.name)
    shutil.copyfile(ANDROID_MODEL_FILE, staging / ANDROID_MODEL_FILE.name)
    readme = _fill(
        template("android-README.md"),
        **facts,
        in_scale=repr(float(in_scale)),
        in_zero=int(in_zero),
        out_scale=repr(float(out_scale)),
        out_zero=int(out_zero),
        quantization_note=_quantization_note(classifier),
        scope_status=_scope_status(classifier),
        check_probability=expected["probability"],
        check_output=expected["output_uint8"],
        check_label=expected["label"],
        check_height=CHECK_SIZE[0],
        check_width=CHECK_SIZE[1],
    )
    (staging / "README.md").write_text(readme)


def _write_card(staging: Path, classifier: Classifier, model: Path) -> None:
    """MODEL_CARD.md in every bundle: the model's own card when it has one beside it (the
    shipped model's), else one written from what the model file says about itself."""
    own = [model.with_suffix(".md"), model.with_name(CARD)]
    found = next((card for card in own if card.is_file()), None)
    if found is not None:
        shutil.copyfile(found, staging / CARD)
        return
    facts = _model_facts(classifier, model)
    block = classifier.scope
    statement = (
        "**This model has no scope statistics**: only the colour and flat checks (and DICOM "
        "tags) can refuse a film, and its answers are shown as not checked."
        if block is None
        else f"Its scope cut-off is {block['cutoff']:.4f} ({block['cutoff_rule']})."
    )
    orientation = (block or {}).get("orientation")
    if orientation:
        looks = "; ".join(scope.TURN_NAMES[name].looks for name in orientation["turns"])
        statement += f" A film within it is also refused when it looks {looks}."
    card = _fill(
        template(CARD), **facts, output_kind=classifier.output_kind, scope_statement=statement
    )
    (staging / CARD).write_text(card)


def _write_checksums(folder: Path) -> None:
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.name != CHECKSUMS)
    lines = [f"{sha256_of(p)}  {p.relative_to(folder).as_posix()}\n" for p in files]
    (folder / CHECKSUMS).write_text("".join(lines))


def _user_files(out: Path) -> list[str]:
    """The entries of an existing --out folder to keep: those the user made there.

    The rule: out must be absent, an empty folder, or a folder edgexray made (it holds
    bundle.json). In an earlier bundle, what SHA256SUMS lists (and SHA256SUMS itself) is
    the bundle's and is replaced; every other top-level entry (results.jsonl, .venv, ...)
    is the user's and is kept.

    Raises:
        EdgexrayError: out is, or holds, the current folder; is a file; or is a non-empty
            folder edgexray did not make.
    """
    here = Path.cwd().resolve()
    if out.resolve() == here or out.resolve() in here.parents:
        raise EdgexrayError(
            f"--out {out} is the current folder or holds it: run edgexray bundle from "
            "outside the bundle folder"
        )
    if not out.exists():
        return []
    if not out.is_dir():
        raise EdgexrayError(f"{out} exists and is not a folder: choose another --out")
    entries = {p.name for p in out.iterdir()}
    if not entries:
        return []
    if MANIFEST not in entries:
        raise EdgexrayError(
            f"{out} is not empty and is not an edgexray bundle (no {MANIFEST}): "
            "choose another --out"
        )
    try:
        listed = (out / CHECKSUMS).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        raise EdgexrayError(
            f"{out} has no readable {CHECKSUMS}, so its files cannot be told from yours: "
            "choose another --out"
        ) from None
    bundled = {line.split("  ", 1)[-1].split("/", 1)[0] for line in listed}
    return sorted(entries - bundled - {CHECKSUMS, MANIFEST})


def _refuse_foreign_zip(path: Path, folder: str) -> None:
    """Refuse to replace a zip that is not an earlier bundle of this folder (all of it
    under FOLDER/, with FOLDER/bundle.json).

    Raises:
        EdgexrayError: path exists and is another file.
    """
    if not path.exists() and not path.is_symlink():
        return
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
        ours = f"{folder}/{MANIFEST}" in names and all(n.startswith(f"{folder}/") for n in names)
    except (OSError, zipfile.BadZipFile):
        ours = False
    if not ours or not path.is_file():
        raise EdgexrayError(
            f"{path} exists and is not an earlier edgexray bundle of {folder}: move it away "
            "or choose another --out"
        )


def _move_into_place(staging: Path, out: Path, keep: list[str]) -> None:
    """Rename staging to out. An earlier bundle there is swapped out and removed, after
    the user's entries in it (keep) have moved into the new one; on failure they go back."""
    if not out.exists():
        os.rename(staging, out)
        return
    moved = []
    try:
        for name in keep:
            os.rename(out / name, staging / name)
            moved.append(name)
        # An empty folder is replaced in one rename; a bundle is swapped aside first.
        old = None if not any(out.iterdir()) else out.with_name(f".{out.name}.old-{os.getpid()}")
        if old is not None:
            os.rename(out, old)
        try:
            os.rename(staging, out)
        except BaseException:
            if old is not None:
                os.rename(old, out)
            raise
    except BaseException:
        for name in moved:
            os.rename(staging / name, out / name)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _write_model(classifier: Classifier, model: Path, staging: Path) -> Classifier:
    """The model into the bundle, carrying its metadata, with its readable copy. A model
    from before models carried their sidecar gets it (and the standard TFLite metadata)
    here: a new flatbuffer, so a new sha256, and the classifier of the bundled file."""
    source = model.read_bytes()
    sidecar = classifier.sidecar
    if metadata.parse(source, str(model)).sidecar_bytes is None:
        source, sidecar = embed(source, sidecar)
        log.info(
            "%s carried no metadata: the bundled copy does (sha256 %s)",
            model.name,
            sidecar["sha256"],
        )
    artifacts.write_model(staging / model.name, source, sidecar)
    if sidecar is classifier.sidecar:
        return classifier
    try:
        return Classifier(staging / model.name)
    except InferenceError as err:
        raise EdgexrayError(str(err)) from None


def _write_zip(folder: Path, files: list[str], path: Path) -> None:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name in files:
            # ZipFile.write keeps the permission bits, so unzip restores executable scripts.
            archive.write(folder / name, f"{folder.name}/{name}")


def make_bundle(config: BundleConfig) -> dict:
    """Write the bundle folder (and zip) for config.target.

    Returns:
        path, zip (or None), target, model, the bundled files, and kept: the user's
        entries of an earlier bundle folder, kept in place (see `_user_files`).

    Raises:
        EdgexrayError: a missing, corrupt or mismatched model; operators that are not
            LiteRT builtins; a non-uint8 model for android; an out path that is not
            absent, empty or an earlier bundle; or a failed write (naming out).
    """
    model, out = Path(config.model), Path(config.out)
    classifier = _load_model(config)
    keep = _user_files(out)
    if config.zip:
        _refuse_foreign_zip(out.with_name(out.name + ".zip"), out.name)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    except OSError as err:
        raise EdgexrayError(f"cannot write the bundle {out}: {err.strerror}") from None
    try:
        staging.chmod(0o755)
        classifier = _write_model(classifier, model, staging)
        _write_card(staging, classifier, model)
        if config.target == "rpi":
            _write_rpi(staging, classifier, model)
        else:
            _write_android(staging, classifier, model)
        manifest = {
            "schema": BUNDLE_SCHEMA,
            "edgexray_version": __version__,
            "target": config.target,
            "model_file": model.name,
            "model_sha256": classifier.sidecar["sha256"],
            "config": {**asdict(config), "model": str(model.resolve())},
        }
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        _write_checksums(staging)
        files = sorted(p.relative_to(staging).as_posix() for p in staging.rglob("*") if p.is_file())
        clash = sorted(set(keep) & {name.split("/", 1)[0] for name in files})
        if clash:
            raise EdgexrayError(
                f"{out} holds your {', '.join(clash)}, which the new bundle would replace: "
                "move it away or choose another --out"
            )
        _move_into_place(staging, out, keep)
    except OSError as err:
        shutil.rmtree(staging, ignore_errors=True)
        raise EdgexrayError(f"cannot write the bundle {out}: {err.strerror or err}") from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    zip_path = None
    if config.zip:
        zip_path = out.with_name(out.name + ".zip")
        artifacts.atomic_write(zip_path, lambda temporary: _write_zip(out, files, temporary))
    log.info("%s bundle: %s (%d files)", config.target, out, len(files))
    if keep:
        log.info("kept your files in %s: %s", out, ", ".join(keep))
    return {
        "path": out,
        "zip": zip_path,
        "target": config.target,
        "model": model,
        "files": files,
        "kept": keep,
    }
