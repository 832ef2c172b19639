"""`SearchConfig`: every setting of a run, in one frozen, serialisable object.

The CLI fills one from its arguments (or a JSON file), `tuning.run` takes
one, `run.json` stores it and the resume check compares two of them. The
recipe settings (`head_space`, `unfreeze_space`, `augmentation`,
`schedule`, `patience`, `phase1_fraction`) left as None are filled by the
named recipe (`tuning.recipes`).
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import os
import re
from collections.abc import Sequence
from typing import Any

OBJECTIVES = ("auto", "accuracy", "balanced_accuracy", "macro_f1", "mean_iou", "map")
TASKS = ("classify", "multilabel", "segment")
CLASS_WEIGHTS = (None, "balanced", "search")
RECIPES = ("auto", "from_scratch", "pretrained")
TTA_VIEWS = ("flip",)
TUNER_NAMES = ("hyperband", "random", "bayesian")
DISTRIBUTIONS = ("none", "data-parallel")

# What a resumed run may change: how long it searches and what it does
# after the search. Everything else decides which trials exist.
RESUMABLE = frozenset({"max_trials", "epochs", "workers", "time_budget", "keep_checkpoints", "tta", "cv"})


class ConfigError(ValueError):
    """A setting that cannot be used; the message names it, what was received and what to do."""


@dataclasses.dataclass(frozen=True)
class SearchConfig:
    """Every setting of a `tuning.run`, frozen, with a JSON round trip.

    Args:
        task: str. "classify" (one class per image: class-per-folder
            images, or `labels`), "multilabel" (any number of classes per
            image, from `labels`: sigmoid outputs, thresholds chosen on the
            validation split; see `tuning.labels`) or "segment" (images/
            and masks/, an FCN per trial; see `tuning.masks`). A `labels`
            file with several labels in a row makes a "classify" run
            multi-label. Defaults to "classify".
        labels: str. A CSV of image paths (relative to the data folder)
            and their labels: a labels column (names separated by spaces,
            `;` or `|`) or one 0/1 column per class; an optional `split`
            column (train/val/test). None: one sub-folder per class.
            Defaults to None.
        backbone: str or tuple of str. Zoo model names; several make the
            backbone a searched choice. Defaults to "resnet18".
        weights: str. None (random init), "imagenet", a source tag or a
            weights file. Defaults to None.
        recipe: str. "auto" (pretrained when `weights` is set, else
            from_scratch), "from_scratch" or "pretrained"; see
            `tuning.recipes`. Defaults to "auto".
        image_size: int. Square input side. Defaults to 48.
        tuner: str. "random", "bayesian" or "hyperband". Defaults to "random".
        max_trials: int. Trials of a random/Bayesian search. Defaults to 2.
        epochs: int. Epochs per trial. Defaults to 12.
        batch_size: int. Defaults to 32.
        precision: str. "fp32" or "bf16". Defaults to "fp32".
        seed: int. Seed of the split, the search and the weights. Defaults to 0.
        validation_fraction, test_fraction: float. Shares of each class held
            out where no val/ or test/ folder is given. Defaults to 0.2, 0.15.
        objective: str. "accuracy", "balanced_accuracy" or "macro_f1" on the
            validation split; "auto" picks balanced_accuracy when the
            largest class has at least 3x the images of the smallest,
            map (macro average precision) for multi-label runs and
            mean_iou for segmentation. Defaults to "auto".
        class_weight: str. None, "balanced" (loss weights n / (k * n_c)), or
            "search" (a searched choice between the two). Defaults to None.
        time_budget: float. Seconds for the search; None for no limit.
            Defaults to None.
        max_latency_ms: float. Keep as the best model only trials whose
            latency per image (batch 1, measured on this machine after
            training) is at most this; the leaderboard shows every trial's.
            Defaults to None (no cap).
        fastest_within: float. Keep as the best model the fastest trial
            (latency per image) whose score is within this of the best
            score, in the objective's units (0.01: one accuracy point).
            Defaults to None (the best score).
        tta: tuple of str. Test-time augmentation views evaluated beside
            the plain figure ("flip"); () for none. Defaults to ("flip",).
        cv: int. Folds to retrain the best configuration on (train+val);
            0 for none. Defaults to 0.
        keep_checkpoints: bool. Keep every trial's checkpoint. Defaults to False.
        workers: int. Worker processes beside KerasTuner's chief. Defaults to 0.
        distribution: str. "none", or "data-parallel": every trial trains on
            all local devices (JAX: `keras.distribution.DataParallel`;
            TensorFlow: `tf.distribute.MirroredStrategy`; not on the torch
            backend) with a global batch of `batch_size` x devices and the
            learning rate x devices (linear scaling, Goyal et al. 2017).
            On one device it trains there, with a warning. Defaults to "none".
        demo_images_per_class: int. Size of the demo data (for
            segmentation and multi-label runs, 4x as many images). Defaults to 400.
        head_space, unfreeze_space: dict. `TransferHyperModel`'s spaces.
        segment_space: dict. `tuning.segment.SegmentationHyperModel`'s:
            lists of `variant`, `unfreeze_stages` (None: all), `learning_rate`
            and `loss`.
        augmentation: tuple of str. Augmentation kinds of augmented trials.
        schedule: str. "constant" or "cosine".
        patience: int. Early-stopping patience; 0 for none (the best epoch is
            still kept).
        phase1_fraction: float. Share of epochs for the head alone.

    Example:

        >>> import tuning
        >>> c = tuning.SearchConfig(backbone="resnet18", epochs=3)
        >>> tuning.SearchConfig.from_json(c.to_json()) == c
        True
        >>> c.diff(c.replace(epochs=4))
        {'epochs': (3, 4)}
    """

    task: str = "classify"
    labels: str | None = None
    backbone: tuple = ("resnet18",)
    weights: str | None = None
    recipe: str = "auto"
    image_size: int = 48
    tuner: str = "random"
    max_trials: int = 2
    epochs: int = 12
    batch_size: int = 32
    precision: str = "fp32"
    seed: int = 0
    validation_fraction: float = 0.2
    test_fraction: float = 0.15
    objective: str = "auto"
    class_weight: str | None = None
    time_budget: float | None = None
    max_latency_ms: float | None = None
    fastest_within: float | None = None
    tta: tuple = ("flip",)
    cv: int = 0
    keep_checkpoints: bool = False
    workers: int = 0
    distribution: str = "none"
    demo_images_per_class: int = 400
    head_space: dict | None = None
    unfreeze_space: dict | None = None
    segment_space: dict | None = None
    augmentation: tuple | None = None
    schedule: str | None = None
    patience: int | None = None
    phase1_fraction: float | None = None

    def __post_init__(self):
        # Normalised once, so that equal settings compare equal after a JSON round trip.
        set_ = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731
        if isinstance(self.backbone, str):
            set_("backbone", tuple(n.strip() for n in self.backbone.split(",") if n.strip()))
        else:
            set_("backbone", tuple(self.backbone))
        if isinstance(self.tta, str):
            set_("tta", tuple(v for v in self.tta.split(",") if v and v != "none"))
        else:
            set_("tta", tuple(self.tta or ()))
        if self.augmentation is not None:
            set_(
                "augmentation",
                tuple([self.augmentation] if isinstance(self.augmentation, str) else self.augmentation),
            )
        for key in ("head_space", "unfreeze_space", "segment_space"):
            value = getattr(self, key)
            if value is not None:
                set_(key, json.loads(json.dumps(dict(value))))
        if self.labels is not None:
            set_("labels", os.fspath(self.labels))
        if isinstance(self.time_budget, str):
            set_("time_budget", parse_duration(self.time_budget))
        for key in ("max_latency_ms", "fastest_within"):
            value = getattr(self, key)
            if isinstance(value, str):
                try:
                    set_(key, float(value))
                except ValueError:
                    raise ConfigError(f"`{key}` must be a number. Received: {key}={value!r}") from None
        self.validate()

    # ------------------------------------------------------------ checks
    def validate(self) -> None:
        """Raise `ConfigError` (one line, naming the setting) for a value that cannot work."""
        if not self.backbone:
            raise ConfigError("`backbone` needs at least one zoo model name. Received: backbone=()")
        for key, low, why in (
            ("max_trials", 1, " (KerasTuner reads 0 as 'no limit')"),
            ("epochs", 1, ""),
            ("batch_size", 1, ""),
            ("image_size", 8, ""),
            ("workers", 0, ""),
            ("demo_images_per_class", 3, ""),
        ):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ConfigError(f"`{key}` must be an int of at least {low}{why}. Received: {key}={value!r}")
        _one_of("task", self.task, TASKS)
        _one_of("tuner", self.tuner, TUNER_NAMES)
        _one_of("precision", self.precision, ("fp32", "bf16"))
        _one_of("distribution", self.distribution, DISTRIBUTIONS)
        _one_of("recipe", self.recipe, RECIPES)
        _one_of("objective", self.objective, OBJECTIVES)
        _one_of("class_weight", self.class_weight, CLASS_WEIGHTS)
        for view in self.tta:
            _one_of("tta", view, TTA_VIEWS + ("none",))
        if self.schedule is not None:
            _one_of("schedule", self.schedule, ("constant", "cosine"))
        if not 0 <= self.test_fraction <= 0.5:
            raise ConfigError(
                f"`test_fraction` must be in [0, 0.5]. Received: test_fraction={self.test_fraction}"
            )
        if not 0 < self.validation_fraction <= 0.5:
            raise ConfigError(
                f"`validation_fraction` must be in (0, 0.5]. Received: validation_fraction={self.validation_fraction}"
            )
        if self.time_budget is not None and not (
            isinstance(self.time_budget, (int, float))
            and math.isfinite(self.time_budget)
            and self.time_budget > 0
        ):
            raise ConfigError(
                f"`time_budget` must be a duration above 0 (seconds, or '90s', '20m', '1h30m'). "
                f"Received: time_budget={self.time_budget!r}"
            )
        for key, unit in (
            ("max_latency_ms", "milliseconds"),
            ("fastest_within", "score points (0.01: one point)"),
        ):
            value = getattr(self, key)
            if value is not None and not (
                isinstance(value, (int, float))
                and not isinstance(value, bool)
                and math.isfinite(value)
                and value > 0
            ):
                raise ConfigError(f"`{key}` must be a number of {unit} above 0. Received: {key}={value!r}")
        if not isinstance(self.cv, int) or self.cv == 1 or self.cv < 0:
            raise ConfigError(
                f"`cv` must be 0 (no cross-validation) or at least 2 folds. Received: cv={self.cv!r}"
            )
        if self.patience is not None and (not isinstance(self.patience, int) or self.patience < 0):
            raise ConfigError(f"`patience` must be an int >= 0. Received: patience={self.patience!r}")
        segment = self.task == "segment"
        own = {"segment": ("mean_iou",), "multilabel": ("map",)}.get(
            self.task, ("accuracy", "balanced_accuracy", "macro_f1")
        )
        if self.objective not in ("auto", *own):
            raise ConfigError(
                f"`objective` {self.objective!r} does not apply to task={self.task!r}: segmentation "
                "is judged by mean_iou, multi-label runs by map, single-label classification by "
                "accuracy, balanced_accuracy or macro_f1."
            )
        if self.task != "classify" and (self.cv or self.class_weight):
            raise ConfigError(
                f"`cv` and `class_weight` are single-label classification settings; task={self.task!r} "
                f"does not take them yet. Received: cv={self.cv}, class_weight={self.class_weight!r}"
            )
        if segment and self.distribution != "none":
            raise ConfigError(
                "`distribution` applies to classification runs; a segmentation run trains each trial on "
                f"one device. Received: distribution={self.distribution!r}"
            )
        if segment and self.labels is not None:
            raise ConfigError(
                "`labels` (a CSV of image labels) is for classification; segmentation reads masks/. "
                f"Received: labels={self.labels!r}"
            )
        if self.segment_space is not None:
            unknown = sorted(
                set(self.segment_space) - {"variant", "unfreeze_stages", "learning_rate", "loss"}
            )
            if unknown:
                raise ConfigError(
                    f"`segment_space` keys are variant, unfreeze_stages, learning_rate and loss. "
                    f"Received: {unknown}"
                )
        if self.phase1_fraction is not None and not 0 <= self.phase1_fraction <= 1:
            raise ConfigError(
                f"`phase1_fraction` must be in [0, 1]. Received: phase1_fraction={self.phase1_fraction}"
            )

    # ------------------------------------------------------- round trip
    def to_dict(self) -> dict:
        """The settings as plain JSON values (tuples as lists)."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, values: dict) -> SearchConfig:
        """A config from a dict of settings; an unknown key fails with the closest names."""
        if not isinstance(values, dict):
            raise ConfigError(f"A config is a JSON object of settings. Received: {type(values).__name__}")
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = [k for k in values if k not in names]
        if unknown:
            hints = []
            for k in unknown:
                close = difflib.get_close_matches(k, names, n=3, cutoff=0.5)
                hints.append(f"{k!r}" + (f" (did you mean {', '.join(close)}?)" if close else ""))
            raise ConfigError(f"Unknown settings {', '.join(hints)}. Known settings: {', '.join(names)}.")
        return cls(**values)

    @classmethod
    def from_json(cls, text: str) -> SearchConfig:
        try:
            values = json.loads(text)
        except ValueError as e:
            raise ConfigError(
                f"The config is not valid JSON ({e}). Write it as a JSON object of settings."
            ) from None
        return cls.from_dict(values)

    @classmethod
    def load(cls, path: str) -> SearchConfig:
        """The config in a JSON file: a `run.json` or a file of settings.

        Example:

            >>> import json, os, pathlib, tempfile, tuning
            >>> p = os.path.join(tempfile.mkdtemp(), "settings.json")
            >>> _ = pathlib.Path(p).write_text(json.dumps({"epochs": 3, "backbone": "resnet34"}))
            >>> c = tuning.SearchConfig.load(p)
            >>> c.epochs, c.backbone
            (3, ('resnet34',))
        """
        try:
            with open(path) as f:
                text = f.read()
        except OSError as e:
            raise ConfigError(f"Cannot read the config file {path!r} ({e.strerror}).") from None
        values = None
        try:
            values = json.loads(text)
        except ValueError as e:
            raise ConfigError(
                f"The config file {path!r} is not valid JSON ({e}). Write it as a JSON object of settings."
            ) from None
        if isinstance(values, dict) and isinstance(values.get("config"), dict):  # a run.json
            values = values["config"]
        return cls.from_dict(values)

    def replace(self, **changes: Any) -> SearchConfig:
        """A copy with `changes` applied (and checked)."""
        return dataclasses.replace(self, **changes)

    def diff(self, other: SearchConfig, *, ignore: Sequence[str] = ()) -> dict:
        """`{setting: (self's value, other's value)}` for every setting that differs."""
        a, b = self.to_dict(), other.to_dict()
        return {k: (a[k], b[k]) for k in a if a[k] != b[k] and k not in ignore}

    def resume_conflicts(self, earlier: SearchConfig) -> dict:
        """The settings that make this config unable to resume `earlier`'s search: `{name: (earlier, now)}`.

        Example:

            >>> import tuning
            >>> old = tuning.SearchConfig()
            >>> old.replace(max_trials=8, seed=1).resume_conflicts(old)
            {'seed': (0, 1)}
        """
        return earlier.diff(self, ignore=RESUMABLE)


def _one_of(key, value, allowed):
    if value not in allowed:
        close = difflib.get_close_matches(str(value), [str(a) for a in allowed if a is not None], n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"`{key}` must be one of {allowed}. Received: {key}={value!r}.{hint}")


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str | float | int) -> float:
    """Seconds in a duration: `90`, `"90s"`, `"20m"`, `"1h30m"`, `"1.5h"`.

    Example:

        >>> from tuning.config import parse_duration
        >>> parse_duration("20m"), parse_duration("1h30m"), parse_duration("45")
        (1200.0, 5400.0, 45.0)
    """
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        seconds = float(text)
    else:
        s = str(text).strip().lower().replace(" ", "")
        parts = re.findall(r"(\d+(?:\.\d+)?)([smhd]?)", s)
        if (
            not s
            or "".join(n + u for n, u in parts) != s
            or (len(parts) > 1 and not all(u for _, u in parts))
        ):
            raise ConfigError(
                f"Cannot read the duration {text!r}: write seconds or a number with s, m, h "
                "(90, 90s, 20m, 1h30m)."
            )
        seconds = sum(float(n) * _UNITS[u or "s"] for n, u in parts)
    if not math.isfinite(seconds) or seconds <= 0:
        raise ConfigError(f"A time budget must be above 0 seconds. Received: {text!r}")
    return seconds
