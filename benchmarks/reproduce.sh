#!/usr/bin/env bash
# Reproduce the published edgexray results from a fresh checkout, training included.
#
# Usage, from a clone that sits next to shared/ (so ../shared/data/chest_xray exists):
#   benchmarks/reproduce.sh
#
# It runs the README's first command (a venv, `pip install -e .[train,plots]`, `edgexray run`)
# under /usr/bin/time -v, the stand-alone runtime's cold-start benchmark, and copies into
# benchmarks/results/:
#   report.md                 the run's report (config, split, metrics, gate, benchmark)
#   benchmark.md/.json, *.png the benchmark table, raw numbers and plots
#   metrics.json quantize.json verify.json stages.json   the run's own records
#   coldstart.json            cold start and peak RSS: edge script vs TensorFlow
#   machine.txt               CPU, cores, OS, Python, packages, commit, wall time, peak RSS
# and copies the model the run selected for devices to edgexray/models/edgexray-int8.tflite (+ .json).
#
# Settings (environment variables): DATA (default ../shared/data/chest_xray),
# RUN (runs/default), RESULTS (benchmarks/results), VENV (.venv).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
DATA="${DATA:-../shared/data/chest_xray}"
RUN="${RUN:-runs/default}"
RESULTS="${RESULTS:-benchmarks/results}"
VENV="${VENV:-.venv}"

[ -d "$DATA" ] || { echo "error: data folder not found: $DATA (set DATA=...)" >&2; exit 2; }
[ -x /usr/bin/time ] || { echo "error: /usr/bin/time is missing (apt-get install time)" >&2; exit 2; }

python3 -m venv "$VENV"
# shellcheck disable=SC1091
. "$VENV/bin/activate"
python -m pip install --quiet --upgrade pip
python -m pip install --quiet -e ".[train,plots]"

mkdir -p "$RESULTS"
{
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "git commit: $(git rev-parse HEAD 2>/dev/null || echo unknown)"
    echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')"
    echo "cpu int8 features: $(python -c 'from edgexray.benchmarks.machine import cpu_model_and_features as f; print(" ".join(f()[1]) or "none listed")')"
    echo "cores: $(nproc)"
    echo "memory: $(grep -m1 MemTotal /proc/meminfo | awk '{print $2 " kB"}')"
    echo "os: $(uname -srmo)"
    echo "python: $(python --version 2>&1)"
    echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "packages:"
    python -m pip list --format=freeze 2>/dev/null |
        grep -iE '^(edgexray|tensorflow|tf[-_]keras|tensorflow-model-optimization|ai-edge-litert|numpy|pillow|matplotlib|typer)=' |
        sed 's/^/  /'
    echo "command: edgexray run --data $DATA --out $RUN"
} >"$RESULTS/machine.txt"

timing="$(mktemp)"
gate=0
/usr/bin/time -v -o "$timing" edgexray run --data "$DATA" --out "$RUN" || gate=$?
{
    echo "edgexray run exit status: $gate"
    echo "wall clock: $(sed -n 's/.*Elapsed (wall clock) time (h:mm:ss or m:ss): //p' "$timing")"
    echo "peak RSS kB: $(sed -n 's/.*Maximum resident set size (kbytes): //p' "$timing")"
    echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
} >>"$RESULTS/machine.txt"
rm -f "$timing"

model="$RUN/$(python -c 'import json,sys; print(json.load(open(sys.argv[1]))["model"])' "$RUN/selected.json")"
# (|| true: head closing the pipe early is not an error under pipefail)
image="$(find "$DATA" -path '*PNEUMONIA*' -name '*.jpeg' | sort | head -n 1 || true)"
python -m edgexray.benchmarks.coldstart "$model" "$image" --keras "$RUN/model.keras" \
    --out "$RESULTS/coldstart.json" || true
# The shipped reference model is the one this run selected for devices.
python -c 'import sys; from edgexray.run import copy_reference_model as c; print(c(*sys.argv[1:]))' \
    "$RUN" edgexray/models

cp "$RUN"/{metrics,quantize,verify,stages}.json "$RESULTS/"
sed 's|](benchmark/|](|g' "$RUN/report.md" >"$RESULTS/report.md"  # plots sit beside it here
cp "$RUN/benchmark/benchmark.md" "$RUN/benchmark/benchmark.json" "$RUN"/benchmark/*.png "$RESULTS/"
echo "results: $RESULTS" >&2
cat "$RESULTS/machine.txt" >&2
exit "$gate"
