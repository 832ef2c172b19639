"""`zoo.build`, `zoo.info`, `zoo.preprocess`, `zoo.stages_of`: the public entry points."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import inspect
import math
import os
from typing import Sequence

import keras
import numpy as np

from zoo import layers as zoo_layers
from zoo import weights as zoo_weights
from zoo.registry import Stage, get_spec

_POOLING = ("avg", "max", None)
# The toolkit's precision flags and the Keras dtype policies they stand for.
PRECISIONS = {"fp32": "float32", "bf16": "mixed_bfloat16"}


def precision_policy(precision: str) -> str:
    """The Keras dtype policy of a precision flag (`--precision` everywhere).

    `"fp32"` is `"float32"`; `"bf16"` is `"mixed_bfloat16"` (bfloat16
    compute, float32 weights; no loss scaling needed), the fast setting on
    GPUs with bf16 tensor cores and on CPUs with AMX/AVX512-BF16.

    Example:

    >>> import zoo
    >>> zoo.precision_policy("bf16")
    'mixed_bfloat16'
    """
    if precision not in PRECISIONS:
        raise ValueError(f"Unknown precision {precision!r}; choose one of {sorted(PRECISIONS)}.")
    return PRECISIONS[precision]


@contextlib.contextmanager
def dtype_policy_scope(dtype):
    """Keras' global dtype policy set to `dtype` inside the block, restored after.

    `None` changes nothing. Layers created inside take the policy (how
    `zoo.build(dtype=...)`, the tuning hypermodel and the benchmark build
    their models under a precision).

    Example:

    >>> import keras, zoo
    >>> with zoo.dtype_policy_scope("mixed_bfloat16"):
    ...     keras.layers.Dense(2).dtype_policy.name
    'mixed_bfloat16'
    >>> keras.config.dtype_policy().name
    'float32'
    """
    if dtype is None:
        yield
        return
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(dtype)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def _resolve_input_shape(spec, input_shape, *, include_top, weights):
    if keras.config.image_data_format() != "channels_last":
        raise ValueError(
            "zoo models are built channels_last. Call "
            "`keras.config.set_image_data_format('channels_last')` (the "
            "default) before `zoo.build`; Keras backends transpose internally "
            "where that is faster."
        )
    if input_shape is None:
        if include_top and spec.fixed_size_top:
            return (spec.default_size, spec.default_size, 3)
        return (None, None, 3)
    input_shape = tuple(input_shape)
    if len(input_shape) != 3:
        raise ValueError(
            f"`input_shape` must be (height, width, channels). Received: "
            f"input_shape={input_shape}"
        )
    h, w, c = input_shape
    if c is None or c < 1:
        raise ValueError(f"The channel count must be a positive int. Received: input_shape={input_shape}")
    for side in (h, w):
        if side is not None and side < spec.min_size:
            raise ValueError(
                f"{spec.name!r} needs inputs of at least {spec.min_size}x"
                f"{spec.min_size} (its total stride is 32). Received: "
                f"input_shape={input_shape}. Resize the images or pick a "
                "larger `input_shape`."
            )
    if weights is not None and c != 3:
        raise ValueError(
            f"Pretrained {spec.name!r} weights expect 3-channel RGB input. "
            f"Received: input_shape={input_shape}. Convert the images to RGB "
            "or build with `weights=None`."
        )
    if include_top and spec.fixed_size_top:
        if h is None or w is None:
            raise ValueError(
                f"{spec.name!r} with `include_top=True` flattens its last "
                "feature map, so it needs a fixed input size. Received: "
                f"input_shape={input_shape}. Give a size or use "
                "`include_top=False`."
            )
        if weights is not None and (h, w) != (spec.default_size, spec.default_size):
            raise ValueError(
                f"{spec.name!r} with `include_top=True` and pretrained weights "
                f"needs input_shape=({spec.default_size}, {spec.default_size}, 3) "
                f"(the size its dense head was trained at). Received: "
                f"input_shape={input_shape}. Use `include_top=False` for "
                "other sizes."
            )
    return input_shape


def _resolve_weights(spec, weights, *, include_top, num_classes):
    """A path to load from (downloading known sources), or None."""
    if weights is None:
        return None
    if not isinstance(weights, (str, os.PathLike)):
        raise TypeError(f"`weights` must be None, 'imagenet' or a path. Received: {weights!r}")
    weights = os.fspath(weights)
    if weights in spec.weights or weights == "imagenet":
        tag = weights
        if tag == "imagenet" and not include_top and "imagenet_notop" in spec.weights:
            tag = "imagenet_notop"
        if tag not in spec.weights:
            known = sorted(spec.weights) or "none"
            raise ValueError(
                f"{spec.name!r} has no {weights!r} weights. Known sources: "
                f"{known}. Pass a path to a weight file, or `weights=None`."
            )
        source = spec.weights[tag]
        if include_top and source.include_top and num_classes != 1000:
            raise ValueError(
                f"ImageNet weights with `include_top=True` need num_classes=1000. "
                f"Received: num_classes={num_classes}. Use `include_top=False` "
                "and add your own head (or `surgery.graft`)."
            )
        return zoo_weights.fetch(source)
    if not os.path.exists(weights):
        raise FileNotFoundError(
            f"`weights` is neither a known source of {spec.name!r} "
            f"({sorted(spec.weights) or 'none'}) nor an existing file. "
            f"Received: weights={weights!r}"
        )
    return weights


def build(
    name: str,
    *,
    num_classes: int | None = None,
    input_shape: Sequence[int | None] | None = None,
    include_top: bool = True,
    pooling: str | None = None,
    weights: str | os.PathLike | None = None,
    classifier_activation: str | None = "softmax",
    features_only: bool = False,
    out_indices: Sequence[int] | None = None,
    include_preprocessing: bool = False,
    dtype: str | None = None,
    activation: str | None = None,
    aux_logits: bool = False,
    backbone: str | None = None,
) -> keras.Model:
    """Build a registered model as a functional `keras.Model`.

    Args:
        name: str. Registered name, case-insensitive (`zoo.list_models()`).
        num_classes: int. Classes of the classifier (or segmentation) head.
            Defaults to the model's (1000 for ImageNet classifiers, 21 for
            FCN).
        input_shape: tuple `(height, width, channels)`. Defaults to the
            model's default size with `include_top=True` on fixed-size heads
            (VGG), else `(None, None, 3)`.
        include_top: bool. Add the classifier head. Defaults to `True`.
        pooling: str. With `include_top=False`: `None` (4D feature map),
            `"avg"` or `"max"` global pooling. Defaults to `None`.
        weights: `None` (random), `"imagenet"`, a source tag from
            `zoo.info(name).weights`, or a path to a weight file
            (`.weights.h5`, legacy `.h5`, keras.applications files, `.keras`,
            `.npz`). Defaults to `None`.
        classifier_activation: str or None. Activation of the predictions
            layer; `None` returns logits. Defaults to `"softmax"`.
        features_only: bool. Return a model whose outputs are the stage
            feature maps (shallow to deep). Defaults to `False`.
        out_indices: sequence of int. With `features_only`, which stages
            (indices into `zoo.info(name).stages`, negative allowed).
        include_preprocessing: bool. Make the model take raw RGB 0-255 images
            (uint8 or float) by adding the family's normalisation as its
            first layer. Defaults to `False`.
        dtype: str. A Keras dtype policy for the layers, e.g.
            `"mixed_bfloat16"`. Defaults to the global policy.
        activation: str or callable. The backbone's activation, e.g.
            `"mish"` (any name `keras.activations.get` knows). Defaults to
            the family's (`"relu"`).
        aux_logits: bool. Add auxiliary classifiers (GoogLeNet) and return
            an `AuxiliaryClassifierModel` with outputs `main`, `aux1`,
            `aux2`. Defaults to `False`.
        backbone: str. For task models built on a backbone (FCN): the zoo
            model to build on. Defaults to the task model's (`"vgg16"`).

    Returns:
        A functional `keras.Model` named `name`.

    Example:

    >>> import zoo
    >>> model = zoo.build("resnet18", num_classes=10, input_shape=(64, 64, 3))
    >>> model.output_shape
    (None, 10)
    >>> feats = zoo.build("resnet18", features_only=True,
    ...                   input_shape=(64, 64, 3))
    >>> [tuple(o.shape[1:3]) for o in feats.outputs]
    [(32, 32), (16, 16), (8, 8), (4, 4), (2, 2)]
    """
    spec = get_spec(name)
    if num_classes is None:
        num_classes = spec.default_classes
    options = _body_options(spec, activation=activation, aux_logits=aux_logits, backbone=backbone)
    if spec.builder is not None:
        return spec.builder(
            num_classes=num_classes, input_shape=input_shape, weights=weights,
            include_preprocessing=include_preprocessing, dtype=dtype,
            classifier_activation=classifier_activation, **options,
        )
    if aux_logits and not include_top:
        raise ValueError(
            "`aux_logits=True` adds auxiliary *classifiers*, so it needs "
            "`include_top=True` (and `features_only=False`)."
        )
    if aux_logits and spec.aux_needs_fixed_size and input_shape is None:
        input_shape = (spec.default_size, spec.default_size, 3)
    if pooling not in _POOLING:
        raise ValueError(f"`pooling` must be one of {_POOLING}. Received: pooling={pooling!r}")
    if include_top and (not isinstance(num_classes, int) or num_classes < 1):
        raise ValueError(f"`num_classes` must be a positive int. Received: num_classes={num_classes!r}")
    if out_indices is not None and not features_only:
        raise ValueError("`out_indices` only applies with `features_only=True`.")
    if features_only:
        include_top = False
    shape = _resolve_input_shape(spec, input_shape, include_top=include_top, weights=weights)
    path = _resolve_weights(spec, weights, include_top=include_top, num_classes=num_classes)

    with dtype_policy_scope(dtype):
        inputs = keras.Input(shape=shape, name="input_layer")
        x = inputs
        if include_preprocessing:
            x = zoo_layers.ImageNormalization(spec.preprocessing, name="preprocessing")(x)
        body = spec.body(x, **options)
        x = body.output
        if include_top:
            x = spec.top(x, num_classes=num_classes, classifier_activation=classifier_activation)
        elif pooling == "avg":
            x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
        elif pooling == "max":
            x = keras.layers.GlobalMaxPooling2D(name="max_pool")(x)
        if body.aux:
            from zoo.googlenet import AuxiliaryClassifierModel

            outputs = {"main": x}
            for i, feature in enumerate(body.aux, start=1):
                outputs[f"aux{i}"] = spec.aux_top(
                    feature, num_classes=num_classes,
                    classifier_activation=classifier_activation, name=f"aux{i}",
                )
            model = AuxiliaryClassifierModel(inputs, outputs, name=spec.name)
        else:
            model = keras.Model(inputs, x, name=spec.name)

    if path is not None:
        zoo_weights.load_weights(model, _weights_source(spec, path))
    if features_only:
        stages = _select(body.stages, out_indices, spec.name)
        model = keras.Model(
            inputs, [model.get_layer(s.layer).output for s in stages], name=f"{spec.name}_features"
        )
    return model


def _body_options(spec, **given):
    """The extra keyword arguments `spec`'s body (or builder) accepts, checked."""
    fn = spec.builder or spec.body
    accepted = inspect.signature(fn).parameters
    defaults = {"activation": None, "aux_logits": False, "backbone": None}
    options = {}
    for key, value in given.items():
        if value == defaults[key]:
            continue
        if key not in accepted:
            raise ValueError(
                f"{spec.name!r} does not take `{key}`. Received: {key}={value!r}. "
                + {
                    "aux_logits": "Auxiliary classifiers exist for GoogLeNet (`zoo.list_models('googlenet*')`).",
                    "backbone": "Only task models such as FCN (`zoo.list_models('fcn*')`) take a backbone.",
                    "activation": "VGG, ResNet and GoogLeNet bodies take `activation`; "
                    "leave it out for this model.",
                }[key]
            )
        options[key] = value
    return options


def _weights_source(spec, path):
    """`path`, or its converted content when it is a PyTorch state dict."""
    torch_file = path.endswith((".pth", ".pt"))
    if path.endswith(".npz"):
        with np.load(path, allow_pickle=False) as data:
            torch_file = bool(data.files) and all("/" not in k for k in data.files)
    if not torch_file:
        return path
    if spec.state_dict_converter is None:
        raise zoo_weights.WeightFileError(
            f"{path!r} holds a PyTorch state dict, and {spec.name!r} has no "
            "mapping from PyTorch names. Models with one: "
            f"{[s.name for s in _specs_with_converters()]}."
        )
    return spec.state_dict_converter(zoo_weights.read_state_dict(path))


def _specs_with_converters():
    from zoo.registry import _REGISTRY

    return [s for s in _REGISTRY.values() if s.state_dict_converter is not None]


def _select(stages, out_indices, name):
    if out_indices is None:
        return list(stages)
    picked = []
    for i in out_indices:
        if not -len(stages) <= i < len(stages):
            raise ValueError(
                f"{name!r} has {len(stages)} stages (indices 0..{len(stages) - 1}, "
                f"or negative). Received: out_indices={list(out_indices)}"
            )
        picked.append(stages[i])
    return picked


def preprocess(images, name_or_mode: str):
    """Normalise raw RGB images (0-255) the way a model or mode expects.

    The same arithmetic as `build(..., include_preprocessing=True)`, for users
    who normalise outside the model.

    Args:
        images: array or tensor, `(..., height, width, 3)`, 0-255.
        name_or_mode: str. A registered model name or a mode (`"caffe"`,
            `"torch"`, `"tf"`).

    Example:

    >>> import keras, numpy as np, zoo
    >>> x = zoo.preprocess(np.full((1, 4, 4, 3), 127.5, "float32"), "resnet50v2")
    >>> float(np.abs(keras.ops.convert_to_numpy(x)).max())
    0.0
    """
    mode = name_or_mode if name_or_mode in zoo_layers.PREPROCESSING_MODES else get_spec(name_or_mode).preprocessing
    return zoo_layers.ImageNormalization(mode)(images)


# --------------------------------------------------------------------------
# Model cards
# --------------------------------------------------------------------------


def count_macs(model: keras.Model) -> int:
    """Multiply-accumulates of one forward pass for one image.

    Counts convolutions (incl. transposed and depthwise) and dense layers,
    which dominate CNN cost; needs a model built with a fixed input size.

    Example:

    >>> import zoo
    >>> m = zoo.build("resnet50", input_shape=(224, 224, 3))
    >>> round(zoo.count_macs(m) / 1e9, 2)
    3.86
    """
    total = 0
    for layer in zoo_weights.leaf_layers(model):
        if not layer.weights:
            continue
        for node in layer._inbound_nodes:
            out_shape = node.outputs[0].shape
            in_shape = node.arguments.keras_tensors[0].shape
            if None in out_shape[1:] or None in in_shape[1:]:
                raise ValueError(
                    "count_macs needs a fixed input size; build with "
                    f"input_shape=(H, W, C). Layer {layer.name!r} has output {out_shape}."
                )
            spatial = int(np.prod(out_shape[1:-1])) if len(out_shape) > 2 else 1
            if isinstance(layer, keras.layers.Conv2DTranspose):
                spatial = int(np.prod(in_shape[1:-1]))
                total += spatial * int(np.prod(layer.kernel.shape))
            elif isinstance(layer, (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D,
                                    keras.layers.DepthwiseConv2D, keras.layers.Dense)):
                total += spatial * int(np.prod(layer.kernel.shape))
    return total


@dataclasses.dataclass(frozen=True)
class StageInfo:
    name: str
    layer: str
    reduction: int
    channels: int


@dataclasses.dataclass(frozen=True)
class ModelCard:
    """What `zoo.info` returns; `print(card)` shows a readable card."""

    name: str
    family: str
    description: str
    paper: str
    params: int
    trainable_params: int
    gmacs: float
    default_size: int
    min_size: int
    preprocessing: str
    stages: tuple
    weights: dict
    num_classes: int = 1000

    def __str__(self) -> str:
        lines = [
            f"{self.name} — {self.description}",
            f"  family         {self.family}",
            f"  paper          {self.paper}",
            f"  parameters     {self.params:,} ({self.trainable_params:,} trainable), "
            f"{self.num_classes}-class head",
            f"  compute        {self.gmacs:.2f} GMACs at {self.default_size}x{self.default_size}",
            f"  input          {self.default_size}x{self.default_size}x3 (min {self.min_size}), "
            f"preprocessing {self.preprocessing!r}",
            "  stages         name        layer                          stride  channels",
        ]
        for s in self.stages:
            lines.append(f"                 {s.name:<11} {s.layer:<30} {s.reduction:>6}  {s.channels:>8}")
        if self.weights:
            lines.append("  weights")
            for tag, w in self.weights.items():
                lines.append(f"                 {tag:<15} {w.file_name} ({w.origin}, hash {w.file_hash})")
        else:
            lines.append("  weights        none known (random initialisation; load your own file)")
        return "\n".join(lines)


@functools.lru_cache(maxsize=None)
def _card(name: str) -> ModelCard:
    spec = get_spec(name)
    size = spec.default_size
    model = build(name, input_shape=(size, size, 3))
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    stages = tuple(
        StageInfo(s.name, s.layer, s.reduction, int(model.get_layer(s.layer).output.shape[-1]))
        for s in spec.body(keras.Input((size, size, 3))).stages
    )
    return ModelCard(
        name=spec.name,
        family=spec.family,
        description=spec.description,
        paper=spec.paper,
        params=model.count_params(),
        trainable_params=trainable,
        gmacs=count_macs(model) / 1e9,
        default_size=size,
        min_size=spec.min_size,
        preprocessing=spec.preprocessing,
        stages=stages,
        weights=dict(spec.weights),
        num_classes=spec.default_classes,
    )


def info(name: str) -> ModelCard:
    """The model card of a registered model (built once, then cached).

    Example:

    >>> import zoo
    >>> card = zoo.info("resnet18")
    >>> card.trainable_params, [s.reduction for s in card.stages]
    (11689512, [2, 4, 8, 16, 32])
    """
    return _card(get_spec(name).name)


def stages_of(model: keras.Model) -> list[Stage]:
    """The stages of a model: declared ones for zoo models, inferred otherwise.

    For a zoo model (also after save/load or surgery that keeps the layer
    names) the registered stage declaration is used; the model's own name is
    tried first. For any other model the stages are inferred from the
    graph: the last layer at each spatial resolution.

    Example:

    >>> import zoo
    >>> m = zoo.build("vgg11", input_shape=(32, 32, 3), include_top=False)
    >>> [s.layer for s in zoo.stages_of(m)][-1]
    'block5_pool'
    """
    from zoo.registry import _REGISTRY

    names = {l.name for l in zoo_weights.leaf_layers(model)}
    base = model.name.removesuffix("_features")
    candidates = ([_REGISTRY[base]] if base in _REGISTRY else []) + list(_REGISTRY.values())
    for spec in candidates:
        stages = _declared_stages(spec.name)
        if stages and all(s.layer in names for s in stages):
            return list(stages)
    return _infer_stages(model)


@functools.lru_cache(maxsize=None)
def _declared_stages(name):
    spec = get_spec(name)
    with keras.name_scope("zoo_probe"):
        # Stage names do not depend on the size: probe at the smallest one.
        return tuple(spec.body(keras.Input((spec.min_size, spec.min_size, 3))).stages)


def _infer_stages(model):
    stages, last_by_reduction = [], {}
    layers_ = zoo_weights.leaf_layers(model)
    in_shape = None
    for layer in layers_:
        try:
            shape = layer.output.shape
        except (AttributeError, ValueError):
            continue
        if isinstance(layer, keras.layers.InputLayer):
            in_shape = shape
            continue
        if in_shape is None or len(shape) != 4 or shape[1] is None or in_shape[1] is None:
            continue
        if isinstance(layer, (keras.layers.ZeroPadding2D, keras.layers.Cropping2D)):
            continue  # padding is not a feature map of its own
        reduction = 2 ** max(0, round(math.log2(in_shape[1] / shape[1])))
        last_by_reduction[reduction] = layer.name
    for reduction, layer in sorted(last_by_reduction.items()):
        if reduction > 1:
            stages.append(Stage(f"stage{len(stages) + 1}", layer, reduction))
    return stages
