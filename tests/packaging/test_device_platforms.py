"""The rpi bundle on every Raspberry Pi OS it supports: 64-bit and 32-bit armhf Bookworm.

64-bit installs ai-edge-litert; armhf, tflite-runtime 2.14 with numpy<2, numpy and Pillow from
Debian. The README's step 3 is run with stand-ins for dpkg, apt, sudo and python3 that log
what they are asked, so the test sees which requirement file each architecture installs; the
real installs are benchmarks/emulated_check.sh's (under qemu, `pytest -m slow`).
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from edgexray.edge_runtime import REFERENCE_MODEL
from edgexray.export.bundle import BundleConfig, make_bundle

STUBS = {
    "dpkg": 'echo "$ARCH"',
    "sudo": '"$@"',
    "apt": 'echo "apt $*" >> "$LOG"',
    # python3 -m venv [opts] DIR: log it, and make DIR/bin/pip log its own arguments.
    "python3": 'echo "python3 $*" >> "$LOG"; dir="${@: -1}"; mkdir -p "$dir/bin"\n'
    'printf \'#!/bin/bash\\necho "pip $*" >> "$LOG"\\n\' > "$dir/bin/pip"\n'
    'chmod +x "$dir/bin/pip"',
}


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("bundles") / "rpi bundle"
    make_bundle(BundleConfig(str(REFERENCE_MODEL), "rpi", str(out)))
    return out


def step_3(readme: str) -> str:
    """The first shell block of the README's section 3, as a user would paste it."""
    section = readme.split("\n## 3.", 1)[1].split("\n## 4.", 1)[0]
    return re.search(r"```sh\n(.*?)```", section, re.S).group(1)


@pytest.mark.parametrize(
    ("arch", "wanted"),
    [
        (
            "arm64",
            [
                "apt install -y python3-venv",
                "python3 -m venv .venv",
                "pip install --only-binary=:all: -r requirements.txt",
            ],
        ),
        (
            "armhf",
            [
                "apt install -y python3-venv",
                "apt install -y python3-numpy python3-pil",
                "python3 -m venv --system-site-packages .venv",
                "pip install --only-binary=:all: -r requirements-armhf.txt",
            ],
        ),
    ],
)
def test_readme_step_3_installs_the_requirements_of_the_pis_architecture(
    bundle, tmp_path, arch, wanted
):
    stubs = tmp_path / "stub bin"
    stubs.mkdir()
    for name, body in STUBS.items():
        (stubs / name).write_text(f"#!/bin/bash\n{body}\n")
        (stubs / name).chmod(0o755)
    device = tmp_path / "pi"
    subprocess.run(["cp", "-r", str(bundle), str(device)], check=True)
    log = tmp_path / "commands.log"
    subprocess.run(
        ["bash", "-ec", step_3((device / "README.md").read_text())],
        cwd=device,
        check=True,
        env={"PATH": f"{stubs}:/usr/bin:/bin", "ARCH": arch, "LOG": str(log)},
    )
    assert log.read_text().splitlines() == wanted
    assert (device / wanted[-1].split()[-1]).is_file()


def requirements(path: Path) -> list[Requirement]:
    lines = [line for line in path.read_text().splitlines() if line and line[0] != "#"]
    return [Requirement(line) for line in lines]


def test_armhf_requirements_pin_tflite_runtime_and_numpy_1_and_accept_debians_packages(bundle):
    wanted = {r.name: r for r in requirements(bundle / "requirements-armhf.txt")}
    assert set(wanted) == {"tflite-runtime", "numpy", "pillow"}
    assert str(wanted["tflite-runtime"].specifier) == "==2.14.0"
    assert not wanted["numpy"].specifier.contains("2.0.0")  # 2.14 crashes under NumPy 2
    # Bookworm's python3-numpy and python3-pil, which step 3 installs for pip to find.
    assert wanted["numpy"].specifier.contains("1.24.2")
    assert wanted["pillow"].specifier.contains("9.4.0")


@pytest.mark.parametrize(
    ("python", "litert"), [("3.9", "==2.1.0"), ("3.11", "==2.3.0"), ("3.13", "==2.3.0")]
)
def test_64_bit_requirements_give_one_litert_for_each_raspberry_pi_os_python(
    bundle, python, litert
):
    environment = {"python_version": python, "platform_machine": "aarch64"}
    chosen = [
        r
        for r in requirements(bundle / "requirements.txt")
        if r.marker is None or r.marker.evaluate(environment)
    ]
    assert [str(r.specifier) for r in chosen if r.name == "ai-edge-litert"] == [litert]
    assert {r.name for r in chosen} == {"ai-edge-litert", "numpy", "pillow"}
