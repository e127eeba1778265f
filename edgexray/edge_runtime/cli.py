"""The device's command line: `python infer.py ...` in a bundle, `python -m
edgexray.edge_runtime.infer ...` on a host. argparse, not Typer: a device has only numpy,
Pillow and LiteRT.

    python infer.py --model model.tflite IMAGE_OR_DIR [...] [--format jsonl|csv]
        [--threads N] [--explain DIR] [--report FILE] [--grid PATCH/STRIDE]
        [--no-scope-check] [--deidentify KEY_FILE]
    python infer.py --list-images IMAGE_OR_DIR [...]
    python infer.py serve --state DIR --allow-ae AE_TITLE [...]   (the DICOM node)
    python infer.py to-dicom PICTURE.jpeg FILM.dcm [...]          (a test film for it)

Exit codes: errors.py.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import typing
from dataclasses import MISSING
from pathlib import Path

from .batch import list_images, run
from .errors import EXIT_BAD_INPUT, EXIT_OK, InferenceError, OutputError
from .explain import grid_help
from .interpreter import MAX_THREADS
from .options import flag_of, options_of
from .outputs.records import FORMATS


class OneLineParser(argparse.ArgumentParser):
    """A usage error is one `error:` line and exit 2, like every other error."""

    def error(self, message):
        self.exit(EXIT_BAD_INPUT, f"error: {message} (see --help)\n")


def default_model() -> Path | None:
    """The bundle's .tflite when there is exactly one: next to this package's folder (a
    bundle's edge_runtime/ sits beside the model and the launcher), or in it."""
    here = Path(__file__).resolve().parent
    for folder in (here, here.parent):
        models = sorted(folder.glob("*.tflite"))
        if models:
            return models[0] if len(models) == 1 else None
    return None


def silence_stdout() -> None:
    """Point stdout at /dev/null after a failed write, so the exit flush cannot fail again
    (Python would print an "Exception ignored" traceback and exit 120)."""
    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # no real file descriptor (a test runner)
        pass


def fail(message: str, code: int = EXIT_BAD_INPUT) -> int:
    print(f"error: {message}", file=sys.stderr)
    return code


def classify_parser(prog: str) -> OneLineParser:
    parser = OneLineParser(
        prog=prog,
        description="Pneumonia probability of chest X-ray images with a .tflite model and "
        "its JSON sidecar. Prints one record per image.",
    )
    parser.add_argument(
        "images",
        nargs="+",
        metavar="IMAGE_OR_DIR",
        help="image files, or folders walked for .jpeg/.jpg/.png/.dcm and DICOM files",
    )
    parser.add_argument(
        "--model",
        type=Path,
        default=None,
        help="model file, its sidecar MODEL.json next to it "
        "(default: the only .tflite next to this script)",
    )
    parser.add_argument("--format", choices=tuple(FORMATS), default="jsonl", help="output format")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help=f"interpreter threads, 1 to {MAX_THREADS} (default: the runtime's choice)",
    )
    parser.add_argument(
        "--explain",
        type=Path,
        default=None,
        metavar="DIR",
        help="also write each film's heatmap into DIR (FILM.heatmap.png overlay and "
        "FILM.heatmap.npy map; records get their paths); one model run per position of "
        "the occlusion grid",
    )
    parser.add_argument(
        "--grid",
        default=None,
        metavar="PATCH/STRIDE",
        help=f"occlusion grid of --explain and --report {grid_help()}",
    )
    parser.add_argument(
        "--report",
        type=Path,
        default=None,
        metavar="FILE",
        help="also write one self-contained HTML report of the batch to FILE (a new file), "
        "most suspicious films first, with heatmaps",
    )
    parser.add_argument(
        "--deidentify",
        type=Path,
        default=None,
        metavar="KEY_FILE",
        help="write records, heatmap names and the report without identifying data, for "
        "sharing: patient and accession numbers and UIDs as keyed hashes (HMAC with the "
        "key in KEY_FILE), names and dates dropped, ages in years",
    )
    parser.add_argument(
        "--no-scope-check",
        action="store_true",
        help="label every film, even one the out-of-scope guard would refuse "
        "(records then say in_scope null, scope_reason 'not checked')",
    )
    parser.add_argument(
        "--list-images",
        action="store_true",
        help="only print the image files found, each ended by a NUL byte (for xargs -0)",
    )
    return parser


def main(argv=None) -> int:
    """Run the command line; return the exit code instead of exiting."""
    arguments = sys.argv[1:] if argv is None else list(argv)
    prog = Path(sys.argv[0]).name if argv is None else "infer.py"
    if arguments[:1] == ["serve"]:  # the DICOM node; a film named serve is ./serve
        return serve_main(arguments[1:], f"{prog} serve", default_model())
    if arguments[:1] == ["to-dicom"]:  # a first film for the node
        return to_dicom_main(arguments[1:], f"{prog} to-dicom")
    try:
        args = classify_parser(prog).parse_args(arguments)
    except SystemExit as stop:  # --help, or a usage error already printed on one line
        return stop.code if isinstance(stop.code, int) else EXIT_OK
    try:
        if args.list_images:
            list_images(args.images)
            return EXIT_OK
        model = args.model or default_model()
        if model is None:
            return fail("give --model MODEL.tflite (with its sidecar MODEL.json next to it)")
        return run(
            model,
            args.images,
            args.format,
            args.threads,
            explain_dir=args.explain,
            report_path=args.report,
            check_scope=not args.no_scope_check,
            grid=args.grid,
            deidentify_key=args.deidentify,
        )
    except OutputError as err:
        silence_stdout()
        return fail(str(err))
    except InferenceError as err:
        return fail(str(err))
    except KeyboardInterrupt:
        return fail("interrupted", 130)
    except BrokenPipeError:
        # The reader went away (e.g. `| head`): stop quietly, as other Unix tools do.
        silence_stdout()
        return 1


# --- serve and to-dicom: their options read from their settings' fields ------------------


def add_settings(parser: OneLineParser, settings_class, defaults: dict | None = None) -> None:
    """An option for each field of settings_class made with `options.option`."""
    kinds = typing.get_type_hints(settings_class)
    defaults = defaults or {}
    for field in options_of(settings_class):
        facts = field.metadata
        default = defaults.get(field.name, field.default)
        help_text = facts["help"]
        if default not in (None, (), False, MISSING) and field.name not in defaults:
            help_text += f" (default: {default})"
        kwargs = {"help": help_text, "dest": field.name}
        if facts.get("metavar"):
            kwargs["metavar"] = facts["metavar"]
        if kinds[field.name] is bool:
            parser.add_argument(flag_of(field), action="store_true", **kwargs)
            continue
        if facts.get("repeat"):
            kwargs.update(action="append", default=[])
        else:
            kwargs.update(
                type=facts.get("parse") or _plain_type(kinds[field.name]), default=default
            )
            if facts.get("choices"):
                kwargs["choices"] = facts["choices"]
        parser.add_argument(flag_of(field), required=bool(facts.get("required")), **kwargs)


def serve_parser(prog: str, default_model: Path | None) -> OneLineParser:
    from .node.config import NodeConfig

    parser = OneLineParser(
        prog=prog,
        description="Run a DICOM Storage SCP that classifies each film it receives and "
        "appends its record to STATE/results.jsonl (and sends its results to --pacs: a "
        "Structured Report, and with --explain a heatmap).",
    )
    add_settings(parser, NodeConfig, {"model": default_model})
    return parser


def to_dicom_main(argv, prog: str = "infer.py to-dicom") -> int:
    """`infer.py to-dicom PICTURE OUT`: a DICOM test film from a JPEG or PNG, for a first
    push to the node with plain storescu; return the exit code instead of exiting."""
    from .node.films import SyntheticFilm, write_test_film

    parser = OneLineParser(
        prog=prog,
        description="Write a DICOM film (Secondary Capture, MONOCHROME2, uncompressed, a "
        "synthetic patient) from a JPEG or PNG, for a first push to the node with storescu.",
    )
    parser.add_argument("picture", type=Path, help="a JPEG or PNG film")
    parser.add_argument("out", type=Path, help="the DICOM file to write (a new file)")
    add_settings(parser, SyntheticFilm)
    try:
        args = parser.parse_args(argv)
    except SystemExit as stop:
        return stop.code if isinstance(stop.code, int) else EXIT_OK
    settings = {k: v for k, v in vars(args).items() if k not in ("picture", "out")}
    try:
        written = write_test_film(args.picture, args.out, SyntheticFilm(**settings))
    except ImportError as err:
        return fail(f"to-dicom needs pydicom ({err.name}): the node's requirements")
    except (InferenceError, OSError) as err:
        return fail(str(err))
    print(
        f"{written['path']}: {written['columns']}x{written['rows']} MONOCHROME2 film, "
        f"patient {written['patient_id']}, SOP instance {written['sop_instance_uid']}"
    )
    return EXIT_OK


def _plain_type(kind):
    """int, float, str or Path out of a field's type (`int | None` -> int)."""
    for candidate in typing.get_args(kind) or (kind,):
        if candidate is not type(None):
            return candidate
    return str


def serve_main(argv, prog: str = "infer.py serve", default_model: Path | None = None) -> int:
    """`infer.py serve ...`: run the node; return the exit code instead of exiting."""
    try:
        args = serve_parser(prog, default_model).parse_args(argv)
    except SystemExit as stop:
        return stop.code if isinstance(stop.code, int) else EXIT_OK
    except InferenceError as err:  # a value --pacs cannot parse
        return fail(str(err))
    try:
        from .node.config import NodeConfig
        from .node.logs import quiet_libraries
        from .node.server import serve
    except ImportError as err:
        return fail(f"serve needs the edge_runtime package whole ({err})")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    quiet_libraries()
    try:
        values = {name: tuple(v) if isinstance(v, list) else v for name, v in vars(args).items()}
        return serve(NodeConfig(**values))
    except InferenceError as err:
        return fail(str(err))
    except OSError as err:  # the state folder cannot be made or written
        return fail(f"{err.strerror or err}: {err.filename or ''}")
