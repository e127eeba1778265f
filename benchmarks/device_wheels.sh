#!/usr/bin/env bash
# Which lines of the rpi bundle's requirement files PyPI can satisfy with a wheel, for each
# Raspberry Pi OS (what `pip install --only-binary=:all: -r ...` on the Pi would find).
#
#   bash benchmarks/device_wheels.sh [PYENV_ROOT]     (default ~/.pyenv)
#
# pip evaluates a file's markers (python_version) for the interpreter running it, not for
# --python-version, so each row runs pip under that Python version (from pyenv). Each line
# is downloaded alone (--no-deps) so the table says which one has no wheel. Raspberry Pi OS
# also asks piwheels.org for 32-bit ARM, which is not reachable from here: PyPI only.
set -euo pipefail
cd "$(dirname "$0")/.."
pyenv_root=${1:-$HOME/.pyenv}
templates=edgexray/export/templates
work=$(mktemp -d "${TMPDIR:-/tmp}/edgexray-wheels.XXXXXX")
trap 'rm -rf "$work"' EXIT

platform_tags() {  # every wheel tag a glibc $2 system of machine $1 accepts
    local arch=$1 glibc_minor=$2
    local tags="--platform linux_$arch --platform manylinux2014_$arch"
    for minor in $(seq 17 "$glibc_minor"); do tags+=" --platform manylinux_2_${minor}_$arch"; done
    echo "$tags"
}

# os  python  machine  glibc minor  requirement file
rows="bullseye-arm64 3.9 aarch64 31 requirements.txt
bookworm-arm64 3.11 aarch64 36 requirements.txt
trixie-arm64 3.13 aarch64 41 requirements.txt
bookworm-armhf 3.11 armv7l 36 requirements-armhf.txt
trixie-armhf 3.13 armv7l 41 requirements-armhf.txt
bookworm-armv6 3.11 armv6l 36 requirements-armhf.txt"
while read -r os version machine glibc file; do
    python=$(ls -d "$pyenv_root"/versions/"$version".*/bin/python 2>/dev/null | tail -1)
    [ -n "$python" ] || { echo "$os: no Python $version under $pyenv_root"; continue; }
    grep -v '^#' "$templates/$file" | grep . | while read -r line; do
        out=$("$python" -m pip download --quiet --no-deps --only-binary=:all: \
            $(platform_tags "$machine" "$glibc") --python-version "$version" \
            -d "$work/$os" "$line" 2>&1) && status=ok || status=fail
        if [ "$status" = ok ] && [ -z "$(ls "$work/$os" 2>/dev/null)" ]; then
            result="not needed here (marker)"
        elif [ "$status" = ok ]; then
            result=$(ls "$work/$os")
        else
            result="NO WHEEL ($(echo "$out" | grep -m1 '^ERROR: No matching' | sed 's/^ERROR: //'))"
        fi
        rm -rf "${work:?}/$os"
        printf '%-15s %-7s %-22s %-40s %s\n' "$os" "$version" "$file" "$line" "$result"
    done
done <<<"$rows"
