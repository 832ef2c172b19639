"""zoo: classic CNN families built from scratch for Keras 3, on every backend.

>>> import zoo
>>> model = zoo.build("resnet50", num_classes=10, input_shape=(64, 64, 3))
>>> print(zoo.info("resnet50"))  # doctest: +SKIP
"""

from zoo import datasets, layers, weights
from zoo.api import ModelCard, build, count_macs, dtype_policy_scope, info, precision_policy, preprocess, stages_of
from zoo.registry import Body, ModelSpec, Stage, get_spec, list_models, register

# Families register themselves on import.
from zoo import fcn, googlenet, resnet, vgg  # noqa: E402,F401  isort: skip
from zoo import averaging  # noqa: E402
from zoo.averaging import ensemble  # noqa: E402
from zoo.fcn import convolutionalize  # noqa: E402
from zoo.googlenet import AuxiliaryClassifierModel, strip_auxiliary  # noqa: E402

__all__ = [
    "AuxiliaryClassifierModel", "Body", "ModelCard", "averaging", "convolutionalize", "datasets", "ensemble", "ModelSpec", "Stage", "build", "count_macs", "dtype_policy_scope", "get_spec",
    "info", "layers", "list_models", "precision_policy", "preprocess", "register", "stages_of", "strip_auxiliary", "weights",
]
