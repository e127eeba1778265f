#!/usr/bin/env bash
# The base install (`pip install edgexray`: no extras, so no TensorFlow), from the built
# wheel into a clean venv of PYTHON (default python3), outside the source tree so nothing
# comes from the checkout (the shipped model and the bundle templates are package data):
# predict, evaluate and calibrate of the shipped .tflite on 20 real films of
# ../shared/data/chest_xray/test, and train refusing with the pip line. Run by .ci/run.
#
#   bash benchmarks/base_install_check.sh [PYTHON]
set -euo pipefail
cd "$(dirname "$0")/.."
python=${1:-python3}
say() { echo "base install ($("$python" --version)): $*"; }
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
"$python" -m pip wheel --quiet --no-deps -w "$scratch/dist" . 2>/dev/null
"$python" -m venv "$scratch/venv"
"$scratch/venv/bin/python" -m pip install --quiet "$scratch"/dist/edgexray-*.whl
light="$scratch/venv/bin/edgexray"
if "$scratch/venv/bin/python" -c 'import tensorflow' 2>/dev/null; then
  say "it brought TensorFlow" >&2; exit 1
fi
shopt -s nullglob
normal=("$PWD"/../shared/data/chest_xray/test/NORMAL/*.jpeg)
pneumonia=("$PWD"/../shared/data/chest_xray/test/PNEUMONIA/*.jpeg)
if [ "${#normal[@]}" -lt 10 ] || [ "${#pneumonia[@]}" -lt 10 ]; then
  say "../shared/data/chest_xray/test not found; commands not run" >&2
  exit 0
fi
site="$scratch/site sample"
mkdir -p "$site/NORMAL" "$site/PNEUMONIA"
cp "${normal[@]:0:10}" "$site/NORMAL/"
cp "${pneumonia[@]:0:10}" "$site/PNEUMONIA/"
cd "$scratch"
model=$("$scratch/venv/bin/python" -c 'from edgexray.edge_runtime import REFERENCE_MODEL; print(REFERENCE_MODEL)')

record=$("$light" predict "${normal[0]}")
say "predict: $record"
case "$record" in
  *'"label": "NORMAL"'* | *'"label": "PNEUMONIA"'*) ;;
  *) say "predict gave no label" >&2; exit 1 ;;
esac
"$light" evaluate --model "$model" --data "$site" >evaluate.txt
grep -q "^data .*20 images" evaluate.txt && grep -q "^recall " evaluate.txt
say "evaluate: $(grep "^recall " evaluate.txt)"
"$light" calibrate --model "$model" --data "$site" --out calibrated --folds 2 --allow-point-estimate \
  >calibrate.txt
[ -s "calibrated/$(basename "${model%.tflite}").json" ]
say "calibrate: $(grep "^threshold " calibrate.txt)"
status=0
"$light" train --data "$site" --out run 2>train.err || status=$?
if [ "$status" -ne 2 ] || ! grep -q '^error: .*pip install "edgexray\[train\]"$' train.err ||
  [ -e run ]; then
  say "train did not refuse with the install line (exit $status):" >&2
  cat train.err >&2; exit 1
fi
say "train refused (exit 2): $(cat train.err)"
