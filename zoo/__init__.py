"""zoo: classic CNN families built from scratch for Keras 3, on every backend.

The layout follows timm's: the families in one folder, the machinery apart.

- `zoo.models`: one module per family (`vgg`, `resnet`, `googlenet`,
  `applications`), each with its stage table, its blocks, its weight
  sources and its torchvision converter rows; `zoo.tasks`: task models on a
  backbone (`fcn`).
- The public modules a user extends or calls: `registry` (specs, `register`),
  `weights` (the one weight reader), `layers` (the shared layers and the one
  classifier head), `torchvision` (state-dict conversion), `datasets` (demo
  data).
- The machinery behind `zoo.build`, `zoo.info`, `zoo.stages_of`,
  `zoo.export`, `zoo.ensemble` and `python -m zoo`: the private modules
  `_builder`, `_features`, `_cards`, `_serving`, `_averaging`, `_auxiliary`,
  `_bench`, `_sizes`; Keras internals are fenced in `_keras`.

>>> import zoo
>>> model = zoo.build("resnet50", num_classes=10, input_shape=(64, 64, 3))
>>> print(zoo.info("resnet50"))  # doctest: +SKIP
"""

from zoo import datasets, layers, registry, torchvision, weights
from zoo._auxiliary import AuxiliaryClassifierModel, strip_auxiliary
from zoo._averaging import ensemble
from zoo._builder import build, dtype_policy_scope, precision_policy, preprocess
from zoo._cards import ModelCard, count_macs, info
from zoo._features import stages_of
from zoo._serving import QuantizationError, export, litert_ops, litert_predict
from zoo.registry import Body, Hooks, ModelSpec, Stage, get_spec, list_models, register, register_task

# Families register themselves on import (zoo.models), tasks after their backbones (zoo.tasks).
from zoo import models, tasks  # noqa: E402  (order: the machinery first)
from zoo.tasks.fcn import convolutionalize

registry._mark_builtin()


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("kerazoo")  # the distribution's metadata: one version for the three packages
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "0+unknown"


__version__ = _version()

__all__ = [
    "__version__",
    "AuxiliaryClassifierModel",
    "Body",
    "Hooks",
    "ModelCard",
    "ModelSpec",
    "QuantizationError",
    "Stage",
    "build",
    "convolutionalize",
    "count_macs",
    "datasets",
    "dtype_policy_scope",
    "ensemble",
    "export",
    "litert_ops",
    "litert_predict",
    "get_spec",
    "info",
    "layers",
    "models",
    "list_models",
    "precision_policy",
    "preprocess",
    "register",
    "register_task",
    "stages_of",
    "strip_auxiliary",
    "tasks",
    "torchvision",
    "weights",
]
