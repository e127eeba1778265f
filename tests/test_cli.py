import subprocess
import sys

from typer.testing import CliRunner

from edgexray import __version__
from edgexray.cli import app

runner = CliRunner()


def test_help_and_version_do_not_import_tensorflow():
    code = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from edgexray.cli import app\n"
        "for args in (['--help'], ['--version'], ['train', '--help']):\n"
        "    assert CliRunner().invoke(app, args).exit_code == 0\n"
        "heavy = ('tensorflow', 'tf_keras', 'tensorflow_model_optimization')\n"
        "loaded = [m for m in heavy if m in sys.modules]\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_version_prints_the_package_version():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and __version__ in result.output


def _assert_one_line_error(result, code=2):
    assert result.exit_code == code, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(lines) == 1
    assert "Traceback" not in result.output


def test_train_without_a_pneumonia_folder_exits_2(tmp_path):
    (tmp_path / "NORMAL").mkdir()
    _assert_one_line_error(
        runner.invoke(app, ["train", "--data", str(tmp_path), "--out", str(tmp_path / "r")])
    )


def test_train_on_a_missing_folder_exits_2(tmp_path):
    result = runner.invoke(
        app, ["train", "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "r")]
    )
    _assert_one_line_error(result)
    assert "not found" in result.output


def test_train_with_a_bad_option_value_exits_2(tmp_path, xray_folder):
    result = runner.invoke(
        app,
        ["train", "--data", str(xray_folder), "--out", str(tmp_path / "r"), "--target-recall", "2"],
    )
    _assert_one_line_error(result)
