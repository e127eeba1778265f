"""What EfficientNet-Lite0 costs here, to choose the transfer recipe (issue 34).

    nice -n 10 python benchmarks/efficientnet_lite0_cost.py [--out FILE.json] [--data DIR]

For each input size (224, 160, 128), with the grey 1-channel stem and ImageNet weights:
- a Keras forward pass to the pooled features, batch 32, TensorFlow on 2 threads: wall and
  process CPU time per batch (median of --batches), and the time a features-only pass over
  the 5216 train/ films would take at that rate;
- one Keras training step of the whole network with a 1-logit head, batch 32, and one
  with everything below block TOP_BLOCKS frozen (the last two stages, the 7 x 7 ones at
  224 px, and the head train);
- the full-int8 .tflite (uint8 in, 1 logit out; calibrated on 32 train/ films): its size
  and the p50 of invoke() on 1 thread (XNNPACK, as the device runs it).

CPU seconds are reported next to wall seconds: the machine is shared, and CPU time is the
less disturbed of the two. Run from the repository root.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edgexray.benchmarks.machine import machine_info  # noqa: E402
from edgexray.benchmarks.timing import summarize, time_calls  # noqa: E402

DEFAULT_DATA = ROOT.parent / "shared" / "data" / "chest_xray"
TRAIN_FILMS = 5216
SIZES = (224, 160, 128)
BATCH = 32
THREADS = 2
TOP_BLOCKS = 11  # first block of the stride-32 stages (192 and 320 filters)


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def timed(call, repeats: int) -> dict:
    """Median wall and CPU seconds of `repeats` calls, after one untimed call."""
    call()
    walls, cpus = [], []
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), cpu_seconds()
        call()
        walls.append(time.perf_counter() - wall)
        cpus.append(cpu_seconds() - cpu)
    return {"wall_s": float(np.median(walls)), "cpu_s": float(np.median(cpus)), "runs": repeats}


def films(data: Path, size: int, count: int) -> np.ndarray:
    """`count` train/ films (both classes) as the grey model's input, (count, size, size, 1)."""
    from edgexray.edge_runtime.preprocess import preprocess

    paths = sorted((data / "train" / "NORMAL").glob("*.jpeg"))[: count // 2]
    paths += sorted((data / "train" / "PNEUMONIA").glob("*.jpeg"))[: count - len(paths)]
    spec = {"height": size, "width": size, "normalization": "scale"}
    return np.stack([preprocess(path, spec) for path in paths])


def measure(size: int, data: Path, batches: int, invokes: int) -> dict:
    from edgexray.compat import keras
    from edgexray.edge_runtime import interpreter as runtime
    from edgexray.export import convert
    from edgexray.pipeline.backbones import efficientnet_lite

    images = films(data, size, BATCH)
    features = efficientnet_lite.build(size, channels=1)
    efficientnet_lite.load_imagenet_weights(features)
    forward = timed(lambda: features.predict_on_batch(images), batches)
    per_image = forward["wall_s"] / BATCH

    classifier = efficientnet_lite.build(size, channels=1, classes=1)
    efficientnet_lite.load_imagenet_weights(classifier)
    classifier.compile(
        optimizer=keras.optimizers.Adam(1e-4),
        loss=keras.losses.BinaryCrossentropy(from_logits=True),
    )
    labels = np.array([0.0, 1.0] * (BATCH // 2), np.float32)
    train_step = timed(lambda: classifier.train_on_batch(images, labels), batches)

    top = efficientnet_lite.build(size, channels=1, classes=1)
    efficientnet_lite.load_imagenet_weights(top)
    first_trained = top.layers.index(top.get_layer(f"block{TOP_BLOCKS}_expand_conv"))
    for layer in top.layers[:first_trained]:
        layer.trainable = False
    top.compile(
        optimizer=keras.optimizers.Adam(1e-4),
        loss=keras.losses.BinaryCrossentropy(from_logits=True),
    )
    top_step = timed(lambda: top.train_on_batch(images, labels), batches)

    tflite = convert.to_full_int8(classifier, list(images))
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "int8.tflite"
        path.write_bytes(tflite)
        interpreter = runtime.load_interpreter(path, threads=1)
        interpreter.allocate_tensors()
        detail = interpreter.get_input_details()[0]
        interpreter.set_tensor(detail["index"], runtime.input_batch(images[0], detail))
        latency = summarize(time_calls(lambda i: interpreter.invoke(), 5, invokes))
    return {
        "size": size,
        "forward_batch": forward,
        "forward_ms_per_image": 1e3 * per_image,
        "forward_cpu_ms_per_image": 1e3 * forward["cpu_s"] / BATCH,
        "features_pass_over_train_min": per_image * TRAIN_FILMS / 60,
        "features_pass_over_train_cpu_min": forward["cpu_s"] / BATCH * TRAIN_FILMS / 60,
        "train_step_batch": train_step,
        "train_step_top_blocks_batch": top_step,
        "int8_bytes": len(tflite),
        "int8_invoke_ms_1_thread": {k: latency[k] for k in ("runs", "p50", "p95", "min")},
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--batches", type=int, default=3)
    parser.add_argument("--invokes", type=int, default=50)
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    args = parser.parse_args(argv)

    from edgexray.compat import tf

    tf.config.threading.set_intra_op_parallelism_threads(THREADS)
    tf.config.threading.set_inter_op_parallelism_threads(THREADS)
    result = {"machine": machine_info(), "batch": BATCH, "tf_threads": THREADS, "sizes": []}
    for size in args.sizes:
        row = measure(size, args.data, args.batches, args.invokes)
        result["sizes"].append(row)
        print(
            f"{size} px: forward {row['forward_ms_per_image']:.1f} ms/film wall "
            f"({row['forward_cpu_ms_per_image']:.1f} CPU), train/ features pass "
            f"{row['features_pass_over_train_min']:.1f} min; train step "
            f"{row['train_step_batch']['wall_s']:.2f} s/batch (top blocks only "
            f"{row['train_step_top_blocks_batch']['wall_s']:.2f}); int8 "
            f"{row['int8_bytes'] / 1e6:.2f} MB, p50 "
            f"{row['int8_invoke_ms_1_thread']['p50']:.1f} ms (1 thread)",
            flush=True,
        )
    result["load_average_at_end"] = list(os.getloadavg())
    if args.out:
        args.out.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
