#!/usr/bin/env bash
# Install size and time of the wheel: the base install (`pip install edgexray`, no
# TensorFlow) and the training install (`edgexray[train]`), each into a fresh venv.
#
#   bash benchmarks/install_size.sh [PYTHON]      (default python3)
#
# pip runs with --no-cache-dir, so every dependency is downloaded again: the times include
# the network of the machine they ran on. Sizes are `du -sh` of the whole venv (a fresh
# venv with pip alone is printed first, for reference).
set -euo pipefail
cd "$(dirname "$0")/.."
python=${1:-python3}
work=$(mktemp -d "${TMPDIR:-/tmp}/edgexray-install.XXXXXX")
trap 'rm -rf "$work"' EXIT

"$python" -m pip wheel --quiet --no-deps -w "$work/dist" . 2>/dev/null
wheel=$(ls "$work"/dist/edgexray-*.whl)
echo "$("$python" --version), pip $("$python" -m pip --version | cut -d' ' -f2), wheel $(basename "$wheel")"
"$python" -m venv "$work/empty"
echo "empty venv: $(du -sh "$work/empty" | cut -f1)"
for extra in "" "[train]"; do
    venv="$work/venv$extra"
    "$python" -m venv "$venv"
    started=$(date +%s.%N)
    "$venv/bin/python" -m pip install --quiet --no-cache-dir "$wheel$extra" 2>/dev/null
    seconds=$(echo "$(date +%s.%N) - $started" | bc)
    tensorflow=$("$venv/bin/python" -c 'import importlib.util as u; print("with" if u.find_spec("tensorflow") else "without")')
    printf 'pip install edgexray%-8s %5.0f s  %6s  %3d distributions  (%s TensorFlow)\n' \
        "$extra" "$seconds" "$(du -sh "$venv" | cut -f1)" \
        "$("$venv/bin/python" -m pip list --format=freeze 2>/dev/null | wc -l)" "$tensorflow"
done
