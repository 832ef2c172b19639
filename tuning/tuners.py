"""`tuning.search` and `tuning.load_best`: KerasTuner runs with a best model,
a leaderboard, a time budget and resume, on KerasTuner's own engine.

The job's trial logic sits at KerasTuner's extension points: a tuner mixin
(`JobTuner`) overrides `run_trial` and the trial hooks (budget, best-model
keeping, timing, trial lines, leaderboard, checkpoint pruning), an oracle
mixin (`JobOracle`) overrides `populate_space` (every backbone tried once
first; no trial started that the budget cannot fit). Both take their
settings in `__init__`.
"""

from __future__ import annotations

import dataclasses
import glob
import logging
import os
import shutil
import statistics
import time
from collections.abc import Sequence
from typing import Any

import keras
import keras_tuner as kt
import numpy as np
from keras_tuner.engine.trial import TrialStatus

from tuning._keras import (
    custom_gradient_names,
    is_checkpoint_callback,
    release_custom_gradients,
    serve_oracle,
)
from tuning.callbacks import TimeBudget
from tuning.files import atomic_write, file_lock, is_worker, publish, read_json, write_json, write_rows
from tuning.hypermodel import AUGMENTATIONS, TransferHyperModel, load_jittable

logger = logging.getLogger(__name__)
TUNERS = {"hyperband": kt.Hyperband, "random": kt.RandomSearch, "bayesian": kt.BayesianOptimization}
ORACLES = {
    "hyperband": kt.oracles.HyperbandOracle,
    "random": kt.oracles.RandomSearchOracle,
    "bayesian": kt.oracles.BayesianOptimizationOracle,
}
BEST_MODEL = "best.keras"
BEST_INFO = "best.json"
LEADERBOARD = "leaderboard"
BUDGET = "budget.json"
COSTS = "trial_costs.json"
CANDIDATES = "candidates"  # near-best trials' models while a "fastest within" choice is open
# What deploying a trial's model costs, beside its figures on the leaderboard.
COST_COLUMNS = ("params", "macs", "weights_mb", "latency_ms")
# Validation figures of each trial's best epoch shown beside its score.
BOARD_METRICS = ("val_accuracy", "val_balanced_accuracy", "val_macro_f1")


@dataclasses.dataclass
class SearchResult:
    """What a search leaves: the trained best model, its hyperparameters, the leaderboard.

    Attributes:
        model: keras.Model. The best trial's trained model (best epoch).
        hyperparameters: dict. Its hyperparameter values.
        score: float. Its objective value.
        leaderboard: list of dicts, best first (`trial_id`, `score`,
            `status`, `seconds`, the validation figures, and every hyperparameter).
        directory: str. The project directory (best.keras, leaderboard.csv/json,
            TensorBoard logs under `logs/`).
        budget: dict. What a time budget cut (`budget.json`), or None.
    """

    model: keras.Model
    hyperparameters: dict
    score: float
    leaderboard: list
    directory: str
    budget: dict | None = None

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


class BestModelKeeper:
    """Saves a trial's model as `best.keras` when it beats every earlier trial.

    Atomic (temporary file + rename) and guarded by a file lock, so a killed
    process or concurrent workers never leave a half-written or worse model.
    """

    def __init__(
        self,
        directory: str,
        objective: kt.Objective,
        max_latency_ms: float | None = None,
        fastest_within: float | None = None,
    ):
        self.directory = directory
        self.objective = objective
        self.max_latency_ms = max_latency_ms
        self.fastest_within = fastest_within

    def best(self):
        return read_json(os.path.join(self.directory, BEST_INFO))

    def offer(
        self,
        model,
        score: float,
        hyperparameters: dict,
        history: dict | None = None,
        costs: dict | None = None,
        trial_id: str | None = None,
    ):
        if score is None or not np.isfinite(score):
            return False
        if not within_cap(costs, self.max_latency_ms):
            return False
        optimizer = getattr(model, "optimizer", None)
        if optimizer is not None and not optimizer.built:
            # A cached-head trial trained the head apart: the model's own
            # optimizer never ran. Built, its saved state matches what
            # Keras builds on load (no "Skipping variable loading" warning).
            optimizer.build(model.trainable_variables)
        if self.fastest_within is not None and trial_id is not None:
            self._keep_candidate(model, score, hyperparameters, history, costs, trial_id)
        with file_lock(self.directory, ".best.lock"):
            current = self.best()
            better = current is None or (
                score > current["score"] if self.objective.direction == "max" else score < current["score"]
            )
            if not better:
                return False
            atomic_write(os.path.join(self.directory, BEST_MODEL), model.save)
            info = {
                "score": float(score),
                "objective": self.objective.name,
                "hyperparameters": hyperparameters,
                "history": {k: [float(v) for v in vals] for k, vals in (history or {}).items()},
                "costs": costs,
            }
            write_json(os.path.join(self.directory, BEST_INFO), info)
            return True

    def _candidates(self):
        return os.path.join(self.directory, CANDIDATES)

    def _keep_candidate(self, model, score, hyperparameters, history, costs, trial_id):
        # Every model that may still be "the fastest within `fastest_within`
        # of the best" is kept; one that falls further behind is deleted.
        folder = self._candidates()
        sign = 1 if self.objective.direction == "max" else -1
        with file_lock(self.directory, ".candidates.lock"):
            os.makedirs(folder, exist_ok=True)
            index = read_json(os.path.join(folder, "index.json"), {})
            best = max([sign * c["score"] for c in index.values()] + [sign * score])
            if best - sign * score <= self.fastest_within + 1e-12:
                atomic_write(os.path.join(folder, f"{trial_id}.keras"), model.save)
                index[trial_id] = {
                    "trial_id": trial_id,
                    "score": float(score),
                    "latency_ms": (costs or {}).get("latency_ms"),
                    "costs": costs,
                    "hyperparameters": hyperparameters,
                    "history": {k: [float(v) for v in vals] for k, vals in (history or {}).items()},
                }
            for tid in [
                t for t, c in index.items() if best - sign * c["score"] > self.fastest_within + 1e-12
            ]:
                os.remove(os.path.join(folder, f"{tid}.keras"))
                del index[tid]
            write_json(os.path.join(folder, "index.json"), index)

    def choose_fastest(self) -> dict | None:
        """Make the fastest kept trial within `fastest_within` of the best `best.keras`; return its row.

        Runs once the search is over (`search` calls it); the candidates'
        files are removed after.
        """
        folder = self._candidates()
        index = read_json(os.path.join(folder, "index.json"), {})
        chosen = pick(list(index.values()), direction=self.objective.direction, within=self.fastest_within)
        if chosen is not None:
            publish(
                os.path.join(folder, f"{chosen['trial_id']}.keras"), os.path.join(self.directory, BEST_MODEL)
            )
            best = (
                max(c["score"] for c in index.values())
                if self.objective.direction == "max"
                else min(c["score"] for c in index.values())
            )
            info = {
                "score": chosen["score"],
                "objective": self.objective.name,
                "hyperparameters": chosen["hyperparameters"],
                "history": chosen["history"],
                "costs": chosen["costs"],
                "chosen": f"the fastest trial within {self.fastest_within} of the best score {best:.4f}",
                "trial_id": chosen["trial_id"],
            }
            write_json(os.path.join(self.directory, BEST_INFO), info)
        shutil.rmtree(folder, ignore_errors=True)
        return chosen


class JobOracle:
    """Mixed into a KerasTuner oracle: backbone coverage and the time budget.

    `populate_space` (KerasTuner's extension point for oracles) first lets
    the wrapped oracle sample, then:

    - with several backbones, a new trial takes the first backbone no trial
      has used yet (a random draw of 2 trials over 3 backbones would leave
      one untried; whether an architecture suits the data cannot be known
      in advance). Not for Hyperband's continuations (`tuner/trial_id`),
      which resume a trained model whose backbone is fixed;
    - with a `deadline`, no trial starts once the time left is shorter than
      the mean duration of the trials so far (the first always starts
      while any time is left). `budget_stop` then says why.

    Args:
        backbones: tuple of str. The searched backbones. Defaults to ().
        deadline: float. A `time.time()` after which no trial starts.
            Defaults to None.
    """

    def __init__(self, *args: Any, backbones: Sequence[str] = (), deadline: float | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.backbones = tuple(backbones)
        self.deadline = deadline
        self.budget_stop: dict | None = None
        self._began: dict = {}
        self._durations: list = []

    def populate_space(self, trial_id):
        if self.deadline is not None:
            left = self.deadline - time.time()
            estimate = statistics.mean(self._durations) if self._durations else 0.0
            if left <= 0 or left < estimate:
                self.budget_stop = {
                    "seconds_left": round(max(left, 0.0), 1),
                    "trial_estimate": round(estimate, 1),
                }
                return {"status": TrialStatus.STOPPED, "values": None}
        result = super().populate_space(trial_id)
        values = result.get("values") if isinstance(result, dict) else None
        if values and len(self.backbones) > 1 and "backbone" in values and "tuner/trial_id" not in values:
            used = {
                t.hyperparameters.values.get("backbone") for tid, t in self.trials.items() if tid != trial_id
            }
            untried = [b for b in self.backbones if b not in used]
            if untried:
                values["backbone"] = untried[0]
        self._began[trial_id] = time.time()
        return result

    def end_trial(self, trial):
        began = self._began.pop(trial.trial_id, None)
        if began is not None:
            self._durations.append(time.time() - began)
        return super().end_trial(trial)


class JobTuner:
    """Mixed into a KerasTuner tuner: what the main job does around each trial.

    `run_trial` adds the time budget to the trial's callbacks and, after
    the trial, offers its model to the best-model keeper (its score: the
    objective's best epoch). The trial hooks time each trial, print one line
    per trial, write the leaderboard and prune checkpoints, and release what
    TensorFlow would keep of the trial's model.

    Args:
        oracle: a KerasTuner oracle (a `JobOracle` for coverage and budget).
        hypermodel: the `kt.HyperModel`. A `TransferHyperModel` hands its
            trained model over through `take_last_fit()`; others are
            searched as KerasTuner does, without a kept `best.keras`.
        budget: `TimeBudget`. Stops a running trial at the deadline.
            Defaults to None.
        print_trials: bool. One line per finished trial. Defaults to False.
        keep_checkpoints: bool. Keep every trial's checkpoint. Defaults to True.
        keep_best: bool. Keep the best model as `best.keras`. Defaults to True.
        measure_costs: bool. Measure each trained trial's parameters, MACs,
            weight size and latency per image (`model_costs`) for the
            leaderboard. Defaults to True.
        max_latency_ms: float. Keep as `best.keras` only trials whose
            latency per image (batch 1) is at most this. Defaults to None.
        fastest_within: float. Once the search is over, make `best.keras`
            the fastest trial whose score is within this of the best (in
            the objective's units: 0.01 is one accuracy point); the
            near-best trials' models are kept until then. Defaults to None.
        **kwargs: KerasTuner's `Tuner` arguments (directory, project_name, ...).
    """

    def __init__(
        self,
        oracle: kt.Oracle,
        hypermodel: kt.HyperModel,
        *,
        budget: TimeBudget | None = None,
        print_trials: bool = False,
        keep_checkpoints: bool = True,
        keep_best: bool = True,
        seed: int | None = None,
        measure_costs: bool = True,
        max_latency_ms: float | None = None,
        fastest_within: float | None = None,
        **kwargs: Any,
    ) -> None:
        # KerasTuner's RandomSearch/BayesianOptimization/Hyperband constructors
        # only build their oracle; ours is given, so `Tuner`'s is called.
        self.seed = seed
        kt.Tuner.__init__(self, oracle, hypermodel, **kwargs)
        self.budget = budget
        self.print_trials = print_trials
        self.keep_checkpoints = keep_checkpoints
        if (max_latency_ms is not None or fastest_within is not None) and not measure_costs:
            raise ValueError(
                "`max_latency_ms` and `fastest_within` need the trials' latency: leave `measure_costs=True`."
            )
        self.measure_costs = measure_costs
        self.max_latency_ms = max_latency_ms
        self.keeper = (
            BestModelKeeper(self.project_dir, self.oracle.objective, max_latency_ms, fastest_within)
            if keep_best
            else None
        )
        self._began: dict = {}
        self._durations: list = []
        self._finished = 0
        self._scores: dict = {}

    def run_trial(self, trial, *args, **kwargs):
        if self.budget is not None:
            kwargs["callbacks"] = [*kwargs.get("callbacks", []), self.budget]
            stops = len(self.budget.stops)
        results = super().run_trial(trial, *args, **kwargs)
        take = getattr(self.hypermodel, "take_last_fit", None)
        last = take() if take is not None else None
        if last is not None and last["history"]:
            objective = self.oracle.objective
            values = [v for v in last["history"].get(objective.name, []) if v is not None]
            costs = None
            if self.measure_costs:
                costs = model_costs(last["model"])
                with file_lock(self.project_dir, ".costs.lock"):  # workers finish concurrently
                    path = os.path.join(self.project_dir, COSTS)
                    write_json(path, {**read_json(path, {}), trial.trial_id: costs})
            if values:
                score = max(values) if objective.direction == "max" else min(values)
                # A worker's trial object never receives the oracle's score: its trial line shows this one.
                self._scores[trial.trial_id] = float(score)
                if self.keeper is not None:
                    hps = {
                        k: v for k, v in trial.hyperparameters.values.items() if not k.startswith("tuner/")
                    }
                    self.keeper.offer(
                        last["model"],
                        float(score),
                        hps,
                        {**last["history"], "phase": last["phases"]},
                        costs,
                        trial.trial_id,
                    )
        if self.budget is not None and len(self.budget.stops) > stops:
            _record_budget_stop(self.project_dir, trial.trial_id, self.budget.stops[-1])
        return results

    def search(self, *fit_args, **fit_kwargs):
        if "KERASTUNER_ORACLE_IP" in os.environ and "chief" in os.environ.get("KERASTUNER_TUNER_ID", ""):
            # The chief serves the oracle until the workers are done, as
            # KerasTuner's does, without its 20 s waits at the end.
            if "verbose" in fit_kwargs:
                self.oracle.verbose = fit_kwargs["verbose"]
            self.save()
            serve_oracle(self.oracle)
            return None
        return super().search(*fit_args, **fit_kwargs)

    @property
    def checkpoints_read(self) -> bool:
        """Whether a trial's KerasTuner checkpoint is read again after the trial.

        Hyperband continues trials from earlier ones' checkpoints; otherwise a
        checkpoint serves only a user who keeps them (`keep_checkpoints`) or
        one who keeps no `best.keras` (`keep_best=False`). When none of these
        holds, trials train without writing one.
        """
        return self.keep_checkpoints or self.keeper is None or isinstance(self, kt.Hyperband)

    def _build_and_fit_model(self, trial, *args, **kwargs):
        # KerasTuner's documented override point between its `run_trial`
        # (which adds the checkpoint callback) and `HyperModel.fit`.
        if not self.checkpoints_read:
            kwargs["callbacks"] = [c for c in kwargs.get("callbacks", []) if not is_checkpoint_callback(c)]
        return super()._build_and_fit_model(trial, *args, **kwargs)

    def on_trial_begin(self, trial):
        super().on_trial_begin(trial)
        self._began[trial.trial_id] = time.time()
        self._gradients_before = custom_gradient_names()

    def on_trial_end(self, trial):
        super().on_trial_end(trial)
        began = self._began.pop(trial.trial_id, None)
        seconds = time.time() - began if began else None
        if seconds is not None:
            with file_lock(self.project_dir, ".times.lock"):  # workers finish concurrently
                times = _load_times(self.project_dir)
                times[trial.trial_id] = seconds
                write_json(os.path.join(self.project_dir, "trial_times.json"), times)
        values = {k: v for k, v in trial.hyperparameters.values.items() if not k.startswith("tuner/")}
        score = trial.score if trial.score is not None else self._scores.get(trial.trial_id)
        self._scores.pop(trial.trial_id, None)
        logger.info("trial %s  score %s  %.1fs  %s", trial.trial_id, score, seconds or 0, values)
        if self.print_trials:
            print(self._trial_line(trial, score, seconds, values), flush=True)
        if not is_worker():  # a worker's oracle is a client; the chief writes it at the end
            write_leaderboard(self)
            if not self.keep_checkpoints:
                self.prune_checkpoints()
        # TensorFlow would keep every trial's model and optimizer in memory.
        release_custom_gradients(self._gradients_before)

    def _trial_line(self, trial, score, seconds, values):
        """`[trial 3/20 id 02] val_accuracy=0.8125 (12.3 s) best 0.8750 ~4 min left head/units=64 ...`.

        Numbered from 1 in the order trials finish, as KerasTuner's own
        "Trial 3 Complete"; the id is KerasTuner's (trial_02/, the
        leaderboard's trial_id). The time left is the mean trial time so far
        times the trials still to run (random and Bayesian search), or the
        budget's time left, whichever is shorter.
        """
        self._finished += 1
        done = self._finished
        self._durations.append(seconds or 0.0)
        limit = getattr(self.oracle, "max_trials", None)
        count = f"{done}/{limit}" if limit else f"{done}"
        best = self.oracle.get_best_trials(1) if not is_worker() else []
        best_text = f" best {best[0].score:.4f}" if best and best[0].score is not None else ""
        left = ""
        if limit and limit > done:
            eta = statistics.mean(self._durations) * (limit - done)
            if self.budget is not None:
                eta = min(eta, max(0.0, self.budget.remaining()))
            left = f" ~{eta / 60:.0f} min left" if eta >= 90 else f" ~{eta:.0f} s left"
        shown = "n/a" if score is None else f"{score:.4f}"
        chosen = " ".join(f"{k}={_cell(v)}" for k, v in values.items())
        return (
            f"[trial {count} id {trial.trial_id}] {self.oracle.objective.name}={shown} "
            f"({seconds or 0:.1f} s){best_text}{left} {chosen}"
        )

    def prune_checkpoints(self, keep_best: bool = True) -> None:
        """Delete every trial's checkpoint but the best one's (disk grows per trial otherwise).

        Hyperband continues trials from earlier ones' checkpoints, so it keeps
        them all; random and Bayesian search never read one again (the best
        model is kept as `best.keras`). Runs where the oracle lives (a single
        process, or the chief once its workers are done).
        """
        if isinstance(self, kt.Hyperband):
            return
        best = {t.trial_id for t in self.oracle.get_best_trials(1)} if keep_best else set()
        for trial_id in self.oracle.trials:
            if trial_id not in best:
                for path in glob.glob(os.path.join(self.get_trial_dir(trial_id), "checkpoint*")):
                    os.remove(path)


def _record_budget_stop(project_dir, trial_id, stop):
    with file_lock(project_dir, ".budget.lock"):
        path = os.path.join(project_dir, BUDGET)
        info = read_json(path, {})
        info.setdefault("trials_stopped", {})[trial_id] = stop
        write_json(path, info)


def _tensorflow_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("tensorflow") is not None  # without importing it


def _load_times(project_dir):
    return read_json(os.path.join(project_dir, "trial_times.json"), {})


def leaderboard(tuner) -> list:
    """Finished trials of a tuner, best first, as dicts."""
    times = _load_times(tuner.project_dir)
    costs = read_json(os.path.join(tuner.project_dir, COSTS), {})
    trials = tuner.oracle.get_best_trials(num_trials=len(tuner.oracle.trials) or 1)
    rows = []
    for t in trials:
        row = {
            "trial_id": t.trial_id,
            "score": t.score,
            "status": str(t.status),
            "seconds": round(times[t.trial_id], 2) if t.trial_id in times else None,
        }
        for name in BOARD_METRICS:
            if t.metrics.exists(name):
                row[name] = round(float(t.metrics.get_last_value(name)), 4)
        row.update(costs.get(t.trial_id, {}))
        row.update({k: v for k, v in t.hyperparameters.values.items() if not k.startswith("tuner/")})
        rows.append(row)
    return rows


def model_costs(model: keras.Model, *, runs: int = 5) -> dict:
    """What deploying `model` costs: `params`, `macs`, `weights_mb` and `latency_ms`.

    `weights_mb` is the bytes of its weights (an exported or optimizer-free
    saved model is that plus a few kB); `macs` is None for a model of any
    input size. `latency_ms` is the median of `runs` compiled
    `predict_on_batch` calls on one image (batch 1, this machine, this
    backend), after one call that compiles.

    Example:

        >>> import tuning, zoo
        >>> m = zoo.build("resnet18", num_classes=3, input_shape=(32, 32, 3))
        >>> c = tuning.tuners.model_costs(m)
        >>> c["params"], round(c["weights_mb"], 1), c["latency_ms"] > 0
        (11187651, 44.8, True)
    """
    import zoo

    try:
        macs = int(zoo.count_macs(model))
    except ValueError:  # any input size: no fixed count
        macs = None
    weights = sum(int(np.prod(v.shape)) * np.dtype(v.dtype).itemsize for v in model.weights)
    shape = tuple(model.inputs[0].shape[1:])
    latency = None
    if None not in shape:
        x = np.zeros((1, *shape), model.inputs[0].dtype or "float32")
        try:
            model.predict_on_batch(x)  # compiles
            seconds = []
            for _ in range(runs):
                start = time.perf_counter()
                model.predict_on_batch(x)
                seconds.append(time.perf_counter() - start)
            latency = round(1000 * float(np.median(seconds)), 3)
        # A measurement: the trial stands without it (e.g. one image over many devices).
        except Exception as e:
            logger.warning("latency of %s not measured: %s: %s", model.name, type(e).__name__, e)
    return {
        "params": int(model.count_params()),
        "macs": macs,
        "weights_mb": round(weights / 1e6, 2),
        "latency_ms": latency,
    }


def within_cap(costs: dict | None, max_latency_ms: float | None) -> bool:
    """Whether a trial's measured latency is within `max_latency_ms` (always, without a cap).

    Example:

        >>> from tuning.tuners import within_cap
        >>> within_cap({"latency_ms": 4.0}, 5.0), within_cap({"latency_ms": None}, 5.0), within_cap(None, None)
        (True, False, True)
    """
    if max_latency_ms is None:
        return True
    return costs is not None and costs.get("latency_ms") is not None and costs["latency_ms"] <= max_latency_ms


def pick(rows: Sequence[dict], *, direction: str = "max", max_latency_ms=None, within=None) -> dict | None:
    """The leaderboard row a latency-aware objective chooses, or None if no row qualifies.

    Rows are `leaderboard` rows (`score`, `latency_ms`). With
    `max_latency_ms`, only trials at or under that latency count and the
    best score among them wins. With `within` (points of the score, e.g.
    0.01 for one accuracy point), the fastest trial whose score is within
    `within` of the best qualifying score wins. Neither: the best score.

    Example:

        >>> from tuning.tuners import pick
        >>> rows = [{"trial_id": "a", "score": 0.95, "latency_ms": 9.0},
        ...         {"trial_id": "b", "score": 0.94, "latency_ms": 2.0},
        ...         {"trial_id": "c", "score": 0.80, "latency_ms": 1.0}]
        >>> pick(rows)["trial_id"], pick(rows, max_latency_ms=5)["trial_id"]
        ('a', 'b')
        >>> pick(rows, within=0.02)["trial_id"], pick(rows, max_latency_ms=0.5)
        ('b', None)
    """
    sign = 1 if direction == "max" else -1
    scored = [r for r in rows if r.get("score") is not None and within_cap(r, max_latency_ms)]
    if not scored:
        return None
    best = max(scored, key=lambda r: sign * r["score"])
    if within is None:
        return best
    close = [r for r in scored if sign * (best["score"] - r["score"]) <= within + 1e-12]
    timed = [r for r in close if r.get("latency_ms") is not None]
    return min(timed, key=lambda r: r["latency_ms"]) if timed else best


def write_leaderboard(tuner) -> list:
    """`leaderboard.csv` and `.json` in the tuner's project folder; returns the rows."""
    rows = leaderboard(tuner)
    base = os.path.join(tuner.project_dir, LEADERBOARD)
    write_rows(base + ".csv", rows)
    write_json(base + ".json", rows)
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
    time_budget: float | None = None,
    print_trials: bool = False,
    keep_checkpoints: bool = True,
    keep_best: bool = True,
    measure_costs: bool = True,
    max_latency_ms: float | None = None,
    fastest_within: float | None = None,
) -> kt.Tuner:
    """A KerasTuner tuner (with the job's trial logic) for `hypermodel`.

    `search` uses it; call it directly to drive KerasTuner yourself
    (`tuner.search(...)`, `tuner.results_summary()`). The tuner is
    KerasTuner's own class with `JobTuner` mixed in, its oracle KerasTuner's
    with `JobOracle` mixed in.

    Args:
        hypermodel: `kt.HyperModel`. Several `backbones` of a
            `TransferHyperModel` are each tried once first.
        tuner: str. "hyperband", "random" or "bayesian". Defaults to "hyperband".
        objective: str or `kt.Objective`. Defaults to "val_accuracy".
        max_trials: int. Trials of random/Bayesian search. Defaults to 10.
        epochs: int. Hyperband's `max_epochs`. Defaults to 5.
        time_budget: float. Seconds from now: no trial starts that the time
            left cannot fit, a running trial stops at the deadline.
            Defaults to None (no limit).
        print_trials, keep_checkpoints, keep_best, measure_costs,
            max_latency_ms, fastest_within: see `JobTuner`.
        directory, project_name, overwrite, seed, executions_per_trial,
            distribution_strategy: KerasTuner's.

    Example:

        >>> import tempfile, tuning
        >>> hm = tuning.TransferHyperModel("resnet18", num_classes=3, input_shape=(32, 32, 3))
        >>> t = tuning.make_tuner(hm, tuner="random", max_trials=2, directory=tempfile.mkdtemp())
        >>> type(t).__name__, type(t.oracle).__name__
        ('TransferRandomSearch', 'JobRandomSearchOracle')
    """
    if tuner not in TUNERS:
        raise ValueError(f"`tuner` must be one of {tuple(TUNERS)}. Received: tuner={tuner!r}")
    for name, value in (("max_trials", max_trials), ("epochs", epochs)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            # KerasTuner reads max_trials=0 (or None) as "no limit".
            raise ValueError(f"`{name}` must be an int >= 1. Received: {name}={value!r}")
    if time_budget is not None and not time_budget > 0:
        raise ValueError(
            f"`time_budget` must be a number of seconds above 0. Received: time_budget={time_budget!r}"
        )
    if isinstance(objective, str) and objective.removeprefix("val_") in (
        "balanced_accuracy",
        "macro_f1",
        "mean_iou",
        "map",
        "micro_f1",
    ):
        objective = kt.Objective(objective, "max")  # KerasTuner infers directions of its known metrics only
    deadline = None if time_budget is None else time.time() + time_budget
    oracle_base = ORACLES[tuner]
    oracle_cls = type(f"Job{oracle_base.__name__}", (JobOracle, oracle_base), {})
    extent = dict(max_epochs=epochs, factor=3) if tuner == "hyperband" else dict(max_trials=max_trials)
    oracle = oracle_cls(
        objective=objective,
        seed=seed,
        backbones=getattr(hypermodel, "backbones", ()),
        deadline=deadline,
        **extent,
    )
    base = TUNERS[tuner]
    cls = type(f"Transfer{base.__name__}", (JobTuner, base), {})
    return cls(
        oracle,
        hypermodel,
        budget=None if deadline is None else TimeBudget(deadline),
        print_trials=print_trials,
        keep_checkpoints=keep_checkpoints,
        keep_best=keep_best,
        measure_costs=measure_costs,
        max_latency_ms=max_latency_ms,
        fastest_within=fastest_within,
        seed=seed,
        directory=directory,
        project_name=project_name,
        overwrite=overwrite,
        executions_per_trial=executions_per_trial,
        distribution_strategy=distribution_strategy,
    )


def search(
    train: Any,
    val: Any = None,
    *,
    backbone: str | Sequence[str] | None = None,
    hypermodel: kt.HyperModel | None = None,
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
    measure_costs: bool = True,
    max_latency_ms: float | None = None,
    fastest_within: float | None = None,
    verbose: int = 1,
    distribution: Any = None,
    distribution_strategy: Any = None,
    phase1_fraction: float = 0.5,
    schedule: str = "constant",
    augmentation: Sequence[str] | keras.layers.Layer | None = AUGMENTATIONS,
    callbacks: Sequence[keras.callbacks.Callback] | None = None,
    precision: str = "fp32",
    class_weight: str | None = None,
    class_counts: Sequence[int] | None = None,
    time_budget: float | None = None,
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
        measure_costs, max_latency_ms, fastest_within: see `JobTuner` (the
            leaderboard's `params`, `macs`, `weights_mb`, `latency_ms`; a
            latency cap on the kept model; the fastest near-best trial kept).
        keep_checkpoints: bool. Keep every trial's KerasTuner checkpoint.
            Defaults to `False`: random and Bayesian searches keep only the
            best trial's while they run and none at the end (`best.keras`
            is the kept model); Hyperband needs them all and keeps them.
        verbose: int. 0: silent; 1: one line per finished trial (trial n/N,
            its score and time, the best so far, the time left); 2: also
            KerasTuner's trial tables and one line per epoch. Defaults to 1.
        distribution: a `keras.distribution` (e.g. `DataParallel`) to train
            each trial across devices (JAX). Defaults to None.
        distribution_strategy: a `tf.distribute.Strategy` (e.g.
            `MirroredStrategy`) KerasTuner builds and trains each trial
            under (TensorFlow). Defaults to None.
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
        class_weight, class_counts: see `TransferHyperModel`.
        hypermodel: a `TransferHyperModel` (or any `kt.HyperModel`) built
            already, instead of `backbone` and the model arguments above.
        time_budget: float. Seconds for the search: no trial starts that the
            time left cannot fit (estimated from the trials so far), a
            running trial stops at the deadline and keeps its best epoch.
            What it cut is in `result.budget` and `budget.json`. Defaults to
            None (no limit).

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
        if hypermodel is None and (num_classes is None or input_shape is None):
            raise ValueError("With a dataset, give `num_classes` and `input_shape`.")
        fit_args = dict(x=train)
    if val is None and objective.startswith("val_"):
        raise ValueError(
            f"objective={objective!r} needs validation data; pass `val` or an objective such as 'accuracy'."
        )
    if (backbone is None) == (hypermodel is None):
        raise ValueError(
            "Give either `backbone` (and the model arguments) or a built `hypermodel`, not both."
        )
    validation = tuple(val) if isinstance(val, (tuple, list)) else val
    if hypermodel is None:
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
            class_weight=class_weight,
            class_counts=class_counts,
            distribution=distribution,
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
        time_budget=time_budget,
        print_trials=verbose >= 1 if print_trials is None else print_trials,
        keep_checkpoints=keep_checkpoints,
        measure_costs=measure_costs,
        max_latency_ms=max_latency_ms,
        fastest_within=fastest_within,
        distribution_strategy=distribution_strategy,
    )
    direction = t.oracle.objective.direction
    callbacks = [
        keras.callbacks.EarlyStopping(
            monitor=objective, mode=direction, patience=patience or epochs, restore_best_weights=True
        ),
        *_tensorboard(t.project_dir, tensorboard),
        *(callbacks or []),
    ]
    started = time.time()
    try:
        t.search(
            **fit_args,
            validation_data=validation,
            epochs=epochs,
            callbacks=callbacks,
            verbose=0 if verbose < 2 else verbose,
        )
    finally:
        if getattr(t, "oracle", None) is not None and not is_worker():
            write_leaderboard(t)
            if not keep_checkpoints:  # best.keras is the kept model: no checkpoint is read again
                t.prune_checkpoints(keep_best=False)
        if getattr(hypermodel, "distribution", None) is not None:
            keras.distribution.set_distribution(None)
    if is_worker():
        return None
    budget = _write_budget(t, time_budget, time.time() - started, max_trials) if time_budget else None
    if fastest_within is not None and t.keeper is not None:
        t.keeper.choose_fastest()
    if not os.path.exists(os.path.join(t.project_dir, BEST_MODEL)) and max_latency_ms is not None:
        timed = [r["latency_ms"] for r in leaderboard(t) if r.get("latency_ms") is not None]
        if timed:
            raise RuntimeError(
                f"No trial ran within max_latency_ms={max_latency_ms} (the fastest took {min(timed)} ms "
                "per image): raise the cap or search a smaller backbone. Nothing was kept."
            )
    if not os.path.exists(os.path.join(t.project_dir, BEST_MODEL)):
        raise RuntimeError(
            f"No trial of the search in {t.project_dir!r} finished training (see the "
            "errors above, e.g. out of memory or a bad search space). Nothing was saved."
        )
    result = load_best(directory, project_name)
    result.budget = budget
    return result


def _tensorboard(project_dir, wanted):
    if wanted and not _tensorflow_installed():
        logger.warning(
            "TensorBoard logs skipped: Keras writes them with TensorFlow, which is not installed "
            "(pip install tensorflow, or pass tensorboard=False to silence this)."
        )
        return []
    return [keras.callbacks.TensorBoard(log_dir=os.path.join(project_dir, "logs"))] if wanted else []


def _write_budget(t, seconds, used, max_trials):
    """`budget.json`: the budget, the time the search took, what it cut."""
    path = os.path.join(t.project_dir, BUDGET)
    with file_lock(t.project_dir, ".budget.lock"):
        info = read_json(path, {})
        finished = sum(1 for tr in t.oracle.trials.values() if tr.status == TrialStatus.COMPLETED)
        info.update(
            {
                "seconds": seconds,
                "search_seconds": round(used, 1),
                "trials_finished": finished,
                "trials_asked": max_trials if not isinstance(t, kt.Hyperband) else None,
                "stopped_search": getattr(t.oracle, "budget_stop", None),
            }
        )
        info.setdefault("trials_stopped", {})
        write_json(path, info)
    return info


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
    info = read_json(os.path.join(project, BEST_INFO))
    rows = read_json(os.path.join(project, LEADERBOARD + ".json"), [])
    return SearchResult(
        model=load_jittable(path),
        hyperparameters=info["hyperparameters"],
        score=info["score"],
        leaderboard=rows,
        directory=project,
    )
