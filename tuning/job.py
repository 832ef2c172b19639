"""`tuning.run`: the main job as a library call, exactly what `python -m tuning run` does.

validate -> split -> search -> evaluate (plain and test-time augmented) ->
error analysis -> cross-validation -> report -> publish. Every setting is
one `SearchConfig`; the CLI only parses arguments into one.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any

import keras
import numpy as np

from tuning import recipes
from tuning.callbacks import release_memory
from tuning.config import ConfigError, SearchConfig
from tuning.files import publish, read_json, write_json, write_rows

RUN_FILE = "run.json"
# Cached backbone features over the hypermodel's in-memory limit (search/features/, during the search).
FEATURES_DIR = "features"
DEFAULT_OUT = os.path.join("runs", "demo")


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C during a run; the message says what was kept and how to resume."""


@dataclasses.dataclass
class RunResult:
    """What `tuning.run` leaves.

    Attributes:
        model: keras.Model. The best trial's trained model.
        config: SearchConfig. The resolved settings (recipe filled in).
        classes: list of str. Class names, in label order.
        objective: str. The validation metric that chose the best trial.
        leaderboard: list of dicts, best first.
        evaluation: dict. The held-out figures (`accuracy`,
            `balanced_accuracy`, `macro_f1`, `split`, `tta`; for
            multi-label runs `map`, `micro_f1`, `macro_f1`,
            `subset_accuracy`, `per_class`, `thresholds`; for
            segmentation `mean_iou`, `per_class_iou`, `pixel_accuracy`,
            `fw_iou`).
        cv: dict. `mean`/`sd`/`folds` per figure, or None.
        budget: dict. What the time budget cut, or None.
        paths: dict. Name -> path of every file the run wrote.
    """

    model: keras.Model
    config: SearchConfig
    classes: list
    objective: str
    leaderboard: list
    evaluation: dict
    cv: dict | None = None
    budget: dict | None = None
    paths: dict = dataclasses.field(default_factory=dict)


def run(
    data: str | None = None,
    out: str = DEFAULT_OUT,
    config: SearchConfig | None = None,
    *,
    overwrite: bool = False,
    callbacks: Sequence[keras.callbacks.Callback] = (),
    verbose: int = 1,
) -> RunResult | None:
    """Search, evaluate, analyse and report on an image folder; what `python -m tuning run` does.

    Everything is checked before anything is written or deleted (bad
    settings raise `ConfigError`, bad data `tuning.data.DataError`, both
    `ValueError`s with one-line messages). Running again with the same `out`
    resumes the search; a changed setting that would mix two searches is
    refused, naming it.

    With `config.labels` the labels come from a CSV under `data` (see
    `tuning.labels`); rows with several labels, or `config.task=
    "multilabel"`, make a multi-label run: sigmoid outputs, `val_map` as the
    objective, per-class thresholds chosen on the validation split and
    stored in `classes.json` (see `tuning.multilabel`).

    With `config.task="segment"` the data is images/ and masks/ (see
    `tuning.masks`), each trial an FCN (`tuning.segment`), and the figures
    mean IoU, per-class IoU, pixel accuracy and frequency-weighted IoU.

    Args:
        data: str. A class-per-folder image directory (train/, val/, test/
            sub-folders honoured), the folder a `config.labels` CSV's paths
            are relative to, or for segmentation images/ and masks/.
            Defaults to None: the embedded demo set is written to `out/data`.
        out: str. The output folder. Defaults to "runs/demo".
        config: SearchConfig. Defaults to `SearchConfig()`; its recipe
            settings left as None come from `tuning.recipes`.
        overwrite: bool. Start afresh in an `out` holding an earlier run.
        callbacks: Keras callbacks added to every trial's `fit`.
        verbose: int. 0: silent; 1: progress lines; 2: also epochs.

    Returns:
        A `RunResult`; None in a KerasTuner worker process.

    Example:

        >>> import tempfile, tuning
        >>> config = tuning.SearchConfig(max_trials=1, epochs=1, image_size=32,
        ...                              demo_images_per_class=4, tta=(), workers=0)
        >>> result = tuning.run(out=tempfile.mkdtemp(), config=config, verbose=0)  # doctest: +SKIP
        >>> sorted(result.evaluation)[:3], result.objective  # doctest: +SKIP
        (['accuracy', 'balanced_accuracy', 'macro_f1'], 'val_accuracy')
    """
    t0 = time.time()
    given = config or SearchConfig()
    config = check(recipes.resolve(given), out)
    parallel = data_parallel(config, verbose)
    if config.task == "segment":
        return _run_segment(
            data, out, config, overwrite=overwrite, callbacks=callbacks, verbose=verbose, t0=t0
        )
    out = os.path.abspath(out)
    config = _labels_file(config, data, out)
    loaded = _load(data, config, parallel) if data else None  # the data is checked before any write
    if loaded:
        config = _task_of(given, config, loaded[2], out, verbose)
        _check_cv(config, loaded[0])
    launched = "KERASTUNER_TUNER_ID" in os.environ  # a chief/worker: the launcher checked
    if not launched:
        _resume_or_refuse(out, config, overwrite, verbose)
    if data is None and config.task == "multilabel":
        import zoo

        data = zoo.datasets.write_multilabel(
            os.path.join(out, "data"),
            images=config.demo_images_per_class * _MULTILABEL_DEMO_IMAGES_PER_CLASS_UNIT,
            size=config.image_size,
            seed=config.seed,
        )
        _say(verbose, f"demo data: {data} (one to three of six shapes per image, labels.csv)")
        loaded = _load(data, config, parallel)
    elif data is None:
        import zoo

        data = zoo.datasets.write_shapes(
            os.path.join(out, "data"),
            images_per_class=config.demo_images_per_class,
            size=config.image_size,
            seed=config.seed,
        )
        _say(verbose, f"demo data: {data} (six shape classes, train/val/test)")
        loaded = _load(data, config, parallel)
        _check_cv(config, loaded[0])
    splits, classes, info = loaded
    objective = _objective(config, info["class_counts"], classes, verbose)
    if not launched:  # what the next run must match to resume, and the splits
        write_json(os.path.join(out, RUN_FILE), _record(config, data, objective, info))
    if config.workers and not launched:
        return _launch(config, data, out)
    _say(verbose, "images: " + "; ".join(f"{n} {info[n]['images']} ({info[n]['source']})" for n in _SPLITS))
    _say(verbose, backend_note())
    _say(verbose, precision_note(config.precision))
    keras.utils.set_random_seed(config.seed)
    hypermodel = _hypermodel(config, classes, info["class_counts"], out, parallel)
    t_search = time.time()
    result = _search(config, hypermodel, splits, out, objective, callbacks, verbose, parallel)
    release_memory()  # the trials' models and compiled steps, before the report reads every image
    if result is None:  # a worker: the chief evaluates and reports
        _say(verbose, f"worker {os.environ['KERASTUNER_TUNER_ID']} finished its trials")
        return None
    timings = {"search": time.time() - t_search}
    finish = _finish_multilabel if config.task == "multilabel" else _finish
    return finish(
        config, data, out, hypermodel, result, splits, classes, info, objective, timings, t0, verbose
    )


_SPLITS = ("train", "val", "test")


def _say(verbose, text):
    if verbose and text:
        print(text, flush=True)


# Train-step img/s of resnet18, batch 32, on a 2-core CPU, each backend
# against TensorFlow in the same run (scripts/profile_step.py;
# docs/benchmarks.md, "Which backend trains fastest on a CPU"). JAX's ratio
# depends on the image size: XLA's CPU step takes 2.6 s at 48 and 64 px
# (the job's default is 48) but 0.4 s at 80 px.
_CPU_TRAIN_VS_TENSORFLOW = {
    "jax": "0.07-0.09x as fast as TensorFlow at 48-64 px and 0.81-0.89x at 80-224 px",
    "torch": "0.55x as fast as TensorFlow at 64 px and 0.80x at 224 px",
}


def backend_note() -> str | None:
    """One line when the Keras backend trains on a CPU much slower than TensorFlow would, else None.

    `KERAS_BACKEND` always wins; the job only says what it costs and what
    to set instead.

    Example:

        >>> import keras, tuning.job
        >>> note = tuning.job.backend_note()
        >>> note is None or note.startswith(f"backend {keras.backend.backend()} on a CPU")
        True
    """
    backend = keras.backend.backend()
    if backend not in _CPU_TRAIN_VS_TENSORFLOW:
        return None
    if backend == "jax":
        import jax

        on_cpu = jax.default_backend() == "cpu"
    else:
        import torch

        on_cpu = not torch.cuda.is_available()
    if not on_cpu:
        return None
    import importlib.util

    has_tf = importlib.util.find_spec("tensorflow") is not None
    instead = "KERAS_BACKEND=tensorflow" if has_tf else "`pip install tensorflow`"
    return (
        f"backend {backend} on a CPU: resnet18 trained {_CPU_TRAIN_VS_TENSORFLOW[backend]} on a 2-core "
        f"CPU (docs/benchmarks.md); {instead} is the fast path on a CPU"
    )


# Where Linux lists the CPU's instruction sets ("flags" on x86, "Features" on Arm).
_CPUINFO = "/proc/cpuinfo"
# CPU features that compute bfloat16 natively (AVX512-BF16 and AMX on x86, BF16 on Arm).
_BF16_FLAGS = {"avx512_bf16", "amx_bf16", "bf16"}


def precision_note(precision: str) -> str | None:
    """One line when a float32 run trains on a TensorFlow CPU that computes bfloat16 natively, else None.

    On such a CPU `--precision bf16` is the faster setting: on the demo at
    64 px (2-core CPU with AVX512-BF16, 2 trials x 12 epochs), 121.5
    against 105.8 img/s at 0.983 against 0.986 test accuracy
    (docs/benchmarks.md). The run keeps the precision it was given.

    Example:

        >>> import tuning.job
        >>> tuning.job.precision_note("bf16") is None
        True
    """
    if precision != "fp32" or keras.backend.backend() != "tensorflow":
        return None
    try:
        with open(_CPUINFO) as f:
            words = {w for line in f if line.startswith(("flags", "Features")) for w in line.split()}
    except OSError:  # not Linux: nothing to read the features from
        return None
    native = sorted(words & _BF16_FLAGS)
    if not native:
        return None
    import tensorflow as tf

    if tf.config.list_physical_devices("GPU"):
        return None
    return (
        f"this CPU computes bfloat16 natively ({', '.join(native)}): --precision bf16 trained about "
        "1.15x as fast at the same accuracy on the demo (docs/benchmarks.md)"
    )


@dataclasses.dataclass(frozen=True)
class DevicePlan:
    """How each trial trains: on `devices` devices, `batch_size` images per step in all.

    `distribution` (JAX) or `strategy` (TensorFlow) is set when there are
    several devices; `data_parallel` makes it from a `SearchConfig`.
    """

    devices: int = 1
    batch_size: int = 32
    distribution: Any = None
    strategy: Any = None


def data_parallel(config: SearchConfig, verbose: int = 0) -> DevicePlan:
    """The devices each trial of `config` trains on (`config.distribution`).

    "data-parallel" uses every local device: JAX through
    `keras.distribution.DataParallel`, TensorFlow through
    `tf.distribute.MirroredStrategy` (KerasTuner's `distribution_strategy`).
    The global batch is `config.batch_size` x devices and the learning rate
    is scaled by the number of devices (linear scaling, Goyal et al. 2017).
    On one device the run trains there and says so; the torch backend is
    refused with a `ConfigError`.

    Example:

        >>> import tuning
        >>> tuning.data_parallel(tuning.SearchConfig(batch_size=16))
        DevicePlan(devices=1, batch_size=16, distribution=None, strategy=None)
    """
    if config.distribution == "none":
        return DevicePlan(batch_size=config.batch_size)
    backend = keras.backend.backend()
    if backend == "jax":
        devices = keras.distribution.list_devices()
        distribution = keras.distribution.DataParallel(devices=devices) if len(devices) > 1 else None
        strategy = None
    elif backend == "tensorflow":
        import tensorflow as tf

        found = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
        devices = [d.name for d in found]
        strategy = tf.distribute.MirroredStrategy(devices) if len(devices) > 1 else None
        distribution = None
    else:
        raise ConfigError(
            f"`distribution='data-parallel'` is not supported on the {backend} backend; use "
            "KERAS_BACKEND=jax or tensorflow, or leave --distribution out."
        )
    if len(devices) == 1:
        _say(
            verbose,
            f"warning: --distribution data-parallel found one device ({devices[0]}); each trial trains "
            "on it alone",
        )
        return DevicePlan(batch_size=config.batch_size)
    n = len(devices)
    _say(
        verbose,
        f"data-parallel on {n} devices: global batch {config.batch_size} x {n} = {config.batch_size * n}, "
        f"learning rates x {n}",
    )
    return DevicePlan(
        devices=n, batch_size=config.batch_size * n, distribution=distribution, strategy=strategy
    )


def _labels_file(config, data, out):
    """`config` with `labels` as an absolute path (the demo's for a multi-label demo run)."""
    from tuning.labels import find_labels

    if config.labels is not None:
        if data is None:
            raise ConfigError(
                f"`labels` ({config.labels!r}) lists paths relative to the data folder: pass "
                "--data DIR with it (or leave both out for the demo set)."
            )
        return config.replace(labels=find_labels(config.labels, data))
    if config.task == "multilabel":
        if data is not None:
            raise ConfigError(
                "task='multilabel' reads its labels from a CSV: pass --labels FILE (a path column and a "
                "labels column, or one 0/1 column per class)."
            )
        return config.replace(labels=os.path.join(out, "data", "labels.csv"))
    return config


def _task_of(given, config, info, out, verbose):
    """A "classify" run whose labels file has rows with several labels becomes multi-label, saying so.

    The recipe is applied again from the settings as given, for the task
    found: a multi-label run has its own augmentation (`recipes.MULTILABEL`).
    """
    labels = info.get("labels")
    if config.task == "classify" and labels and labels["multilabel"]:
        _say(
            verbose,
            f"{os.path.basename(labels['file'])}: some images have several labels: a multi-label run "
            "(sigmoid outputs, binary cross-entropy, mAP objective, per-class thresholds)",
        )
        try:
            return check(recipes.resolve(given.replace(task="multilabel", labels=config.labels)), out)
        except ConfigError as e:
            raise ConfigError(f"the labels file makes this a multi-label run, and {e}") from None
    return config


def _split(data, config):
    """`(files, classes, info)`: the run's split of `data` (folders or a labels CSV)."""
    from tuning.data import split_files

    fractions = dict(validation_fraction=config.validation_fraction, test_fraction=config.test_fraction)
    if config.labels is not None:
        from tuning.labels import read_labels, split_labels

        table = read_labels(config.labels, data)
        if config.task == "multilabel" and not table.multilabel:  # every row has one label, still sigmoid
            table.targets, table.multilabel = table.matrix(), True
        return split_labels(table, seed=config.seed, **fractions)
    return split_files(data, seed=config.seed, **fractions)


def run_files(out: str) -> tuple[dict, list, SearchConfig]:
    """`(files, classes, config)` of the run in `out`: its split again, from its `run.json`.

    `files` maps "train", "val" (and "test") to `(paths, labels)`, the
    same files in the same order as the run used (same data, seed and
    fractions). Raises `ConfigError` when `out` holds no run and
    `tuning.data.DataError` when its data has moved.

    Example:

        >>> import tuning.job
        >>> tuning.job.run_files("no/such/run")
        Traceback (most recent call last):
        ...
        tuning.config.ConfigError: no/such/run holds no run.json: give the --out folder of a `python -m tuning run`.
    """
    path = os.path.join(out, RUN_FILE)
    if not os.path.exists(path):
        raise ConfigError(f"{out} holds no {RUN_FILE}: give the --out folder of a `python -m tuning run`.")
    record = read_json(path)
    config = SearchConfig.from_dict(record["config"])
    files, classes, _ = _split(record["data"], config)
    return files, classes, config


def _load(data, config, parallel):
    from tuning.data import file_datasets

    files, classes, info = _split(data, config)
    made, info = file_datasets(
        files, info, image_size=config.image_size, batch_size=parallel.batch_size, seed=config.seed
    )
    files = info.pop("files")
    splits = {"train": made["train"], "val": made["val"], "test": made.get("test"), "files": files}
    return splits, classes, info


# ------------------------------------------------------------ segmentation
# The segmentation demo writes 4 images per `demo_images_per_class` (1,600 at
# the default 400, one shape each): two 12-epoch FCN-8s trials then fit the
# issue's 10 minutes on a 2-core CPU (2,400 images took 14.5 min for 0.94 test mean IoU).
_SEGMENT_DEMO_IMAGES_PER_CLASS_UNIT = 4
# The multi-label demo writes 4 images per `demo_images_per_class` (1,600 at
# the default 400), each holding one to three shapes: two 12-epoch trials then
# fit the 8 minutes on a 2-core CPU.
_MULTILABEL_DEMO_IMAGES_PER_CLASS_UNIT = 4


def _load_masks(data, config):
    from tuning.masks import JointAugmentation, MaskBatches, split_pairs

    files, classes, info = split_pairs(
        data,
        seed=config.seed,
        validation_fraction=config.validation_fraction,
        test_fraction=config.test_fraction,
    )
    made = {}
    for name in ("train", "val", "test"):
        if name in files:
            made[name] = MaskBatches(
                *files[name],
                image_size=config.image_size,
                batch_size=config.batch_size,
                shuffle=name == "train",
                augment=JointAugmentation() if name == "train" else None,
                seed=config.seed,
                # Reading, resizing and augmenting in a second thread, while the step runs.
                workers=2 if name == "train" else 1,
            )
    splits = {"train": made["train"], "val": made["val"], "test": made.get("test"), "files": files}
    return splits, classes, info


def _run_segment(data, out, config, *, overwrite, callbacks, verbose, t0):
    """`run` for `task="segment"`: the same checks, resume, search and publishing; FCN trials."""
    from tuning.segment import SegmentationHyperModel

    out = os.path.abspath(out)
    loaded = _load_masks(data, config) if data else None  # checked before any write
    launched = "KERASTUNER_TUNER_ID" in os.environ
    if not launched:
        _resume_or_refuse(out, config, overwrite, verbose)
    if data is None:
        import zoo

        data = zoo.datasets.write_segmentation(
            os.path.join(out, "data"),
            images=config.demo_images_per_class * _SEGMENT_DEMO_IMAGES_PER_CLASS_UNIT,
            size=config.image_size,
            seed=config.seed,
        )
        _say(verbose, f"demo data: {data} (six shapes on textured backgrounds, masks with a void border)")
        loaded = _load_masks(data, config)
    splits, classes, info = loaded
    objective = "val_mean_iou"
    if not launched:
        write_json(os.path.join(out, RUN_FILE), _record(config, data, objective, info))
    if config.workers and not launched:
        return _launch(config, data, out)
    _say(verbose, "images: " + "; ".join(f"{n} {info[n]['images']} ({info[n]['source']})" for n in _SPLITS))
    _say(verbose, backend_note())
    keras.utils.set_random_seed(config.seed)
    space = config.segment_space
    hypermodel = SegmentationHyperModel(
        list(config.backbone),
        num_classes=len(classes),
        input_shape=(config.image_size, config.image_size, 3),
        weights=config.weights,
        variants=space["variant"],
        unfreeze=space["unfreeze_stages"],
        learning_rate=space["learning_rate"],
        losses=space["loss"],
        precision=config.precision,
        seed=config.seed,
    )
    t_search = time.time()
    one_device = DevicePlan(batch_size=config.batch_size)  # `check` refuses data-parallel segmentation
    result = _search(config, hypermodel, splits, out, objective, callbacks, verbose, one_device)
    if result is None:
        _say(verbose, f"worker {os.environ['KERASTUNER_TUNER_ID']} finished its trials")
        return None
    timings = {"search": time.time() - t_search}
    return _finish_segment(config, data, out, result, splits, classes, info, objective, timings, t0, verbose)


def _finish_segment(config, data, out, result, splits, classes, info, objective, timings, t0, verbose):
    from tuning import segment

    _say(verbose, "\nleaderboard (best first):\n" + str(result))
    write_json(os.path.join(out, "classes.json"), classes)
    publish(os.path.join(result.directory, "best.keras"), os.path.join(out, "best.keras"))
    measured_on = "test" if splits["test"] is not None else "val"
    batches = splits[measured_on]
    evaluation = segment.evaluate_segmentation(result.model, batches, classes)
    evaluation.update(split=measured_on, source=info[measured_on]["source"])
    if config.tta:
        from tuning.tta import tta_model

        tta = segment.evaluate_segmentation(tta_model(result.model, config.tta), batches, classes)
        evaluation["tta"] = {k: tta[k] for k in ("mean_iou", "pixel_accuracy", "fw_iou")}
        evaluation["tta"]["views"] = list(config.tta)
    history = read_json(os.path.join(result.directory, "best.json"), {}).get("history", {})
    plots = segment.write_plots(
        out,
        history=history,
        overlays=segment.overlays(result.model, batches, evaluation["image_iou"]),
        class_names=classes,
        evaluation=evaluation,
    )
    figures = {k: evaluation[k] for k in ("mean_iou", "pixel_accuracy", "fw_iou")}
    board = _leaderboard_with(result.leaderboard, measured_on, figures, None, None)
    _write_board(out, board)
    timings["total"] = time.time() - t0
    path = segment.write_report(
        out,
        config=config,
        classes=classes,
        result=result,
        objective=objective,
        evaluation=evaluation,
        splits=info,
        timings=timings,
        plots=plots,
    )
    paths = {
        "model": os.path.join(out, "best.keras"),
        "leaderboard": os.path.join(out, "leaderboard.csv"),
        "report": path,
        "plots": plots,
    }
    summary = {
        **figures,
        "per_class_iou": evaluation["per_class_iou"],
        "split": measured_on,
        "source": evaluation["source"],
        "tta": evaluation.get("tta"),
    }
    record = {**_record(config, data, objective, info), "evaluation": summary}
    record.update(budget=result.budget, paths=paths, timings=timings)
    write_json(os.path.join(out, RUN_FILE), record)
    worst = min((v, c) for c, v in evaluation["per_class_iou"].items() if v is not None)
    text = (
        f"\n{measured_on} mean IoU {figures['mean_iou']:.4f}, pixel accuracy {figures['pixel_accuracy']:.4f}, "
        f"frequency-weighted IoU {figures['fw_iou']:.4f} on {info[measured_on]['images']} images "
        f"(lowest class IoU: {worst[1]} {worst[0]:.4f})"
    )
    if evaluation.get("tta"):
        text += f"; with flip TTA mean IoU {evaluation['tta']['mean_iou']:.4f}"
    _say(
        verbose,
        text + f"; wrote {out}/best.keras, leaderboard.csv, report.md, plots/ in {timings['total']:.0f} s",
    )
    return RunResult(
        model=result.model,
        config=config,
        classes=classes,
        objective=objective,
        leaderboard=board,
        evaluation=summary,
        budget=result.budget,
        paths=paths,
    )


# ------------------------------------------------------------------ checks
def check(config: SearchConfig, out: str) -> SearchConfig:
    """`config` with canonical backbone names, every setting checked against the zoo; `out` writable.

    Raises `ConfigError` (what was wrong and what to do) for an unknown or
    task backbone, an image size below its minimum, unavailable weights,
    or an output folder that cannot be written.

    Example:

        >>> import tempfile, tuning, tuning.job
        >>> tuning.job.check(tuning.SearchConfig(backbone="ResNet18"), tempfile.mkdtemp()).backbone
        ('resnet18',)
        >>> tuning.job.check(tuning.SearchConfig(backbone="fcn8s"), tempfile.mkdtemp())
        Traceback (most recent call last):
        ...
        tuning.config.ConfigError: backbone 'fcn8s' is a segmentation model; pick a classification backbone from `python -m zoo list`.
    """
    import zoo

    names = []
    for name in config.backbone:
        try:
            spec = zoo.get_spec(name)
        except ValueError as e:
            raise ConfigError(f"backbone: {e}") from None
        if spec.is_task:
            raise ConfigError(
                f"backbone {name!r} is a {spec.task} model; pick a classification "
                "backbone from `python -m zoo list`."
            )
        if config.image_size < spec.min_size:
            raise ConfigError(
                f"image_size {config.image_size} is too small for {name!r} (minimum {spec.min_size})."
            )
        _check_weights(config.weights, spec)
        names.append(spec.name)
    if config.weights is not None and not os.path.isfile(config.weights):
        for name in names:  # fetched now (or found in the cache): offline, the error names the file to place
            zoo.weights.fetch(zoo.get_spec(name).source(config.weights, include_top=False))
    _check_writable(os.path.abspath(out))
    return config.replace(backbone=tuple(dict.fromkeys(names)))


def _check_weights(weights, spec):
    import zoo

    if weights is None or os.path.isfile(weights):
        return
    if weights != "imagenet" and weights not in spec.weights:
        raise ConfigError(f"weights {weights!r} is neither 'imagenet' nor an existing file.")
    if not spec.weights:
        raise ConfigError(
            f"{spec.name!r} has no pretrained weights. Backbones with ImageNet weights: "
            f"{', '.join(zoo.registry.models_with_weights())}. Leave out weights to train "
            "from scratch, or pass a weight file."
        )


def _check_writable(out):
    """Refuse an `out` that cannot be created or written (a probe file, removed at once)."""
    import tempfile

    if os.path.exists(out) and not os.path.isdir(out):
        raise ConfigError(f"out {out!r} is a file, not a folder. Choose another output folder.")
    existing = out
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise ConfigError(
            f"out {out!r} lies under {existing!r}, which is a file. Choose another output folder."
        )
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as e:
        raise ConfigError(
            f"cannot write to out {out!r}: {existing!r} is not writable ({e.strerror}). "
            "Choose a folder you can write to."
        ) from None


def _check_cv(config, splits):
    if not config.cv:
        return
    labels = list(splits["files"]["train"][1]) + list(splits["files"]["val"][1])
    smallest = int(np.bincount(labels).min())
    if config.cv > smallest:
        raise ConfigError(
            f"cv={config.cv} folds need at least {config.cv} train+val images in every class; "
            f"the smallest class has {smallest}. Use fewer folds."
        )


def _resume_or_refuse(out, config, overwrite, verbose):
    project = os.path.join(out, "search")
    if not os.path.exists(project):
        return
    if overwrite:
        shutil.rmtree(project)
        _say(verbose, f"overwrite: removed the earlier search in {project}")
        return
    path = os.path.join(out, RUN_FILE)
    try:
        earlier = SearchConfig.from_dict(read_json(path, {}).get("config", {}))
    except (OSError, ValueError) as e:
        raise ConfigError(f"{path} is unreadable ({e}); pass overwrite to start afresh.") from None
    changed = config.resume_conflicts(earlier)
    if changed:
        text = ", ".join(f"{k} {a!r} -> {b!r}" for k, (a, b) in changed.items())
        raise ConfigError(
            f"{out} holds an earlier run with other settings ({text}); resuming it would mix the "
            "two. Pass --overwrite (overwrite=True) to replace it, or choose another output folder."
        )
    _say(verbose, f"resuming the earlier run in {out} (pass --overwrite to start afresh)")


def _objective(config, counts, classes, verbose):
    from tuning.metrics import imbalance_ratio

    if config.objective != "auto":
        return f"val_{config.objective}"
    if config.task == "multilabel":
        return "val_map"
    ratio = imbalance_ratio(counts)
    if ratio >= 3:
        big, small = classes[int(np.argmax(counts))], classes[int(np.argmin(counts))]
        _say(
            verbose,
            f"objective: val_balanced_accuracy (the largest class {big!r} has {ratio:.1f}x the "
            f"training images of the smallest, {small!r}; objective accuracy overrides)",
        )
        return "val_balanced_accuracy"
    return "val_accuracy"


def _record(config, data, objective, info):
    return {"config": config.to_dict(), "data": os.path.abspath(data), "objective": objective, "splits": info}


# ------------------------------------------------------------------ search
def _hypermodel(config, classes, counts, out, parallel):
    from tuning.hypermodel import TransferHyperModel

    # Cached features beyond the in-memory limit: files in the search folder, removed after the search.

    return TransferHyperModel(
        list(config.backbone) if len(config.backbone) > 1 else config.backbone[0],
        num_classes=len(classes),
        task=config.task,
        input_shape=(config.image_size, config.image_size, 3),
        weights=config.weights,
        head_space=config.head_space,
        unfreeze_space=config.unfreeze_space,
        seed=config.seed,
        phase1_fraction=config.phase1_fraction,
        schedule=config.schedule,
        augmentation=config.augmentation,
        precision=config.precision,
        class_weight=config.class_weight,
        class_counts=counts,
        feature_cache_dir=os.path.join(out, "search", FEATURES_DIR),
        distribution=parallel.distribution,
        learning_rate_scale=parallel.devices,
    )


def _search(config, hypermodel, splits, out, objective, callbacks, verbose, parallel):
    import tuning
    from tuning.callbacks import ReleaseFreedMemory

    project = os.path.join(out, "search")
    try:
        return tuning.search(
            splits["train"],
            splits["val"],
            hypermodel=hypermodel,
            tuner=config.tuner,
            max_trials=config.max_trials,
            epochs=config.epochs,
            directory=out,
            project_name="search",
            objective=objective,
            seed=config.seed,
            print_trials=verbose >= 1,
            verbose=2 if verbose >= 2 else 0,
            patience=config.patience,
            callbacks=[*callbacks, ReleaseFreedMemory()],
            keep_checkpoints=config.keep_checkpoints,
            time_budget=config.time_budget,
            max_latency_ms=config.max_latency_ms,
            distribution_strategy=parallel.strategy,
        )
    except KeyboardInterrupt:
        kept = os.path.join(project, "best.keras")
        if os.path.exists(kept):
            publish(kept, os.path.join(out, "best.keras"))
            board = os.path.join(project, "leaderboard.csv")
            if os.path.exists(board):
                shutil.copyfile(board, os.path.join(out, "leaderboard.csv"))
            where = f"the best model so far is {out}/best.keras, the leaderboard {out}/leaderboard.csv"
        else:
            where = "no trial had finished"
        raise RunInterrupted(f"interrupted: {where}. Run the same command again to resume.") from None
    finally:  # a resumed search computes its features again
        shutil.rmtree(os.path.join(project, FEATURES_DIR), ignore_errors=True)


def _launch(config, data, out):
    """KerasTuner's chief and `config.workers` workers on loopback, each `python -m tuning run`."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    argv = [sys.executable, "-m", "tuning", "run", "--config", os.path.join(out, RUN_FILE)]
    argv += ["--data", data, "--out", out]
    env = {**os.environ, "KERASTUNER_ORACLE_IP": "127.0.0.1", "KERASTUNER_ORACLE_PORT": str(port)}
    logs = os.path.join(out, "workers")
    os.makedirs(logs, exist_ok=True)
    print(f"chief on 127.0.0.1:{port}, {config.workers} workers (logs in {logs})", flush=True)
    chief = subprocess.Popen(argv, env={**env, "KERASTUNER_TUNER_ID": "chief"})
    workers, files = [], []
    try:
        for i in range(config.workers):
            files.append(open(os.path.join(logs, f"tuner{i}.log"), "w"))
            workers.append(
                subprocess.Popen(
                    argv,
                    env={**env, "KERASTUNER_TUNER_ID": f"tuner{i}"},
                    stdout=files[-1],
                    stderr=subprocess.STDOUT,
                )
            )
        chief.wait()
        if chief.returncode != 0:  # the workers would wait for it forever
            for p in workers:
                if p.poll() is None:
                    p.terminate()
        codes = [p.wait() for p in workers]
    except KeyboardInterrupt:
        for p in [chief, *workers]:
            p.terminate()
        raise RunInterrupted(f"interrupted: rerun the same command to resume from {out}.") from None
    finally:
        for f in files:
            f.close()
    failed = [f"tuner{i}" for i, c in enumerate(codes) if c != 0]
    if chief.returncode != 0 or failed:
        raise RuntimeError(f"the chief (exit {chief.returncode}) or workers {failed} failed; see {logs}/")
    return load_result(out)


def load_result(out: str) -> RunResult:
    """The `RunResult` of a finished run, read back from its folder (as after `--workers`).

    Example:

        >>> import tempfile, tuning
        >>> tuning.load_result(tempfile.mkdtemp())
        Traceback (most recent call last):
        ...
        FileNotFoundError: No finished run in '...' (no evaluation in run.json). Run `tuning.run` with this folder first.
    """
    from tuning.tuners import load_best

    record = read_json(os.path.join(out, RUN_FILE))
    if not record or "evaluation" not in record:
        raise FileNotFoundError(
            f"No finished run in {out!r} (no evaluation in {RUN_FILE}). Run `tuning.run` with this folder first."
        )
    best = load_best(out, "search")
    return RunResult(
        model=best.model,
        config=SearchConfig.from_dict(record["config"]),
        classes=load_classes(os.path.join(out, "best.keras"))["classes"],
        objective=record["objective"],
        leaderboard=read_json(os.path.join(out, "leaderboard.json"), best.leaderboard),
        evaluation=record["evaluation"],
        cv=record.get("cv"),
        budget=record.get("budget"),
        paths=record.get("paths", {}),
    )


# ------------------------------------------------------------- after search
def _finish(config, data, out, hypermodel, result, splits, classes, info, objective, timings, t0, verbose):
    from tuning import report

    _say(verbose, "\nleaderboard (best first):\n" + str(result))
    write_json(os.path.join(out, "classes.json"), classes)
    publish(os.path.join(result.directory, "best.keras"), os.path.join(out, "best.keras"))
    measured_on = "test" if splits["test"] is not None else "val"
    evaluation = report.evaluate(result.model, splits[measured_on], classes)
    evaluation.update(split=measured_on, source=info[measured_on]["source"])
    if config.tta:
        from tuning.tta import tta_model

        tta = report.evaluate(tta_model(result.model, config.tta), splits[measured_on], classes)
        evaluation["tta"] = {k: tta[k] for k in ("accuracy", "balanced_accuracy", "macro_f1")}
        evaluation["tta"]["views"] = list(config.tta)
    analysis = _analyse(result.model, splits, classes, evaluation, config, out)
    cv = _cross_validate(config, hypermodel, result, splits, objective, verbose) if config.cv else None
    history = read_json(os.path.join(result.directory, "best.json"), {}).get("history", {})
    plots = report.write_plots(
        out,
        model=result.model,
        history=history,
        leaderboard=result.leaderboard,
        evaluation=evaluation,
        class_names=classes,
        backbone=result.hyperparameters.get("backbone", config.backbone[0]),
        top_losses=analysis["top_losses"],
        max_latency_ms=config.max_latency_ms,
    )
    figures = {k: evaluation[k] for k in ("accuracy", "balanced_accuracy", "macro_f1")}
    board = _leaderboard_with(result.leaderboard, measured_on, figures, evaluation.get("tta"), cv)
    _write_board(out, board)
    timings["total"] = time.time() - t0
    path = report.write_report(
        out,
        config=config,
        classes=classes,
        result=result,
        objective=objective,
        evaluation=evaluation,
        analysis=analysis,
        cv=cv,
        timings=timings,
        plots=plots,
        splits=info,
    )
    paths = {
        "model": os.path.join(out, "best.keras"),
        "leaderboard": os.path.join(out, "leaderboard.csv"),
        "report": path,
        "suspects": analysis["suspects_path"],
        "plots": plots,
    }
    summary = {**figures, "split": measured_on, "source": evaluation["source"], "tta": evaluation.get("tta")}
    record = {**_record(config, data, objective, info), "evaluation": summary, "cv": cv}
    record.update(budget=result.budget, paths=paths, timings=timings, duplicates=len(analysis["duplicates"]))
    write_json(os.path.join(out, RUN_FILE), record)
    _say(verbose, _summary_line(evaluation, info, measured_on, cv, out, plots, timings))
    return RunResult(
        model=result.model,
        config=config,
        classes=classes,
        objective=objective,
        leaderboard=board,
        evaluation=summary,
        cv=cv,
        budget=result.budget,
        paths=paths,
    )


def _finish_multilabel(
    config, data, out, hypermodel, result, splits, classes, info, objective, timings, t0, verbose
):
    """After a multi-label search: thresholds on val, test figures, gallery, plots, report."""
    from tuning import multilabel

    _say(verbose, "\nleaderboard (best first):\n" + str(result))
    thresholds = multilabel.thresholds_on(result.model, splits["val"])
    write_json(
        os.path.join(out, "classes.json"),
        {"task": "multilabel", "classes": classes, "thresholds": [round(float(t), 4) for t in thresholds]},
    )
    publish(os.path.join(result.directory, "best.keras"), os.path.join(out, "best.keras"))
    measured_on = "test" if splits["test"] is not None else "val"
    evaluation = multilabel.evaluate_multilabel(result.model, splits[measured_on], classes, thresholds)
    evaluation.update(split=measured_on, source=info[measured_on]["source"])
    if config.tta:
        from tuning.tta import tta_model

        tta = multilabel.evaluate_multilabel(
            tta_model(result.model, config.tta), splits[measured_on], classes, thresholds
        )
        evaluation["tta"] = {k: tta[k] for k in multilabel.FIGURES}
        evaluation["tta"]["views"] = list(config.tta)
    wrong = multilabel.wrong_assignments(
        evaluation["probabilities"], evaluation["true"], splits["files"][measured_on][0], classes, thresholds
    )
    history = read_json(os.path.join(result.directory, "best.json"), {}).get("history", {})
    plots = multilabel.write_plots(
        out,
        model=result.model,
        history=history,
        leaderboard=result.leaderboard,
        evaluation=evaluation,
        class_names=classes,
        wrong=wrong,
    )
    figures = {k: evaluation[k] for k in multilabel.FIGURES}
    board = _leaderboard_with(result.leaderboard, measured_on, figures, None, None)
    _write_board(out, board)
    timings["total"] = time.time() - t0
    path = multilabel.write_report(
        out,
        config=config,
        classes=classes,
        result=result,
        objective=objective,
        evaluation=evaluation,
        wrong=wrong,
        timings=timings,
        plots=plots,
        splits=info,
    )
    paths = {
        "model": os.path.join(out, "best.keras"),
        "leaderboard": os.path.join(out, "leaderboard.csv"),
        "report": path,
        "plots": plots,
    }
    summary = {
        **figures,
        "macro_f1_at_0.5": evaluation["macro_f1_at_0.5"],
        "per_class": evaluation["per_class"],
        "thresholds": [float(t) for t in thresholds],
        "split": measured_on,
        "source": evaluation["source"],
        "tta": evaluation.get("tta"),
    }
    record = {**_record(config, data, objective, info), "evaluation": summary}
    record.update(budget=result.budget, paths=paths, timings=timings)
    write_json(os.path.join(out, RUN_FILE), record)
    text = (
        f"\n{measured_on} mAP {figures['map']:.4f}, micro-F1 {figures['micro_f1']:.4f}, macro-F1 "
        f"{figures['macro_f1']:.4f} (at 0.5: {evaluation['macro_f1_at_0.5']:.4f}), exact match "
        f"{figures['subset_accuracy']:.4f} on {info[measured_on]['images']} images"
    )
    if evaluation.get("tta"):
        text += f"; with flip TTA mAP {evaluation['tta']['map']:.4f}"
    _say(
        verbose,
        text
        + f"; wrote {out}/best.keras, classes.json, leaderboard.csv, report.md, plots/ in {timings['total']:.0f} s",
    )
    return RunResult(
        model=result.model,
        config=config,
        classes=classes,
        objective=objective,
        leaderboard=board,
        evaluation=summary,
        budget=result.budget,
        paths=paths,
    )


def _summary_line(evaluation, info, measured_on, cv, out, plots, timings):
    figure = "test" if measured_on == "test" else "validation (used for selection; no test split)"
    tta = evaluation.get("tta")
    text = (
        f"\n{figure} accuracy {evaluation['accuracy']:.4f}, balanced accuracy "
        f"{evaluation['balanced_accuracy']:.4f}, macro-F1 {evaluation['macro_f1']:.4f} on "
        f"{info[measured_on]['images']} images ({evaluation['source']})"
    )
    if tta:
        text += f"; with {'+'.join(tta['views'])} TTA accuracy {tta['accuracy']:.4f}"
    if cv:
        text += f"; {cv['folds']}-fold CV accuracy {cv['accuracy']['mean']:.4f} +- {cv['accuracy']['sd']:.4f}"
    return text + (
        f"; wrote {out}/best.keras, leaderboard.csv, report.md, suspects.csv, plots/ "
        f"({len(plots)} PNGs) in {timings['total']:.0f} s"
    )


def _leaderboard_with(rows, split, figures, tta, cv):
    """The search's rows, the best one with the held-out, TTA and CV figures beside its own."""
    rows = [dict(r) for r in rows]
    if rows:
        rows[0].update({f"{split}_{k}": round(v, 4) for k, v in figures.items()})
        if tta:
            rows[0][f"{split}_tta_accuracy"] = round(tta["accuracy"], 4)
        if cv:
            for k in ("accuracy", "balanced_accuracy", "macro_f1"):
                rows[0][f"cv_{k}"] = f"{cv[k]['mean']:.4f} +- {cv[k]['sd']:.4f}"
    return rows


def _write_board(out, rows):
    write_rows(os.path.join(out, "leaderboard.csv"), rows)
    write_json(os.path.join(out, "leaderboard.json"), rows)


def _analyse(model, splits, classes, evaluation, config, out):
    """Top losses (test), suspects (train+val), duplicates across splits; writes suspects.csv."""
    import zoo
    from tuning import analysis
    from tuning.data import file_dataset

    files = splits["files"]
    measured = evaluation["split"]
    paths, names, labels = [], [], []
    for split in _SPLITS:
        if split in files:
            paths += list(files[split][0])
            labels += list(files[split][1])
            names += [split] * len(files[split][0])
    last = zoo.stages_of(model)[-1].layer
    try:  # one pass: the scores and the last stage's map (the embedding)
        # `model.input`, not `.inputs`: a one-element list as inputs makes
        # Keras warn at each call with a plain batch.
        both = keras.Model(model.input, [model.outputs[0], model.get_layer(last).output])
        features = None
    except ValueError:  # the backbone is nested: its map comes from a cut, in a second call
        import surgery

        both, features = model, surgery.cut(model, last)
    ds = file_dataset(paths, labels, image_size=config.image_size, batch_size=config.batch_size)
    probs, embeds, thumbs = [], [], []
    for x, _ in ds:
        # 16x16 thumbnails as uint8: 768 bytes an image (float32: 3 KB), kept for every image.
        small = keras.ops.image.resize(keras.ops.cast(x, "float32"), (16, 16))
        thumbs.append(np.clip(np.rint(keras.ops.convert_to_numpy(small)), 0, 255).astype("uint8"))
        p, f = (
            both.predict_on_batch(x)  # compiled: on JAX twice as fast as an eager call
            if features is None
            else (model.predict_on_batch(x), features.predict_on_batch(x))
        )
        probs.append(p)  # predict_on_batch returns NumPy arrays
        f = f.astype("float32")
        embeds.append(f.reshape(len(f), -1, f.shape[-1]).mean(1))
    probs, embeds, thumbs = np.concatenate(probs), np.concatenate(embeds), np.concatenate(thumbs)
    labels = np.asarray(labels)
    searched = np.array([n != "test" for n in names])
    idx = np.flatnonzero(searched)
    rows = analysis.suspects(
        probs[idx], labels[idx], [paths[i] for i in idx], [names[i] for i in idx], classes
    )

    suspects_path = os.path.join(out, "suspects.csv")
    write_rows(suspects_path, rows, columns=["path", "split", "label", "p_label", "predicted", "p_predicted"])
    held = files[measured]
    top = analysis.top_losses(evaluation["probabilities"], evaluation["true"], k=12)
    return {
        "suspects": rows[:10],
        "suspects_path": suspects_path,
        "top_losses": [
            {
                "path": held[0][i],
                "true": classes[int(evaluation["true"][i])],
                "predicted": classes[int(evaluation["probabilities"][i].argmax())],
                "probability": float(evaluation["probabilities"][i].max()),
            }
            for i in top
        ],
        "confused": analysis.most_confused(evaluation["confusion"], classes),
        "duplicates": analysis.duplicates(paths, names, embeds, thumbs),
    }


def _cross_validate(config, hypermodel, result, splits, objective, verbose) -> dict:
    """The best configuration retrained on K stratified folds of train+val: mean and sd per figure."""
    import keras_tuner as kt

    from tuning import report
    from tuning.data import CACHE_BYTES, file_dataset

    files = splits["files"]
    paths = list(files["train"][0]) + list(files["val"][0])
    labels = list(files["train"][1]) + list(files["val"][1])
    hp = kt.HyperParameters()
    for k, v in result.hyperparameters.items():
        hp.Fixed(k, v)
    folds = _folds(labels, config.cv, config.seed)
    scores = {k: [] for k in ("accuracy", "balanced_accuracy", "macro_f1")}
    # The trials' global batch: a data-parallel run scales the rates by its device count.
    batch_size = config.batch_size * round(hypermodel.learning_rate_scale)
    make = lambda idx, shuffle: file_dataset(  # noqa: E731
        [paths[i] for i in idx],
        [labels[i] for i in idx],
        image_size=config.image_size,
        batch_size=batch_size,
        shuffle=shuffle,
        seed=config.seed,
        # Every epoch reads the fold; all K folds stay alive (below): K x the images in all.
        cache=config.cv * len(paths) * config.image_size**2 * 3 <= CACHE_BYTES,
    )
    alive = []  # the hypermodel caches features by dataset object: none may be freed and reused
    for k, held in enumerate(folds):
        keep = sorted(set(range(len(paths))) - set(held))
        keras.utils.set_random_seed(config.seed + k)
        model = hypermodel.build(hp)
        stop = keras.callbacks.EarlyStopping(
            monitor=objective,
            mode="max",
            patience=config.patience or config.epochs,
            restore_best_weights=True,
        )
        val, train = make(held, False), make(keep, True)
        alive += [val, train]
        hypermodel.fit(
            hp, model, train, epochs=config.epochs, validation_data=val, callbacks=[stop], verbose=0
        )
        hypermodel.take_last_fit()
        figures = report.evaluate(model, val, [str(c) for c in range(hypermodel.num_classes)])
        for name in scores:
            scores[name].append(figures[name])
        _say(verbose, f"cv fold {k + 1}/{config.cv}: accuracy {figures['accuracy']:.4f}")
    out = {"folds": config.cv}
    for name, values in scores.items():
        out[name] = {
            "mean": float(np.mean(values)),
            "sd": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0,
            "values": [round(float(v), 4) for v in values],
        }
    return out


def _folds(labels, k, seed) -> list:
    """K disjoint, stratified folds of the item indices (each class dealt round-robin)."""
    rng = np.random.default_rng(seed)
    labels = np.asarray(labels)
    folds = [[] for _ in range(k)]
    for c in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == c))
        for i, m in enumerate(members):
            folds[(i + int(c)) % k].append(int(m))
    return [sorted(f) for f in folds]


def load_classes(model_path: str) -> dict:
    """What the `classes.json` beside a `best.keras` says: `{"task", "classes", "thresholds"}`.

    Single-label and segmentation runs write a list of names (`task` None:
    the file does not say; `thresholds` None); multi-label runs write the
    names with each class's decision threshold. No file gives `classes`
    None.

    Example:

        >>> import os, tempfile, tuning.job
        >>> tuning.job.load_classes(os.path.join(tempfile.mkdtemp(), "best.keras"))
        {'task': None, 'classes': None, 'thresholds': None}
    """
    stored = read_json(os.path.join(os.path.dirname(os.path.abspath(model_path)), "classes.json"))
    if isinstance(stored, dict):
        return {
            "task": stored.get("task"),
            "classes": stored.get("classes"),
            "thresholds": stored.get("thresholds"),
        }
    return {"task": None, "classes": stored, "thresholds": None}


def load_model(path: str) -> keras.Model:
    """The Keras model in a `best.keras` that `tuning.run` wrote, or a one-line error saying what the file is.

    Example:

        >>> import tuning.job
        >>> tuning.job.load_model("missing.keras")
        Traceback (most recent call last):
        ...
        tuning.config.ConfigError: no model at 'missing.keras'; run `python -m tuning run` first (it writes OUT/best.keras).
    """
    import zipfile

    if not os.path.exists(path):
        raise ConfigError(
            f"no model at {path!r}; run `python -m tuning run` first (it writes OUT/best.keras)."
        )
    if os.path.isdir(path) or not path.endswith(".keras") or not zipfile.is_zipfile(path):
        raise ConfigError(
            f"{path!r} is not a Keras model file: give the best.keras that `python -m tuning run` wrote."
        )
    # The serializable classes a tuned model holds register on import; the
    # package imports lazily, so a fresh `predict`/`export` process must
    # import them before loading.
    import tuning.losses  # noqa: F401
    import tuning.metrics  # noqa: F401
    import tuning.optimizers  # noqa: F401
    import tuning.segment  # noqa: F401
    import tuning.tta  # noqa: F401
    import zoo  # noqa: F401
    from tuning.hypermodel import load_jittable

    try:
        return load_jittable(path)
    except Exception as e:  # Keras raises many types for a damaged archive
        raise ConfigError(
            f"{path!r} could not be loaded as a Keras model ({type(e).__name__}: "
            f"{' '.join(str(e).split())[:200]}). Write it again with "
            "`python -m tuning run`."
        ) from e
