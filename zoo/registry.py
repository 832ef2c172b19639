"""The model registry: one decorator, one dict, shell-wildcard listing.

A model is registered as a *body* function ``x -> Body`` plus the data that
describes it (family, paper, default input size, preprocessing, weight
sources). `zoo.build` adds everything around the body (input validation,
preprocessing, classifier head or pooling, feature extraction, weights), so a
user who registers a family gets `build`, `list_models` and `info` for free.
"""

from __future__ import annotations

import dataclasses
import difflib
import fnmatch
from typing import Callable, Mapping

from zoo.weights import WeightSource


@dataclasses.dataclass(frozen=True)
class Stage:
    """One stage of a backbone: the layer that ends it and its stride.

    Args:
        name: str. Stage name, e.g. `"stage3"`.
        layer: str. Name of the layer whose output ends the stage
            (e.g. `"conv4_block6_out"`); `surgery.cut` and FCN skips use it.
        reduction: int. Total stride of that output relative to the input.
    """

    name: str
    layer: str
    reduction: int


@dataclasses.dataclass(frozen=True)
class Body:
    """What a registered body function returns.

    Args:
        output: KerasTensor. The last feature map (before any head).
        stages: tuple of `Stage`. The stages, shallow to deep.
        aux: tuple of KerasTensor. Feature maps that feed auxiliary
            classifiers (GoogLeNet's 4a and 4d), when asked for. Defaults
            to `()`.
    """

    output: object
    stages: tuple
    aux: tuple = ()


def output_dtype():
    """`"float32"` under a mixed policy, else None: for classifier outputs.

    Softmax and the loss stay in float32 under `mixed_bfloat16` (Keras'
    mixed-precision guide); under a plain policy the layer follows it.

    Example:

    >>> import zoo
    >>> with zoo.dtype_policy_scope("mixed_bfloat16"):
    ...     zoo.registry.output_dtype()
    'float32'
    >>> zoo.registry.output_dtype() is None
    True
    """
    import keras

    policy = keras.config.dtype_policy()
    return "float32" if policy.compute_dtype != policy.variable_dtype else None


def global_pool_top(x, *, num_classes, classifier_activation):
    """The default classifier: global average pooling and one Dense layer.

    Example:

    >>> import keras, zoo
    >>> x = keras.Input((7, 7, 512))
    >>> zoo.registry.global_pool_top(x, num_classes=10,
    ...                              classifier_activation="softmax").shape
    (None, 10)
    """
    import keras

    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    return keras.layers.Dense(
        num_classes, activation=classifier_activation, name="predictions", dtype=output_dtype()
    )(x)


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """Everything the zoo knows about one registered model.

    Args:
        name: str. Lower-case registry name.
        body: callable. `body(x) -> Body`, builds the layers after the input
            (and after preprocessing, when that is included).
        family: str. Family name, e.g. `"resnet"`.
        paper: str. Reference (title and link).
        top: callable. `top(x, *, num_classes, classifier_activation)`
            builds the classifier head. Defaults to `global_pool_top`.
        fixed_size_top: bool. Whether the head needs a fixed input size
            (a Flatten before Dense, as in VGG).
        default_size: int. Default square input resolution.
        min_size: int. Smallest input side the model accepts.
        preprocessing: str. Input normalisation mode: `"caffe"`, `"torch"`
            or `"tf"` (see `zoo.preprocess`).
        weights: mapping of tag to `WeightSource`.
        description: str. One line for listings.
        aux_top: callable. `aux_top(x, *, num_classes, classifier_activation,
            name)` builds an auxiliary classifier on each `Body.aux` map.
        aux_needs_fixed_size: bool. Whether the auxiliary heads flatten a
            map whose size depends on the input (needs a fixed input size).
        state_dict_converter: callable. Turns a PyTorch state dict
            (name -> array) into zoo weights (`"<layer>/<i>" -> array`), for
            `.pth` files and torch-named `.npz` files.
        builder: callable. For task models that are not backbone + classifier
            (FCN): `builder(**build_arguments) -> keras.Model` replaces
            `zoo.build`'s own assembly.
        default_classes: int. `num_classes` when the user gives none.
    """

    name: str
    body: Callable
    family: str
    paper: str = ""
    top: Callable = global_pool_top
    fixed_size_top: bool = False
    default_size: int = 224
    min_size: int = 32
    preprocessing: str = "caffe"
    weights: Mapping[str, WeightSource] = dataclasses.field(default_factory=dict)
    description: str = ""
    aux_top: Callable | None = None
    aux_needs_fixed_size: bool = False
    state_dict_converter: Callable | None = None
    builder: Callable | None = None
    default_classes: int = 1000


_REGISTRY: dict[str, ModelSpec] = {}


def register(
    name: str | None = None,
    *,
    family: str,
    paper: str = "",
    top: Callable = global_pool_top,
    fixed_size_top: bool = False,
    default_size: int = 224,
    min_size: int = 32,
    preprocessing: str = "caffe",
    weights: Mapping[str, WeightSource] | None = None,
    description: str = "",
    aux_top: Callable | None = None,
    aux_needs_fixed_size: bool = False,
    state_dict_converter: Callable | None = None,
    builder: Callable | None = None,
    default_classes: int = 1000,
    overwrite: bool = False,
):
    """Register a model body so `zoo.build`, `list_models` and `info` know it.

    Used as a decorator on a function `x -> zoo.Body`.

    Args:
        name: str. Registry name (case-insensitive). Defaults to the
            function's name.
        family: str. Family the model belongs to.
        paper, top, fixed_size_top, default_size, min_size, preprocessing,
        weights, description, aux_top, aux_needs_fixed_size,
        state_dict_converter, builder, default_classes: see `ModelSpec`.
        overwrite: bool. Allow replacing an existing entry. Defaults to
            `False`.

    Example:

    >>> import keras, zoo
    >>> @zoo.register(family="tiny", default_size=32, min_size=8,
    ...               overwrite=True)
    ... def tinynet(x):
    ...     x = keras.layers.Conv2D(8, 3, strides=2, name="s1_conv")(x)
    ...     x = keras.layers.Conv2D(16, 3, strides=2, name="s2_conv")(x)
    ...     return zoo.Body(x, stages=(zoo.Stage("stage1", "s1_conv", 2),
    ...                                zoo.Stage("stage2", "s2_conv", 4)))
    >>> zoo.build("tinynet", num_classes=3).output_shape
    (None, 3)
    """

    def decorator(body: Callable) -> Callable:
        key = (name or body.__name__).lower()
        if key in _REGISTRY and not overwrite:
            raise ValueError(
                f"A model named {key!r} is already registered. Pick another "
                "name, or pass `overwrite=True` to replace it."
            )
        if preprocessing not in ("caffe", "torch", "tf"):
            raise ValueError(
                "`preprocessing` must be one of ('caffe', 'torch', 'tf'). "
                f"Received: preprocessing={preprocessing!r}"
            )
        _REGISTRY[key] = ModelSpec(
            name=key,
            body=body,
            family=family,
            paper=paper,
            top=top,
            fixed_size_top=fixed_size_top,
            default_size=default_size,
            min_size=min_size,
            preprocessing=preprocessing,
            weights=dict(weights or {}),
            description=description,
            aux_top=aux_top,
            aux_needs_fixed_size=aux_needs_fixed_size,
            state_dict_converter=state_dict_converter,
            builder=builder,
            default_classes=default_classes,
        )
        return body

    return decorator


def list_models(pattern: str = "*") -> list[str]:
    """Sorted names of registered models matching a shell wildcard.

    Args:
        pattern: str. `fnmatch` pattern, case-insensitive. Defaults to `"*"`.

    Example:

    >>> import zoo
    >>> zoo.list_models("resnet5*")
    ['resnet50', 'resnet50v2']
    """
    pattern = pattern.lower()
    return sorted(n for n in _REGISTRY if fnmatch.fnmatchcase(n, pattern))


def get_spec(name: str) -> ModelSpec:
    """The `ModelSpec` of a registered model; unknown names suggest others.

    Example:

    >>> import zoo
    >>> zoo.get_spec("ResNet50").family
    'resnet'
    """
    if not isinstance(name, str):
        raise TypeError(f"A model name must be a string. Received: {name!r}")
    key = name.lower()
    if key in _REGISTRY:
        return _REGISTRY[key]
    close = difflib.get_close_matches(key, list(_REGISTRY), n=3, cutoff=0.5)
    hint = (
        f" Did you mean {' or '.join(repr(c) for c in close)}?"
        if close
        else ""
    )
    raise ValueError(
        f"Unknown model name {name!r}.{hint} `zoo.list_models()` lists the "
        f"{len(_REGISTRY)} registered models."
    )
