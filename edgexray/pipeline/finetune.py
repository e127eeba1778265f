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

import math

import numpy as np

from edgexray.pipeline import data, progress
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


def schedule(films: int, batch_size: int, epochs: float, distribute: str = "none") -> tuple:
    """How `fit` walks the train split: (passes, steps per pass, total steps).

    A fine-tune may be shorter than an epoch (epochs 0.5: half the batches of one
    shuffled pass) or a non-whole number of them; every pass is then equally long.
    """
    global_batch = distribution.global_batch(batch_size, distribute)
    full = int(np.ceil(films / global_batch))
    passes = max(1, math.ceil(epochs - 1e-9))
    per_pass = max(1, min(full, round(epochs * full / passes)))
    return passes, per_pass, passes * per_pass


def fit(
    model,
    train_paths: list[str],
    train_labels: np.ndarray,
    recipe,
    *,
    learning_rate,
    epochs: float,
    batch_size: int,
    callbacks=(),
    validation_data=None,
    verbose: int = 1,
    distribute: str = "none",
    weight_average: float = 0.0,
    teacher=None,
    label: str = "fine-tune",
):
    """Compile `model` and fit it on the train split; returns Keras' History.

    Args:
        recipe: the run's TrainConfig: its input_spec, augment, augmentation, mixup,
            label_smoothing and seed hold for every fine-tune of that run.
        learning_rate: a number or a Keras learning-rate schedule, for one replica.
        epochs: passes over the train split; a fraction is part of one (see `schedule`).
        batch_size: per replica.
        distribute: a --distribute value (see pipeline/distribute.py).
        weight_average: momentum of an exponential moving average of the weights, which
            replace the model's own at every epoch end (so validation and checkpoints see
            the average); 0 = off. Not for pruning: the average would refill pruned weights.
        teacher: a Keras model whose calls `model` learns to repeat (distillation): the
            target of every film is the teacher's probability for the same augmented
            film, not its label. Compressed variants fine-tuned so stay close to the float
            model, which is what the recall gate compares them with.
        label: what the progress bar calls this fit.
    """
    from edgexray.compat import keras
    from edgexray.pipeline.model import emits_logit

    logit = emits_logit(model)
    passes, per_pass, _ = schedule(len(train_paths), batch_size, epochs, distribute)
    global_batch = distribution.global_batch(batch_size, distribute)
    # Metrics must be made in the strategy's scope, like the model (a mirrored fit refuses
    # others).
    with distribution.scope(distribute):
        if teacher is not None:
            loss = _distillation_loss(logit)
            tracked = []  # the labels are not in y any more, so no AUC on them
        else:
            loss = keras.losses.BinaryCrossentropy(
                from_logits=logit, label_smoothing=recipe.label_smoothing
            )
            tracked = [keras.metrics.AUC(name="auc", num_thresholds=1000, from_logits=logit)]
        model.compile(
            optimizer=keras.optimizers.Adam(
                distribution.learning_rate(learning_rate, distribute),
                use_ema=weight_average > 0,
                ema_momentum=weight_average or 0.99,
                ema_overwrite_frequency=per_pass if weight_average > 0 else None,
            ),
            loss=loss,
            metrics=tracked,
        )
    weights = class_weights(train_labels)
    # A teacher's answers are the targets, so a fine-tune with one never blends films (a
    # run trained with mixup still prunes with distillation).
    mixup = recipe.mixup if recipe.augment and teacher is None else 0.0
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
    if teacher is not None:
        train_set = _with_teacher(train_set, teacher, weights)
    partial = per_pass < schedule(len(train_paths), batch_size, 1, distribute)[1]
    if partial:  # passes shorter than the split continue where the last one stopped
        train_set = train_set.repeat()
    if validation_data is not None:
        validation_data = distribution.shard(validation_data, distribute)
    with progress.task(label, passes * per_pass, "steps") as bar:
        return model.fit(
            distribution.shard(train_set, distribute),
            validation_data=validation_data,
            epochs=passes,
            steps_per_epoch=per_pass if partial else None,
            # Mixup and distillation batches carry their own weights.
            class_weight=None if mixup or teacher is not None else weights,
            callbacks=[*callbacks, progress.keras_callback(bar, passes)],
            verbose=verbose,
        )


def _with_teacher(train_set, teacher, weights: dict[int, float]):
    """(film, label) batches → (film, [label, teacher's output], class weight) batches."""
    from edgexray.compat import tf

    by_label = tf.constant([weights[0], weights[1]], tf.float32)

    def add_target(images, labels):
        taught = tf.reshape(teacher(images, training=False), [-1])
        targets = tf.stack([tf.cast(labels, tf.float32), taught], axis=1)
        return images, targets, tf.gather(by_label, tf.cast(labels, tf.int32))

    return train_set.map(add_target).prefetch(tf.data.AUTOTUNE)


def _distillation_loss(logit: bool):
    """Cross-entropy against the teacher's probability (target column 1 of y)."""
    from edgexray.compat import keras, tf

    def distillation(y_true, y_pred):
        taught = y_true[:, 1:2]
        target = tf.sigmoid(taught) if logit else taught
        return keras.losses.binary_crossentropy(target, y_pred, from_logits=logit)

    return distillation


def recalibrate_batch_norm(model, train_paths, train_labels, recipe, films: int) -> None:
    """Re-estimate each BatchNormalization layer's moving mean and variance in place, as
    the plain average over `films` train films of the run's augmented stream (forward
    passes only, no weight changes).

    A short fine-tune changes the weights faster than the moving averages (momentum 0.99)
    follow: after pruning to 80% in 70 steps the pruned model's val AUC was 0.83 with the
    moving averages the fine-tune left, 0.99 with re-estimated ones (benchmarks/README.md,
    "Speed"). Augmented films, as training saw: the statistics mean what the float model's
    mean, so the variant stays comparable with it.
    """
    from edgexray.compat import keras

    # A frozen one (a pretrained backbone's) normalises with its stored statistics even in
    # training mode: nothing to re-estimate.
    batch_norms = keras.layers.BatchNormalization
    layers = [layer for layer in model.layers if isinstance(layer, batch_norms) and layer.trainable]
    if not layers or films <= 0:
        return
    batch = 64
    stream = data.make_dataset(
        train_paths,
        train_labels,
        recipe.input_spec,
        batch,
        training=recipe.augment,
        seed=recipe.seed,
        augmentation=recipe.augmentation,
    )
    momenta = [layer.momentum for layer in layers]
    try:
        for seen, (images, _) in enumerate(stream.take(math.ceil(films / batch))):
            for layer in layers:  # moving = mean of the batches so far
                layer.momentum = seen / (seen + 1)
            model(images, training=True)
    finally:
        for layer, momentum in zip(layers, momenta, strict=True):
            layer.momentum = momentum
