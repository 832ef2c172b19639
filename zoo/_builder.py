"""`zoo.build`: one assembly for every registered backbone, and the checks before it.

Like timm's `_builder.py`: a spec (`zoo.registry`) says *what* a model is;
this module turns it into a functional `keras.Model` — input validation,
preprocessing, body, classifier head or pooling, auxiliary heads, weights,
feature extraction. Task models (FCN) bring their own builder; `build`
checks their arguments and hands over.
"""

from __future__ import annotations

import contextlib
import inspect
import os
import types
from collections.abc import Iterator, Sequence
from typing import Any

import keras
import numpy as np

from zoo import layers as zoo_layers
from zoo import weights as zoo_weights
from zoo._auxiliary import AuxiliaryClassifierModel
from zoo._features import select_stages
from zoo.registry import ModelSpec, get_spec, specs

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
def dtype_policy_scope(dtype: str | None) -> Iterator[None]:
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


def input_stamp(spec: ModelSpec) -> str:
    """The input layer name that identifies a zoo model's spec: `<name>_input`.

    It survives `.keras` save/load and every `surgery` edit that keeps the
    input, so `zoo.stages_of` finds the declared stages without building.

    Example:

        >>> import zoo
        >>> zoo.build("resnet18", input_shape=(32, 32, 3)).inputs[0].name
        'resnet18_input'
    """
    return f"{spec.name}_input"


def resolve_input_shape(spec, input_shape, *, include_top, weights):
    """Check `input_shape` against the spec and fill in the default.

    Example:

        >>> import zoo
        >>> spec = zoo.get_spec("vgg16")
        >>> zoo._builder.resolve_input_shape(spec, None, include_top=True, weights=None)
        (224, 224, 3)
        >>> zoo._builder.resolve_input_shape(spec, None, include_top=False, weights=None)
        (None, None, 3)
    """
    if keras.config.image_data_format() != "channels_last":
        raise ValueError(
            "zoo models are built channels_last. Call "
            "`keras.config.set_image_data_format('channels_last')` (the "
            "default) before `zoo.build`; Keras backends transpose internally "
            "where that is faster."
        )
    if input_shape is None:
        if (include_top and spec.hooks.fixed_size_top) or spec.hooks.static_input:
            return (spec.default_size, spec.default_size, 3)
        return (None, None, 3)
    input_shape = tuple(input_shape)
    if len(input_shape) != 3:
        raise ValueError(
            f"`input_shape` must be (height, width, channels). Received: input_shape={input_shape}"
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
    if spec.hooks.static_input and (h is None or w is None):
        raise ValueError(
            f"{spec.name!r} needs a fixed input size (its cells compare the "
            f"sizes of their inputs while building). Received: "
            f"input_shape={input_shape}. Give a size, e.g. "
            f"({spec.default_size}, {spec.default_size}, 3)."
        )
    if include_top and spec.hooks.fixed_size_top:
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


def resolve_source(spec, weights, *, include_top):
    """The `WeightSource` that `weights` names (None for a path or no weights).

    `"imagenet"` without the top picks the `"imagenet_notop"` file when the
    spec has one.

    Example:

        >>> import zoo
        >>> src = zoo._builder.resolve_source(zoo.get_spec("vgg16"), "imagenet", include_top=False)
        >>> src.file_name
        'vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5'
    """
    if not isinstance(weights, str) or not (weights in spec.weights or weights == "imagenet"):
        return None
    return spec.source(weights, include_top=include_top)


def _resolve_weights(spec, weights, *, include_top, num_classes):
    """A path to load from (downloading known sources), or None."""
    if weights is None:
        return None
    if not isinstance(weights, (str, os.PathLike)):
        raise TypeError(f"`weights` must be None, 'imagenet' or a path. Received: {weights!r}")
    weights = os.fspath(weights)
    source = resolve_source(spec, weights, include_top=include_top)
    if source is not None:
        if include_top and source.include_top and num_classes != source.num_classes:
            raise ValueError(
                f"ImageNet weights with `include_top=True` need num_classes={source.num_classes}. "
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


def _given(arguments: dict, defaults: dict) -> dict:
    """The arguments that differ from their defaults (no tensor comparisons)."""
    out = {}
    for key, value in arguments.items():
        default = defaults[key]
        if value is default:
            continue
        if isinstance(value, (bool, int, str)) and type(value) is type(default) and value == default:
            continue
        out[key] = value
    return out


# Why a backbone does not take an argument, and where to look instead.
_HINTS = {
    "aux_logits": "Auxiliary classifiers exist for GoogLeNet (`zoo.list_models('googlenet*')`).",
    "backbone": "Only task models take a backbone (`zoo.list_models(task='segmentation')`).",
    "activation": "Leave it out for this model.",
}


def _check_arguments(spec, given):
    """Refuse any argument the model does not take, naming what it does take."""
    if spec.is_task:
        accepted = set(spec.arguments)
    else:
        accepted = set(_DEFAULTS) - _NOT_BACKBONE
        if spec.body is not None and "activation" not in _parameters(spec.body):
            accepted.discard("activation")
        if spec.hooks.aux_top is None:
            accepted.discard("aux_logits")
    for key, value in given.items():
        if key in accepted:
            continue
        shown = "<tensor>" if isinstance(value, keras.KerasTensor) else repr(value)
        if spec.is_task:
            raise ValueError(
                f"{spec.name!r} is a {spec.task} model and does not take `{key}`. "
                f"Received: {key}={shown}. It takes: {', '.join(sorted(accepted))}."
            )
        raise ValueError(f"{spec.name!r} does not take `{key}`. Received: {key}={shown}. {_HINTS[key]}")


def _parameters(fn):
    return inspect.signature(fn).parameters


def _inputs(spec, shape, input_tensor):
    """The model's input: a fresh, stamped `keras.Input`, or the user's tensor."""
    if input_tensor is None:
        return keras.Input(shape=shape, name=input_stamp(spec)), None
    if not isinstance(input_tensor, keras.KerasTensor):
        raise TypeError(
            "`input_tensor` must be a symbolic tensor from `keras.Input(...)` (or a "
            f"layer called on one). Received: {type(input_tensor).__name__}"
        )
    if tuple(input_tensor.shape[1:]) != tuple(shape) and None not in shape:
        raise ValueError(
            f"`input_tensor` has shape {tuple(input_tensor.shape)}, which does not "
            f"match input_shape={tuple(shape)}. Give one of them, or matching ones."
        )
    sources = keras.utils.get_source_inputs(input_tensor)
    return (sources[0] if len(sources) == 1 else sources), input_tensor


def build(
    model_name: str,
    /,
    *,
    num_classes: int | None = None,
    classes: int | None = None,
    input_shape: Sequence[int | None] | None = None,
    input_tensor: keras.KerasTensor | None = None,
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
    name: str | None = None,
) -> keras.Model:
    """Build a registered model as a functional `keras.Model`.

    Every argument is checked before anything is built; an argument the
    model does not take (`pooling` on FCN, `aux_logits` on ResNet) is an
    error, never silently dropped.

    Args:
        model_name: str. Registered name, case-insensitive (`zoo.list_models()`).
        num_classes: int. Classes of the classifier (or segmentation) head.
            Defaults to the model's (1000 for ImageNet classifiers, 21 for
            FCN).
        classes: int. keras.applications' name for `num_classes`.
        input_shape: tuple `(height, width, channels)`. Defaults to the
            model's default size with `include_top=True` on fixed-size heads
            (VGG), else `(None, None, 3)`.
        input_tensor: KerasTensor. Build on this tensor (from `keras.Input`)
            instead of a new input, as in keras.applications.
        include_top: bool. Add the classifier head. Defaults to `True`.
        pooling: str. With `include_top=False`: `None` (4D feature map),
            `"avg"` or `"max"` global pooling. Defaults to `None`.
        weights: `None` (random), `"imagenet"`, a source tag from
            `zoo.info(name).weights`, or a path to a weight file
            (`.weights.h5`, legacy `.h5`, keras.applications files, `.keras`,
            `.npz`, PyTorch `.pth` where the model has a converter).
            Defaults to `None`.
        classifier_activation: str or None. Activation of the predictions
            layer; `None` returns logits. Defaults to `"softmax"`.
        features_only: bool. Return a model whose outputs are the stage
            feature maps (shallow to deep). Defaults to `False`.
        out_indices: sequence of int. With `features_only`, which stages
            (indices into `zoo.get_spec(name).stages`, negative allowed).
        include_preprocessing: bool. Make the model take raw RGB 0-255 images
            (uint8 or float) by adding the chosen weights' normalisation
            (`zoo.info(name).weights[tag].preprocessing`; without weights,
            the model's default) as its first layer. Defaults to `False`.
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
        name: str. Name of the Keras model. Defaults to the registry name.

    Returns:
        A functional `keras.Model`.

    Example:

        >>> import keras, zoo
        >>> model = zoo.build("resnet18", num_classes=10, input_shape=(64, 64, 3))
        >>> model.output_shape
        (None, 10)
        >>> feats = zoo.build("resnet18", features_only=True,
        ...                   input_shape=(64, 64, 3))
        >>> [tuple(o.shape[1:3]) for o in feats.outputs]
        [(32, 32), (16, 16), (8, 8), (4, 4), (2, 2)]
        >>> zoo.build("resnet50", classes=10, name="mine",
        ...           input_tensor=keras.Input((64, 64, 3))).name
        'mine'
    """
    arguments = {k: v for k, v in locals().items() if k != "model_name"}  # every argument, as declared above
    spec = get_spec(model_name)
    given = _given(arguments, _DEFAULTS)
    if "classes" in given:
        if "num_classes" in given and num_classes != classes:
            raise ValueError(
                "`classes` is another name for `num_classes`; give one. "
                f"Received: num_classes={num_classes}, classes={classes}"
            )
        num_classes = given["num_classes"] = given.pop("classes")
    if num_classes is None:
        num_classes = spec.default_classes
    _check_arguments(spec, given)
    if spec.is_task:
        given.setdefault("num_classes", num_classes)
        return spec.builder(**given)
    arguments["num_classes"] = num_classes
    return _build_backbone(spec, **{k: v for k, v in arguments.items() if k not in _NOT_BACKBONE})


# `build`'s signature is the one declaration of its arguments: the defaults,
# the checks and the backbone assembly below all read it.
_DEFAULTS = {
    p.name: p.default for p in inspect.signature(build).parameters.values() if p.kind is p.KEYWORD_ONLY
}
# What a backbone does not take: the task models' `backbone`, and `classes`
# (keras.applications' name for `num_classes`, renamed before the check).
_NOT_BACKBONE = frozenset({"backbone", "classes"})


def _build_backbone(spec, **arguments):
    # `a.<argument>`: `build`'s arguments as declared in its signature (the
    # ones a backbone takes), so adding one to `build` needs no list here.
    a = types.SimpleNamespace(**arguments)
    options = {k: v for k, v in (("activation", a.activation), ("aux_logits", a.aux_logits)) if v}
    if a.aux_logits and not a.include_top:
        raise ValueError(
            "`aux_logits=True` adds auxiliary *classifiers*, so it needs "
            "`include_top=True` (and `features_only=False`)."
        )
    if a.input_shape is None and a.input_tensor is not None:
        a.input_shape = tuple(a.input_tensor.shape[1:])
    if a.aux_logits and spec.hooks.aux_needs_fixed_size and a.input_shape is None:
        a.input_shape = (spec.default_size, spec.default_size, 3)
    if a.pooling not in _POOLING:
        raise ValueError(f"`pooling` must be one of {_POOLING}. Received: pooling={a.pooling!r}")
    if a.include_top and (not isinstance(a.num_classes, int) or a.num_classes < 1):
        raise ValueError(f"`num_classes` must be a positive int. Received: num_classes={a.num_classes!r}")
    if a.out_indices is not None and not a.features_only:
        raise ValueError("`out_indices` only applies with `features_only=True`.")
    if a.features_only:
        a.include_top = False
    stages = spec.stages_for(activation=a.activation)
    if a.features_only:
        stages = select_stages(stages, a.out_indices, spec.name)
    shape = resolve_input_shape(spec, a.input_shape, include_top=a.include_top, weights=a.weights)
    source = resolve_source(spec, a.weights, include_top=a.include_top)
    path = _resolve_weights(spec, a.weights, include_top=a.include_top, num_classes=a.num_classes)
    if source is None and path is not None:
        # A known file passed by path (downloaded by hand) is that source.
        source = next((w for w in spec.weights.values() if w.file_name == os.path.basename(path)), None)
    preprocessing = source.preprocessing if source is not None else spec.preprocessing

    with dtype_policy_scope(a.dtype):
        inputs, x = _inputs(spec, shape, a.input_tensor)
        x = inputs if x is None else x
        if a.include_preprocessing and preprocessing != "none":
            x = zoo_layers.ImageNormalization(preprocessing, name="preprocessing")(x)
        if spec.hooks.builds_head:
            body, x = _body_with_head(
                spec,
                x,
                include_top=a.include_top,
                pooling=a.pooling,
                num_classes=a.num_classes,
                classifier_activation=a.classifier_activation,
            )
        else:
            body = spec.body(x, **options)
            x = body.output
            if a.include_top:
                x = spec.hooks.top(
                    x, num_classes=a.num_classes, classifier_activation=a.classifier_activation
                )
            elif a.pooling == "avg":
                x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
            elif a.pooling == "max":
                x = keras.layers.GlobalMaxPooling2D(name="max_pool")(x)
        if body.aux:
            outputs = {"main": x}
            for i, feature in enumerate(body.aux, start=1):
                outputs[f"aux{i}"] = spec.hooks.aux_top(
                    feature,
                    num_classes=a.num_classes,
                    classifier_activation=a.classifier_activation,
                    name=f"aux{i}",
                )
            model = AuxiliaryClassifierModel(inputs, outputs, name=a.name or spec.name)
        else:
            model = keras.Model(inputs, x, name=a.name or spec.name)

    if path is not None:
        zoo_weights.load_weights(model, _weights_source(spec, path))
        if source is not None and spec.hooks.load_fixup is not None:
            spec.hooks.load_fixup(model, source)
    if a.features_only:
        model = keras.Model(
            inputs,
            [model.get_layer(s.layer).output for s in stages],
            name=a.name or f"{spec.name}_features",
        )
    return model


def _body_with_head(spec, x, *, include_top, pooling, num_classes, classifier_activation):
    """A body that builds its own head (keras.applications), softmax in float32.

    Under a mixed policy the head's activation moves to a float32 layer
    (`predictions_activation`), as Keras' mixed-precision guide asks.
    """
    mixed = include_top and zoo_layers.output_dtype() == "float32"
    body = spec.body(
        x,
        include_top=include_top,
        pooling=pooling,
        num_classes=num_classes,
        classifier_activation=None if mixed else classifier_activation,
    )
    x = body.output
    if mixed:
        x = keras.layers.Activation(
            classifier_activation or "linear", dtype="float32", name="predictions_activation"
        )(x)
    return body, x


def _weights_source(spec, path):
    """`path`, or its converted content when it is a PyTorch state dict."""
    torch_file = path.endswith((".pth", ".pt"))
    if path.endswith(".npz"):
        with np.load(path, allow_pickle=False) as data:
            torch_file = bool(data.files) and all("/" not in k for k in data.files)
    if not torch_file:
        return path
    if spec.hooks.state_dict_converter is None:
        raise zoo_weights.WeightFileError(
            f"{path!r} holds a PyTorch state dict, and {spec.name!r} has no "
            "mapping from PyTorch names. Models with one: "
            f"{[s.name for s in specs() if s.hooks.state_dict_converter is not None]}."
        )
    return spec.hooks.state_dict_converter(zoo_weights.read_state_dict(path))


def preprocess(images: Any, name_or_mode: str, *, weights: str = "imagenet") -> Any:
    """Normalise raw RGB images (0-255) the way a model's weights expect.

    The same arithmetic as `build(..., include_preprocessing=True)`, for users
    who normalise outside the model.

    Args:
        images: array or tensor, `(..., height, width, 3)`, 0-255.
        name_or_mode: str. A registered model name or a mode (`"caffe"`,
            `"torch"`, `"tf"`).
        weights: str. With a model name: the weight source whose
            preprocessing to apply (`zoo.info(name).weights`); a model
            without that source uses its default. Defaults to `"imagenet"`.

    Example:

        >>> import keras, numpy as np, zoo
        >>> x = zoo.preprocess(np.full((1, 4, 4, 3), 127.5, "float32"), "resnet50v2")
        >>> float(np.abs(keras.ops.convert_to_numpy(x)).max())
        0.0
    """
    if name_or_mode in zoo_layers.PREPROCESSING_MODES:
        mode = name_or_mode
    else:
        spec = get_spec(name_or_mode)
        mode = spec.weights[weights].preprocessing if weights in spec.weights else spec.preprocessing
    return zoo_layers.ImageNormalization(mode)(images)
