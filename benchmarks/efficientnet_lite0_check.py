"""Is the converted EfficientNet-Lite0 the ImageNet model? The figures behind the tests.

    nice -n 10 python benchmarks/efficientnet_lite0_check.py [--out FILE.json]

On five photographs shipped with scikit-image (evaluation crop, 224 px):
- the Keras model's top 5 ImageNet classes, with TensorFlow's 'same' padding and with
  symmetric padding, and the probability each gives the photograph's right classes;
- the float32 and the full-int8 .tflite (calibrated on the photographs and their mirror
  images) against Keras: largest logit difference and the top 5;
- the 1-channel grey build against the RGB build on the photographs made grey: largest
  logit difference, relative difference of the pooled features, top class.
Run from the repository root.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edgexray.benchmarks.machine import machine_info  # noqa: E402

# Photograph -> ImageNet classes that are right answers (none for the astronaut: ImageNet
# has no such class).
PHOTOGRAPHS = {
    "chelsea": [281, 282, 285],  # tabby, tiger cat, Egyptian cat
    "coffee": [967, 968, 504],  # espresso, cup, coffee mug
    "rocket": [657, 744, 812],  # missile, projectile, space shuttle
    "motorcycle": [665, 670],  # moped, motor scooter
    "astronaut": [],
}


def photographs() -> dict[str, np.ndarray]:
    from skimage import data

    from edgexray.pipeline.backbones.efficientnet_lite import imagenet_crop

    readers = {
        "chelsea": data.chelsea,
        "coffee": data.coffee,
        "rocket": data.rocket,
        "motorcycle": lambda: data.stereo_motorcycle()[0],
        "astronaut": data.astronaut,
    }
    return {name: imagenet_crop(readers[name]()) for name in PHOTOGRAPHS}


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def top5(logits: np.ndarray) -> list[list]:
    probabilities = softmax(logits)
    return [[int(i), round(float(probabilities[i]), 4)] for i in np.argsort(-logits)[:5]]


def run_tflite(tflite: bytes, batch: np.ndarray) -> tuple[np.ndarray, dict]:
    from edgexray.edge_runtime import interpreter as runtime

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "model.tflite"
        path.write_bytes(tflite)
        interpreter = runtime.load_interpreter(path)
        interpreter.allocate_tensors()
        inputs, outputs = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
        rows = []
        for image in batch:
            interpreter.set_tensor(inputs["index"], runtime.input_batch(image, inputs))
            interpreter.invoke()
            rows.append(runtime.dequantized(interpreter.get_tensor(outputs["index"])[0], outputs))
    quantization = {"input": inputs["quantization"], "output": outputs["quantization"]}
    return np.stack(rows), quantization


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)

    from edgexray.compat import keras
    from edgexray.export import convert
    from edgexray.pipeline.backbones import efficientnet_lite as lite

    photos = photographs()
    rgb = np.stack(list(photos.values()))
    batch = lite.imagenet_input(rgb)
    result = {"machine": machine_info(), "padding": {}}
    models = {}
    for padding in ("same", "symmetric"):
        model = lite.build(classes=lite.IMAGENET_CLASSES, padding=padding)
        lite.load_imagenet_weights(model)
        models[padding] = model
        logits = model.predict(batch, verbose=0)
        probabilities = softmax(logits)
        rows = {}
        for i, (name, right) in enumerate(PHOTOGRAPHS.items()):
            rows[name] = {"top5": top5(logits[i])}
            if right:
                rows[name]["right_classes_probability"] = float(probabilities[i, right].sum())
        rows["log_likelihood_of_right_classes"] = float(
            sum(np.log(r["right_classes_probability"]) for r in rows.values() if len(r) > 1)
        )
        result["padding"][padding] = rows
        print(padding, json.dumps(rows), flush=True)

    model = models["same"]
    logits = model.predict(batch, verbose=0)
    converted = {}
    representative = list(batch) + list(batch[:, :, ::-1])
    for method, tflite in (
        ("float32", convert.to_float32(model)),
        ("int8", convert.to_full_int8(model, representative)),
    ):
        tflite_logits, quantization = run_tflite(tflite, batch)
        converted[method] = {
            "bytes": len(tflite),
            "quantization": quantization,
            "max_abs_logit_difference": float(np.abs(tflite_logits - logits).max()),
            "top5": {name: top5(row) for name, row in zip(PHOTOGRAPHS, tflite_logits, strict=True)},
            "same_top5_set": [
                set(np.argsort(-a)[:5]) == set(np.argsort(-b)[:5])
                for a, b in zip(tflite_logits, logits, strict=True)
            ],
            "same_top1": [
                int(a.argmax()) == int(b.argmax())
                for a, b in zip(tflite_logits, logits, strict=True)
            ],
        }
        print(method, json.dumps(converted[method]), flush=True)
    result["tflite"] = converted

    grey_model = lite.build(classes=lite.IMAGENET_CLASSES, channels=1)
    lite.load_imagenet_weights(grey_model)
    grey = np.stack([np.asarray(Image.fromarray(p).convert("L")) for p in rgb])
    as_rgb = lite.imagenet_input(np.repeat(grey[..., np.newaxis], 3, axis=-1))
    as_grey = (grey / 255.0).astype(np.float32)[..., np.newaxis]
    rgb_logits = model.predict(as_rgb, verbose=0)
    grey_logits = grey_model.predict(as_grey, verbose=0)

    def pooled(m, x):
        return keras.Model(m.input, m.get_layer("pooled_features").output).predict(x, verbose=0)

    rgb_features, grey_features = pooled(model, as_rgb), pooled(grey_model, as_grey)
    result["grey_stem"] = {
        "max_abs_logit_difference": float(np.abs(grey_logits - rgb_logits).max()),
        "pooled_features_relative_difference": float(
            np.linalg.norm(grey_features - rgb_features) / np.linalg.norm(rgb_features)
        ),
        "same_top1": [
            int(a.argmax()) == int(b.argmax()) for a, b in zip(grey_logits, rgb_logits, strict=True)
        ],
        "rgb_of_grey_top5": {
            name: top5(row) for name, row in zip(PHOTOGRAPHS, rgb_logits, strict=True)
        },
    }
    print("grey", json.dumps(result["grey_stem"]), flush=True)
    if args.out:
        args.out.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
