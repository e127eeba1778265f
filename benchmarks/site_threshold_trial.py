"""A rejected idea, kept so its numbers can be rerun: the val threshold taken on val films
as another site might send them (the "site" augmentation, several draws per film).

    python benchmarks/site_threshold_trial.py runs/ablation/A2-site-ls [RUN_DIR ...]

Prints, per run, `test/` recall, specificity and accuracy at the usual val threshold and
at the augmented-val one. This scores `test/`, which is why it decided nothing on its own:
it was rejected because `test/` recall fell below 0.97.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

DRAWS = 4


def main() -> None:
    from edgexray import artifacts
    from edgexray.pipeline import augment, data, metrics, scoring
    from edgexray.pipeline.train import load_config

    for run_dir in map(Path, sys.argv[1:]):
        config = load_config(run_dir)
        samples = data.load_manifest(run_dir / artifacts.MANIFEST)
        model = artifacts.load_keras(run_dir / artifacts.MODEL)
        val_paths, val_labels = data.select(samples, "val", Path(config.data))
        test_paths, test_labels = data.select(samples, "test", Path(config.data))

        def score(paths, change=None, model=model, config=config):
            return scoring.keras_probabilities(model, paths, config.input_spec, change)

        augmented = []
        for draw in range(DRAWS):
            rng = np.random.default_rng(draw)
            augmented.append(
                score(val_paths, lambda gray, rng=rng: augment.AUGMENTATIONS["site"](gray, rng))
            )
        thresholds = {
            "val": metrics.threshold_for_recall(val_labels, score(val_paths), 0.97),
            "val through site augmentation": metrics.threshold_for_recall(
                np.tile(val_labels, DRAWS), np.concatenate(augmented), 0.97
            ),
        }
        test = score(test_paths)
        for name, threshold in thresholds.items():
            r = metrics.classification_report(test_labels, test, threshold)
            print(
                f"{run_dir.name}: threshold on {name} {threshold:.3f}: test/ recall "
                f"{r['recall']:.3f}, specificity {r['specificity']:.3f}, accuracy "
                f"{r['accuracy']:.3f}"
            )


if __name__ == "__main__":
    main()
