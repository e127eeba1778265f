"""The `edgexray` command: every command in one table, each from a module of its own.

Each command is a short function over the library: build a config, call one library
function, print a summary (STYLE.md "Library first, thin CLI"). Library errors become one
line on stderr and their exit code (common.user_errors); nothing here imports TensorFlow
at module level, so `edgexray --help` stays fast.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer
from typer.core import TyperGroup

from edgexray import __version__

from . import (
    benchmark,
    bundle,
    calibrate,
    data,
    evaluate,
    explain,
    inspect,
    models,
    predict,
    prune,
    quantize,
    run,
    serve,
    to_dicom,
    train,
    verify,
)

# The commands in the order `edgexray --help` lists them: the flow of the whole job,
# then the device side.
COMMANDS = (
    ("run", run),
    ("train", train),
    ("prune", prune),
    ("quantize", quantize),
    ("verify", verify),
    ("evaluate", evaluate),
    ("benchmark", benchmark),
    ("calibrate", calibrate),
    ("bundle", bundle),
    ("predict", predict),
    ("explain", explain),
    ("serve", serve),
    ("to-dicom", to_dicom),
    ("models", models),
    ("inspect", inspect),
)


class OneLineUsageErrors(TyperGroup):
    """The command group: a usage error (unknown option, bad value) is one `error:` line
    and exit 2, like every other error, instead of a boxed usage message."""

    def list_commands(self, ctx):
        return list(self.commands)  # the table's order, not alphabetical

    def main(self, *args, standalone_mode: bool = True, **kwargs):
        if not standalone_mode:
            return super().main(*args, standalone_mode=False, **kwargs)
        try:
            result = super().main(*args, standalone_mode=False, **kwargs)
        except typer.Abort:
            typer.echo("error: aborted", err=True)
            sys.exit(1)
        except Exception as err:
            if type(err).__name__ == "NoArgsIsHelpError":  # no command: the help is the answer
                err.show()
                sys.exit(err.exit_code)
            if not hasattr(err, "format_message") or not isinstance(
                getattr(err, "exit_code", None), int
            ):
                raise
            message = " ".join(err.format_message().split())
            typer.echo(f"error: {message} (see --help)", err=True)
            sys.exit(err.exit_code)
        sys.exit(result if isinstance(result, int) else 0)


app = typer.Typer(
    cls=OneLineUsageErrors,
    help="Train, prune, quantize, verify, benchmark and ship a chest X-ray pneumonia "
    "classifier for cheap devices.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def _version(value: bool):
    if value:
        typer.echo(f"edgexray {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show version.")
    ] = False,
):
    """edgexray command line."""


for name, module in COMMANDS:
    app.command(name)(module.command)
app.add_typer(data.app, name="data")
