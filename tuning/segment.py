"""Semantic segmentation for the main job: the FCN search space, its losses, its evaluation.

`SegmentationHyperModel` is a KerasTuner `HyperModel` over FCN variant
(32s/16s/8s) x backbone x unfreeze depth x learning rate x loss, built with
`zoo.build` (any staged backbone) and trained on `tuning.masks.MaskBatches`;
it hands its trained model to the job's tuner the way `TransferHyperModel`
does (`take_last_fit`), so resume, the time budget, workers and precision
work as for classification. `SegmentationLoss` is cross-entropy that skips
the ignore label (255, VOC's void), optionally plus soft Dice.
`evaluate_segmentation` gives mean IoU, per-class IoU, pixel accuracy,
frequency-weighted IoU and each image's IoU, from one confusion matrix.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import keras
import keras_tuner as kt
import numpy as np
from keras import ops

import surgery
import zoo
from tuning.callbacks import keep_async_dispatch
from tuning.masks import IGNORE
from tuning.optimizers import warmup_cosine

VARIANTS = ("fcn8s", "fcn16s", "fcn32s")
LOSSES = ("ce", "ce+dice")
# Layers `zoo.tasks.fcn` adds to a backbone: scores, upsampling, fusion, VGG's convolutional fc6/fc7.
_FCN_LAYERS = ("score", "upscore", "fuse_", "fc6", "fc7")


@keras.saving.register_keras_serializable(package="tuning")
class SegmentationLoss(keras.losses.Loss):
    """Per-pixel cross-entropy from logits that skips `ignore_class`, optionally plus soft Dice.

    The cross-entropy is the mean over the labelled pixels of the batch
    (an ignored pixel adds nothing, and does not count); `"ce+dice"` adds
    `1 - mean Dice` over the classes, from the softmax over those same
    pixels (Milletari et al. 2016's soft Dice), which weighs small classes
    as much as large ones.

    Args:
        kind: str. "ce" or "ce+dice". Defaults to "ce".
        ignore_class: int. The label that means "not labelled". Defaults to 255.

    Example:

        >>> import numpy as np, tuning
        >>> loss = tuning.segment.SegmentationLoss()
        >>> logits = np.zeros((1, 1, 2, 2), "float32")
        >>> round(float(loss(np.array([[[0, 255]]]), logits)), 4)  # log 2, the 255 pixel skipped
        0.6931
    """

    def __init__(
        self, kind: str = "ce", ignore_class: int = IGNORE, name: str = "segmentation_loss", **kwargs
    ):
        if kind not in LOSSES:
            raise ValueError(f"`kind` must be one of {LOSSES}. Received: kind={kind!r}")
        super().__init__(name=name, **kwargs)
        self.kind, self.ignore_class = kind, ignore_class

    def call(self, y_true, y_pred):
        logits = ops.cast(y_pred, "float32")
        n = ops.shape(logits)[-1]
        labels = ops.reshape(ops.cast(y_true, "int32"), ops.shape(logits)[:-1])
        valid = ops.cast(ops.not_equal(labels, self.ignore_class), "float32")
        safe = ops.where(ops.not_equal(labels, self.ignore_class), labels, ops.zeros_like(labels))
        one_hot = ops.one_hot(safe, n, dtype="float32") * valid[..., None]
        log_probs = ops.log_softmax(logits, axis=-1)
        count = ops.maximum(ops.sum(valid), 1.0)
        loss = -ops.sum(one_hot * log_probs) / count
        if self.kind == "ce+dice":
            probs = ops.exp(log_probs) * valid[..., None]
            axes = tuple(range(len(logits.shape) - 1))
            overlap = ops.sum(probs * one_hot, axis=axes)
            total = ops.sum(probs, axis=axes) + ops.sum(one_hot, axis=axes)
            loss = loss + 1.0 - ops.mean((2.0 * overlap + 1.0) / (total + 1.0))
        return loss

    def get_config(self):
        return {**super().get_config(), "kind": self.kind, "ignore_class": self.ignore_class}


def segmentation_metrics(num_classes: int) -> list:
    """The job's training metric: mean IoU over labelled pixels (`val_mean_iou` is the objective).

    Example:

        >>> import numpy as np, tuning
        >>> (miou,) = tuning.segment.segmentation_metrics(2)
        >>> _ = miou.update_state(np.array([[0, 1, 255]]), np.eye(2)[[[0, 0, 1]]])
        >>> miou.name, round(float(miou.result()), 4)  # the 255 pixel counts nowhere
        ('mean_iou', 0.25)
    """
    return [zoo.tasks.fcn.MeanIoU(num_classes, sparse_y_pred=False, ignore_class=IGNORE, name="mean_iou")]


class SegmentationHyperModel(kt.HyperModel):
    """FCN variant x backbone x unfreeze depth x learning rate x loss, for KerasTuner.

    Args:
        backbone: str or list of str. Zoo classification models; several
            make `backbone` a searched choice.
        num_classes: int. Classes per pixel (background included).
        input_shape: tuple. `(height, width, 3)` of the training batches.
        weights: backbone weights (None, "imagenet", a source tag, a file).
            Defaults to None.
        variants: FCN variants to search. Defaults to all three.
        unfreeze: backbone stages to train (counted from the deepest), a
            searched choice; None trains everything (what a random-init
            backbone needs). Defaults to (None,).
        learning_rate: searched Adam learning rates (cosine decay over the
            trial, with a warm-up epoch). Defaults to (1e-3, 3e-3).
        losses: searched `SegmentationLoss` kinds. Defaults to ("ce", "ce+dice").
        precision: "fp32" or "bf16". Defaults to "fp32".

    Example:

        >>> import keras_tuner as kt, tuning
        >>> hm = tuning.segment.SegmentationHyperModel("resnet18", num_classes=3,
        ...                                            input_shape=(32, 32, 3), variants=("fcn8s",))
        >>> model = hm.build(kt.HyperParameters())
        >>> model.name, model.output_shape
        ('fcn8s_resnet18', (None, 32, 32, 3))
    """

    def __init__(
        self,
        backbone: str | Sequence[str],
        *,
        num_classes: int,
        input_shape: Sequence[int],
        weights: Any = None,
        variants: Sequence[str] = VARIANTS,
        unfreeze: Sequence[int | None] = (None,),
        learning_rate: Sequence[float] = (1e-3, 3e-3),
        losses: Sequence[str] = LOSSES,
        precision: str = "fp32",
        seed: int = 0,
        name: str | None = None,
    ):
        super().__init__(name=name)
        self.backbones = [backbone] if isinstance(backbone, str) else list(backbone)
        bad = [v for v in variants if v not in VARIANTS]
        if bad or not variants:
            raise ValueError(f"`variants` must be among {VARIANTS}. Received: {list(variants)}")
        bad = [k for k in losses if k not in LOSSES]
        if bad or not losses:
            raise ValueError(f"`losses` must be among {LOSSES}. Received: {list(losses)}")
        self.num_classes, self.input_shape, self.weights = num_classes, tuple(input_shape), weights
        self.variants, self.unfreeze = list(variants), list(unfreeze)
        self.learning_rates, self.losses = [float(r) for r in learning_rate], list(losses)
        self.dtype_policy = zoo.precision_policy(precision)
        self.seed = seed
        self._last_fit = None

    def _space(self, hp):
        def choice(name, values):
            return hp.Choice(name, values) if len(values) > 1 else hp.Fixed(name, values[0])

        unfreeze = ["all" if u is None else str(int(u)) for u in self.unfreeze]
        return {
            "backbone": choice("backbone", self.backbones),
            "variant": choice("fcn/variant", self.variants),
            "unfreeze": choice("fcn/unfreeze_stages", unfreeze),
            "learning_rate": choice("fcn/learning_rate", self.learning_rates),
            "loss": choice("fcn/loss", self.losses),
        }

    def build(self, hp: kt.HyperParameters) -> keras.Model:
        s = self._space(hp)
        model = zoo.build(
            s["variant"],
            backbone=s["backbone"],
            num_classes=self.num_classes,
            input_shape=self.input_shape,
            weights=self.weights,
            include_preprocessing=True,
            classifier_activation=None,
            dtype=self.dtype_policy,
        )
        if s["unfreeze"] != "all":  # the deepest stages train, the rest (and their BN) stay frozen
            stages = len(zoo.stages_of(model))
            surgery.unfreeze_stages(model, min(int(s["unfreeze"]), stages), keep_bn_frozen=True)
            for layer in model.layers:  # FCN's own layers always train, wherever the graph order puts them
                if layer.name.startswith(_FCN_LAYERS):
                    layer.trainable = True
        self._compile(model, s, None)
        return model

    def _compile(self, model, s, steps):
        rate = s["learning_rate"]
        if steps:
            rate = warmup_cosine(rate, total_steps=steps["total"], warmup_steps=steps["warmup"])
        model.compile(
            optimizer=keras.optimizers.Adam(rate),
            loss=SegmentationLoss(s["loss"]),
            metrics=segmentation_metrics(self.num_classes),
        )

    def fit(self, hp, model, x=None, y=None, *, epochs=1, validation_data=None, callbacks=None, **kwargs):
        s = self._space(hp)
        per_epoch = len(x) if hasattr(x, "__len__") else None
        if per_epoch:  # the cosine schedule spans the trial; one epoch of warm-up
            self._compile(
                model, s, {"total": epochs * per_epoch, "warmup": min(per_epoch, epochs * per_epoch // 4)}
            )
        history = model.fit(
            x,
            y,
            epochs=epochs,
            validation_data=validation_data,
            callbacks=keep_async_dispatch(list(callbacks or [])),
            **kwargs,
        )
        self._last_fit = {
            "model": model,
            "history": dict(history.history),
            "phases": [1] * len(history.epoch),
        }
        return history

    def take_last_fit(self) -> dict | None:
        """The last `fit`'s `{"model", "history", "phases"}`, handed over once (then None)."""
        last, self._last_fit = self._last_fit, None
        return last


def predict_masks(model: keras.Model, images: np.ndarray, *, batch_size: int = 16) -> np.ndarray:
    """Class maps `(N, H, W)` uint8 of `model` (logits or probabilities) on uint8 images.

    Example:

        >>> import numpy as np, keras, tuning
        >>> model = keras.Sequential([keras.Input((2, 2, 3)), keras.layers.Identity()])
        >>> tuning.segment.predict_masks(model, np.eye(3, dtype="uint8")[[[[2, 0], [1, 1]]]]).tolist()
        [[[2, 0], [1, 1]]]
    """
    out = []
    for start in range(0, len(images), batch_size):
        scores = model.predict_on_batch(images[start : start + batch_size])
        out.append(np.argmax(scores, axis=-1).astype("uint8"))
    return np.concatenate(out) if out else np.zeros((0,) + images.shape[1:3], "uint8")


def predict_mask_file(model: keras.Model, image: np.ndarray, path: str | None = None) -> np.ndarray:
    """The class map of one uint8 `(H, W, 3)` image at its own size; written as a palette PNG to `path`.

    The image is resized to the model's input size (when it has one), and
    the scores are resized back bilinearly before the argmax, so the mask
    lines up with the original pixels. The PNG is written atomically.
    """
    from PIL import Image

    h, w = image.shape[:2]
    size = model.input_shape[1:3]
    x = image
    if None not in size and tuple(size) != (h, w):
        x = np.asarray(Image.fromarray(image).resize((size[1], size[0]), Image.BILINEAR))
    scores = model(x[None], training=False)
    scores = keras.ops.image.resize(keras.ops.cast(scores, "float32"), (h, w), interpolation="bilinear")
    mask = keras.ops.convert_to_numpy(keras.ops.argmax(scores, axis=-1))[0].astype("uint8")
    if path is not None:
        png = Image.frombytes("P", (w, h), mask.tobytes())
        png.putpalette(zoo.datasets.voc_palette().ravel().tolist())
        tmp = f"{path}.tmp-{os.getpid()}.png"
        png.save(tmp)
        os.replace(tmp, path)
    return mask


def evaluate_segmentation(model: keras.Model, batches, class_names: Sequence[str]) -> dict:
    """Mean IoU, per-class IoU, pixel accuracy and frequency-weighted IoU over `batches`.

    `batches` yields `(uint8 images, int masks)` (a `MaskBatches`); pixels
    labelled 255 count nowhere. A class absent from both the truth and the
    predictions has no IoU (None) and is left out of the mean. Also returns
    `image_iou` (each image's mean IoU over the classes it or its prediction
    holds, in the batches' order) and the confusion matrix.

    Example:

        >>> import numpy as np, keras, tuning
        >>> model = keras.Sequential([keras.Input((2, 2, 3)), keras.layers.Lambda(lambda x: x)])
        >>> images = np.eye(3, dtype="uint8")[[[[0, 1], [1, 2]]]] * 255
        >>> masks = np.array([[[0, 1], [255, 1]]])
        >>> r = tuning.segment.evaluate_segmentation(model, [(images, masks)], ["a", "b", "c"])
        >>> round(r["mean_iou"], 4), r["per_class_iou"], r["pixel_accuracy"]
        (0.5, {'a': 1.0, 'b': 0.5, 'c': 0.0}, 0.6667)
    """
    n = len(class_names)
    cm = np.zeros((n, n), "int64")
    image_iou = []
    for images, masks in batches:
        pred = predict_masks(model, np.asarray(images)).astype("int64")
        truth = np.asarray(masks).astype("int64")
        for t, p in zip(truth, pred):
            keep = t != IGNORE
            one = np.bincount(t[keep] * n + np.clip(p[keep], 0, n - 1), minlength=n * n).reshape(n, n)
            cm += one
            image_iou.append(_mean_iou(one))
    iou = _ious(cm)
    total = cm.sum()
    freq = cm.sum(axis=1) / max(total, 1)
    present = ~np.isnan(iou)
    return {
        "mean_iou": round(float(np.nanmean(iou)) if present.any() else 0.0, 4),
        "per_class_iou": {c: (None if np.isnan(v) else round(float(v), 4)) for c, v in zip(class_names, iou)},
        "pixel_accuracy": round(float(np.trace(cm) / max(total, 1)), 4),
        "fw_iou": round(float(np.nansum(freq * np.nan_to_num(iou))), 4),
        "image_iou": [round(v, 4) for v in image_iou],
        "confusion": cm.tolist(),
    }


def _ious(cm):
    inter = np.diag(cm).astype("float64")
    union = cm.sum(0) + cm.sum(1) - np.diag(cm)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, inter / np.maximum(union, 1), np.nan)


def _mean_iou(cm):
    iou = _ious(cm)
    return float(np.nanmean(iou)) if (~np.isnan(iou)).any() else 1.0


def write_plots(out_dir: str, *, history: dict, overlays: Sequence[tuple], class_names, evaluation) -> list:
    """PNG plots of a segmentation run: learning curves, per-class IoU, best/worst overlays.

    `overlays`: `(title, image, true mask, predicted mask)` tuples, drawn
    one row each (image, truth, prediction) in VOC's palette.
    """
    from tuning.report import plot_saver

    plt, save, written = plot_saver(out_dir)

    if history:
        fig, axes = plt.subplots(1, 2, figsize=(10, 4))
        for ax, key in zip(axes, ("loss", "mean_iou")):
            for k in (key, f"val_{key}"):
                if k in history:
                    ax.plot(range(1, len(history[k]) + 1), history[k], marker="o", label=k)
            ax.set_xlabel("epoch")
            ax.set_title(key)
            ax.legend()
        save(fig, "learning_curves.png")
    ious = evaluation["per_class_iou"]
    fig, ax = plt.subplots(figsize=(max(5, 0.6 * len(ious)), 3.5))
    ax.bar(range(len(ious)), [v or 0 for v in ious.values()], color="tab:blue")
    ax.set_xticks(range(len(ious)), list(ious), rotation=45, ha="right")
    ax.set_ylim(0, 1)
    ax.set_title(f"IoU per class (mean {evaluation['mean_iou']:.3f})")
    save(fig, "per_class_iou.png")
    if overlays:
        palette = zoo.datasets.voc_palette()
        fig, axes = plt.subplots(len(overlays), 3, figsize=(7.5, 2.5 * len(overlays)), squeeze=False)
        for row, (title, image, truth, pred) in zip(axes, overlays):
            for ax, picture, name in zip(
                row, (image, palette[truth], palette[pred]), ("image", "truth", "predicted")
            ):
                ax.imshow(picture)
                ax.set_axis_off()
                ax.set_title(f"{title}: {name}" if name == "image" else name, fontsize=9)
        save(fig, "best_and_worst.png")
    return written


def overlays(model: keras.Model, batches, image_iou: Sequence[float], *, k: int = 3) -> list:
    """`(title, image, truth, prediction)` of the `k` best and `k` worst images by IoU."""
    order = np.argsort(image_iou)
    picks = [(f"worst {i + 1} (IoU {image_iou[j]:.2f})", j) for i, j in enumerate(order[:k])]
    picks += [(f"best {i + 1} (IoU {image_iou[j]:.2f})", j) for i, j in enumerate(order[::-1][:k])]
    wanted = {j for _, j in picks}
    found, seen = {}, 0
    for images, masks in batches:
        for image, mask in zip(np.asarray(images), np.asarray(masks)):
            if seen in wanted:
                pred = predict_masks(model, image[None])[0]
                found[seen] = (image, mask.astype("uint8"), pred)  # void (255) in VOC's void colour
            seen += 1
    return [(title, *found[j]) for title, j in picks if j in found]


def write_report(out_dir, *, config, classes, result, objective, evaluation, splits, timings, plots) -> str:
    """`report.md` of a segmentation run: data, best trial, test figures per class, timings, plots."""
    from tuning.files import write_text

    lines = ["# Segmentation run", "", "## Data", ""]
    lines += [f"- classes ({len(classes)}): {', '.join(classes)}; 255 = ignore"]
    for name in ("train", "val", "test"):
        lines.append(f"- {name}: {splits[name]['images']} images ({splits[name]['source']})")
    lines += [f"- image size {config.image_size} px; backbone(s) {', '.join(config.backbone)}", ""]
    lines += [
        "## Best trial",
        "",
        f"- objective {objective}: {result.score:.4f} (validation, which chose it)",
        "",
    ]
    lines += ["| hyperparameter | value |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in result.hyperparameters.items()]
    where = evaluation["split"]
    lines += ["", f"## Held-out figures ({where} split: {evaluation['source']})", ""]
    lines += [
        f"- mean IoU {evaluation['mean_iou']:.4f}, pixel accuracy {evaluation['pixel_accuracy']:.4f}, "
        f"frequency-weighted IoU {evaluation['fw_iou']:.4f}"
    ]
    if evaluation.get("tta"):
        t = evaluation["tta"]
        lines.append(
            f"- with flip TTA: mean IoU {t['mean_iou']:.4f}, pixel accuracy {t['pixel_accuracy']:.4f}"
        )
    lines += ["", "| class | IoU |", "|---|---:|"]
    lines += [
        f"| {c} | {'n/a' if v is None else f'{v:.4f}'} |" for c, v in evaluation["per_class_iou"].items()
    ]
    lines += [
        "",
        "## Leaderboard",
        "",
        "| trial | score | variant | backbone | learning rate | loss |",
        "|---|---:|---|---|---:|---|",
    ]
    for row in result.leaderboard:
        lines.append(
            f"| {row.get('trial_id')} | {row.get('score') or 0:.4f} | {row.get('fcn/variant')} | "
            f"{row.get('backbone', config.backbone[0])} | {row.get('fcn/learning_rate')} | {row.get('fcn/loss')} |"
        )
    lines += ["", "## Timings", ""] + [f"- {k}: {v:.1f} s" for k, v in timings.items()]
    lines += ["", "## Plots", ""] + [f"![{os.path.basename(p)}](plots/{os.path.basename(p)})" for p in plots]
    path = os.path.join(out_dir, "report.md")
    write_text(path, "\n".join(lines) + "\n")
    return path


@keras.saving.register_keras_serializable(package="tuning")
class ResizeLike(keras.layers.Layer):
    """Bilinear resize of `x` to the spatial size of `reference`: `ResizeLike()([x, reference])`.

    Example:

        >>> import numpy as np, tuning
        >>> y = tuning.segment.ResizeLike()([np.zeros((1, 4, 4, 2)), np.zeros((1, 7, 9, 3))])
        >>> tuple(y.shape)
        (1, 7, 9, 2)
    """

    def call(self, inputs):
        # Gathers, not `ops.image.resize`: Keras' TensorFlow resize refuses a
        # size that is only known when the graph runs (a served image's).
        x, reference = inputs
        x = ops.cast(x, "float32")
        shape = ops.shape(reference)
        for axis in (1, 2):
            x = _linear_along(x, shape[axis], axis)
        return x

    def compute_output_shape(self, input_shapes):
        x_shape, ref_shape = input_shapes
        return (x_shape[0], ref_shape[1], ref_shape[2], x_shape[3])


def _linear_along(x, size, axis):
    """`x` linearly resampled to `size` along `axis` (half-pixel centres, as bilinear resizing)."""
    n = ops.shape(x)[axis]
    scale = ops.cast(n, "float32") / ops.cast(size, "float32")
    centres = (ops.cast(ops.arange(size), "float32") + 0.5) * scale - 0.5
    centres = ops.clip(centres, 0.0, ops.cast(n - 1, "float32"))
    low = ops.cast(ops.floor(centres), "int32")
    high = ops.minimum(low + 1, n - 1)
    weight = centres - ops.cast(low, "float32")
    weight = ops.reshape(weight, [-1, 1, 1] if axis == 1 else [-1, 1])
    return ops.take(x, low, axis=axis) * (1 - weight) + ops.take(x, high, axis=axis) * weight


@keras.saving.register_keras_serializable(package="tuning")
class ClassMap(keras.layers.Layer):
    """Per-pixel class indices (int32) of per-pixel scores: the argmax over the last axis."""

    def call(self, scores):
        return ops.cast(ops.argmax(scores, axis=-1), "int32")

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1])

    def compute_output_spec(self, scores):
        return keras.KerasTensor(tuple(scores.shape[:-1]), dtype="int32")


def serving_model(model: keras.Model, *, probabilities: bool = False) -> keras.Model:
    """A segmentation model for serving: images of any size in, their class map at that size out.

    The image is resized to the model's input size (bilinear), the scores
    back to the image's size, then the argmax: `(batch, H, W)` int32. With
    `probabilities=True` the outputs are a dict, `class_map` and the softmax
    `probabilities` `(batch, H, W, classes)`. Give it to `zoo.export`
    (`input_dtype="uint8"`: raw pixels in).

    Example:

        >>> import numpy as np, zoo, tuning
        >>> fcn = zoo.build("fcn8s", backbone="resnet18", num_classes=3, input_shape=(32, 32, 3),
        ...                 include_preprocessing=True, classifier_activation=None)
        >>> served = tuning.segment.serving_model(fcn)
        >>> tuple(served(np.zeros((1, 45, 60, 3), "float32")).shape)
        (1, 45, 60)
    """
    if len(model.outputs) != 1 or len(model.outputs[0].shape) != 4:
        raise ValueError(
            "serving_model takes a segmentation model (one output of per-pixel scores, "
            f"(batch, H, W, classes)). Received outputs {[tuple(o.shape) for o in model.outputs]}."
        )
    h, w = model.input_shape[1:3]
    images = keras.Input((None, None, 3), name="images")
    x = images
    if h is not None and w is not None:
        x = keras.layers.Resizing(h, w, interpolation="bilinear", name="to_model_size")(images)
    scores = ResizeLike(name="to_image_size")([model(x, training=False), images])
    class_map = ClassMap(name="class_map")(scores)
    outputs = class_map
    if probabilities:
        outputs = {
            "class_map": class_map,
            "probabilities": keras.layers.Softmax(name="probabilities")(scores),
        }
    return keras.Model(images, outputs, name=f"{model.name}_served")
