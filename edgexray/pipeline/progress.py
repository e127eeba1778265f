"""Progress of long work (training epochs, fine-tunes, scoring films, benchmarks).

The library reports through the current reporter and never prints by itself: the default
one shows nothing. A command installs one for its duration with `using(...)`:
`for_stream(sys.stderr)` is a bar with elapsed time and a time estimate on a terminal, and
nothing per step otherwise (a log gets the command's own line per stage instead).

    with progress.task("train", total=steps, unit="steps") as bar:
        for ...:
            bar.advance()
        bar.note("epoch 3/12, val AUC 0.9931")
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from typing import Protocol


class Task(Protocol):
    def advance(self, steps: int = 1) -> None: ...

    def note(self, text: str) -> None: ...


class Reporter(Protocol):
    def task(
        self, description: str, total: int | None, unit: str
    ) -> contextlib.AbstractContextManager[Task]: ...


class _NoTask:
    def advance(self, steps: int = 1) -> None:
        pass

    def note(self, text: str) -> None:
        pass


class Silent:
    """Shows nothing: the library's default, and a log's (one line per stage comes from the
    command)."""

    @contextlib.contextmanager
    def task(self, description: str, total: int | None, unit: str) -> Iterator[Task]:
        yield _NoTask()


class Bars:
    """rich progress bars on a terminal: one per task, with elapsed time and the time left.

    One live display serves every task: a task started inside another (a fine-tune inside
    the quantize stage) gets its own bar below, removed when it ends.
    """

    def __init__(self, stream=None):
        from rich.console import Console

        self._console = Console(file=stream or sys.stderr)
        self._display = None
        self._open = 0

    def _progress(self):
        from rich import progress

        return progress.Progress(
            progress.TextColumn("{task.description}"),
            progress.BarColumn(),
            progress.MofNCompleteColumn(),
            progress.TextColumn("{task.fields[unit]}"),
            progress.TimeElapsedColumn(),
            progress.TextColumn("left"),
            progress.TimeRemainingColumn(),
            progress.TextColumn("{task.fields[note]}"),
            console=self._console,
        )

    @contextlib.contextmanager
    def task(self, description: str, total: int | None, unit: str) -> Iterator[Task]:
        if self._display is None:
            self._display = self._progress()
            self._display.start()
        display, nested = self._display, self._open > 0
        task_id = display.add_task(description, total=total, unit=unit, note="")
        self._open += 1

        class _Bar:
            def advance(self, steps: int = 1) -> None:
                display.advance(task_id, steps)

            def note(self, text: str) -> None:
                display.update(task_id, note=text)

        try:
            yield _Bar()
        finally:
            self._open -= 1
            if nested:
                display.remove_task(task_id)
            else:
                display.stop_task(task_id)
            if self._open == 0:
                display.stop()
                self._display = None


_reporter: list[Reporter] = [Silent()]


def task(description: str, total: int | None, unit: str = "steps"):
    """A context manager yielding a Task of the current reporter."""
    return _reporter[-1].task(description, total, unit)


@contextlib.contextmanager
def using(reporter: Reporter) -> Iterator[Reporter]:
    """Report progress through `reporter` inside the block."""
    _reporter.append(reporter)
    try:
        yield reporter
    finally:
        _reporter.remove(reporter)


def for_stream(stream=None) -> Reporter:
    """Bars on a terminal; nothing per step on anything else (a log, a pipe, CI)."""
    stream = stream or sys.stderr
    return Bars(stream) if stream.isatty() else Silent()


def keras_callback(bar: Task, epochs: int):
    """A Keras callback advancing `bar` per batch and noting the epoch and val AUC."""
    from edgexray.compat import keras

    class Advance(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            bar.advance()

        def on_epoch_end(self, epoch, logs=None):
            auc = (logs or {}).get("val_auc")
            shown = f", val AUC {float(auc):.4f}" if auc is not None else ""
            bar.note(f"epoch {epoch + 1}/{epochs}{shown}")

    return Advance()
