"""benchmarks/emulated_check.sh: the rpi bundle on emulated aarch64 against this machine."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

SCRIPT = REPO / "benchmarks" / "emulated_check.sh"
TOOLS = ("mmdebstrap", "qemu-aarch64-static", "update-binfmts", "zstd")
APT_LINE = "apt-get install -y mmdebstrap qemu-user-static binfmt-support"


def test_missing_emulation_tools_give_one_error_line_with_the_apt_command(tmp_path):
    bin_dir = tmp_path / "bin"  # a PATH with the shell's basics and none of TOOLS
    bin_dir.mkdir()
    for tool in ("dirname", "id"):
        (bin_dir / tool).symlink_to(shutil.which(tool))
    result = subprocess.run(
        [shutil.which("bash"), str(SCRIPT)],
        env={"PATH": str(bin_dir), "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2 and result.stdout == ""
    (line,) = result.stderr.splitlines()
    if os.geteuid() == 0:
        assert line == f"error: mmdebstrap is missing: apt-get update && {APT_LINE}"
    else:
        assert line.startswith("error: needs root")


@pytest.mark.slow
def test_rpi_bundle_on_emulated_aarch64_gives_the_hosts_inputs_labels_and_outputs():
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if os.geteuid() != 0 or missing:
        pytest.skip(f"needs root and {', '.join(missing) or 'nothing else'}: {APT_LINE}")
    result = subprocess.run(
        ["bash", str(SCRIPT), "--allow-one-step"],
        env={**os.environ, "VIRTUAL_ENV": sys.prefix},
        capture_output=True,
        text=True,
        timeout=3600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    # 50 films, 10 of them resized to other sizes, and check/image.png.
    assert "61/61 model inputs byte-identical" in result.stdout


def test_unknown_platform_gives_one_error_line_naming_the_known_ones(tmp_path):
    result = subprocess.run(
        [shutil.which("bash"), str(SCRIPT), "--platform", "bullseye-armel"],
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2 and result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert line.startswith("error: unknown platform bullseye-armel: one of ")
    assert set(line.split("one of ")[1].split()) == {
        "bookworm-arm64",
        "trixie-arm64",
        "bookworm-armhf",
    }


def _snippet(name: str) -> str:
    """The Python the script writes to $root/root/NAME, as it writes it."""
    lines = SCRIPT.read_text().splitlines()
    start = lines.index(f"cat >\"$root/root/{name}\" <<'EOF'") + 1
    return "\n".join(lines[start : lines.index("EOF", start)]) + "\n"


def test_the_scripts_device_snippets_run_against_a_bundle_on_this_machine(tmp_path):
    # The emulated run is slow and needs root; its snippets use the bundle's runtime package,
    # whose layout can move under them, so they are run here against a real rpi bundle.
    bundle = tmp_path / "bundle"
    model = REPO / "edgexray" / "models" / "edgexray-int8.tflite"
    made = subprocess.run(
        [
            str(Path(sys.executable).with_name("edgexray")),
            "bundle",
            "--model",
            str(model),
            "--target",
            "rpi",
            "--out",
            str(bundle),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert made.returncode == 0, made.stderr
    for name in ("input_digests.py", "versions.py"):
        (tmp_path / name).write_text(_snippet(name))
    env = {**os.environ, "PYTHONPATH": "."}
    digests = subprocess.run(
        [sys.executable, "../input_digests.py", model.name, "check/image.png"],
        cwd=bundle,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert digests.returncode == 0, digests.stderr
    assert '"path": "check/image.png", "input_sha256": ' in digests.stdout
    versions = subprocess.run(
        [sys.executable, "../versions.py"], cwd=bundle, capture_output=True, text=True, timeout=60
    )
    assert versions.returncode == 0 and "Python" in versions.stdout, versions.stderr
