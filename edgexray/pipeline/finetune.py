"""The one fine-tuning recipe: train, prune and QAT/PQAT all fit a model this way.

Seeds and op determinism first, so the same seed gives the same model; then Adam on
binary cross-entropy with val-AUC as the metric, class weights that make both classes
count equally, and the seeded tf.data stream of the train split, shuffled and augmented
only when the run's TrainConfig.augment says so.

Under a --distribute strategy the rules of pipeline/distribute.py apply here too: compile
in the strategy's scope, linear learning-rate scaling, the global batch and a data-sharded
input. The caller builds the model (and any tfmot wrappers) inside distribute.scope(), and
counts steps with distribute.global_batch(). With "none" each of these is the identity.
"""

from __future__ import annotations

import numpy as np

from edgexray.pipeline import data
from edgexray.pipeline import distribute as distribution


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and TensorFlow, and make TensorFlow's ops deterministic."""
    from edgexray.compat import keras, tf

    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


def class_weights(labels: np.ndarray) -> dict[int, float]:
    """Weights that make both classes count equally in the loss (3:1 imbalance here)."""
    counts = np.bincount(labels, minlength=2)
    return {label: len(labels) / (2.0 * counts[label]) for label in (0, 1)}


def fit(
    model,
    train_paths: list[str],
    train_labels: np.ndarray,
    recipe,
    *,
    learning_rate,
    epochs: int,
    batch_size: int,
    callbacks=(),
    validation_data=None,
    verbose: int = 1,
    distribute: str = "none",
    weight_average: float = 0.0,
):
    """Compile `model` and fit it on the train split; returns Keras' History.

    Args:
        recipe: the run's TrainConfig: its input_spec, augment, augmentation, mixup,
            label_smoothing and seed hold for every fine-tune of that run.
        learning_rate: a number or a Keras learning-rate schedule, for one replica.
        batch_size: per replica.
        distribute: a --distribute value (see pipeline/distribute.py).
        weight_average: momentum of an exponential moving average of the weights, which
            replace the model's own at every epoch end (so validation and checkpoints see
            the average); 0 = off. Not for pruning: the average would refill pruned weights.
    """
    from edgexray.compat import keras
    from edgexray.pipeline.model import emits_logit

    logit = emits_logit(model)
    global_batch = distribution.global_batch(batch_size, distribute)
    steps_per_epoch = int(np.ceil(len(train_paths) / global_batch))
    with distribution.scope(distribute):
        model.compile(
            optimizer=keras.optimizers.Adam(
                distribution.learning_rate(learning_rate, distribute),
                use_ema=weight_average > 0,
                ema_momentum=weight_average or 0.99,
                ema_overwrite_frequency=steps_per_epoch if weight_average > 0 else None,
            ),
            loss=keras.losses.BinaryCrossentropy(
                from_logits=logit, label_smoothing=recipe.label_smoothing
            ),
            metrics=[keras.metrics.AUC(name="auc", num_thresholds=1000, from_logits=logit)],
        )
    weights = class_weights(train_labels)
    mixup = recipe.mixup if recipe.augment else 0.0
    train_set = data.make_dataset(
        train_paths,
        train_labels,
        recipe.input_spec,
        global_batch,
        training=recipe.augment,
        seed=recipe.seed,
        augmentation=recipe.augmentation,
        mixup=mixup,
        class_weights=weights,
    )
    if validation_data is not None:
        validation_data = distribution.shard(validation_data, distribute)
    return model.fit(
        distribution.shard(train_set, distribute),
        validation_data=validation_data,
        epochs=epochs,
        # Mixup batches carry their own blended weights.
        class_weight=None if mixup else weights,
        callbacks=list(callbacks),
        verbose=verbose,
    )
