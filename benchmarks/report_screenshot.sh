#!/usr/bin/env bash
# The batch report as a clinician's browser shows it: `edgexray predict --report` on three
# test/ films and one unreadable file, rendered by headless Chromium to docs/report.png
# (docs/heatmaps.md).
#
#   benchmarks/report_screenshot.sh [DATA]     # DATA defaults to ../shared/data/chest_xray
#
# Needs chromium on PATH (Debian: apt-get install chromium). No network: the report is
# self-contained, and Chromium runs with its background networking switched off.
set -euo pipefail
cd "$(dirname "$0")/.."
data=${1:-../shared/data/chest_xray}
chromium=$(command -v chromium || command -v chromium-browser || true)
if [ -z "$chromium" ]; then
  echo "report_screenshot: chromium not found (apt-get install chromium)" >&2
  exit 2
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir "$work/films"
cp "$data/test/PNEUMONIA/person101_bacteria_483.jpeg" "$data/test/PNEUMONIA/person1_virus_6.jpeg" \
   "$data/test/NORMAL/IM-0005-0001.jpeg" "$work/films/"
printf 'not a film\n' > "$work/films/scanner note.png"
repo=$PWD
status=0
(cd "$work" && PYTHONPATH="$repo" edgexray predict films --report report.html \
  > records.jsonl) || status=$?
[ "$status" -eq 3 ] || { echo "report_screenshot: predict exited $status, expected 3" >&2; exit 1; }
"$chromium" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
  --disable-background-networking --disable-component-update --disable-sync \
  --user-data-dir="$work/profile" --screenshot="$work/report.png" --window-size=1200,1600 \
  "file://$work/report.html" 2> "$work/chromium.log"
# A 256-colour palette keeps the PNG small for the README; the films stay readable.
python - "$work/report.png" docs/report.png <<'PY'
import sys

from PIL import Image

shot = Image.open(sys.argv[1]).convert("RGB")
shot.quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(
    sys.argv[2], optimize=True
)
PY
ls -l docs/report.png
