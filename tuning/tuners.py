"""`tuning.search` and `tuning.load_best`: KerasTuner runs with a best model,
a leaderboard and resume, on KerasTuner's own engine."""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import json
import logging
import os
import tempfile
import time
from collections.abc import Sequence
from typing import Any

import keras
import keras_tuner as kt
import numpy as np

from tuning._keras import custom_gradient_names, release_custom_gradients
from tuning.hypermodel import AUGMENTATIONS, TransferHyperModel

logger = logging.getLogger(__name__)
TUNERS = {"hyperband": kt.Hyperband, "random": kt.RandomSearch, "bayesian": kt.BayesianOptimization}
BEST_MODEL = "best.keras"
BEST_INFO = "best.json"
LEADERBOARD = "leaderboard"


@dataclasses.dataclass
class SearchResult:
    """What a search leaves: the trained best model, its hyperparameters, the leaderboard.

    Attributes:
        model: keras.Model. The best trial's trained model (best epoch).
        hyperparameters: dict. Its hyperparameter values.
        score: float. Its objective value.
        leaderboard: list of dicts, best first (`trial_id`, `score`,
            `status`, `seconds`, and every hyperparameter).
        directory: str. The project directory (best.keras, leaderboard.csv/json,
            TensorBoard logs under `logs/`).
    """

    model: keras.Model
    hyperparameters: dict
    score: float
    leaderboard: list
    directory: str

    def __str__(self):
        return format_leaderboard(self.leaderboard)


def format_leaderboard(rows: Sequence[dict], limit: int = 10) -> str:
    """The leaderboard as an aligned text table (best first).

    Example:

        >>> from tuning.tuners import format_leaderboard
        >>> print(format_leaderboard([{"trial_id": "0", "score": 0.91234}]))
        trial_id  score
        0         0.9123
    """
    if not rows:
        return "(no finished trials)"
    keys = [k for k in rows[0] if k not in ("status",)]
    cells = [[_cell(r.get(k)) for k in keys] for r in rows[:limit]]
    widths = [max(len(k), *(len(c[i]) for c in cells)) for i, k in enumerate(keys)]
    line = lambda vals: "  ".join(v.ljust(w) for v, w in zip(vals, widths)).rstrip()  # noqa: E731
    return "\n".join([line(keys)] + [line(c) for c in cells])


def _cell(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return f"{v:.4g}"
    return "" if v is None else str(v)


def _atomic_write(path, write):
    """Write through a temporary file in the same folder, then rename."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    suffix = os.path.basename(path)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=suffix)
    os.close(fd)
    try:
        write(tmp)
        # mkstemp creates 0600; give the file the mode a plain open() would
        # (the umask decides), so others and serving accounts can read it.
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _umask() -> int:
    mask = os.umask(0)  # reading the umask means setting it; put it back at once
    os.umask(mask)
    return mask


@contextlib.contextmanager
def _file_lock(directory, name):
    """An exclusive lock shared by every process (chief, workers) writing `directory`."""
    import fcntl

    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, name), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


class BestModelKeeper:
    """Saves a trial's model as `best.keras` when it beats every earlier trial.

    Atomic (temporary file + rename) and guarded by a file lock, so a killed
    process or concurrent workers never leave a half-written or worse model.
    """

    def __init__(self, directory: str, objective: kt.Objective):
        self.directory = directory
        self.objective = objective

    def best(self):
        path = os.path.join(self.directory, BEST_INFO)
        if not os.path.exists(path):
            return None
        with open(path) as f:
            return json.load(f)

    def offer(self, model, score: float, hyperparameters: dict, history: dict | None = None):
        if score is None or not np.isfinite(score):
            return False
        with _file_lock(self.directory, ".best.lock"):
            current = self.best()
            better = current is None or (
                score > current["score"] if self.objective.direction == "max" else score < current["score"]
            )
            if not better:
                return False
            optimizer = getattr(model, "optimizer", None)
            if optimizer is not None and not optimizer.built:
                # A cached-head trial trained the head apart: the model's own
                # optimizer never ran. Built, its saved state matches what
                # Keras builds on load (no "Skipping variable loading" warning).
                optimizer.build(model.trainable_variables)
            _atomic_write(os.path.join(self.directory, BEST_MODEL), model.save)
            info = {
                "score": float(score),
                "objective": self.objective.name,
                "hyperparameters": hyperparameters,
                "history": {k: [float(v) for v in vals] for k, vals in (history or {}).items()},
            }
            _atomic_write(
                os.path.join(self.directory, BEST_INFO),
                lambda p: open(p, "w").write(json.dumps(info, indent=2)),
            )
            return True


class _TrialHooks:
    """Mixed into KerasTuner's tuners: timing, one line per trial, leaderboard on disk."""

    def on_trial_begin(self, trial):
        super().on_trial_begin(trial)
        self._trial_started = getattr(self, "_trial_started", {})
        self._trial_started[trial.trial_id] = time.time()
        self._gradients_before = custom_gradient_names()

    def on_trial_end(self, trial):
        super().on_trial_end(trial)
        started = getattr(self, "_trial_started", {}).get(trial.trial_id)
        seconds = time.time() - started if started else None
        if seconds is not None:
            with _file_lock(self.project_dir, ".times.lock"):  # workers finish concurrently
                times = _load_times(self.project_dir)
                times[trial.trial_id] = seconds
                _atomic_write(
                    os.path.join(self.project_dir, "trial_times.json"),
                    lambda p: open(p, "w").write(json.dumps(times)),
                )
        values = {k: v for k, v in trial.hyperparameters.values.items() if not k.startswith("tuner/")}
        score = trial.score
        logger.info(
            "trial %s  score %s  %.1fs  %s",
            trial.trial_id,
            "n/a" if score is None else f"{score:.4f}",
            seconds or 0,
            values,
        )
        if getattr(self, "_print_trials", False):
            print(self._trial_line(trial, score, seconds, values), flush=True)
        if not _is_worker():  # a worker's oracle is a client; the chief writes it at the end
            write_leaderboard(self)
        if not getattr(self, "_keep_checkpoints", True) and not _is_worker():
            self._prune_checkpoints()
        # TensorFlow would keep every trial's model and optimizer in memory.
        before = getattr(self, "_gradients_before", None)
        if before is not None:
            release_custom_gradients(before)

    def _trial_line(self, trial, score, seconds, values):
        """`[trial 3/20 id 02] val_accuracy=0.8125 (12.3 s) best 0.8750 ~4 min left head/units=64 ...`.

        Numbered from 1 in the order trials finish, as KerasTuner's own
        "Trial 3 Complete"; the id is KerasTuner's (trial_02/, the
        leaderboard's trial_id). The time left is the mean trial time so far
        times the trials still to run (random and Bayesian search).
        """
        done = self._finished = getattr(self, "_finished", 0) + 1
        self._durations = getattr(self, "_durations", []) + [seconds or 0.0]
        limit = getattr(self.oracle, "max_trials", None)
        count = f"{done}/{limit}" if limit else f"{done}"
        best = self.oracle.get_best_trials(1) if not _is_worker() else []
        best_text = f" best {best[0].score:.4f}" if best and best[0].score is not None else ""
        left = ""
        if limit and limit > done:
            eta = sum(self._durations) / len(self._durations) * (limit - done)
            left = f" ~{eta / 60:.0f} min left" if eta >= 90 else f" ~{eta:.0f} s left"
        shown = "n/a" if score is None else f"{score:.4f}"
        chosen = " ".join(f"{k}={_cell(v)}" for k, v in values.items())
        return (
            f"[trial {count} id {trial.trial_id}] {self.oracle.objective.name}={shown} "
            f"({seconds or 0:.1f} s){best_text}{left} {chosen}"
        )

    def _prune_checkpoints(self, keep_best: bool = True):
        """Delete every trial's checkpoint but the best one's (disk grows per trial otherwise).

        Hyperband continues trials from earlier ones' checkpoints, so it keeps
        them all; random and Bayesian search never read one again (the best
        model is kept as `best.keras`). Runs where the oracle lives (a single
        process, or the chief once its workers are done).
        """
        if isinstance(self, kt.Hyperband):
            return
        import glob

        best = {t.trial_id for t in self.oracle.get_best_trials(1)} if keep_best else set()
        for trial_id in self.oracle.trials:
            if trial_id not in best:
                for path in glob.glob(os.path.join(self.get_trial_dir(trial_id), "checkpoint*")):
                    os.remove(path)


def _tensorflow_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("tensorflow") is not None  # without importing it


def _load_times(project_dir):
    path = os.path.join(project_dir, "trial_times.json")
    if os.path.exists(path):
        with open(path) as f:
            return json.load(f)
    return {}


def leaderboard(tuner) -> list:
    """Finished trials of a tuner, best first, as dicts."""
    times = _load_times(tuner.project_dir)
    trials = tuner.oracle.get_best_trials(num_trials=len(tuner.oracle.trials) or 1)
    rows = []
    for t in trials:
        row = {
            "trial_id": t.trial_id,
            "score": t.score,
            "status": str(t.status),
            "seconds": round(times[t.trial_id], 2) if t.trial_id in times else None,
        }
        row.update({k: v for k, v in t.hyperparameters.values.items() if not k.startswith("tuner/")})
        rows.append(row)
    return rows


def write_leaderboard(tuner) -> list:
    rows = leaderboard(tuner)
    base = os.path.join(tuner.project_dir, LEADERBOARD)
    keys = []
    for r in rows:
        keys += [k for k in r if k not in keys]

    def write_csv(path):
        with open(path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=keys)
            writer.writeheader()
            writer.writerows(rows)

    _atomic_write(base + ".csv", write_csv)
    _atomic_write(base + ".json", lambda p: open(p, "w").write(json.dumps(rows, indent=2, default=str)))
    return rows


def make_tuner(
    hypermodel: kt.HyperModel,
    *,
    tuner: str = "hyperband",
    objective: str | kt.Objective = "val_accuracy",
    max_trials: int = 10,
    epochs: int = 5,
    directory: str = "tuning_runs",
    project_name: str = "search",
    overwrite: bool = False,
    seed: int = 0,
    executions_per_trial: int = 1,
    distribution_strategy: Any = None,
) -> kt.Tuner:
    """A KerasTuner tuner (with this package's trial hooks) for `hypermodel`.

    `search` uses it; call it directly to drive KerasTuner yourself
    (`tuner.search(...)`, `tuner.results_summary()`).

    Example:

        >>> import tempfile, tuning
        >>> hm = tuning.TransferHyperModel("resnet18", num_classes=3, input_shape=(32, 32, 3))
        >>> t = tuning.make_tuner(hm, tuner="random", max_trials=2, directory=tempfile.mkdtemp())
        >>> type(t).__name__
        'TransferRandomSearch'
    """
    if tuner not in TUNERS:
        raise ValueError(f"`tuner` must be one of {tuple(TUNERS)}. Received: tuner={tuner!r}")
    for name, value in (("max_trials", max_trials), ("epochs", epochs)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            # KerasTuner reads max_trials=0 (or None) as "no limit".
            raise ValueError(f"`{name}` must be an int >= 1. Received: {name}={value!r}")
    base = TUNERS[tuner]
    cls = type(f"Transfer{base.__name__}", (_TrialHooks, base), {})
    common = dict(
        objective=objective,
        directory=directory,
        project_name=project_name,
        overwrite=overwrite,
        seed=seed,
        executions_per_trial=executions_per_trial,
        distribution_strategy=distribution_strategy,
    )
    if tuner == "hyperband":
        t = cls(hypermodel, max_epochs=epochs, factor=3, **common)
    else:
        t = cls(hypermodel, max_trials=max_trials, **common)
    backbones = getattr(hypermodel, "backbones", ())
    if len(backbones) > 1:
        _cover_backbones(t.oracle, backbones)
    return t


def _cover_backbones(oracle, backbones):
    """Make the first trials try every backbone once, then sample as usual.

    Whether an architecture suits the data cannot be known in advance; a
    random draw of 2 trials over 3 backbones would leave one untried. Wraps
    the oracle's `populate_space` (KerasTuner's extension point for custom
    oracles): a new trial takes the first backbone no trial has used yet.
    """
    populate = oracle.populate_space

    def populate_space(trial_id):
        result = populate(trial_id)
        values = result.get("values") if isinstance(result, dict) else None
        # Not for Hyperband's continuations (`tuner/trial_id`): they resume
        # a trained model, whose backbone is fixed.
        if values and "backbone" in values and "tuner/trial_id" not in values:
            used = {
                t.hyperparameters.values.get("backbone")
                for tid, t in oracle.trials.items()
                if tid != trial_id
            }
            untried = [b for b in backbones if b not in used]
            if untried:
                values["backbone"] = untried[0]
        return result

    oracle.populate_space = populate_space


def search(
    train: Any,
    val: Any = None,
    *,
    backbone: str | Sequence[str],
    num_classes: int | None = None,
    input_shape: Sequence[int | None] | None = None,
    weights: str | os.PathLike | None = None,
    tuner: str = "hyperband",
    max_trials: int = 10,
    epochs: int = 5,
    directory: str = "tuning_runs",
    project_name: str = "search",
    objective: str = "val_accuracy",
    overwrite: bool = False,
    head_space: dict | None = None,
    unfreeze_space: dict | None = None,
    batch_size: int = 32,
    patience: int = 3,
    seed: int = 0,
    cache_features: bool = True,
    tensorboard: bool = True,
    print_trials: bool | None = None,
    keep_checkpoints: bool = False,
    verbose: int = 1,
    distribution: Any = None,
    phase1_fraction: float = 0.5,
    schedule: str = "constant",
    augmentation: Sequence[str] | keras.layers.Layer | None = AUGMENTATIONS,
    callbacks: Sequence[keras.callbacks.Callback] | None = None,
    precision: str = "fp32",
) -> SearchResult:
    """Search heads and unfreeze depth on a backbone; return the trained best model.

    Built on KerasTuner: `tuner` picks Hyperband, random search or Bayesian
    optimisation; a search started again with the same `directory` and
    `project_name` (and `overwrite=False`) resumes where it stopped, without
    repeating finished trials. KerasTuner's chief/worker environment
    variables (`KERASTUNER_TUNER_ID`, `KERASTUNER_ORACLE_IP`,
    `KERASTUNER_ORACLE_PORT`) distribute it.

    Each trial trains with early stopping (best epoch restored) and writes
    TensorBoard logs under `<directory>/<project_name>/logs/`; the best
    model so far is kept as `best.keras` (atomic writes) and the leaderboard
    as `leaderboard.csv`/`.json`, updated after every trial.

    Args:
        train: `(x, y)` arrays (uint8/float images 0-255, integer labels) or
            a dataset of `(images, labels)` batches.
        val: the same, for the objective. Defaults to None (then the
            objective must not be a `val_` metric).
        backbone: str, list of str, or keras.Model. Several names make the
            backbone a searched hyperparameter (`backbone` in the
            leaderboard). See `TransferHyperModel`.
        num_classes: int. Defaults to `max(y) + 1` for arrays.
        input_shape: tuple. Defaults to the images' shape for arrays.
        weights: backbone weights (None, "imagenet", path).
        tuner: "hyperband", "random" or "bayesian". Defaults to "hyperband".
        max_trials: int. Trials for random/Bayesian search.
        epochs: int. Epochs per trial (Hyperband's `max_epochs`).
        directory, project_name: str. Where everything is written.
        objective: str. Defaults to "val_accuracy".
        overwrite: bool. Start afresh instead of resuming. Defaults to False.
        head_space, unfreeze_space: dicts, see `TransferHyperModel`.
        batch_size: int. Defaults to 32 (ignored for datasets).
        patience: int. Early-stopping patience in epochs. Defaults to 3.
        seed: int. Defaults to 0.
        cache_features: bool. Train frozen-backbone trials on cached
            features. Defaults to True.
        tensorboard: bool. Write TensorBoard logs per trial. Defaults to True.
        print_trials: bool. Print one line per finished trial. Defaults to
            `verbose >= 1`.
        keep_checkpoints: bool. Keep every trial's KerasTuner checkpoint.
            Defaults to `False`: random and Bayesian searches keep only the
            best trial's while they run and none at the end (`best.keras`
            is the kept model); Hyperband needs them all and keeps them.
        verbose: int. 0: silent; 1: one line per finished trial (trial n/N,
            its score and time, the best so far, the time left); 2: also
            KerasTuner's trial tables and one line per epoch. Defaults to 1.
        distribution: a `keras.distribution` (e.g. `DataParallel`) to train
            each trial across devices (JAX). Defaults to None.
        phase1_fraction: float. Share of epochs for the head alone in
            trials that unfreeze stages. Defaults to 0.5.
        schedule: str. "constant" or "cosine" (warm-up then cosine decay in
            each phase). Defaults to "constant".
        augmentation: tuple of str. Augmentation kinds of trials with
            `finetune/augment` (see `TransferHyperModel`). Defaults to all.
        callbacks: list of `keras.callbacks.Callback`, added to every
            trial's `fit` after early stopping and TensorBoard. KerasTuner
            deep-copies them per trial: keep state that must outlive a
            trial outside the callback object (a module-level list, a file).
        precision: str. "fp32" or "bf16" (`mixed_bfloat16` for every
            trial's model). Defaults to "fp32".

    Returns:
        A `SearchResult`.

    Example:

        >>> import tempfile, zoo, tuning
        >>> x, y, _ = zoo.datasets.shapes(4, size=32)
        >>> result = tuning.search((x, y), (x, y), backbone="resnet18", tuner="random",
        ...                        max_trials=2, epochs=1, directory=tempfile.mkdtemp(),
        ...                        unfreeze_space={"stages": [0], "augment": [False]})
        ... # doctest: +ELLIPSIS
        [trial 1/2 id 0] val_accuracy=... best ... left head/pooling=...
        [trial 2/2 id 1] val_accuracy=... best ...
        >>> len(result.leaderboard), result.model.output_shape
        (2, (None, 6))
    """
    if isinstance(train, (tuple, list)):
        x, y = train
        num_classes = num_classes or int(np.max(y)) + 1
        input_shape = input_shape or tuple(np.shape(x)[1:])
        fit_args = dict(x=x, y=y, batch_size=batch_size)
    else:
        if num_classes is None or input_shape is None:
            raise ValueError("With a dataset, give `num_classes` and `input_shape`.")
        fit_args = dict(x=train)
    if val is None and objective.startswith("val_"):
        raise ValueError(
            f"objective={objective!r} needs validation data; pass `val` or an objective such as 'accuracy'."
        )
    validation = tuple(val) if isinstance(val, (tuple, list)) else val
    hypermodel = TransferHyperModel(
        backbone,
        num_classes=num_classes,
        input_shape=input_shape,
        weights=weights,
        head_space=head_space,
        unfreeze_space=unfreeze_space,
        cache_features=cache_features,
        seed=seed,
        phase1_fraction=phase1_fraction,
        schedule=schedule,
        augmentation=augmentation,
        precision=precision,
    )
    t = make_tuner(
        hypermodel,
        tuner=tuner,
        objective=objective,
        max_trials=max_trials,
        epochs=epochs,
        directory=directory,
        project_name=project_name,
        overwrite=overwrite,
        seed=seed,
    )
    t._print_trials = verbose >= 1 if print_trials is None else print_trials
    t._keep_checkpoints = keep_checkpoints
    keeper = BestModelKeeper(t.project_dir, t.oracle.objective)
    hypermodel.on_trial_trained = keeper.offer
    hypermodel.objective_name = t.oracle.objective.name
    hypermodel.objective_direction = t.oracle.objective.direction
    user_callbacks = list(callbacks or [])
    callbacks = [
        keras.callbacks.EarlyStopping(
            monitor=objective, mode=t.oracle.objective.direction, patience=patience, restore_best_weights=True
        )
    ]
    if tensorboard and not _tensorflow_installed():
        logger.warning(
            "TensorBoard logs skipped: Keras writes them with TensorFlow, which is not installed "
            "(pip install tensorflow, or pass tensorboard=False to silence this)."
        )
    elif tensorboard:
        callbacks.append(keras.callbacks.TensorBoard(log_dir=os.path.join(t.project_dir, "logs")))
    callbacks += user_callbacks
    # KerasTuner clears the Keras session (and with it the distribution)
    # before building each trial's model: the hypermodel sets it again there.
    hypermodel.distribution = distribution
    try:
        t.search(
            **fit_args,
            validation_data=validation,
            epochs=epochs,
            callbacks=callbacks,
            verbose=0 if verbose < 2 else verbose,
        )
    finally:
        if getattr(t, "oracle", None) is not None and not _is_worker():
            write_leaderboard(t)
            if not keep_checkpoints:  # best.keras is the kept model: no checkpoint is read again
                t._prune_checkpoints(keep_best=False)
        if distribution is not None:
            keras.distribution.set_distribution(None)
    if _is_worker():
        return None
    if not os.path.exists(os.path.join(t.project_dir, BEST_MODEL)):
        raise RuntimeError(
            f"No trial of the search in {t.project_dir!r} finished training (see the "
            "errors above, e.g. out of memory or a bad search space). Nothing was saved."
        )
    return load_best(directory, project_name)


def _is_worker() -> bool:
    return os.environ.get("KERASTUNER_TUNER_ID", "chief") != "chief"


def load_best(directory: str, project_name: str = "search") -> SearchResult:
    """Reload the best model, its hyperparameters and the leaderboard of a search.

    Example:

        >>> import tuning
        >>> tuning.load_best("no/such/dir", "x")
        Traceback (most recent call last):
        ...
        FileNotFoundError: No finished search in 'no/such/dir/x' (no best.keras). Run `tuning.search(...)` with this directory and project_name first.
    """
    project = os.path.join(directory, project_name)
    path = os.path.join(project, BEST_MODEL)
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"No finished search in {project!r} (no {BEST_MODEL}). Run "
            "`tuning.search(...)` with this directory and project_name first."
        )
    with open(os.path.join(project, BEST_INFO)) as f:
        info = json.load(f)
    rows = []
    board = os.path.join(project, LEADERBOARD + ".json")
    if os.path.exists(board):
        with open(board) as f:
            rows = json.load(f)
    return SearchResult(
        model=keras.saving.load_model(path),
        hyperparameters=info["hyperparameters"],
        score=info["score"],
        leaderboard=rows,
        directory=project,
    )
