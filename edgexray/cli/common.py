"""What every command shares: one-line errors, the model a command runs, and the batch of
films `predict` and `explain` classify through the edge runtime."""

from __future__ import annotations

import contextlib
import functools
import logging
import signal
import sys
import threading
from pathlib import Path
from typing import Annotated

import typer

from edgexray.edge_runtime.errors import InferenceError
from edgexray.errors import EdgexrayError


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print a one-line error and return the Exit to raise."""
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def warn(message: str) -> None:
    typer.echo(f"warning: {message}", err=True)


class Terminated(KeyboardInterrupt):
    """SIGTERM, handled as Ctrl-C is: what runs stops cleanly (training keeps its best
    checkpoint, temporary folders such as the converter's SavedModel are removed)."""


def _terminate(signum, frame):
    raise Terminated


def _on_sigterm(handler):
    """Install handler for SIGTERM (main thread only); return the previous one."""
    if handler is None or threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGTERM, handler)


def user_errors(command):
    """Turn library errors into one line and their exit code, never a traceback."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        # Our progress at INFO; other libraries (TensorFlow's "Assets written to ...")
        # only from WARNING up.
        logging.basicConfig(
            level=logging.WARNING,
            format="%(levelname)s: %(message)s",
            stream=sys.stderr,
            force=True,
        )
        logging.getLogger("edgexray").setLevel(logging.INFO)
        previous = _on_sigterm(_terminate)
        try:
            return command(*args, **kwargs)
        except EdgexrayError as err:
            raise fail(str(err), err.exit_code) from None
        except InferenceError as err:  # the edge runtime's: a bad model or argument
            raise fail(str(err)) from None
        except Terminated:
            raise fail("terminated", 143) from None
        except KeyboardInterrupt:
            raise fail("interrupted", 130) from None
        except OSError as err:  # a read-only or full disk, a vanished file
            raise fail(f"{err.strerror or err}: {err.filename or ''}".rstrip(": ")) from None
        finally:
            _on_sigterm(previous)

    return wrapper


def given(ctx: typer.Context, **values) -> dict:
    """The values among `values` (named as their options) given on the command line."""
    # By the source's name: typer bundles its own copy of click in newer versions.
    return {k: v for k, v in values.items() if ctx.get_parameter_source(k).name != "DEFAULT"}


Verbose = Annotated[
    bool, typer.Option(help="Show TensorFlow's and LiteRT's own start-up messages.")
]


@contextlib.contextmanager
def long_work(verbose: bool):
    """Progress of training, fine-tunes and scoring as bars with the time left on a
    terminal (a line per stage in a log), in place of Keras' own output; TensorFlow's and
    LiteRT's start-up messages stay off the screen unless verbose."""
    from edgexray import chatter
    from edgexray.pipeline import progress

    chatter.show(verbose)
    with progress.using(progress.for_stream(sys.stderr)):
        yield


def writes_artifacts(distribute: str | None) -> bool:
    """False for a multiworker worker, which says so instead of printing a summary."""
    from edgexray.pipeline import distribute as distribution

    if distribution.is_chief(distribute or "none"):
        return True
    typer.echo("worker finished: the chief wrote the artifacts")
    return False


def model_or_shipped(
    model: Path | None,
    old_spelling: Path | None = None,
    how: str = "",
    suffixes: tuple[str, ...] = (".tflite",),
) -> Path:
    """The model a command runs: --model, else the shipped model.

    A folder holding exactly one .tflite names that model; a file of another kind than
    suffixes is refused in one line that says what is expected. old_spelling is the model
    given the way an earlier edgexray took it (a positional MODEL): still accepted for a
    release, with a line saying how to write it now (how).
    """
    from edgexray.edge_runtime import REFERENCE_MODEL

    if old_spelling is not None:
        if model is not None:
            raise EdgexrayError(f"give the model once: --model {model} or {old_spelling}")
        warn(f"the model as an argument is deprecated: write {how or '--model MODEL'}")
        model = old_spelling
    if model is None:
        if not REFERENCE_MODEL.is_file():
            raise EdgexrayError(f"shipped model not found: {REFERENCE_MODEL}; give --model")
        return REFERENCE_MODEL
    model = Path(model)
    if model.is_dir():
        found = sorted(model.glob("*.tflite"))
        if len(found) != 1:
            what = "no .tflite" if not found else f"{len(found)} .tflite files"
            raise EdgexrayError(f"{model} holds {what}: give --model FILE.tflite")
        return found[0]
    if model.suffix.lower() not in suffixes:
        expected = " or ".join(suffixes)
        raise EdgexrayError(f"{model}: expected a {expected} model (an edgexray export)")
    return model


def run_edge(model: Path, images, record_format: str, threads, **options) -> int:
    """The edge runtime's batch with the CLI's error handling: one line on stderr, never
    a traceback."""
    from edgexray.edge_runtime import batch
    from edgexray.edge_runtime.cli import silence_stdout
    from edgexray.edge_runtime.errors import OutputError

    try:
        return batch.run(model, images, record_format, threads, sys.stdout, **options)
    except OutputError:  # a full disk: the records were not all written
        silence_stdout()
        raise
    except BrokenPipeError:  # the reader went away (e.g. `| head`): stop quietly
        silence_stdout()
        return 1
