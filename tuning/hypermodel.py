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
import sys
import threading
import time
import types
import warnings
from collections.abc import Sequence
from typing import Any

import keras
import keras_tuner as kt
import numpy as np

import surgery
import zoo
from tuning.losses import SparseCategoricalCrossentropyWithSmoothing
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
}
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


class TransferHyperModel(kt.HyperModel):
    """Search heads, unfreeze depth and learning rates over a pretrained backbone.

    Hyperparameters (prefixed): `head/pooling`, `head/dense_layers`,
    `head/units`, `head/dropout`, `head/batch_norm`, `head/label_smoothing`,
    `head/learning_rate`, `head/optimizer` (`adam`, `radam`, `sgd`, ...);
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
        input_shape: tuple. `(height, width, 3)` of the images (uint8 or
            float 0-255; the backbone's normalisation is built in).
        weights: None, "imagenet" or a path: the backbone's weights (with
            several backbones, "imagenet" or a source tag for each).
        head_space: dict. Overrides of `DEFAULT_HEAD_SPACE` (lists are
            choices, `(min, max[, step])` ranges).
        unfreeze_space: dict. Overrides of `DEFAULT_UNFREEZE_SPACE`.
        cache_features: bool. Use cached features for frozen trials.
            Defaults to True.
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
        input_shape: Sequence[int | None],
        weights: str | os.PathLike | None = None,
        head_space: dict | None = None,
        unfreeze_space: dict | None = None,
        cache_features: bool = True,
        phase1_fraction: float = 0.5,
        seed: int = 0,
        schedule: str = "constant",
        augmentation: Sequence[str] | keras.layers.Layer | None = AUGMENTATIONS,
        precision: str = "fp32",
        name: str | None = None,
    ) -> None:
        super().__init__(name=name, tunable=True)
        self.precision = precision
        self.dtype_policy = zoo.precision_policy(precision)
        if not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(f"`num_classes` must be an int >= 2. Received: num_classes={num_classes!r}")
        self.num_classes = num_classes
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
        if schedule not in ("constant", "cosine"):
            raise ValueError(f"`schedule` must be 'constant' or 'cosine'. Received: {schedule!r}")
        self.cache_features = cache_features
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
        # Set by `tuning.search`: called with (model, score, hyperparameters)
        # after each trial, to keep the best model on disk.
        self.on_trial_trained = None
        self.objective_name, self.objective_direction = "val_accuracy", "max"
        # A `keras.distribution` (e.g. DataParallel) for every trial's model;
        # set per build because KerasTuner clears the session before each.
        self.distribution = None

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
            # From scratch the weights move fast and a trial is a few
            # hundred steps: Keras' default BN momentum (0.99) leaves the
            # inference statistics far behind the training ones. Use
            # torchvision's 0.9 (its `momentum=0.1`).
            for layer in template.layers:
                if isinstance(layer, keras.layers.BatchNormalization):
                    layer.momentum = 0.9
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
        # One range for every backbone (a hyperparameter's values are fixed);
        # a depth beyond a backbone's stage count unfreezes all of it.
        deepest = max(len(st) for st in self._stages.values())
        stages = u["stages"] if u["stages"] is not None else list(range(deepest + 1))
        s["stages"] = min(_choice(hp, "finetune/stages", stages, 0), len(self._stages[s["backbone"]]))
        s["lr_factor"] = _choice(hp, "finetune/lr_factor", u["lr_factor"])
        s["stage_lr_decay"] = _choice(hp, "finetune/stage_lr_decay", u["stage_lr_decay"])
        s["train_bn"] = _choice(hp, "finetune/train_bn", u["train_bn"])
        s["augment"] = _choice(hp, "finetune/augment", u["augment"], False)
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
        model.compile(
            optimizer=optimizer,
            loss=SparseCategoricalCrossentropyWithSmoothing(s["label_smoothing"]),
            metrics=["accuracy"],
        )
        if for_fit:  # `build`'s compile is replaced by `fit`'s: no state to build for it
            _build_training_state(model)

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
        callbacks = _keep_async_dispatch(list(callbacks or []))
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
        full_kwargs = dict(kwargs)
        if y is None:  # a dataset shuffles itself; Keras warns about `shuffle=True` every fit
            full_kwargs.setdefault("shuffle", False)
        _set_depth(model, 0, keep_bn_frozen=True)  # phase 1: the head alone
        if self.cache_features and not s["augment"] and s["stages"] == 0:
            fx, fy = self.features(x, y, backbone=s["backbone"])
            val = None
            if validation_data is not None:
                val = self.features(*_split_xy(validation_data), backbone=s["backbone"])
            self._compile(
                head,
                s,
                s["learning_rate"],
                epochs=phase1,
                steps_per_epoch=_steps_per_epoch(fx, kwargs.get("batch_size")),
            )
            redirected = [_Redirect(cb, model) for cb in callbacks]
            record(
                head.fit(
                    fx,
                    fy,
                    epochs=initial_epoch + phase1,
                    initial_epoch=initial_epoch,
                    validation_data=val,
                    callbacks=redirected,
                    **kwargs,
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
        """Offer the trained model to `on_trial_trained` (search keeps the best)."""
        if self.on_trial_trained is not None and history:
            key = self.objective_name if self.objective_name in history else next(iter(history))
            values = [v for v in history[key] if v is not None]
            if values:
                score = max(values) if self.objective_direction == "max" else min(values)
                values_hp = {k: v for k, v in hp.values.items() if not k.startswith("tuner/")}
                self.on_trial_trained(model, float(score), values_hp, {**history, "phase": list(phases)})
        return _history(history)

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
            if y is not None:
                feats = template.predict(x, batch_size=64, verbose=0)
                labels = np.asarray(y)
            else:  # one pass over the dataset, labels collected in the same order
                fs, ls = [], []
                for bx, by in x:
                    fs.append(keras.ops.convert_to_numpy(template(bx, training=False)))
                    ls.append(np.asarray(by))
                feats, labels = np.concatenate(fs), np.concatenate(ls)
            # float32 whatever the compute dtype: the head's cached inputs.
            self._feature_cache[key] = (np.asarray(feats, dtype="float32"), labels)
        return self._feature_cache[key]


def _build_training_state(model):
    """Create the optimizer's, metrics' and loss's variables now, eagerly.

    Left to `fit`, TensorFlow creates them inside a traced graph, and their
    initialisers become conditional graphs that it never frees: about 3 MB
    per `fit` for a small model, and a search fits twice per trial. Built
    here, 20 trials in one process stay within the memory budget
    (`tests/tuning/test_search.py` measures it). Harmless on JAX and torch.
    """
    model.optimizer.build(model.trainable_variables)
    n = model.output_shape[-1]
    y_true, y_pred = keras.ops.zeros((1,), "int32"), keras.ops.ones((1, n)) / n
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
    return [make[k]() for k in AUGMENTATIONS if k in kinds]


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


_BATCH_END_HOOKS = ("on_batch_end", "on_train_batch_end", "on_test_batch_end", "on_predict_batch_end")


def _no_batch_end_hooks(callback) -> bool:
    """Whether a callback leaves every batch-end hook as `Callback`'s no-op."""
    return all(
        getattr(getattr(callback, h), "__func__", None) is getattr(keras.callbacks.Callback, h)
        for h in _BATCH_END_HOOKS
    )


def _keep_async_dispatch(callbacks):
    """Drop batch-end hooks that do nothing but make `fit` wait on every step.

    Keras (JAX, PyTorch) overlaps a step with the next one's dispatch and
    input only when no callback has a batch-end hook (or says `async_safe`);
    otherwise it waits for each step's logs, and on JAX a hook that reads
    `self.model` also copies the whole training state back into the model
    every step. Two callbacks of every trial have such hooks without using
    them: KerasTuner's `TunerCallback`, whose `on_batch_end` hands
    `self.model` to `Tuner.on_batch_end` (a no-op unless a tuner subclass
    overrides it), and Keras' `TensorBoard` writing per epoch without
    profiling (its batch-end hook writes batch scalars only for
    `update_freq="batch"` and a graph only of a TensorFlow function). Their
    hooks are reset to `Callback`'s no-ops; anything else is left alone.
    """
    from tuning._keras import is_tuner_callback, tensorboard_traces

    def idle(cb, *hooks):
        for hook in hooks:
            setattr(cb, hook, types.MethodType(getattr(keras.callbacks.Callback, hook), cb))

    for cb in callbacks:
        if is_tuner_callback(cb):
            hooks = ("on_batch_begin", "on_batch_end")
            if all(getattr(type(cb.tuner), h) is getattr(kt.Tuner, h) for h in hooks):
                idle(cb, *hooks)
        elif (
            type(cb) is keras.callbacks.TensorBoard
            and cb.update_freq == "epoch"
            and not tensorboard_traces(cb)
            and keras.backend.backend() != "tensorflow"
        ):
            idle(cb, "on_train_batch_end")
    return callbacks


class EpochLogger(keras.callbacks.Callback):
    """One line per epoch (`fit(verbose=2)`'s), without waiting on every step.

    Args:
        stream: file. Where the lines go. Defaults to `sys.stdout`.

    Example:

        >>> import keras, numpy as np, tuning.hypermodel as hm
        >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
        >>> model.compile("sgd", "mse")
        >>> _ = model.fit(np.zeros((4, 2)), np.zeros(4), epochs=1, verbose=0,
        ...               callbacks=[hm.EpochLogger()])  # doctest: +ELLIPSIS
        epoch 1/1 - ...s - loss: 0.0000
    """

    def __init__(self, stream: Any = None) -> None:
        super().__init__()
        self.stream = stream

    def _out(self):
        return self.stream if self.stream is not None else sys.stdout

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        seconds = time.perf_counter() - getattr(self, "_start", time.perf_counter())
        values = " - ".join(f"{k}: {v:.4f}" for k, v in (logs or {}).items() if isinstance(v, (int, float)))
        print(
            f"epoch {epoch + 1}/{self.params.get('epochs', '?')} - {seconds:.0f}s - {values}",
            file=self._out(),
            flush=True,
        )


class EpochProgress(EpochLogger):
    """`EpochLogger` with a progress bar inside each epoch, for a terminal.

    The bar reads only the step number, never the step's logs, and is
    `async_safe`: on JAX and PyTorch, Keras keeps dispatching the next
    steps while the bar is drawn (a plain `verbose=1` waits for every
    step's loss). Redrawn at most 5 times a second, then replaced by the
    epoch's line.

    Example:

        >>> import io, keras, numpy as np, tuning.hypermodel as hm
        >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
        >>> model.compile("sgd", "mse")
        >>> out = io.StringIO()
        >>> _ = model.fit(np.zeros((8, 2)), np.zeros(8), batch_size=2, epochs=1,
        ...               verbose=0, callbacks=[hm.EpochProgress(out, every=0)])
        >>> bar, line = out.getvalue().rsplit("\\033[K", 1)
        >>> "] 4/4 " in bar, line.startswith("epoch 1/1 - ")
        (True, True)
    """

    async_safe = True

    def __init__(self, stream: Any = None, *, every: float = 0.2) -> None:
        super().__init__(stream)
        self.every = every
        self._lock = threading.Lock()

    @staticmethod
    def wanted() -> bool:
        """Whether standard output is a terminal (a bar in a log file is noise)."""
        return sys.stdout.isatty()

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        super().on_epoch_begin(epoch, logs)
        self._epoch, self._shown, self._drawn_at = epoch, -1, 0.0

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        steps = self.params.get("steps") or 0
        now = time.perf_counter()
        with self._lock:  # hooks may run in Keras' worker threads, out of order
            if batch <= self._shown or (now - self._drawn_at < self.every and batch + 1 != steps):
                return
            self._shown, self._drawn_at = batch, now
            done = batch + 1
            bar = ""
            if steps:
                filled = int(24 * done / steps)
                bar = f"[{'=' * filled}{'.' * (24 - filled)}] {done}/{steps}"
            else:
                bar = f"step {done}"
            seconds = now - self._start
            print(
                f"\repoch {self._epoch + 1}/{self.params.get('epochs', '?')} {bar} {seconds:.0f}s",
                end="",
                file=self._out(),
                flush=True,
            )

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        with self._lock:
            print("\r\033[K", end="", file=self._out())  # clear the bar's line
            self._shown = float("inf")
        super().on_epoch_end(epoch, logs)


class _Redirect(keras.callbacks.Callback):
    """Runs a callback against the full model while a part of it trains.

    Cached-feature trials fit the head alone; KerasTuner's checkpoint,
    EarlyStopping and TensorBoard must still see (and save) the full model,
    which shares the head's weights.
    """

    def __init__(self, inner, model):
        super().__init__()
        self.inner = inner
        self.full = model
        inner.set_model(model)
        self._fit_model = None
        # Async-safe when the wrapped callback is (its batch hooks are no-ops
        # or it says so): `_sync_stop` only reads and sets a flag.
        self.async_safe = getattr(inner, "async_safe", False) or _no_batch_end_hooks(inner)

    def set_model(self, model):
        self._fit_model = model

    def set_params(self, params):
        self.inner.set_params(params)

    def _sync_stop(self):
        if self.full.stop_training and self._fit_model is not None:
            self._fit_model.stop_training = True

    def on_train_begin(self, logs=None):
        self.full.stop_training = False
        self.inner.on_train_begin(logs)

    def on_train_end(self, logs=None):
        self.inner.on_train_end(logs)

    def on_epoch_begin(self, epoch, logs=None):
        self.inner.on_epoch_begin(epoch, logs)

    def on_epoch_end(self, epoch, logs=None):
        self.inner.on_epoch_end(epoch, logs)
        self._sync_stop()

    def on_train_batch_end(self, batch, logs=None):
        self.inner.on_train_batch_end(batch, logs)
        self._sync_stop()
