"""Run the standalone edge runtime as a device would: TensorFlow, tf_keras and edgexray absent.

A sitecustomize.py on PYTHONPATH puts a meta-path finder first that raises ImportError for
the blocked packages and logs every attempt, so a test also sees a caught, silent import.
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

BLOCKED = ("tensorflow", "tf_keras", "keras", "tensorflow_model_optimization", "edgexray")
TENSORFLOW = BLOCKED[:-1]  # what the base install (no `train` extra) lacks
EDGEXRAY = Path(sys.executable).with_name("edgexray")  # the installed console script

SITECUSTOMIZE = """\
import os
import sys

BLOCKED = {blocked!r}


class BlockHeavyImports:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in BLOCKED:
            with open(os.environ["BLOCKED_IMPORTS_LOG"], "a") as log:
                log.write(name + "\\n")
            raise ImportError(name + " is blocked: the edge runtime must not need it")
        return None


sys.meta_path.insert(0, BlockHeavyImports())
"""


def blocked_env(
    folder: Path, also_block: tuple[str, ...] = (), blocked: tuple[str, ...] = BLOCKED
) -> dict[str, str]:
    """Environment whose Python processes cannot import the `blocked` packages, nor also_block
    (e.g. pydicom, to see a device without the optional DICOM requirements)."""
    blocker = folder / "import blocker"
    blocker.mkdir(parents=True, exist_ok=True)
    (blocker / "sitecustomize.py").write_text(SITECUSTOMIZE.format(blocked=blocked + also_block))
    log = folder / "blocked imports.log"
    return dict(os.environ, PYTHONPATH=str(blocker), BLOCKED_IMPORTS_LOG=str(log))


def attempted_imports(env: dict[str, str]) -> list[str]:
    log = Path(env["BLOCKED_IMPORTS_LOG"])
    return log.read_text().split() if log.exists() else []


def run_blocked(
    args, folder: Path, also_block: tuple[str, ...] = (), **kwargs
) -> subprocess.CompletedProcess:
    """Run args with the blocker; fail if anything tried to import a BLOCKED package (trying
    one of also_block is allowed: that is how optional packages are found missing)."""
    env = {**blocked_env(folder, also_block), **kwargs.pop("env", {})}
    result = subprocess.run(args, env=env, capture_output=True, text=True, timeout=120, **kwargs)
    attempted = [name for name in attempted_imports(env) if name.partition(".")[0] in BLOCKED]
    assert attempted == [], attempted
    return result


def one_error_line(stderr: str) -> str:
    """The single `error: ...` line of a failed run (the interpreter may log INFO lines)."""
    assert "Traceback" not in stderr, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, stderr
    return errors[0]


def make_venv(folder: Path) -> None:
    """Stand-in for the rpi README's step 3 (no network here): a real venv at folder/.venv
    seeing this test's packages."""
    subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", str(folder / ".venv")], check=True
    )
    purelib = subprocess.run(
        [
            str(folder / ".venv/bin/python"),
            "-c",
            "import sysconfig; print(sysconfig.get_paths()['purelib'])",
        ],  # noqa: E501
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    Path(purelib, "test-packages.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")


def script(device: Path, *args) -> list[str]:
    return [sys.executable, str(device / "infer.py"), *map(str, args)]


def predict(*args) -> list[str]:
    return [str(EDGEXRAY), "predict", *map(str, args)]


def run(args: list[str], **kwargs) -> subprocess.CompletedProcess:
    # A subprocess with a timeout: a hang must fail the test, not stall the suite.
    return subprocess.run(args, capture_output=True, text=True, timeout=90, **kwargs)
