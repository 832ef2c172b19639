"""zoo: classic CNN families built from scratch for Keras 3, on every backend.

Modules, along timm's lines: `registry` (specs: stages, weight sources,
tasks; pure data), `builder` (`build`), `features` (`stages_of`), `cards`
(`info`, `count_macs`), `weights` (the one weight reader), `layers` (shared
blocks and the one classifier head), one module per family.

>>> import zoo
>>> model = zoo.build("resnet50", num_classes=10, input_shape=(64, 64, 3))
>>> print(zoo.info("resnet50"))  # doctest: +SKIP
"""

from zoo import datasets, layers, registry, weights
from zoo.builder import build, dtype_policy_scope, precision_policy, preprocess
from zoo.cards import ModelCard, count_macs, info
from zoo.features import stages_of
from zoo.registry import Body, ModelSpec, Stage, get_spec, list_models, register, register_task
from zoo.serving import export

# Families register themselves on import; tasks after their backbones.
from zoo import googlenet, resnet, vgg  # noqa: F401
from zoo import applications  # noqa: F401  (keras.applications backbones)
from zoo import fcn  # noqa: F401
from zoo import averaging
from zoo.averaging import ensemble
from zoo.fcn import convolutionalize
from zoo.googlenet import AuxiliaryClassifierModel, strip_auxiliary

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
    "ModelCard",
    "ModelSpec",
    "Stage",
    "averaging",
    "build",
    "convolutionalize",
    "count_macs",
    "datasets",
    "dtype_policy_scope",
    "ensemble",
    "export",
    "get_spec",
    "info",
    "layers",
    "list_models",
    "precision_policy",
    "preprocess",
    "register",
    "register_task",
    "stages_of",
    "strip_auxiliary",
    "weights",
]
