"""Knowledge distillation: a small student learns from a trained teacher's softened outputs.

Hinton, Vinyals and Dean (2015), "Distilling the Knowledge in a Neural
Network": the student minimises `alpha` x cross-entropy with the labels plus
`(1 - alpha) x T^2` x the KL divergence between the teacher's and its own
class distributions, both softened by the temperature `T`. The teacher's
outputs on the training and validation images are computed once, before the
student trains (offline distillation), and travel with the labels through
the same input pipeline as the run's (`tuning.data.file_dataset`), so the
student sees the run's own splits, in the run's order, with its
augmentation.

`tuning.distill(teacher_run, student)` and `python -m tuning distill`.
"""

from __future__ import annotations

import os
import time

import keras
import numpy as np

from tuning.config import ConfigError

DISTILL_FILE = "distill.json"
STUDENT_FILE = "student.keras"


@keras.saving.register_keras_serializable(package="tuning")
class DistillationLoss(keras.losses.Loss):
    """`alpha` x CE(labels) + `(1 - alpha) T^2` x KL(teacher_T || student_T).

    `y_true` packs, per image, the class index followed by the teacher's
    log-probabilities (`pack_targets`); `y_pred` is the student's softmax.

    Args:
        temperature: float. Softens both distributions. Defaults to 4.0.
        alpha: float in [0, 1]. Weight of the labels' cross-entropy; 1.0
            trains without the teacher. Defaults to 0.5.

    Example:

        >>> import numpy as np
        >>> from tuning.distillation import DistillationLoss, pack_targets
        >>> probs = np.array([[0.7, 0.2, 0.1]], "float32")
        >>> y = pack_targets(np.array([0]), np.log(probs))
        >>> round(float(DistillationLoss(alpha=0.0)(y, probs)), 6)  # the student equals the teacher
        0.0
    """

    def __init__(self, temperature: float = 4.0, alpha: float = 0.5, name: str = "distillation", **kwargs):
        super().__init__(name=name, **kwargs)
        if not temperature > 0:
            raise ValueError(f"`temperature` must be above 0. Received: temperature={temperature!r}")
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"`alpha` must be in [0, 1]. Received: alpha={alpha!r}")
        self.temperature = float(temperature)
        self.alpha = float(alpha)

    def call(self, y_true, y_pred):
        ops = keras.ops
        t = self.temperature
        labels = ops.cast(y_true[:, 0], "int32")
        teacher = ops.softmax(y_true[:, 1:] / t, axis=-1)
        student_log = ops.log(ops.clip(ops.cast(y_pred, "float32"), 1e-7, 1.0))
        ce = keras.losses.sparse_categorical_crossentropy(labels, y_pred)
        soft = ops.log_softmax(student_log / t, axis=-1)
        kl = ops.sum(teacher * (ops.log(ops.clip(teacher, 1e-7, 1.0)) - soft), axis=-1)
        return self.alpha * ce + (1.0 - self.alpha) * t * t * kl

    def get_config(self):
        return {**super().get_config(), "temperature": self.temperature, "alpha": self.alpha}


@keras.saving.register_keras_serializable(package="tuning")
class PackedAccuracy(keras.metrics.SparseCategoricalAccuracy):
    """Accuracy against the class index in the first column of packed targets."""

    def __init__(self, name: str = "accuracy", **kwargs):
        super().__init__(name=name, **kwargs)

    def update_state(self, y_true, y_pred, sample_weight=None):
        return super().update_state(y_true[:, :1], y_pred, sample_weight)


def pack_targets(labels, teacher_logits) -> np.ndarray:
    """`(n, 1 + classes)` float32: each image's class index, then the teacher's logits.

    Example:

        >>> from tuning.distillation import pack_targets
        >>> pack_targets([2], [[0.1, 0.2, 0.7]]).tolist()
        [[2.0, 0.10000000149011612, 0.20000000298023224, 0.699999988079071]]
    """
    labels = np.asarray(labels, "float32").reshape(-1, 1)
    return np.concatenate([labels, np.asarray(teacher_logits, "float32")], axis=1)


def distill(
    teacher: str,
    student: str = "mobilenetv3small",
    out: str | None = None,
    *,
    epochs: int | None = None,
    temperature: float = 4.0,
    alpha: float = 0.5,
    weights: str | None = None,
    learning_rate: float = 2e-3,
    seed: int = 0,
    verbose: int = 1,
) -> dict:
    """Train `student` on the teacher run's images and the teacher's softened outputs.

    Args:
        teacher: str. The `--out` folder of a `python -m tuning run`
            classification (its `best.keras`, `run.json` and `classes.json`),
            or the path of its `best.keras`.
        student: str. Any zoo backbone (`zoo.list_models()`). Defaults to
            "mobilenetv3small".
        out: str. Where `student.keras` and `distill.json` go. Defaults to
            `<teacher run>/distill-<student>`.
        epochs: int. Defaults to the teacher run's epochs per trial with
            pretrained `weights`, 2.5x that from random weights.
        temperature, alpha: see `DistillationLoss`; `alpha=1.0` trains the
            same student on the labels alone (the baseline).
        weights: str. The student backbone's weights (None: random,
            "imagenet", or a file). Defaults to None.
        learning_rate: float. Adam's peak rate (warm-up, then cosine).
            Defaults to 2e-3.
        seed: int. Weights, order and augmentation. Defaults to 0.
        verbose: int. 1: one line per epoch and a summary. Defaults to 1.

    Returns:
        The record written to `distill.json`: the student's and teacher's
        test accuracy, MACs and parameters, and the settings.

    Example:

        >>> import tuning
        >>> tuning.distill("no/such/run", "mobilenetv3small")
        Traceback (most recent call last):
        ...
        tuning.config.ConfigError: no/such/run holds no run.json: give the --out folder of a `python -m tuning run`.
    """
    import zoo
    from tuning.data import file_dataset
    from tuning.files import atomic_write, write_json
    from tuning.hypermodel import AUGMENTATIONS, augmentation_layers, scratch_batchnorm
    from tuning.job import load_classes, load_model, run_files
    from tuning.optimizers import warmup_cosine

    DistillationLoss(temperature, alpha)  # checks both before anything is read
    if epochs is not None and (not isinstance(epochs, int) or epochs < 1):
        raise ConfigError(f"`epochs` must be an int of at least 1. Received: epochs={epochs!r}")
    run = teacher[: -len("best.keras")].rstrip(os.sep) if teacher.endswith("best.keras") else teacher
    run = run or "."
    files, classes, config = run_files(run)
    if config.task != "classify":
        raise ConfigError(
            f"distillation serves single-label classification; the run in {run} is {config.task!r}."
        )
    try:
        zoo.get_spec(student)
    except ValueError as e:  # unknown: it names the closest models
        raise ConfigError(f"student: {e}") from None
    out = out or os.path.join(run, f"distill-{student}")
    if os.path.exists(os.path.join(out, STUDENT_FILE)):
        raise ConfigError(
            f"{out} already holds a {STUDENT_FILE}; choose another `out` (nothing is overwritten)."
        )
    teacher_model = load_model(os.path.join(run, "best.keras"))
    stored = load_classes(os.path.join(run, "best.keras"))["classes"]
    if stored is not None and list(stored) != list(classes):
        raise ConfigError(
            f"the teacher's classes {list(stored)} differ from its run's data {list(classes)}: "
            "re-run the teacher on this data."
        )
    # A random-weight student needs longer than a trial: mobilenetv3small
    # reached 0.71 test accuracy in 12 epochs on the demo and 0.98 in 30.
    epochs = epochs or (config.epochs if weights else int(2.5 * config.epochs + 0.5))
    size = config.image_size
    batch = config.batch_size

    def logits(name):
        paths, labels = files[name]
        plain = file_dataset(paths, labels, image_size=size, batch_size=batch)
        probs = teacher_model.predict(plain, verbose=0)
        return pack_targets(labels, np.log(np.clip(probs, 1e-7, 1.0)))

    t0 = time.time()
    packed = {name: logits(name) for name in ("train", "val")}
    keras.utils.set_random_seed(seed)
    backbone = zoo.build(
        student, include_top=False, weights=weights, input_shape=(size, size, 3), include_preprocessing=True
    )
    if weights is None:  # as the main job does from scratch (at 0.999, chance accuracy on the demo)
        scratch_batchnorm(backbone)
    inputs = keras.Input((size, size, 3), name="images")
    x = keras.Sequential(augmentation_layers(config.augmentation or AUGMENTATIONS), name="augment")(inputs)
    x = backbone(x)
    for layer in zoo.layers.classifier_head(len(classes), prefix="head_", output_name="predictions"):
        x = layer(x)  # the toolkit's one head: average pooling, softmax
    model = keras.Model(inputs, x, name=f"{student}_student")
    train = file_dataset(
        files["train"][0],
        packed["train"],
        image_size=size,
        batch_size=batch,
        shuffle=True,
        seed=seed,
        cache=True,
    )
    val = file_dataset(files["val"][0], packed["val"], image_size=size, batch_size=batch, cache=True)
    steps = -(-len(files["train"][0]) // batch)
    rate = warmup_cosine(
        learning_rate, total_steps=epochs * steps, warmup_steps=min(steps, epochs * steps // 2)
    )
    model.compile(
        optimizer=keras.optimizers.Adam(rate),
        loss=DistillationLoss(temperature, alpha),
        metrics=[PackedAccuracy()],
    )
    # A dataset shuffles itself; Keras warns about `shuffle=True` on one.
    history = model.fit(train, validation_data=val, epochs=epochs, shuffle=False, verbose=2 if verbose else 0)
    # The student as a plain classifier: labels in, the usual loss and metrics.
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    # Built, the saved optimizer state matches what Keras builds on load (no warning).
    model.optimizer.build(model.trainable_variables)
    test_name = "test" if "test" in files else "val"
    held = file_dataset(*files[test_name], image_size=size, batch_size=batch)
    student_acc = _accuracy(model, held)  # the teacher's way, on the same batches
    teacher_acc = _accuracy(teacher_model, held)
    os.makedirs(out, exist_ok=True)
    atomic_write(os.path.join(out, STUDENT_FILE), model.save)
    write_json(os.path.join(out, "classes.json"), list(classes))  # what `predict` and `export` read
    record = {
        "teacher": os.path.abspath(os.path.join(run, "best.keras")),
        "student": student,
        "weights": weights,
        "temperature": temperature,
        "alpha": alpha,
        "epochs": epochs,
        "seed": seed,
        "split": test_name,
        "student_accuracy": student_acc,
        "teacher_accuracy": teacher_acc,
        "student_macs": zoo.count_macs(model),
        "teacher_macs": zoo.count_macs(teacher_model),
        "student_params": int(model.count_params()),
        "teacher_params": int(teacher_model.count_params()),
        "val_accuracy": [float(v) for v in history.history.get("val_accuracy", [])],
        "seconds": round(time.time() - t0, 1),
    }
    write_json(os.path.join(out, DISTILL_FILE), record)
    if verbose:
        print(summary_line(record, out), flush=True)
    return record


def _accuracy(model, dataset) -> float:
    right = total = 0
    for x, y in dataset:
        p = np.asarray(model.predict_on_batch(x)).argmax(-1)
        y = np.asarray(y).reshape(-1)
        right += int((p == y).sum())
        total += len(y)
    return right / max(total, 1)


def summary_line(record: dict, out: str) -> str:
    """`student mobilenetv3small: test accuracy 0.95 (teacher resnet18 0.97) at 9.1x fewer MACs; ...`."""
    ratio = record["teacher_macs"] / max(record["student_macs"], 1)
    return (
        f"student {record['student']}: {record['split']} accuracy {record['student_accuracy']:.4f} "
        f"(teacher {record['teacher_accuracy']:.4f}) at {ratio:.1f}x fewer MACs, T={record['temperature']}, "
        f"alpha={record['alpha']}; wrote {out}/{STUDENT_FILE} and {DISTILL_FILE}"
    )
