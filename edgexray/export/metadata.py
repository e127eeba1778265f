"""The metadata inside a model file, on the host: the standard TFLite ModelMetadata written
into the flatbuffer, the edgexray sidecar beside it as an associated file, and what
`edgexray inspect` says of a model.

The layout and the reading are the device's (edgexray/edge_runtime/metadata.py). Here the
ModelMetadata, LiteRT's published metadata schema (metadata_schema.fbs, the code flatc
generated for it vendored as metadata_schema_py_generated.py), is built from the sidecar
and stored in the model's "TFLITE_METADATA" buffer the way tflite-support's
MetadataPopulator stores it, with the flatbuffers library and LiteRT's model schema
(ai_edge_litert.schema_py_generated, in the base install). Android Studio's ML Model
Binding and LiteRT's metadata readers find there the name, version, licence, the input as
a grey image with its normalisation, and the output with its label file.

Only what export fixes goes into the ModelMetadata: the threshold, the calibration and the
scope statistics change after export and live in edgexray.json alone, so rewriting them
leaves the flatbuffer, and the model's identity, untouched.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TypedDict

import numpy as np

from edgexray.edge_runtime import metadata
from edgexray.edge_runtime.errors import InferenceError
from edgexray.edge_runtime.interpreter import load_interpreter
from edgexray.edge_runtime.outputs.report import threshold_origin
from edgexray.edge_runtime.sidecar import copy_path, load_sidecar
from edgexray.errors import EdgexrayError

METADATA_BUFFER = "TFLITE_METADATA"  # the Model.metadata entry LiteRT's readers look for
METADATA_IDENTIFIER = b"M001"  # metadata_schema.fbs file_identifier
MODEL_IDENTIFIER = b"TFL3"  # the TFLite schema's
# Every field written here dates from metadata schema 1.0.0; tflite-support's own
# computation agrees (tests/export/test_metadata_readers.py).
MIN_PARSER_VERSION = "1.0.0"
AUTHOR = "edgexray"
LICENSE = (
    "Apache-2.0 (edgexray); trained on Kermany et al. 2018, Chest X-Ray Images (Pneumonia), "
    "CC BY 4.0"
)
DESCRIPTION = (
    "Screening aid, not a diagnostic device: the {positive} score of a pediatric frontal "
    "chest X-ray ({negative} or {positive}). {meaning}. The decision threshold, where it "
    "came from, a site calibration and the out-of-scope statistics are in the associated "
    "file {sidecar_file}, which also says how to read films."
)
# How a resized 8-bit grey film becomes the input, by the sidecar's input.normalization;
# the schema's NormalizationOptions can say the scaling, not the equalisation.
PREPARATIONS = {
    "equalize": "global histogram equalisation of the 8-bit film, then scaling",
    "scale": "scaling",
}
PIXEL_RANGE = (0.0, 255.0)


def _schema():
    from edgexray.export import metadata_schema_py_generated

    return metadata_schema_py_generated


def _model_schema():
    from ai_edge_litert import schema_py_generated

    return schema_py_generated


def _normalization(spec: dict) -> tuple[float, float]:
    """mean and std of NormalizationOptions, (pixel - mean) / std, that map 0..255 onto the
    sidecar's input value_range."""
    low, high = spec.get("value_range", (0.0, 1.0))
    std = (PIXEL_RANGE[1] - PIXEL_RANGE[0]) / (high - low)
    return PIXEL_RANGE[0] - low * std, std


def _stats(minimum: float | None, maximum: float | None):
    stats = _schema().StatsT()
    stats.min, stats.max = [minimum], [maximum]
    return stats


def _input_metadata(sidecar: dict):
    schema, spec = _schema(), sidecar["input"]
    mean, std = _normalization(spec)
    tensor = schema.TensorMetadataT()
    tensor.name = "image"
    tensor.description = (
        f"A {spec.get('color', 'grayscale')} chest film, resized to {spec['height']}x"
        f"{spec['width']} ({spec.get('resize', 'bilinear')}), then "
        f"{PREPARATIONS[spec['normalization']]} to {list(spec.get('value_range', [0, 1]))}"
        + (
            "; the uint8 input takes the 8-bit values as they are"
            if spec.get("dtype") == "uint8"
            else ""
        )
        + "."
    )
    tensor.content = schema.ContentT()
    tensor.content.contentPropertiesType = schema.ContentProperties.ImageProperties
    tensor.content.contentProperties = schema.ImagePropertiesT()
    tensor.content.contentProperties.colorSpace = schema.ColorSpaceType.GRAYSCALE
    unit = schema.ProcessUnitT()
    unit.optionsType = schema.ProcessUnitOptions.NormalizationOptions
    unit.options = schema.NormalizationOptionsT()
    unit.options.mean, unit.options.std = [mean], [std]
    tensor.processUnits = [unit]
    # As tflite-support's image writers: the pixel range of a uint8 input, else the
    # normalised one.
    if spec.get("dtype") == "uint8":
        tensor.stats = _stats(*PIXEL_RANGE)
    else:
        tensor.stats = _stats(*((v - mean) / std for v in PIXEL_RANGE))
    return tensor


def _score_metadata(sidecar: dict):
    schema, output = _schema(), sidecar["output"]
    tensor = schema.TensorMetadataT()
    tensor.name = f"{sidecar['labels'][1].lower()}_{output['kind']}"
    tensor.description = output.get("meaning", output["kind"])
    tensor.content = schema.ContentT()
    tensor.content.contentPropertiesType = schema.ContentProperties.FeatureProperties
    tensor.content.contentProperties = schema.FeaturePropertiesT()
    if output["kind"] == "probability":
        tensor.stats = _stats(0.0, 1.0)
    labels = schema.AssociatedFileT()
    labels.name = metadata.LABELS_FILE
    labels.description = "The class the output value speaks of."
    labels.type = schema.AssociatedFileType.TENSOR_AXIS_LABELS
    tensor.associatedFiles = [labels]
    return tensor


def _features_metadata(index: int):
    schema = _schema()
    tensor = schema.TensorMetadataT()
    tensor.name = "pooled_features" if index == 1 else f"output_{index}"
    tensor.description = (
        "The global-average-pooled features the last Dense layer reads: the out-of-scope "
        f"guard's input (the scope block of {metadata.SIDECAR_FILE})."
    )
    tensor.content = schema.ContentT()
    tensor.content.contentPropertiesType = schema.ContentProperties.FeatureProperties
    tensor.content.contentProperties = schema.FeaturePropertiesT()
    return tensor


def model_metadata(sidecar: dict, outputs: int) -> bytes:
    """The ModelMetadata flatbuffer (identifier M001) for a model with this sidecar and
    this many outputs (output 0 the score, the others the pooled features)."""
    import flatbuffers

    schema = _schema()
    negative, positive = sidecar["labels"]
    model = schema.ModelMetadataT()
    model.name = f"edgexray pneumonia classifier ({sidecar.get('method', 'unknown method')})"
    model.description = DESCRIPTION.format(
        negative=negative,
        positive=positive,
        meaning=_sentence(sidecar["output"].get("meaning", sidecar["output"]["kind"])),
        sidecar_file=metadata.SIDECAR_FILE,
    )
    model.version = f"edgexray {sidecar.get('edgexray_version', 'unknown')}"
    model.author = AUTHOR
    model.license = LICENSE
    model.minParserVersion = MIN_PARSER_VERSION
    subgraph = schema.SubGraphMetadataT()
    subgraph.name = "pneumonia screening"
    subgraph.inputTensorMetadata = [_input_metadata(sidecar)]
    subgraph.outputTensorMetadata = [_score_metadata(sidecar)] + [
        _features_metadata(index) for index in range(1, outputs)
    ]
    model.subgraphMetadata = [subgraph]
    card = schema.AssociatedFileT()
    card.name = metadata.SIDECAR_FILE
    card.description = (
        "edgexray's sidecar (JSON): preprocessing, threshold and its origin, output kind, "
        "out-of-scope statistics, site calibration."
    )
    card.type = schema.AssociatedFileType.DESCRIPTIONS
    model.associatedFiles = [card]
    builder = flatbuffers.Builder(0)
    builder.Finish(model.Pack(builder), METADATA_IDENTIFIER)
    return bytes(builder.Output())


def with_model_metadata(flatbuffer: bytes, metadata_bytes: bytes) -> bytes:
    """The model flatbuffer with metadata_bytes as its TFLITE_METADATA buffer (replacing
    an earlier one in place, as MetadataPopulator does); nothing else changes.

    Raises:
        EdgexrayError: not a TFLite model, or one whose buffers lie outside the
            flatbuffer (models over 2 GB).
    """
    import flatbuffers

    tfl = _model_schema()
    try:
        model = tfl.ModelT.InitFromObj(_root(flatbuffer))
    except EdgexrayError:
        raise
    except Exception as err:  # a damaged flatbuffer fails in many ways
        raise EdgexrayError(f"not a TFLite model ({err})") from None
    if any(buffer.offset for buffer in model.buffers or []):
        raise EdgexrayError("the model keeps its weights outside the flatbuffer (over 2 GB)")
    buffer = tfl.BufferT()
    buffer.data = np.frombuffer(metadata_bytes, dtype=np.uint8)
    model.metadata = list(model.metadata or [])
    model.buffers = list(model.buffers or [])
    entry = next((m for m in model.metadata if _text(m.name) == METADATA_BUFFER), None)
    if entry is not None:
        model.buffers[entry.buffer] = buffer
    else:
        model.buffers.append(buffer)
        entry = tfl.MetadataT()
        entry.name = METADATA_BUFFER
        entry.buffer = len(model.buffers) - 1
        model.metadata.append(entry)
    builder = flatbuffers.Builder(max(1024, len(flatbuffer) + len(metadata_bytes)))
    builder.Finish(model.Pack(builder), MODEL_IDENTIFIER)
    return bytes(builder.Output())


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:]


def _root(flatbuffer: bytes):
    """The Model table of a model flatbuffer.

    Raises:
        EdgexrayError: the bytes are not a TFLite model.
    """
    tfl = _model_schema()
    try:
        if len(flatbuffer) < 8 or not tfl.Model.ModelBufferHasIdentifier(flatbuffer, 0):
            raise ValueError("no TFL3 identifier")
        root = tfl.Model.GetRootAs(flatbuffer, 0)
        if root.SubgraphsLength() < 1:
            raise ValueError("no subgraph")
    except Exception as err:  # a damaged flatbuffer fails in many ways
        raise EdgexrayError(f"not a TFLite model ({err})") from None
    return root


def _text(value) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def embed(model: bytes, sidecar: dict) -> tuple[bytes, dict]:
    """A model file carrying its metadata: the flatbuffer of `model` (a converter's output,
    or an earlier model file) with the ModelMetadata made from `sidecar`, then
    labels.txt and edgexray.json. The graph is untouched; the identity is that of the new
    flatbuffer, so the returned sidecar has its sha256.

    Returns:
        (the model file's bytes, the sidecar inside it)
    """
    try:
        flatbuffer = model[: metadata.parse(model).flatbuffer_size]
    except InferenceError as err:
        raise EdgexrayError(str(err)) from None
    outputs = _root(flatbuffer).Subgraphs(0).OutputsLength()
    flatbuffer = with_model_metadata(flatbuffer, model_metadata(sidecar, outputs))
    sidecar = {**sidecar, "sha256": hashlib.sha256(flatbuffer).hexdigest()}
    return metadata.with_sidecar(flatbuffer, sidecar), sidecar


def metadata_buffer(model: bytes) -> bytes | None:
    """The TFLITE_METADATA buffer of a model file, or None."""
    tfl = _model_schema()
    root = tfl.Model.GetRootAs(model, 0)
    for index in range(root.MetadataLength()):
        entry = root.Metadata(index)
        if _text(entry.Name()) == METADATA_BUFFER:
            return root.Buffers(entry.Buffer()).DataAsNumpy().tobytes()
    return None


def read_model_metadata(model: bytes) -> dict | None:
    """The ModelMetadata of a model file as plain values, or None without one."""
    found = metadata_buffer(model)
    if found is None:
        return None
    schema = _schema()
    if not schema.ModelMetadata.ModelMetadataBufferHasIdentifier(found, 0):
        raise EdgexrayError("its TFLITE_METADATA buffer is not a ModelMetadata (no M001)")
    return _plain(schema.ModelMetadataT.InitFromObj(schema.ModelMetadata.GetRootAs(found, 0)))


def _plain(value):
    """A flatbuffers object-API value as JSON-able Python (bytes as text, arrays as lists)."""
    if isinstance(value, bytes):
        return _text(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if hasattr(value, "__dict__"):
        return {k: _plain(v) for k, v in vars(value).items() if v is not None}
    return value


def operators(model: bytes) -> dict[str, int]:
    """How many times each operator runs in the main subgraph, by name."""
    tfl = _model_schema()
    names = {v: k for k, v in vars(tfl.BuiltinOperator).items() if k.isupper()}
    root = tfl.Model.GetRootAs(model, 0)
    counts: dict[str, int] = {}
    subgraph = root.Subgraphs(0)
    for index in range(subgraph.OperatorsLength()):
        code = root.OperatorCodes(subgraph.Operators(index).OpcodeIndex())
        builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
        name = names.get(builtin, str(builtin))
        if builtin == tfl.BuiltinOperator.CUSTOM:
            name = (code.CustomCode() or b"CUSTOM").decode("utf-8", "replace")
        counts[name] = counts.get(name, 0) + 1
    return dict(sorted(counts.items(), key=lambda item: (-item[1], item[0])))


# --- what `edgexray inspect` shows --------------------------------------------------------


class TensorReport(TypedDict):
    name: str
    shape: list[int]
    dtype: str
    quantization: dict | None
    description: str | None


class ModelReport(TypedDict):
    """describe(): what a model file is (`edgexray inspect --json` prints it)."""

    file: str
    size_bytes: int
    sha256: str
    file_sha256: str
    name: str | None
    description: str | None
    version: str | None
    author: str | None
    license: str | None
    min_parser_version: str | None
    associated_files: dict[str, int]
    sidecar: str
    method: str | None
    edgexray_version: str | None
    labels: list[str]
    output_kind: str
    input: TensorReport
    preprocessing: dict
    outputs: list[TensorReport]
    threshold: float
    threshold_origin: str
    target_recall: float | None
    calibration: dict | None
    scope: dict | None
    operators: dict[str, int]


def tensor_facts(detail: dict) -> dict:
    """An interpreter tensor's name, shape, dtype and quantization (None when float), as
    the sidecar and `inspect` show them."""
    scale, zero_point = detail["quantization"]
    return {
        "name": detail["name"],
        "shape": [int(d) for d in detail["shape"]],
        "dtype": np.dtype(detail["dtype"]).name,
        "quantization": {"scale": float(scale), "zero_point": int(zero_point)} if scale else None,
    }


def _tensor(detail: dict, described: dict | None) -> TensorReport:
    return {**tensor_facts(detail), "description": (described or {}).get("description")}


CALIBRATION_SHOWN = (
    "calibrated_at",
    "method",
    "guarantee",
    "target_recall",
    "confidence",
    "threshold",
    "source_threshold",
    "recall_lower_bound",
    "expected_specificity",
)
SCOPE_SHOWN = ("cutoff", "cutoff_rule", "coverage", "fitted_on", "chosen_on", "patient_age_years")


def describe(path: Path) -> ModelReport:
    """What a model file is: its standard metadata, sidecar, tensors, operators, identity.

    Raises:
        EdgexrayError: the file is not a model edgexray can run (missing, damaged, a
            sidecar that is refused, a readable copy that disagrees).
    """
    path = Path(path)
    try:
        sidecar = load_sidecar(path)
        parts = metadata.read(path)
        interpreter = load_interpreter(path)
    except InferenceError as err:
        raise EdgexrayError(str(err)) from None
    data = path.read_bytes()
    standard = read_model_metadata(data) or {}
    subgraph = (standard.get("subgraphMetadata") or [{}])[0]
    described_inputs = subgraph.get("inputTensorMetadata") or []
    described_outputs = subgraph.get("outputTensorMetadata") or []
    inputs, outputs = interpreter.get_input_details(), interpreter.get_output_details()
    calibration = sidecar.get("calibration")
    scope = sidecar.get("scope")
    spec = sidecar["input"]
    return {
        "file": str(path),
        "size_bytes": parts.size,
        "sha256": parts.sha256,
        "file_sha256": hashlib.sha256(data).hexdigest(),
        "name": standard.get("name"),
        "description": standard.get("description"),
        "version": standard.get("version"),
        "author": standard.get("author"),
        "license": standard.get("license"),
        "min_parser_version": standard.get("minParserVersion"),
        "associated_files": {name: len(content) for name, content in parts.files.items()},
        "sidecar": (
            "inside"
            if parts.sidecar_bytes is not None
            else f"{copy_path(path).name} beside it (no metadata inside)"
        ),
        "method": sidecar.get("method"),
        "edgexray_version": sidecar.get("edgexray_version"),
        "labels": list(sidecar["labels"]),
        "output_kind": sidecar["output"]["kind"],
        "input": _tensor(inputs[0], (described_inputs or [None])[0]),
        "preprocessing": {
            key: spec[key]
            for key in ("height", "width", "color", "resize", "normalization", "value_range")
            if key in spec
        },
        "outputs": [
            _tensor(detail, described_outputs[i] if i < len(described_outputs) else None)
            for i, detail in enumerate(outputs)
        ],
        "threshold": float(sidecar["threshold"]),
        "threshold_origin": threshold_origin(sidecar),
        "target_recall": sidecar.get("target_recall"),
        "calibration": (
            {
                **{key: calibration.get(key) for key in CALIBRATION_SHOWN},
                "sample": {
                    key: (calibration.get("sample") or {}).get(key)
                    for key in ("n", "pneumonia", "normal", "patients", "folder")
                },
            }
            if isinstance(calibration, dict)
            else None
        ),
        "scope": (
            {
                "features": scope["feature_output"]["size"],
                "feature_output": scope["feature_output"]["index"],
                **{key: scope.get(key) for key in SCOPE_SHOWN},
            }
            if isinstance(scope, dict)
            else None
        ),
        "operators": operators(data),
    }


def _tensor_line(tensor: TensorReport) -> str:
    quantization = tensor["quantization"]
    scaled = (
        f", scale {quantization['scale']:.6g} zero point {quantization['zero_point']}"
        if quantization
        else ""
    )
    return f"{tensor['name']} {tensor['shape']} {tensor['dtype']}{scaled}"


def summary_lines(report: ModelReport) -> list[str]:
    """describe()'s report for people, one screen."""
    files = ", ".join(f"{name} {size:,} B" for name, size in report["associated_files"].items())
    spec = report["preprocessing"]
    lines = [
        f"model        {report['name'] or '(no TFLite metadata)'}"
        + (f", {report['version']}" if report["version"] else ""),
        f"file         {report['file']}: {report['size_bytes']:,} bytes"
        + (f" (associated files: {files})" if files else ""),
        f"sha256       {report['sha256']} (the model's identity: its flatbuffer, the same "
        "after calibration)",
        f"made by      edgexray {report['edgexray_version']}, method {report['method']}",
        f"sidecar      {report['sidecar']}",
    ]
    if report["license"]:
        lines.append(f"licence      {report['license']}")
    lines += [
        f"labels       {', '.join(report['labels'])} (output 0 is the {report['output_kind']} "
        f"of {report['labels'][1]})",
        f"input        {_tensor_line(report['input'])}",
        f"             {spec.get('height')}x{spec.get('width')} {spec.get('color', '')}, "
        f"{spec.get('resize', '')}, {spec.get('normalization')} to {spec.get('value_range')}",
    ]
    for index, output in enumerate(report["outputs"]):
        lines.append(f"output {index:<5} {_tensor_line(output)}")
    lines.append(f"threshold    {report['threshold']:.6g}: {report['threshold_origin']}")
    calibration = report["calibration"]
    if calibration:
        sample = calibration["sample"]
        bound = calibration.get("recall_lower_bound")
        lines.append(
            f"calibration  {calibration['calibrated_at']}, {calibration['method']}: "
            f"{sample.get('n')} films ({sample.get('pneumonia')} pneumonia) from "
            f"{sample.get('folder')}"
            + (f"; recall lower bound {bound:.4f}" if isinstance(bound, float) else "")
        )
    else:
        lines.append("calibration  none (not calibrated at a site: edgexray calibrate)")
    scope = report["scope"]
    if scope:
        fitted = scope.get("fitted_on") or {}
        lines.append(
            f"scope        {scope['features']} pooled features (output {scope['feature_output']})"
            f", cut-off {scope['cutoff']:.4g}; fitted on {fitted.get('films')} "
            f"{fitted.get('split')} films"
        )
    else:
        lines.append("scope        no statistics: films are not checked against the training set")
    ops = ", ".join(f"{name} {count}" for name, count in report["operators"].items())
    lines.append(f"operators    {ops}")
    return lines
