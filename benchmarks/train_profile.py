"""Where a training step's time goes: the model alone, on random arrays in memory.

    python benchmarks/train_profile.py [--batch 32] [--intra 2] [--inter 2] [--steps 20]
        [--stem conv|s2d|strided] [--trace DIR]

Prints seconds per step and per 4448-film epoch (the train split's size at val 0.15),
the forward pass alone, and with --trace the profiler's time per TensorFlow op type and
per op (the top ones), from the XPlane trace, and how busy each core was (user CPU of
the process over wall time). No data, no input pipeline: the model's own cost.

    ONEDNN_MAX_CPU_ISA=AVX2 python benchmarks/train_profile.py ...
        the same on oneDNN's AVX2 kernels, as a CPU without AVX-512 would run them.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import resource
import sys
import time
from pathlib import Path

EPOCH_FILMS = 4448


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--intra", type=int, default=0)
    parser.add_argument("--inter", type=int, default=0)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--width", type=int, default=12)
    parser.add_argument("--stem", default=None, help="a model.STEMS name (default: the model's)")
    parser.add_argument("--deterministic", type=int, default=1)
    parser.add_argument("--trace", type=Path, default=None)
    parser.add_argument("--json", type=Path, default=None, help="append one line of results")
    args = parser.parse_args()

    from edgexray.compat import keras, tf
    from edgexray.pipeline import model as model_module

    if args.intra:
        tf.config.threading.set_intra_op_parallelism_threads(args.intra)
    if args.inter:
        tf.config.threading.set_inter_op_parallelism_threads(args.inter)
    keras.utils.set_random_seed(0)
    if args.deterministic:
        tf.config.experimental.enable_op_determinism()
    build = {"image_size": args.size, "width": args.width}
    if args.stem is not None:
        build["stem"] = args.stem
    model = model_module.build_model(**build)
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=keras.losses.BinaryCrossentropy(from_logits=True),
    )
    rng = __import__("numpy").random.default_rng(0)
    images = rng.random((args.batch, args.size, args.size, 1), dtype="float32")
    labels = rng.integers(0, 2, (args.batch, 1)).astype("float32")
    for _ in range(3):  # trace and warm up
        model.train_on_batch(images, labels)
        model.predict_on_batch(images)

    def timed(step, steps) -> tuple[float, float]:
        cpu0 = resource.getrusage(resource.RUSAGE_SELF)
        started = time.perf_counter()
        for _ in range(steps):
            step()
        wall = time.perf_counter() - started
        cpu1 = resource.getrusage(resource.RUSAGE_SELF)
        cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
        return wall / steps, cpu / wall

    train_step, train_cpu = timed(lambda: model.train_on_batch(images, labels), args.steps)
    forward_step, forward_cpu = timed(lambda: model.predict_on_batch(images), args.steps)
    steps_per_epoch = -(-EPOCH_FILMS // args.batch)
    result = {
        "batch": args.batch,
        "intra": args.intra,
        "inter": args.inter,
        "stem": args.stem or "default",
        "size": args.size,
        "width": args.width,
        "deterministic": args.deterministic,
        "parameters": model.count_params(),
        "train_step_s": round(train_step, 4),
        "train_epoch_s": round(train_step * steps_per_epoch, 1),
        "train_cpu_percent": round(100 * train_cpu),
        # CPU seconds an epoch: the work itself, whatever else the machine runs
        "train_cpu_epoch_s": round(train_cpu * train_step * steps_per_epoch, 1),
        "forward_epoch_s": round(forward_step * steps_per_epoch, 1),
        "forward_cpu_percent": round(100 * forward_cpu),
        "forward_cpu_epoch_s": round(forward_cpu * forward_step * steps_per_epoch, 1),
        "load_average": os.getloadavg()[0],
        # oneDNN's widest instruction set allowed (ONEDNN_MAX_CPU_ISA=AVX2 stands in for an
        # AVX2-only CPU on an AVX-512 one); None: whatever the CPU has
        "onednn_max_cpu_isa": os.environ.get("ONEDNN_MAX_CPU_ISA"),
    }
    print(json.dumps(result))
    if args.json:
        with args.json.open("a") as out:
            out.write(json.dumps(result) + "\n")
    if args.trace:
        profile(model, images, labels, args.trace, min(args.steps, 10))


def profile(model, images, labels, logdir: Path, steps: int) -> None:
    """Trace `steps` training steps and print the time per op type and the top ops."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    from edgexray.compat import tf

    tf.profiler.experimental.start(str(logdir))
    for _ in range(steps):
        model.train_on_batch(images, labels)
    tf.profiler.experimental.stop()
    path = sorted(logdir.rglob("*.xplane.pb"))[-1]
    space = xplane_pb2.XSpace()
    space.ParseFromString(path.read_bytes())
    by_type, by_name = collections.Counter(), collections.Counter()
    busy = collections.Counter()
    for plane in space.planes:
        if plane.name != "/host:CPU":
            continue
        names = {k: v.name for k, v in plane.event_metadata.items()}
        for line in plane.lines:
            # TensorFlow's executor runs each op kernel as an event named "name:Type".
            for event in line.events:
                name = names.get(event.metadata_id, "")
                if ":" not in name or name.startswith(("$", "tf_data")):
                    continue
                op, _, kind = name.rpartition(":")
                if not kind or " " in kind or "/" in kind:
                    continue
                seconds = event.duration_ps / 1e12
                by_type[kind] += seconds
                layer_op = op.replace("gradient_tape/", "grad ").replace(model.name + "/", "")
                by_name[layer_op, kind] += seconds
                busy[line.name] += seconds
    total = sum(by_type.values())
    print(f"\nop time over {steps} steps: {total:.2f} s in ops ({total / steps:.3f} s a step)")
    print(f"{'op type':<40} {'s/step':>8} {'share':>6}")
    for kind, seconds in by_type.most_common(25):
        print(f"{kind:<40} {seconds / steps:>8.4f} {seconds / total:>6.1%}")
    print(f"\n{'op':<60} {'s/step':>8} {'share':>6}")
    for (op, kind), seconds in by_name.most_common(40):
        print(f"{(op + ':' + kind)[:60]:<60} {seconds / steps:>8.4f} {seconds / total:>6.1%}")
    print("\nthreads running ops:", {k: round(v / steps, 3) for k, v in busy.most_common(8)})


if __name__ == "__main__":
    sys.exit(main())
