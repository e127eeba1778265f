"""`edgexray bundle`: a folder (and optionally a zip) to copy to a Raspberry Pi or an Android app.

rpi      the model and its sidecar, the standalone infer.py, requirements.txt, a README with
         the Raspberry Pi OS steps, a watch-folder script with its systemd unit, and check/
         (check.py tests the installed runtime against the expected bytes and output).
android  the full-int8 model (uint8 input and output) and its sidecar, labels.txt, a README
         on the LiteRT Interpreter, EdgexrayPreprocess.java (the preprocessing, tested
         byte-identical to infer.py), and check/ files to test an app's port.

Every bundle holds bundle.json (what was bundled, by which edgexray) and SHA256SUMS (for
`sha256sum -c SHA256SUMS`). The folder is built next to the target and renamed into place,
so a bundle is either whole or absent; the zip is written the same way.
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
from pathlib import Path

import numpy as np
from PIL import Image

from edgexray import __version__, artifacts
from edgexray.edge_runtime import infer
from edgexray.errors import EdgexrayError

log = logging.getLogger("edgexray")

TARGETS = ("rpi", "android")
BUNDLE_SCHEMA = "edgexray.bundle/1"
MANIFEST = "bundle.json"
CHECKSUMS = "SHA256SUMS"
CHECK_SIZE = (300, 260)  # height, width of the check image: both axes shrink, unequally
# The android preprocessing as Java, byte-identical to infer.py (tests/test_android_preprocess.py).
ANDROID_PREPROCESS = Path(__file__).parent / "android" / "EdgexrayPreprocess.java"
CHECK_SCRIPT = Path(infer.__file__).with_name("check.py")  # the rpi bundle's check/check.py

# Every line resolves to manylinux aarch64 wheels for Python 3.9 to 3.13 (checked with
# `pip download --only-binary=:all: --platform manylinux_2_27_aarch64 --python-version 3.X`):
# ai-edge-litert 2.3.0 from 3.10; 2.1.0 is the last release with a cp39 wheel (Bullseye).
REQUIREMENTS = """\
# The edge runtime only: no TensorFlow. Install with
#   .venv/bin/pip install --only-binary=:all: -r requirements.txt
ai-edge-litert==2.3.0; python_version >= "3.10"
ai-edge-litert==2.1.0; python_version < "3.10"
numpy>=1.23,<3
pillow>=10,<13
"""


@dataclass(frozen=True)
class BundleConfig:
    """What to bundle for which device.

    Attributes:
        model: the .tflite file; its sidecar (same name, .json) must sit next to it.
        target: "rpi" or "android".
        out: the bundle folder to write (replaced if it is an earlier bundle).
        zip: also write out + ".zip" holding the folder.
    """

    model: str
    target: str
    out: str
    zip: bool = False

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


def _load_model(config: BundleConfig) -> infer.Classifier:
    model = Path(config.model)
    try:
        infer.load_sidecar(model)  # exists and matches, before reading its operators
        others = non_builtin_ops(model)
        if others:
            raise EdgexrayError(
                f"{model.name} uses operators that are not LiteRT builtins "
                f"({', '.join(others)}); the device runtime cannot run it"
            )
        classifier = infer.Classifier(model)
    except infer.InferenceError as err:
        raise EdgexrayError(str(err)) from None
    if config.target == "android":
        interpreter = classifier.interpreter
        tensors = [interpreter.get_input_details()[0], interpreter.get_output_details()[0]]
        dtypes = [np.dtype(t["dtype"]).name for t in tensors]
        if dtypes != ["uint8", "uint8"]:
            raise EdgexrayError(
                f"{model.name} has {dtypes[0]} input and {dtypes[1]} output; the android "
                "bundle needs the full-int8 model (uint8 in and out): `edgexray quantize -m int8`"
            )
    return classifier


def _fill(template: str, **values) -> str:
    """Replace {{name}} markers (Kotlin and shell code keep their own braces)."""
    for name, value in values.items():
        template = template.replace("{{" + name + "}}", str(value))
    return template


def _model_facts(classifier: infer.Classifier, model: Path) -> dict:
    sidecar = classifier.sidecar
    spec = sidecar["input"]
    return {
        "model": model.name,
        "model_arg": shlex.quote(model.name),
        "sidecar": model.with_suffix(".json").name,
        "sha256": sidecar["sha256"],
        "size_kb": f"{model.stat().st_size / 1024:.0f}",
        "method": sidecar.get("method", "unknown"),
        "height": spec["height"],
        "width": spec["width"],
        "normalization": spec["normalization"],
        "threshold": classifier.threshold,
        "target_recall": sidecar.get("target_recall", "unknown"),
        "negative": classifier.labels[0],
        "positive": classifier.labels[1],
        "version": __version__,
    }


def _write_rpi(staging: Path, classifier: infer.Classifier, model: Path) -> None:
    facts = _model_facts(classifier, model)
    shutil.copyfile(infer.__file__, staging / "infer.py")
    _write_check(staging, classifier)
    shutil.copyfile(CHECK_SCRIPT, staging / "check" / "check.py")
    (staging / "requirements.txt").write_text(REQUIREMENTS)
    (staging / "README.md").write_text(_fill(RPI_README, **facts))
    (staging / "watch-folder.sh").write_text(_fill(WATCH_SCRIPT, **facts))
    (staging / "edgexray-watch@.service").write_text(WATCH_UNIT)
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


def _write_check(staging: Path, classifier: infer.Classifier) -> dict:
    """check/: a test image, the exact input bytes it must become, and the expected output."""
    folder = staging / "check"
    folder.mkdir()
    check_image().save(folder / "image.png")
    interpreter = classifier.interpreter
    input_detail = interpreter.get_input_details()[0]
    image = infer.preprocess(folder / "image.png", classifier.sidecar["input"])
    (folder / "input.u8").write_bytes(infer.input_batch(image, input_detail).tobytes())
    probability = classifier.probability(folder / "image.png")
    raw_output = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    expected = {
        "image": "image.png",
        "input": "input.u8",
        "input_shape": [int(d) for d in input_detail["shape"]],
        "probability": probability,
        "label": classifier.labels[int(probability >= classifier.threshold)],
    }
    if raw_output.dtype == np.uint8:  # an rpi bundle may hold a float model
        expected["output_uint8"] = int(raw_output.reshape(-1)[0])
    (folder / "expected.json").write_text(json.dumps(expected, indent=2) + "\n")
    return expected


def _quantization_note(classifier: infer.Classifier) -> str:
    if classifier.levels_are_input:
        return (
            "For this model (scale 1/255, zero point 0) quantizing leaves every grey level "
            "as it is: the input bytes are the equalised image."
        )
    return "For this model quantizing changes the grey levels: pass the tensor's own values."


def _write_android(staging: Path, classifier: infer.Classifier, model: Path) -> None:
    facts = _model_facts(classifier, model)
    interpreter = classifier.interpreter
    in_scale, in_zero = interpreter.get_input_details()[0]["quantization"]
    out_scale, out_zero = interpreter.get_output_details()[0]["quantization"]
    expected = _write_check(staging, classifier)
    (staging / "labels.txt").write_text("\n".join(classifier.labels) + "\n")
    shutil.copyfile(ANDROID_PREPROCESS, staging / ANDROID_PREPROCESS.name)
    readme = _fill(
        ANDROID_README,
        **facts,
        in_scale=repr(float(in_scale)),
        in_zero=int(in_zero),
        out_scale=repr(float(out_scale)),
        out_zero=int(out_zero),
        quantization_note=_quantization_note(classifier),
        check_probability=expected["probability"],
        check_output=expected["output_uint8"],
        check_label=expected["label"],
        check_height=CHECK_SIZE[0],
        check_width=CHECK_SIZE[1],
    )
    (staging / "README.md").write_text(readme)


def _write_checksums(folder: Path) -> None:
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.name != CHECKSUMS)
    lines = [f"{infer.sha256_of(p)}  {p.relative_to(folder).as_posix()}\n" for p in files]
    (folder / CHECKSUMS).write_text("".join(lines))


def _move_into_place(staging: Path, out: Path) -> None:
    """Rename staging to out; an earlier bundle there is swapped out, then removed."""
    if not out.exists():
        os.rename(staging, out)
        return
    old = out.with_name(f".{out.name}.old-{os.getpid()}")
    os.rename(out, old)
    try:
        os.rename(staging, out)
    except BaseException:
        os.rename(old, out)
        raise
    shutil.rmtree(old, ignore_errors=True)


def _write_zip(folder: Path, path: Path) -> None:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for file in sorted(p for p in folder.rglob("*") if p.is_file()):
            # ZipFile.write keeps the permission bits, so unzip restores executable scripts.
            archive.write(file, f"{folder.name}/{file.relative_to(folder).as_posix()}")


def make_bundle(config: BundleConfig) -> dict:
    """Write the bundle folder (and zip) for config.target.

    Returns:
        path, zip (or None), target, model and the bundled files.

    Raises:
        EdgexrayError: a missing, corrupt or mismatched model; operators that are not
            LiteRT builtins; a non-uint8 model for android; or an out path that is not
            an earlier bundle.
    """
    model, out = Path(config.model), Path(config.out)
    classifier = _load_model(config)
    if out.exists() and not (out.is_dir() and (out / MANIFEST).is_file()):
        raise EdgexrayError(f"{out} exists and is not an edgexray bundle: choose another --out")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        staging.chmod(0o755)
        shutil.copyfile(model, staging / model.name)
        shutil.copyfile(model.with_suffix(".json"), staging / model.with_suffix(".json").name)
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
        _move_into_place(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    zip_path = None
    if config.zip:
        zip_path = out.with_name(out.name + ".zip")
        artifacts.atomic_write(zip_path, lambda temporary: _write_zip(out, temporary))
    log.info("%s bundle: %s (%d files)", config.target, out, len(files))
    return {"path": out, "zip": zip_path, "target": config.target, "model": model, "files": files}


# --- what goes into the bundles ---------------------------------------------------------

WATCH_SCRIPT = """\
#!/bin/sh
# Classify chest X-rays dropped into a folder, forever (edgexray-watch@.service runs this).
#
#   sh watch-folder.sh INBOX DONE RESULTS.jsonl
#
# Every INTERVAL seconds (5), the .jpeg/.jpg/.png files in INBOX that have not changed for
# SETTLE seconds (5; so files still being copied wait) move to DONE/<time>/, and infer.py
# appends one JSON line per image to RESULTS. ONCE=1 makes a single pass.
set -u
if [ $# -ne 3 ]; then
    echo "usage: sh watch-folder.sh INBOX DONE RESULTS.jsonl" >&2
    exit 2
fi
here=$(cd "$(dirname "$0")" && pwd)
inbox=$1
done_dir=$2
results=$3
python=${PYTHON:-$here/.venv/bin/python}
interval=${INTERVAL:-5}
settle=${SETTLE:-5}
mkdir -p "$inbox" "$done_dir" || exit 2
pass=0
while :; do
    pass=$((pass + 1))
    batch="$done_dir/$(date +%Y%m%d-%H%M%S)-$$-$pass"
    mkdir -p "$batch" || exit 2
    find "$inbox" -maxdepth 1 -type f ! -name '.*' \\
        \\( -iname '*.jpeg' -o -iname '*.jpg' -o -iname '*.png' \\) \\
        ! -newermt "@$(( $(date +%s) - settle ))" -exec mv -- {} "$batch"/ \\;
    if [ -n "$(ls -A "$batch")" ]; then
        "$python" "$here/infer.py" --model "$here"/{{model_arg}} "$batch" >> "$results"
        status=$?
        # 3 means some files were unreadable (their records say why); 2 means the model
        # or the runtime is broken: stop, so systemd shows the failure.
        if [ "$status" -eq 2 ]; then
            exit 2
        fi
    else
        rmdir "$batch"
    fi
    if [ "${ONCE:-0}" = 1 ]; then
        exit 0
    fi
    sleep "$interval"
done
"""

WATCH_UNIT = """\
# Classify chest X-rays dropped into ~/xray-inbox (one instance per user, %i = user name):
#   sudo cp edgexray-watch@.service /etc/systemd/system/
#   sudo systemctl daemon-reload
#   sudo systemctl enable --now "edgexray-watch@$USER"
# Results: ~/xray-results.jsonl; classified images: ~/xray-done/.
[Unit]
Description=edgexray: classify chest X-rays dropped into /home/%i/xray-inbox
After=local-fs.target

[Service]
Type=simple
User=%i
WorkingDirectory=/home/%i/edgexray
ExecStart=/bin/sh /home/%i/edgexray/watch-folder.sh \\
    /home/%i/xray-inbox /home/%i/xray-done /home/%i/xray-results.jsonl
Restart=on-failure
RestartSec=30
Nice=10

[Install]
WantedBy=multi-user.target
"""

RPI_README = """\
# edgexray on a Raspberry Pi (Raspberry Pi OS 64-bit)

Model `{{model}}` ({{method}}, {{size_kb}} KB, sha256 `{{sha256}}`), made by edgexray {{version}}.
Input: {{height}}x{{width}} grayscale, normalization `{{normalization}}`. An image is
`{{positive}}` when its probability is at least **{{threshold}}** (chosen for a pneumonia
recall of {{target_recall}} on validation), otherwise `{{negative}}`.
This is a screening aid: a person reads every film.

The folder runs with Python 3.9 to 3.13 (64-bit Raspberry Pi OS Bullseye, Bookworm or
Trixie) and needs no TensorFlow: only numpy, Pillow and the LiteRT interpreter.

## 1. Copy this folder to the Pi

Put it at `~/edgexray` on the Pi, for example from the computer that holds it
(replace `pi@raspberrypi.local` with your user and the Pi's name):

```sh
scp -r <this folder> pi@raspberrypi.local:edgexray
```

or copy the `.zip`, then on the Pi: `unzip <name>.zip && mv <name> edgexray`.

## 2. Check that nothing was damaged on the way

```sh
cd ~/edgexray
sha256sum -c SHA256SUMS
```

Every line must end in `OK`.

## 3. Create a virtual environment and install the runtime

```sh
sudo apt install -y python3-venv
python3 -m venv .venv
.venv/bin/pip install --only-binary=:all: -r requirements.txt
```

`--only-binary=:all:` installs prebuilt aarch64 wheels and never compiles on the Pi.
Then check that this Pi computes exactly what edgexray computed when it made the bundle:

```sh
.venv/bin/python check/check.py
```

It turns `check/image.png` into the model input, which must be byte for byte
`check/input.u8`, and runs the model, which must give the probability and label in
`check/expected.json`. It prints `check passed` (exit 0) or what differs (exit 1).

## 4. Run on a folder of images

```sh
.venv/bin/python infer.py --model {{model_arg}} ~/xrays > results.jsonl
```

Folders are walked in sorted order (`.jpeg`, `.jpg`, `.png`, any case); files can be
given too. Each image gets one JSON line with `path`, `probability` (of `{{positive}}`),
`label`, `threshold` and `latency_ms` (reading, preprocessing and inference), e.g.

    {"path": "/home/pi/xrays/a.jpeg", "probability": 0.91, "label": "{{positive}}", ...}

An unreadable file gets `{"path": "...", "error": "..."}` and the run goes on. Add
`--format csv` for CSV and `--threads N` to choose the interpreter threads. Exit codes:
0 every image was read, 3 some were not, 2 bad arguments or a missing, corrupt or
mismatched model (a one-line message on stderr).

## 5. Optional: classify every image dropped into a folder

`watch-folder.sh` moves the images in `~/xray-inbox` that have not changed for 5 seconds
to `~/xray-done/<time>/` and appends their records to `~/xray-results.jsonl`;
`edgexray-watch@.service` runs it at boot as your user:

```sh
mkdir -p ~/xray-inbox
sudo cp edgexray-watch@.service /etc/systemd/system/
sudo systemctl daemon-reload
sudo systemctl enable --now "edgexray-watch@$USER"
journalctl -u "edgexray-watch@$USER" -f
```

The unit expects this folder at `~/edgexray`. Copy films in with `rsync` (it writes a
hidden temporary file and renames it) or any copy that finishes within 5 seconds of the
last write. Stop with `sudo systemctl disable --now "edgexray-watch@$USER"`.
"""

ANDROID_README = """\
# edgexray in an Android app (LiteRT Interpreter)

Model `{{model}}` ({{method}}, {{size_kb}} KB, sha256 `{{sha256}}`), made by edgexray {{version}}.
Everything below comes from its sidecar `{{sidecar}}`; `labels.txt` lists the two
classes in output order. The model has one input, uint8 `[1, {{height}}, {{width}}, 1]`, and
one output, uint8 `[1, 1]`: the probability of `{{positive}}`. An image is `{{positive}}`
when that probability is at least **{{threshold}}** (chosen for a pneumonia recall of
{{target_recall}} on validation). This is a screening aid: a person reads every film.

Check the files first: `sha256sum -c SHA256SUMS`.

## 1. Gradle

Put `{{model}}` in `app/src/main/assets/` and add LiteRT, whose `Interpreter` API is
`org.tensorflow.lite.Interpreter` (the 2.x releases keep it, CPU only, from minSdk 23):

```kotlin
// app/build.gradle.kts
dependencies {
    implementation("com.google.ai.edge.litert:litert:1.4.1")
}
// Android Gradle Plugin 4.1+ stores .tflite assets uncompressed, so they can be
// memory-mapped; older plugins need: android { aaptOptions { noCompress("tflite") } }
```

## 2. Load the model and read the quantization from its tensors

```kotlin
import android.content.Context
import java.io.FileInputStream
import java.nio.ByteBuffer
import java.nio.ByteOrder
import java.nio.channels.FileChannel
import org.tensorflow.lite.DataType
import org.tensorflow.lite.Interpreter

fun loadModel(context: Context, name: String): ByteBuffer =
    context.assets.openFd(name).use { fd ->
        FileInputStream(fd.fileDescriptor).channel.use { channel ->
            channel.map(FileChannel.MapMode.READ_ONLY, fd.startOffset, fd.declaredLength)
        }
    }

val options = Interpreter.Options().setNumThreads(2)
val interpreter = Interpreter(loadModel(context, "{{model}}"), options)
val input = interpreter.getInputTensor(0)    // shape [1, {{height}}, {{width}}, 1]
val output = interpreter.getOutputTensor(0)  // shape [1, 1]
check(input.dataType() == DataType.UINT8 && output.dataType() == DataType.UINT8)
val inScale = input.quantizationParams().scale         // {{in_scale}} for this model
val inZeroPoint = input.quantizationParams().zeroPoint // {{in_zero}}
val outScale = output.quantizationParams().scale       // {{out_scale}}
val outZeroPoint = output.quantizationParams().zeroPoint // {{out_zero}}
```

Read them from the tensors as above rather than copying the numbers: a re-exported
model can have other values, and the sidecar records what the interpreter reported.

## 3. Preprocess exactly as training did, with EdgexrayPreprocess.java

The model only works on images prepared like its training images. Copy
`EdgexrayPreprocess.java` to `app/src/main/java/edgexray/`: from the decoded ARGB pixels it
composites transparency on black, takes Pillow's grey level, applies the EXIF orientation,
resizes to `{{height}} x {{width}}` with Pillow's antialiased bilinear filter (width first),
equalises the histogram (normalization `{{normalization}}`) and quantizes with the input
tensor's scale and zero point. edgexray's tests compile this very file and require the
same input bytes as `infer.py` on `check/image.png` and on 60 real films of many sizes and
formats (grey and colour JPEG, transparent PNG, every EXIF orientation).
{{quantization_note}}

```kotlin
import android.graphics.Bitmap
import android.graphics.BitmapFactory
import androidx.exifinterface.media.ExifInterface
import edgexray.EdgexrayPreprocess
import java.io.File

// The glue from a file to ARGB pixels is the one part edgexray's tests cannot run.
fun modelInput(file: File): ByteArray {
    val options = BitmapFactory.Options().apply {
        inPreferredConfig = Bitmap.Config.ARGB_8888
        inPremultiplied = false  // getPixels then returns the stored colours
    }
    val bitmap = BitmapFactory.decodeFile(file.path, options)
        ?: error("${file.name}: not a readable image")
    val argb = IntArray(bitmap.width * bitmap.height)
    bitmap.getPixels(argb, 0, bitmap.width, 0, 0, bitmap.width, bitmap.height)
    // BitmapFactory ignores the EXIF orientation: the class applies it.
    val orientation = ExifInterface(file.path)
        .getAttributeInt(ExifInterface.TAG_ORIENTATION, ExifInterface.ORIENTATION_NORMAL)
    return EdgexrayPreprocess.modelInput(
        argb, bitmap.width, bitmap.height, orientation,
        {{height}}, {{width}}, "{{normalization}}", inScale, inZeroPoint,
    )
}
```

Untested on a phone: `BitmapFactory` itself. Its JPEG decoder may differ from Pillow's by a
grey level; it keeps only 8 bits of 16-bit PNGs (`infer.py` stretches their range: prefer
8-bit files); and a grey PNG with a transparent colour key may become black there, which
`infer.py` leaves grey. Test your app with `check/` (step 5).

## 4. Run and dequantize

```kotlin
fun pneumoniaProbability(pixels: ByteArray): Float {  // {{height}} * {{width}} bytes q, row by row
    val inputBuffer = ByteBuffer.allocateDirect(pixels.size).order(ByteOrder.nativeOrder())
    inputBuffer.put(pixels).rewind()
    val outputBuffer = ByteBuffer.allocateDirect(1).order(ByteOrder.nativeOrder())
    interpreter.run(inputBuffer, outputBuffer)
    val q = outputBuffer.get(0).toInt() and 0xFF  // uint8: mask off Kotlin's sign
    return (q - outZeroPoint) * outScale
}

val probability = pneumoniaProbability(pixels)
val label = if (probability >= {{threshold}}f) "{{positive}}" else "{{negative}}"
```

## 5. Test your port with check/

`modelInput(File("check/image.png"))` ({{check_height}}x{{check_width}}, 8-bit grey) must
return exactly the {{height}}x{{width}} bytes of `check/input.u8`; feeding those bytes must
give the output byte {{check_output}}, probability {{check_probability}}
(`{{check_label}}`), as in `check/expected.json`. JPEG decoders may differ by a grey
level, so compare on the PNG.
"""
