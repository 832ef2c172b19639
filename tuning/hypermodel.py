"""`TransferHyperModel`: the search space of transfer learning.

What transfer learning actually varies: the classifier head, how deep to
unfreeze the backbone, and the learning rates of the two phases. The
backbone comes from `zoo` (or is any Keras model), the head is attached with
`surgery.graft`, depth is set with `surgery.unfreeze_stages`; nothing here
builds or freezes layers a third way.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import warnings
from collections.abc import Sequence
from typing import Any

import keras
import keras_tuner as kt
import numpy as np

import surgery
import zoo
from tuning.callbacks import EpochLogger, EpochProgress, Redirect, keep_async_dispatch
from tuning.losses import MULTILABEL_LOSSES, SparseCategoricalCrossentropyWithSmoothing, multilabel_loss
from tuning.metrics import balanced_class_weight, compiled_metrics, multilabel_metrics
from tuning.optimizers import RAdam, warmup_cosine

DEFAULT_HEAD_SPACE = {
    "pooling": ["avg", "max", "flatten"],
    "dense_layers": (0, 2),
    "units": [64, 128, 256, 512],
    "dropout": (0.0, 0.5, 0.1),
    "batch_norm": [False, True],
    "label_smoothing": [0.0, 0.1],
    "learning_rate": (1e-4, 1e-2),
    "optimizer": ["adam", "radam"],
    # Multi-label heads only (task="multilabel"): "bce", "focal", "asymmetric".
    "loss": ["bce", "asymmetric"],
}
TASKS = ("classify", "multilabel")
# Cached backbone features kept in memory, every backbone's together: 256 MiB
# is 1,300 images of resnet18's 7x7x512 map at 224 px, 14,500 of its 3x3x512
# at 96 px. Beyond it features go to float16 files, memory-mapped (half the
# bytes; the head learns what it learns in memory, tests/tuning/test_hypermodel.py),
# so frozen trials keep their speed-up on data of any size.
FEATURE_CACHE_BYTES = 2**28
AUGMENTATIONS = ("flip", "rotation", "zoom", "translation")
DEFAULT_UNFREEZE_SPACE = {
    "stages": None,  # 0..number of stages
    "lr_factor": [0.1, 0.01],
    "stage_lr_decay": [1.0],  # e.g. [1.0, 0.5]: discriminative fine-tuning
    "train_bn": [False],
    "augment": [False, True],
}


def _choice(hp, name, values, default=None):
    values = list(values)
    if len(values) == 1:
        return hp.Fixed(name, values[0])
    if all(isinstance(v, bool) for v in values):  # KerasTuner's Choice would store 0 and 1
        return hp.Boolean(name, default=bool(default if default in values else values[0]))
    return hp.Choice(name, values, default=default if default in values else values[0])


def scratch_batchnorm(model: keras.Model) -> keras.Model:
    """Set every BatchNormalization of a randomly initialised `model` to momentum 0.9, in place.

    From scratch the weights move fast and a trial is a few hundred steps:
    Keras' default momentum (0.99; 0.999 in keras.applications' MobileNetV3)
    leaves the inference statistics far behind the training ones, and the
    model evaluates near chance. 0.9 is torchvision's (its `momentum=0.1`).

    Example:

        >>> import zoo
        >>> from tuning.hypermodel import scratch_batchnorm
        >>> m = scratch_batchnorm(zoo.build("mobilenetv3small", include_top=False, input_shape=(32, 32, 3)))
        >>> {l.momentum for l in zoo.layers.leaf_layers(m) if "BatchNormalization" in type(l).__name__}
        {0.9}
    """
    for layer in zoo.layers.leaf_layers(model):
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = 0.9
    return model


class TransferHyperModel(kt.HyperModel):
    """Search heads, unfreeze depth and learning rates over a pretrained backbone.

    Hyperparameters (prefixed): `head/pooling`, `head/dense_layers`,
    `head/units`, `head/dropout`, `head/batch_norm`, `head/label_smoothing`,
    `head/learning_rate`, `head/optimizer` (`adam`, `radam`, `sgd`, ...),
    for multi-label heads `head/loss` (`bce`, `focal`, `asymmetric`);
    `finetune/stages` (0 = frozen backbone, k = the last k stages, all),
    `finetune/lr_factor` (phase-2 learning rate = head rate x factor),
    `finetune/stage_lr_decay` (discriminative fine-tuning: in phase 2 the
    last stage trains at the phase-2 rate x decay, the one before at x
    decay**2, ...; the head at the phase-2 rate; 1.0 = one rate for all),
    `finetune/train_bn` (BatchNorm in inference mode unless True),
    `finetune/augment` (random flips/rotations/zooms before the backbone).

    Each trial trains in two phases (Chollet's recipe): the head with the
    backbone frozen, then, if `finetune/stages > 0`, the unfrozen stages and
    the head together at the lower rate. A trial with a frozen backbone and
    no augmentation trains the head on cached backbone features (computed
    once per dataset): the same result, many times faster.

    Args:
        backbone: str, list of str, or keras.Model. A zoo name
            (`zoo.list_models()`), several names (then `backbone` is a
            hyperparameter: each trial picks one, each backbone is built
            once and has its own feature cache), or a functional Keras
            model producing a feature map (its stages are inferred).
        num_classes: int. Classes to predict.
        task: str. "classify" (one class per image: softmax, cross-entropy,
            integer labels) or "multilabel" (any number per image: sigmoid,
            `head/loss` over binary cross-entropy, focal and asymmetric
            loss, 0/1 label rows, compiled `map` and `micro_f1`). Defaults
            to "classify".
        input_shape: tuple. `(height, width, 3)` of the images (uint8 or
            float 0-255; the backbone's normalisation is built in).
        weights: None, "imagenet" or a path: the backbone's weights (with
            several backbones, "imagenet" or a source tag for each).
        head_space: dict. Overrides of `DEFAULT_HEAD_SPACE` (lists are
            choices, `(min, max[, step])` ranges).
        unfreeze_space: dict. Overrides of `DEFAULT_UNFREEZE_SPACE`.
        cache_features: bool. Use cached features for frozen trials.
            Defaults to True.
        feature_cache_bytes: int. Cached features kept in memory, all
            backbones together; the rest go to float16 files in
            `feature_cache_dir`, memory-mapped. Defaults to
            `FEATURE_CACHE_BYTES` (256 MiB).
        feature_cache_dir: str. Where those files go (the job uses its
            search folder). Defaults to a temporary folder, removed at exit.
        phase1_fraction: float. Share of a trial's epochs spent on the head
            alone when the trial unfreezes stages; 0 trains the sampled depth
            from the first epoch (random-init backbones). Defaults to 0.5.
        augmentation: tuple of str. Which of `augmentation_layers`' kinds a
            trial with `finetune/augment` uses. Defaults to all four.
        schedule: str. `"constant"` learning rates, or `"cosine"`: each
            phase warms up linearly for one epoch then decays to 0 by its
            last epoch (`tuning.warmup_cosine`); needs the steps per epoch
            (arrays, or a dataset of known length). Defaults to "constant".
        seed: int. Seeds the backbone's random initialisation. Defaults to 0.
        precision: str. `"fp32"` or `"bf16"` (`mixed_bfloat16`: bfloat16
            compute, float32 weights and softmax; faster on GPUs and on CPUs
            with AMX). Every trial's model is built under it (KerasTuner
            resets Keras' global dtype policy before each trial, so setting
            that policy yourself is not enough). Defaults to "fp32".
        class_weight: str. None (every image counts once), "balanced" (each
            class's images weigh `n / (k * n_class)` in the loss, as
            scikit-learn's "balanced"), or "search" (`finetune/class_weight`
            chooses between "none" and "balanced"). Defaults to None.
        class_counts: list of int. Training images per class, for the
            weights; read from the labels of arrays (or a dataset with a
            `labels` attribute) when not given.
        distribution: a `keras.distribution` (e.g. `DataParallel`) every
            trial's model is built under (JAX). Defaults to None.
        learning_rate_scale: float. Every sampled learning rate is
            multiplied by it when the optimizer is made (the job sets the
            device count of a data-parallel run: linear scaling for a
            global batch that many times larger). Defaults to 1.0.

    After each `fit`, `take_last_fit()` hands over the trained model, its
    per-epoch history and the phase of each epoch (what a tuner keeps).

    Example:

        >>> import keras_tuner as kt, tuning
        >>> hm = tuning.TransferHyperModel("resnet18", num_classes=3, input_shape=(32, 32, 3))
        >>> model = hm.build(kt.HyperParameters())
        >>> model.output_shape
        (None, 3)
    """

    def __init__(
        self,
        backbone: str | Sequence[str],
        *,
        num_classes: int,
        task: str = "classify",
        input_shape: Sequence[int | None],
        weights: str | os.PathLike | None = None,
        head_space: dict | None = None,
        unfreeze_space: dict | None = None,
        cache_features: bool = True,
        feature_cache_bytes: int = FEATURE_CACHE_BYTES,
        feature_cache_dir: str | os.PathLike | None = None,
        phase1_fraction: float = 0.5,
        seed: int = 0,
        schedule: str = "constant",
        augmentation: Sequence[str] | keras.layers.Layer | None = AUGMENTATIONS,
        precision: str = "fp32",
        class_weight: str | None = None,
        class_counts: Sequence[int] | None = None,
        distribution: Any = None,
        learning_rate_scale: float = 1.0,
        name: str | None = None,
    ) -> None:
        super().__init__(name=name, tunable=True)
        self.precision = precision
        self.dtype_policy = zoo.precision_policy(precision)
        if not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(f"`num_classes` must be an int >= 2. Received: num_classes={num_classes!r}")
        self.num_classes = num_classes
        if task not in TASKS:
            raise ValueError(f"`task` must be one of {TASKS}. Received: task={task!r}")
        self.task = task
        self.input_shape = tuple(input_shape)
        self.head_space = {**DEFAULT_HEAD_SPACE, **(head_space or {})}
        self.unfreeze_space = {**DEFAULT_UNFREEZE_SPACE, **(unfreeze_space or {})}
        unknown = (set(head_space or {}) - set(DEFAULT_HEAD_SPACE)) | (
            set(unfreeze_space or {}) - set(DEFAULT_UNFREEZE_SPACE)
        )
        if unknown:
            raise ValueError(
                f"Unknown search-space keys {sorted(unknown)}. Head keys: "
                f"{sorted(DEFAULT_HEAD_SPACE)}; unfreeze keys: {sorted(DEFAULT_UNFREEZE_SPACE)}."
            )
        if class_weight not in (None, "balanced", "search"):
            raise ValueError(
                "`class_weight` must be None, 'balanced' or 'search'. Received: "
                f"class_weight={class_weight!r}"
            )
        if task == "multilabel" and class_weight is not None:
            raise ValueError(
                "`class_weight` weighs single-label classes; a multi-label head handles rare labels "
                f"with head/loss 'focal' or 'asymmetric'. Received: class_weight={class_weight!r}"
            )
        bad_losses = [v for v in self.head_space["loss"] if v not in MULTILABEL_LOSSES]
        if bad_losses:
            raise ValueError(f"head_space['loss'] values are {MULTILABEL_LOSSES}. Received: {bad_losses}")
        self.class_weight = class_weight
        self.class_counts = None if class_counts is None else [int(c) for c in class_counts]
        if schedule not in ("constant", "cosine"):
            raise ValueError(f"`schedule` must be 'constant' or 'cosine'. Received: {schedule!r}")
        self.cache_features = cache_features
        self.feature_cache_bytes = int(feature_cache_bytes)
        self.feature_cache_dir = None if feature_cache_dir is None else os.fspath(feature_cache_dir)
        self.phase1_fraction = phase1_fraction
        self.schedule = schedule
        augmentation_layers(augmentation)  # validates the names now, not in a trial
        self.augmentation = tuple(augmentation)
        self.seed = seed
        self.weights = weights
        if isinstance(backbone, keras.Model):
            keras.utils.set_random_seed(seed)  # the heads' initialisation
            self.backbones = (backbone.name,)
            self._templates = {backbone.name: backbone}
        else:
            names = [backbone] if isinstance(backbone, str) else list(backbone or ())
            if not names or not all(isinstance(n, str) for n in names):
                raise TypeError(
                    "`backbone` must be a zoo model name, a list of names, or a keras.Model. "
                    f"Received: {backbone!r}"
                )
            self.backbones = tuple(dict.fromkeys(zoo.get_spec(n).name for n in names))
            # Each built once: every trial on a backbone starts from the same
            # weights, which is also what makes its cached features valid.
            self._templates = {n: self._build_template(n) for n in self.backbones}
        self.backbone_name = self.backbones[0]
        self._template = self._templates[self.backbone_name]
        self._stages = {n: zoo.stages_of(t) for n, t in self._templates.items()}
        self.stages = self._stages[self.backbone_name]
        self._feature_cache: dict = {}
        # A `keras.distribution` (e.g. DataParallel) for every trial's model;
        # set per build because KerasTuner clears the session before each.
        self.distribution = distribution
        if not learning_rate_scale > 0:
            raise ValueError(
                f"`learning_rate_scale` must be above 0. Received: learning_rate_scale={learning_rate_scale!r}"
            )
        self.learning_rate_scale = float(learning_rate_scale)
        self._last_fit = None

    def _build_template(self, name):
        keras.utils.set_random_seed(self.seed)
        template = zoo.build(
            name,
            include_top=False,
            weights=self.weights,
            input_shape=self.input_shape,
            include_preprocessing=True,
            dtype=self.dtype_policy,
        )
        if self.weights is None:
            scratch_batchnorm(template)
        return template

    # ----------------------------------------------------------------- build
    def _space(self, hp):
        h, u = self.head_space, self.unfreeze_space
        s = {}
        # One backbone: no hyperparameter (the leaderboard of a one-backbone
        # search stays as it was); several: a choice, first = default.
        s["backbone"] = (
            hp.Choice("backbone", list(self.backbones), default=self.backbones[0])
            if len(self.backbones) > 1
            else self.backbones[0]
        )
        s["pooling"] = _choice(hp, "head/pooling", h["pooling"], "avg")
        lo, hi = h["dense_layers"]
        s["dense_layers"] = (
            hp.Int("head/dense_layers", lo, hi) if hi > lo else hp.Fixed("head/dense_layers", lo)
        )
        s["units"] = _choice(hp, "head/units", h["units"])
        lo, hi, step = (tuple(h["dropout"]) + (0.1,))[:3]
        s["dropout"] = (
            hp.Float("head/dropout", lo, hi, step=step) if hi > lo else hp.Fixed("head/dropout", lo)
        )
        s["batch_norm"] = _choice(hp, "head/batch_norm", h["batch_norm"])
        s["label_smoothing"] = _choice(hp, "head/label_smoothing", h["label_smoothing"])
        lo, hi = h["learning_rate"]
        s["learning_rate"] = (
            hp.Float("head/learning_rate", lo, hi, sampling="log", default=min(max(1e-3, lo), hi))
            if hi > lo
            else hp.Fixed("head/learning_rate", lo)
        )
        s["optimizer"] = _choice(hp, "head/optimizer", h["optimizer"])
        if self.task == "multilabel":
            s["loss"] = _choice(hp, "head/loss", h["loss"])
        # One range for every backbone (a hyperparameter's values are fixed);
        # a depth beyond a backbone's stage count unfreezes all of it.
        deepest = max(len(st) for st in self._stages.values())
        stages = u["stages"] if u["stages"] is not None else list(range(deepest + 1))
        s["stages"] = min(_choice(hp, "finetune/stages", stages, 0), len(self._stages[s["backbone"]]))
        s["lr_factor"] = _choice(hp, "finetune/lr_factor", u["lr_factor"])
        s["stage_lr_decay"] = _choice(hp, "finetune/stage_lr_decay", u["stage_lr_decay"])
        s["train_bn"] = _choice(hp, "finetune/train_bn", u["train_bn"])
        s["augment"] = _choice(hp, "finetune/augment", u["augment"], False)
        if self.class_weight == "search":
            s["class_weight"] = hp.Choice("finetune/class_weight", ["none", "balanced"], default="none")
        else:
            s["class_weight"] = self.class_weight or "none"
        return s

    def template(self, backbone: str | None = None) -> keras.Model:
        """The built backbone (`include_top=False`) trials start from.

        Args:
            backbone: str. One of `self.backbones`. Defaults to the first.

        Example:

            >>> import tuning
            >>> hm = tuning.TransferHyperModel("resnet18", num_classes=3, input_shape=(32, 32, 3))
            >>> hm.template("resnet18").output_shape
            (None, 1, 1, 512)
        """
        return self._templates[backbone or self.backbone_name]

    def _head(self, s) -> keras.Sequential:
        # The zoo's one classifier head, with the sampled shape.
        head = keras.Sequential(
            zoo.layers.classifier_head(
                self.num_classes,
                pooling=s["pooling"],
                hidden_units=(s["units"],) * s["dense_layers"],
                batch_norm=s["batch_norm"],
                dropout=s["dropout"],
                activation="sigmoid" if self.task == "multilabel" else "softmax",
                prefix="head_",
                hidden_name="dense",
                output_name="predictions",
            ),
            name="head",
        )
        head.build((None,) + tuple(self.template(s["backbone"]).output.shape[1:]))
        return head

    def build(self, hp: kt.HyperParameters) -> keras.Model:
        if self.distribution is not None:
            keras.distribution.set_distribution(self.distribution)
        s = self._space(hp)
        with zoo.dtype_policy_scope(self.dtype_policy):  # the head and augmentation layers
            model = surgery.graft(
                self.template(s["backbone"]), self._head(s), name=f"{s['backbone']}_transfer"
            )
            if s["augment"]:
                model = surgery.insert(
                    model,
                    keras.Sequential(augmentation_layers(self.augmentation), name="augment"),
                    after=model.layers[0].name,
                )
        self._compile(model, s, s["learning_rate"], for_fit=False)
        return model

    def _compile(
        self,
        model,
        s,
        learning_rate,
        *,
        epochs=None,
        steps_per_epoch=None,
        stage_decay=1.0,
        stages=0,
        for_fit=True,
    ):
        def make(rate):
            rate = rate * self.learning_rate_scale
            if self.schedule == "cosine" and epochs and steps_per_epoch:
                rate = warmup_cosine(
                    rate,
                    total_steps=epochs * steps_per_epoch,
                    warmup_steps=min(steps_per_epoch, epochs * steps_per_epoch // 2),
                )
            if s["optimizer"] == "radam":
                return RAdam(rate)
            return keras.optimizers.get({"class_name": s["optimizer"], "config": {"learning_rate": rate}})

        optimizer = make(learning_rate)
        if stage_decay != 1.0 and stages > 0:
            # Discriminative fine-tuning with Keras' own machinery: one
            # optimizer per unfrozen stage, selected by variable path.
            by_path = keras.optimizers.OptimizerMap(optimizer)
            groups = [g for name, g in surgery.stage_groups(model).items() if name != "head"]
            for depth, layers in enumerate(reversed(groups[-stages:]), start=1):
                names = "|".join(re.escape(l.name) for l in layers if l.weights)
                if names:
                    by_path[f"(?:.*/)?(?:{names})/[^/]+"] = make(learning_rate * stage_decay**depth)
            optimizer = keras.optimizers.MultiOptimizer(by_path)
        if self.task == "multilabel":
            loss = multilabel_loss(s["loss"], s["label_smoothing"])
            metrics = multilabel_metrics(self.num_classes)
        else:
            loss = SparseCategoricalCrossentropyWithSmoothing(s["label_smoothing"])
            metrics = compiled_metrics(self.num_classes)
        model.compile(optimizer=optimizer, loss=loss, metrics=metrics)
        if for_fit:  # `build`'s compile is replaced by `fit`'s: no state to build for it
            _build_training_state(model, multilabel=self.task == "multilabel")

    # ------------------------------------------------------------------- fit
    def fit(
        self,
        hp: kt.HyperParameters,
        model: keras.Model,
        x: Any = None,
        y: Any = None,
        *,
        epochs: int = 1,
        validation_data: Any = None,
        callbacks: Sequence[keras.callbacks.Callback] | None = None,
        initial_epoch: int = 0,
        **kwargs: Any,
    ) -> keras.callbacks.History:
        s = self._space(hp)
        callbacks = keep_async_dispatch(list(callbacks or []))
        if kwargs.get("verbose") == 2:  # Keras' own verbose=2 waits for every step's logs
            kwargs["verbose"] = 0
            callbacks.append(EpochProgress() if EpochProgress.wanted() else EpochLogger())
        total = max(1, epochs - initial_epoch)
        # phase1_fraction=0 with stages > 0 trains everything from the first
        # epoch (a random-init backbone has nothing to protect).
        phase1 = total if s["stages"] == 0 else min(total, math.ceil(total * self.phase1_fraction))
        history = {}

        def record(h, phase):
            for k, v in h.history.items():
                history.setdefault(k, []).extend(v)
            # Which phase each epoch belonged to (the report marks the switch).
            phases.extend([phase] * len(next(iter(h.history.values()), [])))

        phases = []

        head = model.get_layer("head")
        steps = _steps_per_epoch(x, kwargs.get("batch_size"))
        if s["class_weight"] == "balanced":
            kwargs["class_weight"] = self._balanced_weights(x, y)
        full_kwargs = dict(kwargs)
        if y is None:  # a dataset shuffles itself; Keras warns about `shuffle=True` every fit
            full_kwargs.setdefault("shuffle", False)
        _set_depth(model, 0, keep_bn_frozen=True)  # phase 1: the head alone
        if self.cache_features and not s["augment"] and s["stages"] == 0:
            fx, fy = self.features(x, y, backbone=s["backbone"])
            val = None
            if validation_data is not None:
                val = self.features(*_split_xy(validation_data), backbone=s["backbone"])
            batch = kwargs.get("batch_size") or 32
            if isinstance(fx, np.memmap):  # batches read from the file, not the whole array into memory
                shuffle = kwargs.get("shuffle", True)  # as `fit` would shuffle the arrays
                fx, fy = _FeatureBatches(fx, fy, batch_size=batch, shuffle=shuffle, seed=self.seed), None
            if val is not None and isinstance(val[0], np.memmap):
                val = _FeatureBatches(*val, batch_size=batch)
            self._compile(
                head,
                s,
                s["learning_rate"],
                epochs=phase1,
                steps_per_epoch=_steps_per_epoch(fx, kwargs.get("batch_size")),
            )
            redirected = [Redirect(cb, model) for cb in callbacks]
            record(
                head.fit(
                    fx,
                    fy,
                    epochs=initial_epoch + phase1,
                    initial_epoch=initial_epoch,
                    validation_data=val,
                    callbacks=redirected,
                    **(kwargs if fy is not None else {k: v for k, v in kwargs.items() if k != "batch_size"}),
                ),
                1,
            )
            return self._finish(hp, model, history, phases)
        if phase1 > 0:
            self._compile(model, s, s["learning_rate"], epochs=phase1, steps_per_epoch=steps)
            record(
                model.fit(
                    x,
                    y,
                    epochs=initial_epoch + phase1,
                    initial_epoch=initial_epoch,
                    validation_data=validation_data,
                    callbacks=callbacks,
                    **full_kwargs,
                ),
                1,
            )
        if s["stages"] > 0 and phase1 < total and not model.stop_training:
            _set_depth(model, s["stages"], keep_bn_frozen=not s["train_bn"])
            self._compile(
                model,
                s,
                s["learning_rate"] * s["lr_factor"],
                epochs=total - phase1,
                steps_per_epoch=steps,
                stage_decay=s["stage_lr_decay"],
                stages=s["stages"],
            )
            # KerasTuner's TensorBoard hparams callback records one session
            # per trial and refuses a second `fit`; phase 1 already logged it.
            phase2_callbacks = [
                cb
                for cb in callbacks
                if phase1 == 0 or not type(cb).__module__.startswith("tensorboard.plugins.hparams")
            ]
            record(
                model.fit(
                    x,
                    y,
                    epochs=initial_epoch + total,
                    initial_epoch=initial_epoch + phase1,
                    validation_data=validation_data,
                    callbacks=phase2_callbacks,
                    **full_kwargs,
                ),
                2,
            )
        return self._finish(hp, model, history, phases)

    def _finish(self, hp, model, history, phases=()):
        self._last_fit = {"model": model, "history": history, "phases": list(phases)}
        return _history(history)

    def take_last_fit(self) -> dict | None:
        """The last `fit`'s `{"model", "history", "phases"}`, handed over once (then None)."""
        last, self._last_fit = self._last_fit, None
        return last

    def _balanced_weights(self, x, y) -> dict:
        counts = self.class_counts
        if counts is None:
            labels = y if y is not None else getattr(x, "labels", None)
            if labels is None:
                raise ValueError(
                    "class_weight='balanced' needs the training images per class: pass "
                    "`class_counts` (a dataset of unknown labels cannot be counted cheaply)."
                )
            counts = np.bincount(np.asarray(labels).astype("int64").ravel(), minlength=self.num_classes)
        return balanced_class_weight(counts)

    # -------------------------------------------------------------- features
    def features(self, x: Any, y: Any = None, *, backbone: str | None = None) -> Any:
        """Backbone outputs for a dataset, computed once per backbone and cached.

        Args:
            x: array of images, or a dataset yielding `(images, labels)`.
            y: array of labels, when `x` is an array.
            backbone: str. Whose features (one of `self.backbones`).
                Defaults to the first.

        Returns:
            `(features, labels)` numpy arrays.
        """
        template = self.template(backbone)
        key = (template.name, _fingerprint(x, y))
        if key not in self._feature_cache:
            self._feature_cache[key] = self._compute_features(template, x, y, key)
        return self._feature_cache[key]

    def _compute_features(self, template, x, y, key):
        """One pass of `template` over the data: in memory while the cache has room, else a float16 file."""
        batches = x if y is None else ((x[i : i + 64], y[i : i + 64]) for i in range(0, len(x), 64))
        held = sum(f.nbytes for f, _ in self._feature_cache.values() if not isinstance(f, np.memmap))
        room = self.feature_cache_bytes - held
        parts, labels, rows, path, spill = [], [], 0, None, None
        try:
            for bx, by in batches:
                # float32 whatever the compute dtype: the head's cached inputs.
                f = np.asarray(keras.ops.convert_to_numpy(template.predict_on_batch(bx)), "float32")
                labels.append(np.asarray(by))
                rows, shape = rows + len(f), f.shape[1:]
                if spill is None and (rows * f[0].nbytes > room):  # over the limit: to disk from here on
                    path, spill = self._spill_file(key)
                    for p in parts:
                        spill.write(p.astype("float16").tobytes())
                    parts = None
                if spill is not None:
                    spill.write(f.astype("float16").tobytes())
                else:
                    parts.append(f)
        finally:
            if spill is not None:
                spill.close()
        labels = np.concatenate(labels)
        if spill is None:
            return np.concatenate(parts), labels
        return np.memmap(path, dtype="float16", mode="r", shape=(rows, *shape)), labels

    def _spill_file(self, key):
        if self.feature_cache_dir is None:
            import atexit
            import shutil
            import tempfile

            self.feature_cache_dir = tempfile.mkdtemp(prefix="kerazoo-features-")
            atexit.register(shutil.rmtree, self.feature_cache_dir, ignore_errors=True)
        os.makedirs(self.feature_cache_dir, exist_ok=True)
        name = hashlib.sha1(repr(key).encode()).hexdigest()[:16]
        path = os.path.join(self.feature_cache_dir, f"{key[0]}-{name}.f16")
        return path, open(path, "wb")  # closed by _compute_features


class _FeatureBatches(keras.utils.PyDataset):
    """`(float32 features, labels)` batches read from a memory-mapped feature file, reshuffled every epoch."""

    def __init__(self, features, labels, *, batch_size, shuffle=False, seed=0):
        super().__init__()
        self.features, self.labels, self.batch_size, self.shuffle = features, labels, batch_size, shuffle
        self._rng = np.random.default_rng(seed)
        self._order = self._rng.permutation(len(labels)) if shuffle else np.arange(len(labels))

    def __len__(self):
        return -(-len(self.labels) // self.batch_size)

    def __getitem__(self, index):
        if not 0 <= index < len(self):
            raise IndexError(f"batch {index} of {len(self)}")
        # Rows in file order within a batch: fewer seeks, and a batch's order does not matter.
        idx = np.sort(self._order[index * self.batch_size : (index + 1) * self.batch_size])
        return np.asarray(self.features[idx], "float32"), self.labels[idx]

    def on_epoch_end(self):
        if self.shuffle:
            self._order = self._rng.permutation(len(self.labels))


def _build_training_state(model, *, multilabel=False):
    """Create the optimizer's, metrics' and loss's variables now, eagerly.

    Left to `fit`, TensorFlow creates them inside a traced graph, and their
    initialisers become conditional graphs that it never frees: about 3 MB
    per `fit` for a small model, and a search fits twice per trial. Built
    here, 20 trials in one process stay within the memory budget
    (`tests/tuning/test_search.py` measures it). Harmless on JAX and torch.
    """
    model.optimizer.build(model.trainable_variables)
    n = model.output_shape[-1]
    y_true = keras.ops.zeros((1, n)) if multilabel else keras.ops.zeros((1,), "int32")
    y_pred = keras.ops.ones((1, n)) / n
    model.compute_loss(None, y_true, y_pred)
    model.compute_metrics(None, y_true, y_pred, None)
    model.reset_metrics()


def _set_depth(model, stages, *, keep_bn_frozen):
    # Recompiled right after, so the "compiled before freezing" warning is moot.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        surgery.unfreeze_stages(model, stages, keep_bn_frozen=keep_bn_frozen)
    # keep_bn_frozen also froze the head's BatchNorm; the head always trains.
    for layer in model.get_layer("head").layers:
        layer.trainable = True


def augmentation_layers(kinds: Sequence[str] = AUGMENTATIONS) -> list[keras.layers.Layer]:
    """The seeds' `ImageDataGenerator` settings as Keras preprocessing layers.

    Horizontal flips, rotations of up to 0.1 turn (36 degrees), 20% zoom and
    10% translations; active only in training, on the device.

    Args:
        kinds: tuple of str. A subset of `("flip", "rotation", "zoom",
            "translation")`. Defaults to all four.

    Example:

        >>> import tuning
        >>> [l.name for l in tuning.hypermodel.augmentation_layers()]
        ['augment_flip', 'augment_rotation', 'augment_zoom', 'augment_translation']
        >>> [l.name for l in tuning.hypermodel.augmentation_layers(("flip", "rotation"))]
        ['augment_flip', 'augment_rotation']
    """
    if isinstance(kinds, str):
        kinds = (kinds,)
    unknown = [k for k in kinds if k not in AUGMENTATIONS]
    if unknown or not kinds:
        raise ValueError(
            f"Augmentation kinds are a non-empty subset of {AUGMENTATIONS}. Received: {tuple(kinds)!r}"
        )
    make = {
        "flip": lambda: keras.layers.RandomFlip("horizontal", name="augment_flip"),
        "rotation": lambda: keras.layers.RandomRotation(0.1, fill_mode="reflect", name="augment_rotation"),
        "zoom": lambda: keras.layers.RandomZoom(0.2, fill_mode="reflect", name="augment_zoom"),
        "translation": lambda: keras.layers.RandomTranslation(
            0.1, 0.1, fill_mode="reflect", name="augment_translation"
        ),
    }
    return allow_jit([make[k]() for k in AUGMENTATIONS if k in kinds])


# Keras marks these `supports_jit = False` for TensorFlow, whose
# ImageProjectiveTransform has no XLA kernel; one such layer turns XLA off
# for the whole model (`compile(jit_compile="auto")`). On JAX they are
# jax.numpy and jit as they are (checked: same pixels, a new draw each step).
_JITTABLE_ON_JAX = ("RandomFlip", "RandomRotation", "RandomZoom", "RandomTranslation")


def load_jittable(path: str) -> keras.Model:
    """`keras.saving.load_model(path)`, with `allow_jit` applied before the model compiles.

    A plain load compiles the model from its saved settings while its
    augmentation layers still say they cannot jit: on JAX Keras then warns
    "Model doesn't support `jit_compile=True`" and predicts op by op. Here
    the model loads uncompiled, `allow_jit` runs, and it compiles from the
    same saved settings with `jit_compile="auto"` (the optimizer starts
    afresh: nothing here trains a loaded model further). Other backends
    load as usual.

    Example:

        >>> import os, tempfile, keras, tuning
        >>> m = keras.Sequential([keras.Input((4, 4, 3)), keras.layers.RandomRotation(0.1)])
        >>> m.compile("sgd", "mse")
        >>> path = os.path.join(tempfile.mkdtemp(), "m.keras")
        >>> m.save(path)
        >>> tuning.hypermodel.load_jittable(path).compiled
        True
    """
    import json
    import zipfile

    if keras.backend.backend() != "jax":
        return keras.saving.load_model(path)
    model = allow_jit(keras.saving.load_model(path, compile=False))
    with zipfile.ZipFile(path) as archive:  # the .keras format: config.json holds the compile settings
        compile_config = json.loads(archive.read("config.json")).get("compile_config")
    if compile_config:
        model.compile_from_config({**compile_config, "jit_compile": "auto"})
    return model


def allow_jit(layers):
    """On JAX, let the augmentation layers among `layers` (a model, or a list) compile with XLA.

    Without it, a model holding `RandomRotation`, `RandomZoom` or
    `RandomTranslation` trains and predicts op by op on JAX: resnet18 at
    96 px trained at 22.5 img/s instead of 34 (2-core CPU), predicted at
    half speed, and JAX kept 1.5 GB of one-op executables per search. A
    loaded model needs it again (the flag is not saved). Other backends are
    left as they are. Returns `layers`.

    Example:

        >>> import keras, tuning
        >>> layers = tuning.hypermodel.allow_jit([keras.layers.RandomRotation(0.1)])
        >>> layers[0].supports_jit == (keras.backend.backend() == "jax")
        True
    """
    if keras.backend.backend() != "jax":
        return layers
    stack = list(layers.layers if isinstance(layers, keras.Model) else layers)
    while stack:  # nested models (the "augment" Sequential) included
        layer = stack.pop()
        stack += getattr(layer, "layers", [])
        if type(layer).__name__ in _JITTABLE_ON_JAX and type(layer).__module__.startswith("keras"):
            layer.supports_jit = True
    return layers


def _steps_per_epoch(x, batch_size):
    """Batches per epoch of `x` (arrays or a sized dataset), or None if unknown."""
    if hasattr(x, "shape"):
        return max(1, math.ceil(x.shape[0] / (batch_size or 32)))
    try:
        n = len(x)
    except (TypeError, ValueError):  # unsized iterables; tf.data of unknown cardinality
        return None
    return n if n > 0 else None


def _split_xy(data):
    if isinstance(data, (tuple, list)):
        return data[0], data[1] if len(data) > 1 else None
    return data, None


def _fingerprint(x, y):
    if y is None:
        return ("dataset", id(x))
    x = np.asarray(x)
    digest = hashlib.sha1(np.ascontiguousarray(x[:: max(1, len(x) // 16)]).tobytes())
    digest.update(np.asarray(y).tobytes())
    return ("arrays", x.shape, digest.hexdigest())


def _history(merged):
    h = keras.callbacks.History()
    h.history = merged
    return h
