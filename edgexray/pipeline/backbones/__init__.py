"""The networks `edgexray train --backbone` starts from: one row of BACKBONES each.

A row holds everything that differs between them: how the network is built (with which
of its layers trainable), the training recipe fields it decides when the config leaves
them unset, and what `edgexray run` does with it after training. Every stage reads the
row; none branches on the name.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Backbone:
    """One network `edgexray train` can train.

    Attributes:
        name: the --backbone value, saved in config.json.
        build: (TrainConfig) -> an uncompiled tf_keras model mapping a grey film in [0, 1]
            of the config's size to the pneumonia logit (its last layer a Dense(1)).
        recipe: TrainConfig fields this backbone decides when the config leaves them
            unset (None): the input size and the schedule chosen for it on val.
        probe_l2: before fine-tuning, the head is set to an L2-regularised logistic
            regression (this strength) on the frozen network's features of the train
            films (pipeline/probe.py); None: the head starts from its initialiser.
        run_prune: PruneConfig fields `edgexray run` and `edgexray prune` set for this
            backbone (options given on the command line win).
        run_methods: quantization methods `edgexray run` makes; None: every one.
    """

    name: str
    build: Callable
    recipe: dict
    probe_l2: float | None = None
    run_prune: dict = field(default_factory=dict)
    run_methods: tuple[str, ...] | None = None


def _compact(config):
    from edgexray.pipeline.model import build_model

    return build_model(config.image_size, config.width, config.dropout, config.seed, config.stem)


def _efficientnet_lite0(config):
    from edgexray.pipeline.backbones import efficientnet_lite

    return efficientnet_lite.for_films(config.image_size)


COMPACT = "compact"
BACKBONES = {
    backbone.name: backbone
    for backbone in (
        # 12 epochs of 128 films at 4e-3 (the batch 4x, the rate 2x, after a warm-up
        # epoch): val AUC within the seed spread of the earlier 20 epochs of 32 at 2e-3, for
        # about half the work; 8 epochs fell short on val (benchmarks/README.md, "Speed").
        # Label smoothing 0.1 with "site" augmentation held up best at a new site
        # ("Ablation").
        Backbone(
            COMPACT,
            _compact,
            recipe=dict(
                image_size=128,
                epochs=12,
                batch_size=128,
                learning_rate=4e-3,
                warmup_epochs=1,
                label_smoothing=0.1,
            ),
        ),
        # Phase 2a's recipe on val (benchmarks/README.md, "EfficientNet-Lite0: scope guard,
        # heatmap grid, recipe on val"): a linear probe, then blocks 11-15 fine-tuned with
        # batch norm frozen, Adam 2e-4 with cosine decay, batch 32, no smoothing, 4 epochs
        # at ImageNet's 224 px. A head on frozen features alone had the best val AUC but
        # lost 31% of its recall under a 10% zoom-out. QAT and PQAT fine-tune the whole
        # network (about 2 s a step at 224 px on 2 cores), so the run makes the
        # post-training variants only; prune cuts 80% in one pass on the labels with every
        # trainable layer pruned: the compact CNN's 50%, distillation and dense small layers
        # (issue 30) were chosen on its val, not measured here.
        Backbone(
            "efficientnet-lite0",
            _efficientnet_lite0,
            recipe=dict(
                image_size=224,
                epochs=4,
                batch_size=32,
                learning_rate=2e-4,
                warmup_epochs=0,
                label_smoothing=0.0,
            ),
            probe_l2=3e-3,
            run_prune=dict(sparsity=0.8, epochs=1, distill=False, min_layer_weights=0),
            run_methods=("float32", "float16", "dynamic", "int8", "pruned-int8"),
        ),
    )
}
NAMES = tuple(BACKBONES)
