"""Options declared once: from the settings' dataclass fields, and the few shared by
several commands without a settings field of their own.

`from_settings` turns the named fields of a settings dataclass (made with
`edge_runtime.options.option`: type, default, help, choices) into the command's options,
so a default or a help text lives on its field, never restated here.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import typing
from pathlib import Path
from typing import Annotated, Literal

import typer

from edgexray.edge_runtime.explain import grid_help
from edgexray.edge_runtime.interpreter import MAX_THREADS
from edgexray.edge_runtime.options import default_of, flag_of


def from_settings(settings_class, *names: str, defaults: dict | None = None):
    """Decorator: each named field of settings_class becomes an option of the command.

    The command receives them as keyword arguments named after the fields (declare
    `**settings` to take them all), already converted: a field with a "parse" fact gets
    the parsed value, a repeated one a tuple. defaults overrides a field's default for
    this command (e.g. the benchmark thread counts of `run`).
    """
    hints = typing.get_type_hints(settings_class)
    fields = {f.name: f for f in dataclasses.fields(settings_class)}
    chosen = [fields[name] for name in names]
    defaults = defaults or {}

    def decorate(command):
        signature = inspect.signature(command, eval_str=True)
        kept = [p for p in signature.parameters.values() if p.kind is not p.VAR_KEYWORD]
        added = [_parameter(f, hints[f.name], defaults.get(f.name, default_of(f))) for f in chosen]

        @functools.wraps(command)
        def wrapper(*args, **kwargs):
            for field in chosen:
                kwargs[field.name] = _value(field, kwargs[field.name])
            return command(*args, **kwargs)

        parameters = kept + added
        wrapper.__signature__ = signature.replace(parameters=_in_order(parameters))
        wrapper.__annotations__ = {p.name: p.annotation for p in parameters}
        return wrapper

    return decorate


def _parameter(field: dataclasses.Field, kind, default) -> inspect.Parameter:
    facts = field.metadata
    option = {"help": facts["help"]}
    if facts.get("metavar"):
        option["metavar"] = facts["metavar"]
    annotation = _plain(kind)
    if facts.get("choices"):
        annotation = Literal[tuple(facts["choices"])]
    if facts.get("repeat"):
        annotation, default = list[str] | None, None
    elif facts.get("parse"):
        annotation = str | None
        if isinstance(default, tuple):
            default = ",".join(map(str, default))
        elif default is not None and not isinstance(default, str):
            default = str(default)
    elif _is_optional(kind):
        annotation = annotation | None
    if default is dataclasses.MISSING:
        default = inspect.Parameter.empty
    return inspect.Parameter(
        field.name,
        inspect.Parameter.KEYWORD_ONLY,
        default=default,
        annotation=Annotated[annotation, typer.Option(flag_of(field), **option)],
    )


def _value(field: dataclasses.Field, value):
    facts = field.metadata
    if facts.get("repeat"):
        return tuple(value or ())
    if facts.get("parse") and isinstance(value, str):
        return facts["parse"](value)
    return value


def _plain(kind):
    """int out of `int | None`; the type itself otherwise."""
    inner = [k for k in typing.get_args(kind) if k is not type(None)]
    return inner[0] if _is_optional(kind) and len(inner) == 1 else kind


def _is_optional(kind) -> bool:
    return type(None) in typing.get_args(kind)


def _in_order(parameters: list[inspect.Parameter]) -> list[inspect.Parameter]:
    """Positional parameters first, keyword-only after, as Python requires."""
    return sorted(parameters, key=lambda p: p.kind == p.KEYWORD_ONLY)


# --- options several commands share, without a settings field of their own ------------

MODEL_HELP = (
    "A .tflite model (it carries its sidecar; a .json beside it must agree), or a folder "
    "holding one; default: the shipped model (edgexray models)."
)
Model = Annotated[Path | None, typer.Option("--model", help=MODEL_HELP, metavar="MODEL")]
Threads = Annotated[
    int | None,
    typer.Option(
        help=f"Interpreter threads, 1 to {MAX_THREADS}; default: the runtime's choice.",
        metavar="N",
    ),
]
Report = Annotated[
    Path | None,
    typer.Option(
        help="Also write one self-contained HTML report of the batch to this new file: "
        "heatmaps, most suspicious films first.",
        metavar="FILE",
    ),
]
Grid = Annotated[
    str | None, typer.Option(metavar="PATCH/STRIDE", help=f"Occlusion grid {grid_help()}.")
]
DEIDENTIFY_HELP = (
    "Write records, heatmap names and the report without identifying data, for sharing: "
    "patient and accession numbers and UIDs as keyed hashes (HMAC with the key in this "
    "file), names and dates dropped, ages in years."
)
Deidentify = Annotated[
    Path | None, typer.Option("--deidentify", help=DEIDENTIFY_HELP, metavar="KEY_FILE")
]
RunDir = Annotated[Path, typer.Argument(help="Run directory written by `edgexray train`.")]
