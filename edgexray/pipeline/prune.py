"""`edgexray prune`: magnitude pruning of a trained run's model → pruned.keras.

Only Conv2D and Dense kernels are pruned (the layers tfmot's magnitude pruning supports
and that hold nearly all parameters); BatchNormalization and the pooling layers stay
dense. The baseline model.keras is read, never written: the pruned copy is built from
new layer objects with copied weights, so fine-tuning it cannot touch the baseline.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgexray import __version__, artifacts
from edgexray.edge_runtime.options import option
from edgexray.errors import EdgexrayError, check_config
from edgexray.pipeline import data, distribute, finetune, metrics, scoring
from edgexray.pipeline.backbones import BACKBONES
from edgexray.pipeline.train import load_config, read_metrics

log = logging.getLogger("edgexray")

PRUNE_REPORT = artifacts.PRUNE_REPORT
# Sparsity is ramped up over this share of the fine-tuning steps; the rest lets the
# network recover at the final sparsity.
RAMP_FRACTION = 0.6
# Masks are recomputed about this many times along the ramp.
MASK_UPDATES = 15


@dataclass(frozen=True)
class PruneConfig:
    """How the pruned model is made; saved in prune.json next to pruned.keras."""

    # 0.5 with 3 passes of 32 films (417 steps): under the val shift stress test the pruned
    # variants' calls moved least from the float model's of the recipes within one gate
    # failure of the fewest, over three seeds (benchmarks/README.md, "Half the weights").
    # The price is size: zeros scattered through the tensors compress poorly, so the
    # gzipped pruned-int8 model alone is 1/5.3 of float32 where 80% made it 1/10 (seed 42).
    sparsity: float = option(0.5, "Share of Conv2D/Dense kernel weights set to zero.")
    epochs: float = option(
        3, "Fine-tuning passes over the train split while pruning; a fraction is part of one."
    )
    learning_rate: float = option(3e-4, "Fine-tuning learning rate.")
    # Layers with fewer kernel weights than this stay dense (0: prune every Conv2D/Dense).
    # 4096 keeps the compact CNN's first two convolutions and its logit layer whole (1.2%
    # of its kernel weights). With `distill`, this took pruned-int8's worst val specificity
    # drop under the shift stress test from 0.16 and 0.56 to 0.06 and 0.045 on seeds 7 and
    # 11 (seed 42: 0.055, 0.060); either change alone left 0.12-0.30 on seed 11
    # (benchmarks/README.md, "Variants that hold").
    min_layer_weights: int = 4096
    batch_size: int = 32
    # Fine-tune towards the float model's calls (finetune.fit's teacher) instead of the
    # labels: the recall gate compares the variant with the float model, and on the
    # augmented films a teacher also shows how the float model answers a shifted film.
    distill: bool = True
    # Train films re-estimating the batch-norm statistics after the fine-tune (0: keep
    # what the fine-tune left; see finetune.recalibrate_batch_norm): the moving averages
    # trail the last mask updates.
    recalibrate_films: int = 1024
    distribute: str = distribute.setting()

    def __post_init__(self):
        checks = {
            "sparsity must be in (0, 0.98]": 0 < self.sparsity <= 0.98,
            "epochs must be > 0": self.epochs > 0,
            "recalibrate_films must be >= 0": self.recalibrate_films >= 0,
            "min_layer_weights must be >= 0": self.min_layer_weights >= 0,
            "learning_rate must be > 0": self.learning_rate > 0,
            "batch_size must be >= 1": self.batch_size >= 1,
            f"distribute must be one of {distribute.NAMES}": distribute.check_name(self.distribute),
        }
        check_config("prune config", checks)


def prune_config(train_config, **settings) -> PruneConfig:
    """The prune settings of a run trained with train_config: PruneConfig's defaults,
    then its backbone's (backbones.Backbone.run_prune), then `settings`."""
    return PruneConfig(**{**BACKBONES[train_config.backbone].run_prune, **settings})


def prunable(layer) -> bool:
    """Layers whose kernels are pruned and counted in the sparsity: the trainable Conv2D
    and Dense layers. A frozen layer (a pretrained backbone's early blocks) stays dense:
    its weights cannot recover from the cut while the fine-tune leaves it alone."""
    from edgexray.compat import keras

    return isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense)) and layer.trainable


def clone_fresh(model, wrap: Callable | None = None, should_wrap: Callable = prunable):
    """A copy of a functional model made of new layers holding copies of the weights.

    keras.models.clone_model keeps any layer object the clone function returns as is, so
    returning the original layer (or wrapping it) would share its variables with the
    source model. Each layer is rebuilt from its config instead.

    Args:
        model: a built functional tf_keras model.
        wrap: applied to the new copy of every layer for which should_wrap(layer) holds,
            e.g. tfmot's prune_low_magnitude or quantize_annotate_layer.
        should_wrap: picks the layers to wrap.
    """
    from edgexray.compat import keras

    def clone_layer(layer):
        fresh = layer.__class__.from_config(layer.get_config())
        if layer.weights:
            fresh.build(layer.input_shape)
            fresh.set_weights(layer.get_weights())
        return wrap(fresh) if wrap is not None and should_wrap(layer) else fresh

    return keras.models.clone_model(model, clone_function=clone_layer)


def pruning_schedule(sparsity: float, total_steps: int):
    """Polynomial decay from 0 to `sparsity`, reached at a step where the mask updates.

    tfmot updates masks only at steps that are multiples of the frequency within
    [begin_step, end_step]; end_step is a multiple of the frequency so the last update
    applies the final sparsity exactly. Very short runs prune in one shot at step 1.
    """
    from edgexray.compat import import_tfmot

    tfmot = import_tfmot()

    ramp = max(1, int(total_steps * RAMP_FRACTION))
    frequency = max(1, ramp // MASK_UPDATES)
    end_step = frequency * max(1, ramp // frequency)
    return tfmot.sparsity.keras.PolynomialDecay(
        initial_sparsity=0.0,
        final_sparsity=sparsity,
        begin_step=0,
        end_step=end_step,
        frequency=frequency,
    )


def measure_sparsity(model) -> dict:
    """Share of exactly-zero kernel weights, per prunable layer and over all of them."""
    layers, zeros, total = {}, 0, 0
    for layer in model.layers:
        if not prunable(layer):
            continue
        kernel = np.asarray(layer.kernel.numpy())
        layer_zeros = int(np.count_nonzero(kernel == 0))
        layers[layer.name] = round(layer_zeros / kernel.size, 4)
        zeros, total = zeros + layer_zeros, total + kernel.size
    if not total:
        raise EdgexrayError("the model has no Conv2D or Dense layer to prune")
    return {"overall": round(zeros / total, 4), "zeros": zeros, "weights": total, "layers": layers}


def prune(run_dir: Path, config: PruneConfig, verbose: int = 1) -> dict:
    """Prune the run's model, fine-tune it on the train split and save pruned.keras.

    Returns:
        The report also written to prune.json: config, sparsity measured on the stripped
        weights, val AUC and threshold of the pruned model next to the baseline's.

    Raises:
        EdgexrayError: the run directory holds no trained model.
    """
    run_dir = artifacts.require_run(run_dir)
    train_config = load_config(run_dir)
    distribute.strategy(config.distribute)  # first: multiworker must start before any TF op

    from edgexray.compat import import_tfmot

    tfmot = import_tfmot()

    baseline = artifacts.load_keras(run_dir / artifacts.MODEL)
    train_paths, train_labels = data.run_split(run_dir, "train")
    val_paths, val_labels = data.run_split(run_dir, "val")
    spec = train_config.input_spec

    finetune.seed_everything(train_config.seed)
    started = time.monotonic()
    _, _, steps = finetune.schedule(
        len(train_paths), config.batch_size, config.epochs, config.distribute
    )
    schedule = pruning_schedule(config.sparsity, steps)
    prune_wrapper = tfmot.sparsity.keras.prune_low_magnitude
    with distribute.scope(config.distribute):
        model = clone_fresh(
            baseline,
            lambda layer: prune_wrapper(layer, pruning_schedule=schedule),
            lambda layer: (
                prunable(layer) and layer.kernel.shape.num_elements() >= config.min_layer_weights
            ),
        )
    log.info(
        "pruning to %.0f%% sparsity: %g epochs, %d steps, mask ramp ends at step %d",
        100 * config.sparsity,
        config.epochs,
        steps,
        schedule.end_step,
    )
    finetune.fit(
        model,
        train_paths,
        train_labels,
        train_config,
        learning_rate=config.learning_rate,
        epochs=config.epochs,
        batch_size=config.batch_size,
        callbacks=[tfmot.sparsity.keras.UpdatePruningStep()],
        verbose=verbose,
        distribute=config.distribute,
        teacher=baseline if config.distill else None,
        label="prune",
    )
    pruned = tfmot.sparsity.keras.strip_pruning(model)
    finetune.recalibrate_batch_norm(
        pruned, train_paths, train_labels, train_config, config.recalibrate_films
    )
    sparsity = measure_sparsity(pruned)
    finetune_seconds = time.monotonic() - started

    val_probabilities = scoring.keras_probabilities(pruned, val_paths, spec)
    threshold = metrics.threshold_for_recall(
        val_labels, val_probabilities, train_config.target_recall
    )
    report = {
        "edgexray_version": __version__,
        "config": dataclasses.asdict(config),
        "sparsity": sparsity,
        "steps": steps,
        "finetune_seconds": round(finetune_seconds, 1),
        "baseline_val_auc": _baseline_val_auc(run_dir, baseline, val_paths, val_labels, spec),
        "val": metrics.classification_report(val_labels, val_probabilities, threshold),
    }
    out_dir = distribute.output_dir(run_dir, config.distribute)  # a worker's is private
    artifacts.save_keras(pruned, out_dir / artifacts.PRUNED)
    artifacts.write_json(out_dir / PRUNE_REPORT, report)
    log.info(
        "pruned: %.1f%% of kernel weights are zero, val AUC %.4f (baseline %.4f)",
        100 * sparsity["overall"],
        report["val"]["auc"],
        report["baseline_val_auc"],
    )
    return report


def _baseline_val_auc(run_dir: Path, baseline, val_paths, val_labels, spec) -> float:
    """The baseline's val AUC from metrics.json, or recomputed when training left none."""
    if (run_dir / artifacts.METRICS).is_file():
        auc = read_metrics(run_dir)["val"]["at_threshold"]["auc"]
        if auc is not None:
            return float(auc)
    return metrics.roc_auc(val_labels, scoring.keras_probabilities(baseline, val_paths, spec))


def require_pruned(run_dir: Path) -> Path:
    """The path of the run's pruned.keras; raises EdgexrayError if prune has not run."""
    path = Path(run_dir) / artifacts.PRUNED
    if not path.is_file():
        raise EdgexrayError(f"{path} not found: run `edgexray prune {run_dir}` first")
    return path


def summary_lines(report: dict) -> list[str]:
    """A readable summary of a prune() report: measured sparsity per layer, val metrics."""
    measured, val = report["sparsity"], report["val"]
    return [
        f"sparsity {measured['overall']:.3f} measured on the stripped kernels "
        f"({measured['zeros']:,} of {measured['weights']:,} weights are zero)",
        *(f"  {name:<12} {value:.3f}" for name, value in measured["layers"].items()),
        f"val AUC {val['auc']:.4f} (baseline {report['baseline_val_auc']:.4f}); at threshold "
        f"{val['threshold']:.4f}: recall {val['recall']:.4f}, specificity {val['specificity']:.4f}",
    ]
