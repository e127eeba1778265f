#!/usr/bin/env bash
# The rpi bundle on every emulated Raspberry Pi OS, one after the other (each is slow under
# qemu): 64-bit Bookworm and Trixie, 32-bit (armhf) Bookworm. Results in benchmarks/README.md.
#
#   sudo bash benchmarks/emulated_platforms.sh [emulated_check.sh's options]
#
# Each platform's summary goes to stdout and its full output to
# benchmarks/results/emulated-<platform>.txt; exit 1 if any platform failed.
set -uo pipefail
cd "$(dirname "$0")/.."
failed=0
for platform in bookworm-arm64 trixie-arm64 bookworm-armhf; do
    log="benchmarks/results/emulated-$platform.txt"
    echo "== $platform ($(date -u +%FT%TZ))"
    nice -n 10 bash benchmarks/emulated_check.sh --platform "$platform" "$@" >"$log" 2>&1
    status=$?
    echo "exit $status" >>"$log"
    grep -E "^(emulated|error|  differs)" "$log" || tail -3 "$log"
    [ "$status" -eq 0 ] || failed=1
done
exit "$failed"
