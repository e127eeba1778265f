"""The shipped model carries its metadata (issue 29): write it in, and show the graph untouched.

    python benchmarks/metadata_check.py embed [--data DIR] [--out FILE.json]
        Write edgexray/models/edgexray-int8.tflite again with its metadata inside (the
        standard TFLite ModelMetadata in the flatbuffer, labels.txt and the sidecar as
        associated files) and its readable copy beside it, only once every output tensor
        of every test/ film is byte-identical to the model's before.

    python benchmarks/metadata_check.py compare BEFORE AFTER [--data DIR] [--out FILE.json]
        The same comparison of two model files, e.g. the shipped model before issue 29
        (`git show 3297826:edgexray/models/edgexray-int8.tflite`, its .json beside it).

Run from the repository root with `nice -n 10`: it reads every film of test/.
"""

from __future__ import annotations

import argparse
import gzip
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edgexray import artifacts  # noqa: E402
from edgexray.benchmarks.machine import machine_info  # noqa: E402
from edgexray.edge_runtime import REFERENCE_MODEL, metadata, readers  # noqa: E402
from edgexray.edge_runtime.classifier import Classifier  # noqa: E402
from edgexray.edge_runtime.sidecar import load_sidecar  # noqa: E402
from edgexray.export.metadata import embed  # noqa: E402

DEFAULT_DATA = ROOT.parent / "shared" / "data" / "chest_xray"
RECORD_FIELDS = ("probability", "label", "in_scope", "scope_reason", "scope_distance")


def outputs(model: Path, films: list[Path]) -> tuple[list[bytes], list[dict]]:
    """Every output tensor's bytes, and the record's answers, for each film."""
    classifier = Classifier(model)
    tensors, records = [], []
    for film in films:
        classifier.run(classifier.model_input(film))
        interpreter = classifier.interpreter
        tensors.append(
            b"".join(interpreter.get_tensor(o["index"]).tobytes() for o in classifier.outputs)
        )
        record = classifier.classify(film)
        records.append({key: record.get(key) for key in RECORD_FIELDS})
    return tensors, records


def facts(model: Path) -> dict:
    data = model.read_bytes()
    parts = metadata.parse(data)
    started = time.perf_counter()
    load_sidecar(model)
    return {
        "file": model.name,
        "size_bytes": len(data),
        "gzip_bytes": len(gzip.compress(data, compresslevel=9, mtime=0)),
        "flatbuffer_bytes": parts.flatbuffer_size,
        "associated_files": {name: len(content) for name, content in parts.files.items()},
        "identity_sha256": parts.sha256,
        "file_sha256": artifacts.sha256(model),
        "load_sidecar_ms": round((time.perf_counter() - started) * 1000, 2),
    }


def compare(before: Path, after: Path, data_root: Path) -> dict:
    films = readers.find([data_root / "test"])
    started = time.monotonic()
    old_tensors, old_records = outputs(before, films)
    new_tensors, new_records = outputs(after, films)
    differ = [str(f) for f, a, b in zip(films, old_tensors, new_tensors, strict=True) if a != b]
    records = sum(a != b for a, b in zip(old_records, new_records, strict=True))
    return {
        "films": len(films),
        "output_tensors_differ": len(differ),
        "records_differ": records,
        "differing_films": differ[:20],
        "before": facts(before),
        "after": facts(after),
        "seconds": round(time.monotonic() - started, 1),
        "machine": machine_info(),
    }


def report(result: dict, out: Path | None) -> None:
    for side in ("before", "after"):
        f = result[side]
        print(
            f"{side:<6} {f['size_bytes']:,} bytes (gzip {f['gzip_bytes']:,}), flatbuffer "
            f"{f['flatbuffer_bytes']:,}, associated {f['associated_files']}, identity "
            f"{f['identity_sha256'][:16]}…, load_sidecar {f['load_sidecar_ms']} ms"
        )
    print(
        f"{result['films']} test/ films: output tensors differ on {result['output_tensors_differ']}"
        f", records on {result['records_differ']} ({result['seconds']} s)"
    )
    if out is not None:
        artifacts.write_json(out, result)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    embed_parser = commands.add_parser("embed")
    compare_parser = commands.add_parser("compare")
    compare_parser.add_argument("before", type=Path)
    compare_parser.add_argument("after", type=Path)
    for sub in (embed_parser, compare_parser):
        sub.add_argument("--data", type=Path, default=DEFAULT_DATA)
        sub.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.command == "compare":
        result = compare(args.before, args.after, args.data)
        report(result, args.out)
        return 1 if result["output_tensors_differ"] or result["records_differ"] else 0
    model = REFERENCE_MODEL
    if metadata.read(model).sidecar_bytes is not None:
        raise SystemExit(f"error: {model} already carries its metadata")
    with tempfile.TemporaryDirectory() as folder:
        before = Path(folder) / "before" / model.name
        before.parent.mkdir()
        before.write_bytes(model.read_bytes())
        before.with_suffix(".json").write_bytes(model.with_suffix(".json").read_bytes())
        candidate = Path(folder) / model.name
        artifacts.write_model(candidate, *embed(model.read_bytes(), load_sidecar(model)))
        result = compare(before, candidate, args.data)
        report(result, None)
        if result["output_tensors_differ"] or result["records_differ"]:
            raise SystemExit("error: the model with its metadata gives other outputs")
        artifacts.write_model(model, candidate.read_bytes(), load_sidecar(candidate))
    result["after"] = {**facts(model)}
    report(result, args.out)
    print(f"wrote {model} and {model.with_suffix('.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
