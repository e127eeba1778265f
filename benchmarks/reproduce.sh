#!/usr/bin/env bash
# Reproduce the published edgexray benchmark from a fresh checkout.
#
# Usage (from anywhere; paths are relative to the repository root):
#   benchmarks/reproduce.sh
#
# It installs edgexray with its plotting extra into a virtual environment, trains on the
# chest X-ray data (training included: about an hour or more on 2 CPU cores), prunes,
# exports every TFLite variant, checks the recall gate, benchmarks every variant and
# copies the results into benchmarks/results/:
#   benchmark.md, benchmark.json, *.png   the table, the raw numbers and the plots
#   machine.txt                           CPU, cores, OS, Python, packages, git commit
#   stages.tsv                            wall time and peak memory of every stage
#                                         (/usr/bin/time -v), with each exit status
#   command.txt                           the exact commands that ran
#
# Settings (environment variables):
#   DATA=../shared/data/chest_xray   data folder (NORMAL/ PNEUMONIA/, or a Kaggle root)
#   RUN=runs/reproduce               run directory to write (resumed if it exists)
#   RESULTS=benchmarks/results       where the results are copied
#   VENV=.venv                       virtual environment (created when missing)
#   SETUP=1                          0 skips `pip install -e .[plots]`
#   MODE=auto                        auto: `edgexray run` when the CLI has it, else the
#                                    stages one by one; stages: always one by one (gives
#                                    peak memory per stage; `run` gives it for the whole job)
#   TRAIN_ARGS=""                    extra `edgexray train` options (stages mode), e.g.
#                                    "--epochs 1 --max-train-images 200" for a smoke test
#   BENCH_ARGS=""                    extra `edgexray benchmark` options, e.g. "--runs 200"
#
# A failed recall gate (verify exits 1) does not stop the benchmark: the table must show
# the miss. The script then exits with verify's status after copying the results.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
DATA="${DATA:-../shared/data/chest_xray}"
RUN="${RUN:-runs/reproduce}"
RESULTS="${RESULTS:-benchmarks/results}"
VENV="${VENV:-.venv}"
SETUP="${SETUP:-1}"
MODE="${MODE:-auto}"
TRAIN_ARGS="${TRAIN_ARGS:-}"
BENCH_ARGS="${BENCH_ARGS:-}"

if [ ! -d "$DATA" ]; then
    echo "error: data folder not found: $DATA (set DATA=...)" >&2
    exit 2
fi
if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
fi
# shellcheck disable=SC1091
. "$VENV/bin/activate"
if [ "$SETUP" = "1" ]; then
    python -m pip install --quiet --upgrade pip
    python -m pip install --quiet -e ".[plots]"
fi

mkdir -p "$RESULTS" "$RUN"
STAGES_TSV="$RESULTS/stages.tsv"
COMMANDS="$RESULTS/command.txt"
printf 'stage\texit\twall_clock\tpeak_rss_kb\n' >"$STAGES_TSV"
: >"$COMMANDS"

{
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "git commit: $(git rev-parse HEAD 2>/dev/null || echo unknown)"
    echo "git dirty files: $(git status --porcelain 2>/dev/null | wc -l)"
    echo "cpu: $(grep -m1 'model name' /proc/cpuinfo 2>/dev/null | cut -d: -f2- | sed 's/^ //' || uname -p)"
    echo "cores: $(nproc 2>/dev/null || getconf _NPROCESSORS_ONLN)"
    echo "memory: $(grep -m1 MemTotal /proc/meminfo 2>/dev/null | awk '{print $2 " kB"}')"
    echo "os: $(uname -srmo 2>/dev/null || uname -a)"
    echo "python: $(python --version 2>&1)"
    echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || uptime)"
    echo "packages:"
    python -m pip list --format=freeze 2>/dev/null |
        grep -iE '^(edgexray|tensorflow|tf-keras|tf_keras|tensorflow-model-optimization|ai-edge-litert|numpy|pillow|matplotlib|typer)=' |
        sed 's/^/  /' || true
} >"$RESULTS/machine.txt"

# run_stage NAME COMMAND...: run under /usr/bin/time -v, append wall time and peak memory.
run_stage() {
    local name="$1"
    shift
    local timing status=0
    timing="$(mktemp)"
    echo "$*" >>"$COMMANDS"
    echo "== $name: $*" >&2
    /usr/bin/time -v -o "$timing" "$@" || status=$?
    local wall peak
    wall="$(sed -n 's/.*Elapsed (wall clock) time (h:mm:ss or m:ss): //p' "$timing")"
    peak="$(sed -n 's/.*Maximum resident set size (kbytes): //p' "$timing")"
    printf '%s\t%s\t%s\t%s\n' "$name" "$status" "${wall:-?}" "${peak:-?}" >>"$STAGES_TSV"
    rm -f "$timing"
    return "$status"
}

if [ ! -x /usr/bin/time ]; then
    echo "error: /usr/bin/time is missing (apt-get install time)" >&2
    exit 2
fi

if [ "$MODE" = "auto" ] && edgexray run --help >/dev/null 2>&1; then
    MODE=run
else
    MODE=stages
fi

gate=0
if [ "$MODE" = "run" ]; then
    # One process for the whole job: stages.tsv holds its total; edgexray run prints the
    # seconds of every stage and the run directory keeps them in stages.json.
    run_stage run edgexray run --data "$DATA" --out "$RUN" || gate=$?
    [ -f "$RUN/stages.json" ] && cp "$RUN/stages.json" "$RESULTS/run_stages.json"
else
    # shellcheck disable=SC2086  # TRAIN_ARGS and BENCH_ARGS are option lists
    run_stage train edgexray train --data "$DATA" --out "$RUN" $TRAIN_ARGS
    run_stage prune edgexray prune "$RUN"
    run_stage quantize edgexray quantize "$RUN" --method all
    run_stage verify edgexray verify "$RUN" || gate=$?
    # shellcheck disable=SC2086
    run_stage benchmark edgexray benchmark "$RUN" $BENCH_ARGS
fi
if [ -n "$BENCH_ARGS" ] && [ "$MODE" = "run" ]; then
    # shellcheck disable=SC2086
    run_stage benchmark edgexray benchmark "$RUN" $BENCH_ARGS
fi

if [ ! -f "$RUN/benchmark/benchmark.json" ]; then
    echo "error: no benchmark was written to $RUN/benchmark (see the stage output above)" >&2
    exit 1
fi
cp "$RUN/benchmark/benchmark.md" "$RUN/benchmark/benchmark.json" "$RESULTS/"
find "$RUN/benchmark" -maxdepth 1 -name '*.png' -exec cp {} "$RESULTS/" \;
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || uptime)" >>"$RESULTS/machine.txt"

echo "results: $RESULTS" >&2
column -t -s "$(printf '\t')" "$STAGES_TSV" >&2 || cat "$STAGES_TSV" >&2
exit "$gate"
