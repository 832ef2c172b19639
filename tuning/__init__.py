"""tuning: KerasTuner searches over transfer-learning heads and unfreeze depth, and the main job.

`tuning.run(data, out, tuning.SearchConfig(...))` is what `python -m tuning
run` does; `tuning.recipes` names its two recipes.

Composes `zoo` (backbones, stage metadata) and `surgery` (graft, freeze)
with KerasTuner; adds RAdam, a warm-up cosine schedule, a learning-rate
logger, cached features for frozen trials, a best-model keeper and a
leaderboard.

The public names are imported on first use (PEP 562), so `python -m tuning
--help` answers without importing Keras or TensorFlow.

>>> import tuning
>>> sorted(tuning.TUNERS)
['bayesian', 'hyperband', 'random']
"""

import importlib
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _dist_version

try:  # not `from zoo import __version__`: that would import Keras, and --help stays light
    __version__ = _dist_version("kerazoo")
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"

# Public name -> the submodule that defines it.
_EXPORTS = {
    "analysis": None,
    "callbacks": None,
    "labels": None,
    "losses": None,
    "masks": None,
    "metrics": None,
    "multilabel": None,
    "recipes": None,
    "segment": None,
    "tta": None,
    "ConfigError": "config",
    "SearchConfig": "config",
    "RunInterrupted": "job",
    "RunResult": "job",
    "DevicePlan": "job",
    "data_parallel": "job",
    # Not a `distill` module: it would shadow the function once imported.
    "distill": "distillation",
    "DistillationLoss": "distillation",
    "export": "deploy",
    "predict_files": "deploy",
    "load_result": "job",
    "run": "job",
    "TransferHyperModel": "hypermodel",
    "augmentation_layers": "hypermodel",
    "LearningRateLogger": "optimizers",
    "RAdam": "optimizers",
    "warmup_cosine": "optimizers",
    # `tuning.tuners` is not named `search`: a submodule of that name would
    # shadow the `search` function once imported.
    "TUNERS": "tuners",
    "SearchResult": "tuners",
    "format_leaderboard": "tuners",
    "load_best": "tuners",
    "make_tuner": "tuners",
    "search": "tuners",
}

__all__ = ["__version__"] + sorted(_EXPORTS)


def __getattr__(name):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'tuning' has no attribute {name!r}")
    module = _EXPORTS[name]
    if module is None:
        value = importlib.import_module(f"tuning.{name}")
    else:
        value = getattr(importlib.import_module(f"tuning.{module}"), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))
