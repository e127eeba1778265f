#!/usr/bin/env bash
# The rpi bundle on an emulated Raspberry Pi: Debian under qemu-user, one of
#   bookworm-arm64  64-bit Raspberry Pi OS Bookworm (Python 3.11, ai-edge-litert), the default
#   trixie-arm64    64-bit Raspberry Pi OS Trixie (Python 3.13, ai-edge-litert)
#   bookworm-armhf  32-bit Raspberry Pi OS Bookworm (Python 3.11, tflite-runtime 2.14, numpy<2)
#
#   sudo bash benchmarks/emulated_check.sh [--platform P] [--bundle DIR] [--data DIR] [--films N]
#       [--allow-one-step]
#
# Builds (once per platform, cached as a tarball under ${XDG_CACHE_HOME:-~/.cache}/edgexray/) a
# root filesystem with mmdebstrap, copies the rpi bundle of edgexray/models/edgexray-int8.tflite
# (or the whole --bundle DIR) into it, runs the bundle README's own steps 2 and 3 there
# (sha256sum, venv, pip install of the platform's wheels, check/check.py), classifies
# check/image.png and N real films (default 50, plus 10 of them resized to other sizes) with
# infer.py, and requires every probability and label to equal the same script's on this
# machine, and every model input (the preprocessed bytes) to be byte-identical.
# --allow-one-step also passes probabilities one output quantization step apart (with the
# same label): XNNPACK's int8 kernels round differently on x86 and ARM (benchmarks/README.md).
# Exit 0: all identical; 1: something differs; 2: it could not run (one `error:` line).
# benchmarks/emulated_platforms.sh runs every platform, one after the other.
#
# Needs root (chroot and mounts) and Debian's packages:
#   apt-get install -y mmdebstrap qemu-user-static binfmt-support
# QEMU_CPU picks the emulated CPU (default: the platform's, below). Emulated latency says
# nothing about a real Pi: only the outputs are compared.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
APT_LINE="apt-get update && apt-get install -y mmdebstrap qemu-user-static binfmt-support"
# Platform -> Debian suite, architecture, qemu name, default QEMU_CPU and the packages
# baked into the root filesystem: what the bundle README's step 3 installs with apt (a
# minbase root has no package lists, so `apt install` there must find them installed).
# cortex-a72 is a Pi 4's core; cortex-a7 the oldest ARMv7 Pi's (Pi 2), the least an armhf
# wheel may assume.
declare -A PLATFORMS=(
    [bookworm-arm64]="bookworm arm64 aarch64 cortex-a72 python3,python3-venv,ca-certificates"
    [trixie-arm64]="trixie arm64 aarch64 cortex-a72 python3,python3-venv,ca-certificates"
    [bookworm-armhf]="bookworm armhf arm cortex-a7 python3,python3-venv,ca-certificates,python3-numpy,python3-pil"
)
started=$SECONDS

die() {
    echo "error: $*" >&2
    exit 2
}

bundle=""
data=""
count=50
one_step=0
platform=bookworm-arm64
while [ $# -gt 0 ]; do
    case "$1" in
        --platform) platform=${2:?--platform needs a name}; shift 2 ;;
        --allow-one-step) one_step=1; shift ;;
        --bundle) bundle=$(realpath "${2:?--bundle needs a folder}"); shift 2 ;;
        --data) data=$(realpath "${2:?--data needs a folder}"); shift 2 ;;
        --films) count=${2:?--films needs a number}; shift 2 ;;
        *) die "unknown argument $1 (see the comment at the top of $0)" ;;
    esac
done

[ -n "${PLATFORMS[$platform]:-}" ] ||
    die "unknown platform $platform: one of ${!PLATFORMS[*]}"
read -r SUITE ARCH QEMU_NAME default_cpu PACKAGES <<<"${PLATFORMS[$platform]}"

[ "$(id -u)" = 0 ] || die "needs root for chroot and mounts: run it with sudo"
command -v mmdebstrap >/dev/null || die "mmdebstrap is missing: $APT_LINE"
command -v "qemu-$QEMU_NAME-static" >/dev/null || die "qemu-user-static is missing: $APT_LINE"
command -v update-binfmts >/dev/null || die "binfmt-support is missing: $APT_LINE"
command -v zstd >/dev/null || die "zstd is missing: apt-get install -y zstd"

# binfmt_misc lets the kernel hand ARM binaries to qemu; containers often lack the mount.
if [ ! -e /proc/sys/fs/binfmt_misc/status ]; then
    mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc 2>/dev/null ||
        die "cannot mount binfmt_misc (a container without it cannot run $ARCH binaries)"
fi
update-binfmts --enable "qemu-$QEMU_NAME" >/dev/null 2>&1 || true
grep -qx enabled "/proc/sys/fs/binfmt_misc/qemu-$QEMU_NAME" 2>/dev/null ||
    die "binfmt for qemu-$QEMU_NAME is not enabled (update-binfmts --enable qemu-$QEMU_NAME): $APT_LINE"

# The host side: the project's Python (CI's activated venv, else ./.venv) and the data.
if [ -n "${VIRTUAL_ENV:-}" ]; then
    python="$VIRTUAL_ENV/bin/python"
elif [ -x .venv/bin/python ]; then
    python="$repo/.venv/bin/python"
else
    python=$(command -v python3)
fi
if [ -z "$data" ]; then
    for candidate in "${EDGEXRAY_DATA:-}" data/chest_xray ../shared/data/chest_xray; do
        if [ -n "$candidate" ] && [ -d "$candidate" ]; then data=$(realpath "$candidate"); break; fi
    done
fi
[ -n "$data" ] || die "no chest X-ray data: give --data DIR (NORMAL/ and PNEUMONIA/ inside)"

cache="${XDG_CACHE_HOME:-$HOME/.cache}/edgexray"
rootfs_tar="$cache/rootfs-$SUITE-$ARCH-${PACKAGES//,/-}.tar.zst"
work=$(mktemp -d "${TMPDIR:-/var/tmp}/edgexray-emulated.XXXXXX")
root="$work/root"
cleanup() {
    for mount_point in "$root/dev" "$root/proc"; do
        if mountpoint -q "$mount_point" 2>/dev/null; then umount -l "$mount_point"; fi
    done
    rm -rf "$work"
}
trap cleanup EXIT

if [ ! -s "$rootfs_tar" ]; then
    echo "building the $SUITE $ARCH root filesystem (once; a few minutes) ..."
    mkdir -p "$cache"
    partial_tar="${rootfs_tar%.tar.zst}.partial.tar.zst"  # mmdebstrap goes by the suffix
    build_started=$SECONDS
    # The suite and its -updates only: a throwaway root needs no security archive, whose
    # mirror here once served an index of the wrong size and failed the whole build.
    sources="deb http://deb.debian.org/debian $SUITE main
deb http://deb.debian.org/debian $SUITE-updates main"
    if ! mmdebstrap --arch="$ARCH" --variant=minbase --include="$PACKAGES" "$SUITE" \
        "$partial_tar" - <<<"$sources" >"$work/mmdebstrap.log" 2>&1; then
        tail -5 "$work/mmdebstrap.log" >&2
        rm -f "$partial_tar"
        die "mmdebstrap failed (last lines above)"
    fi
    mv -f "$partial_tar" "$rootfs_tar"  # a cached tarball is whole or absent
    echo "root filesystem: $((SECONDS - build_started)) s, $(du -h "$rootfs_tar" | cut -f1)"
fi
mkdir "$root"
tar --zstd -xpf "$rootfs_tar" -C "$root"

# The bundle (built here from the shipped model unless given) and the films.
if [ -z "$bundle" ]; then
    "$(dirname "$python")/edgexray" bundle --model edgexray/models/edgexray-int8.tflite --target rpi \
        --out "$work/bundle" >/dev/null
    bundle="$work/bundle"
fi
[ -f "$bundle/infer.py" ] && [ -f "$bundle/README.md" ] || die "$bundle is not an rpi bundle"
cp -r "$bundle" "$root/root/edgexray"
model=$(basename "$(ls "$root"/root/edgexray/*.tflite)")
"$python" - "$data" "$root/root/xrays" "$count" <<'EOF'
import sys
from pathlib import Path

from PIL import Image

data, out, count = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
out.mkdir()
films = []
for label in ("NORMAL", "PNEUMONIA"):
    found = sorted(p for p in data.rglob(f"{label}/*") if p.suffix.lower() in (".jpeg", ".jpg", ".png"))
    films += found[: (count + 1) // 2]
if len(films) < count:
    sys.exit(f"error: only {len(films)} films under {data}, {count} wanted")
for i, film in enumerate(films[:count]):
    (out / f"{i:03d} {film.name}").write_bytes(film.read_bytes())
# Other sizes, so both resize passes shrink and grow as on real devices' films.
sizes = [(1000, 1400), (301, 517), (2000, 1600), (97, 1203), (640, 480),
         (129, 127), (1203, 97), (333, 128), (64, 48), (1400, 1000)]
for i, size in enumerate(sizes):
    Image.open(films[i]).convert("L").resize(size).save(out / f"resized {size[0]}x{size[1]}.png")
EOF

# Only /proc and /dev go in: with /sys bound in, LiteRT's cpuinfo crashes qemu 7.2.
mount -t proc proc "$root/proc"
mount --bind /dev "$root/dev"
cp /etc/resolv.conf "$root/etc/resolv.conf"
qemu_cpu=${QEMU_CPU:-$default_cpu}
in_chroot() {  # env -i: the host's PIP_* and proxy variables must not leak in
    env -i HOME=/root LANG=C.UTF-8 QEMU_CPU="$qemu_cpu" \
        PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        chroot "$root" /bin/sh -ec "$1"
}
# A host that reaches PyPI through its own certificate authority needs it in there too.
if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
    cp /usr/local/share/ca-certificates/*.crt "$root/usr/local/share/ca-certificates/"
    in_chroot "update-ca-certificates >/dev/null 2>&1"
fi

# The README's own steps 2 and 3, as written, every `sudo` dropped (the chroot runs as root).
steps=$(awk '/^## 2\./ {on = 1} /^## 4\./ {on = 0} on && /^```/ {block = !block; next}
    on && block' "$root/root/edgexray/README.md" | sed 's/^\([[:space:]]*\)sudo /\1/')
[ -n "$steps" ] || die "no shell steps found in sections 2 and 3 of the bundle README"
install_started=$SECONDS
if ! in_chroot "$steps" >"$work/steps.log" 2>&1; then
    tail -15 "$work/steps.log" >&2
    die "the bundle README's steps 2-3 failed under emulation (last lines above)"
fi
grep -h "^check passed" "$work/steps.log" || die "check/check.py did not pass"
install_seconds=$((SECONDS - install_started))

run_args="--model $model --threads 1 check/image.png ../xrays"
run_started=$SECONDS
# Exit 4 means some films were refused as out of scope (the drawn check pattern always is):
# their records say so and still carry the probability compared below.
status=0
in_chroot "cd ~/edgexray && .venv/bin/python infer.py $run_args" >"$work/device.jsonl" ||
    status=$?
[ "$status" -eq 0 ] || [ "$status" -eq 4 ] || die "infer.py failed under emulation (exit $status)"
run_seconds=$((SECONDS - run_started))
status=0
(cd "$root/root/edgexray" && "$python" infer.py $run_args) >"$work/host.jsonl" || status=$?
[ "$status" -eq 0 ] || [ "$status" -eq 4 ] || die "infer.py failed on the host (exit $status)"
# The model-input bytes too, so a difference is placed in preprocessing or in the kernels.
cat >"$root/root/input_digests.py" <<'EOF'
import hashlib, json, sys
from edge_runtime import readers  # the bundle's runtime package, as check/check.py uses it
from edge_runtime.classifier import Classifier
classifier = Classifier(sys.argv[1], threads=1)
for path in readers.find(sys.argv[2:]):
    digest = hashlib.sha256(classifier.model_input(path).tobytes()).hexdigest()
    print(json.dumps({"path": str(path), "input_sha256": digest}))
EOF
digest_args="$model check/image.png ../xrays"
in_chroot "cd ~/edgexray && PYTHONPATH=. .venv/bin/python ../input_digests.py $digest_args" \
    >"$work/device-inputs.jsonl" 2>/dev/null || die "the input digests failed under emulation"
(cd "$root/root/edgexray" && PYTHONPATH=. "$python" ../input_digests.py $digest_args) \
    >"$work/host-inputs.jsonl" 2>/dev/null || die "the input digests failed on the host"
cat >"$root/root/versions.py" <<'EOF'
import importlib.metadata as metadata
import platform

import numpy
import PIL

words = [platform.machine(), "Python", platform.python_version(), "numpy", numpy.__version__,
         "Pillow", PIL.__version__]
for runtime in ("ai-edge-litert", "tflite-runtime"):  # infer.py's order of preference
    try:
        words += [runtime, metadata.version(runtime)]
        break
    except metadata.PackageNotFoundError:
        pass
print(*words)
EOF
versions=$(in_chroot "cd ~/edgexray && .venv/bin/python ../versions.py")

"$python" - "$work"/{host,device}.jsonl "$work"/{host,device}-inputs.jsonl <<EOF
import json
import sys

host, arm, host_inputs, arm_inputs = (
    [json.loads(line) for line in open(path)] for path in sys.argv[1:]
)
# A model emitting the logit gets numpy's sigmoid on each side, whose exp may differ in the
# last bit between x86 and ARM: probabilities within 1e-12 count as the same.
def agree(a, b):
    if any(a.get(f) != b.get(f) for f in ("path", "label", "error")):
        return False
    p, q = a.get("probability"), b.get("probability")
    return p == q or (p is not None and q is not None and abs(p - q) <= 1e-12)
same = [a for a, b in zip(host, arm) if agree(a, b)]
sidecar = json.load(open("$root/root/edgexray/${model%.tflite}.json"))
step = float(sidecar["output"].get("quantization", {}).get("scale", 0.0))  # 0: float output
one_step = [
    a for a, b in zip(host, arm)
    if a.get("label") == b.get("label") and a.get("path") == b.get("path")
    and 1e-12 < abs(a.get("probability", 0) - b.get("probability", 0)) <= step * 1.001
]
same_inputs = [a for a, b in zip(host_inputs, arm_inputs) if a == b]
errors = [r for r in host + arm if "error" in r]
print(f"emulated $platform ({'$versions'}; QEMU_CPU=$qemu_cpu): {len(same)}/{len(host)} "
      f"records identical to the host (probability and label), {len(same_inputs)}/"
      f"{len(host_inputs)} model inputs byte-identical, {len(one_step)} one output step "
      f"({step:g}) apart with the same label; install $install_seconds s, "
      f"classify $run_seconds s, total $((SECONDS - started)) s")
complete = len(host) == len(arm) == len(host_inputs) == len(arm_inputs) >= $count + 1
for a, b, ia, ib in zip(host, arm, host_inputs, arm_inputs):
    if not agree(a, b) or ia != ib:
        where = "same input bytes" if ia == ib else "different input bytes"
        print(f"  differs ({where}): {a['path']}: host {a.get('probability')} "
              f"{a.get('label')}, $ARCH {b.get('probability')} {b.get('label')}")
allowed = len(same) + ($one_step and len(one_step))
if allowed != len(host) or len(same_inputs) != len(host_inputs) or errors or not complete:
    print("error: the emulated Pi does not give the host's outputs", file=sys.stderr)
    sys.exit(1)
EOF
