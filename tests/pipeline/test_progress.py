"""Progress bars and native chatter: what reaches the user's screen."""

from __future__ import annotations

import io
import json
import os

import pytest

from edgexray import chatter
from edgexray.pipeline import progress


def test_native_chatter_is_kept_off_the_screen_and_replayed_on_failure(capfd):
    with chatter.quiet():
        os.write(2, b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\n")
    assert "XNNPACK" not in capfd.readouterr().err
    with pytest.raises(RuntimeError), chatter.quiet():
        os.write(2, b"F0000 a fatal native message\n")
        raise RuntimeError("the block failed")
    assert "a fatal native message" in capfd.readouterr().err


def test_verbose_lets_native_chatter_through(capfd, monkeypatch):
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "3")
    try:
        chatter.show(True)
        assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "0"
        with chatter.quiet():
            os.write(2, b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\n")
        assert "XNNPACK" in capfd.readouterr().err
    finally:
        chatter.show(False)


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_bars_on_a_terminal_and_nothing_per_step_in_a_log():
    log, terminal = io.StringIO(), _Terminal()
    for stream in (log, terminal):
        with progress.using(progress.for_stream(stream)):
            with progress.task("train", 4, "steps") as bar:
                for _ in range(4):
                    bar.advance()
                bar.note("epoch 1/1, val AUC 0.9900")
    assert log.getvalue() == ""
    shown = terminal.getvalue()
    assert "train" in shown and "4/4" in shown and "left" in shown and "val AUC 0.9900" in shown


def test_the_library_shows_nothing_unless_a_command_asks(capsys):
    with progress.task("scoring", 3, "films") as bar:
        bar.advance(3)
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


def test_train_prune_and_quantize_commands_show_no_keras_output_in_a_log(
    tiny_config, tmp_path, capfd
):
    # As `run` does: progress through pipeline/progress.py, nothing per step or per epoch
    # from Keras when stderr is a log, and each command takes --verbose.
    from edgexray.cli import app

    config = tmp_path / "config.json"
    config.write_text(json.dumps(tiny_config.to_json()))
    run_dir = tmp_path / "run"
    commands = [
        ["train", "--config", str(config), "--epochs", "2", "--out", str(run_dir)],
        ["prune", str(run_dir), "--epochs", "0.5", "--verbose"],
        ["quantize", str(run_dir), "-m", "int8"],
    ]
    for arguments in commands:
        with pytest.raises(SystemExit) as ended:
            app(arguments, prog_name="edgexray")
        assert ended.value.code in (0, None), arguments
        captured = capfd.readouterr()
        shown = captured.out + captured.err
        assert "Epoch 1/" not in shown and " - loss: " not in shown, shown[-2000:]
