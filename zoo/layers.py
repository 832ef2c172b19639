"""Layers shared by the zoo's families (and by `surgery`, `tuning`).

The input normalisation (`ImageNormalization`, `PREPROCESSING_CONSTANTS`),
the one classifier head (`classifier_head`), `conv_bn` and `act_name`, and
`leaf_layers`. A family's own blocks live in its module
(`zoo.models.resnet.basic_block`, `zoo.models.googlenet.inception_module`,
`zoo.tasks.fcn.bilinear_upsample`): plain functions `x -> x` that create
layers with stable, readable names, so users can `model.get_layer(...)` and
`surgery.cut` at them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import keras
import numpy as np
from keras import layers, ops

# (mean, std) of each preprocessing mode, in the units of its input: caffe
# works on BGR 0-255, torch on RGB 0-1, tf maps 0-1 to -1..1.
PREPROCESSING_CONSTANTS = {
    "caffe": ((103.939, 116.779, 123.68), (1.0, 1.0, 1.0)),
    "torch": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "tf": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
    # The model normalises its own input (keras.applications' EfficientNet,
    # MobileNetV3, ConvNeXt): RGB 0-255 goes in unchanged.
    "none": ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0)),
}


PREPROCESSING_MODES = tuple(PREPROCESSING_CONSTANTS)  # "caffe", "torch", "tf", "none"


def output_dtype() -> str | None:
    """`"float32"` under a mixed policy, else None: for classifier outputs.

    Softmax and the loss stay in float32 under `mixed_bfloat16` (Keras'
    mixed-precision guide); under a plain policy the layer follows it.

    Example:

        >>> import zoo
        >>> with zoo.dtype_policy_scope("mixed_bfloat16"):
        ...     zoo.layers.output_dtype()
        'float32'
        >>> zoo.layers.output_dtype() is None
        True
    """
    policy = keras.config.dtype_policy()
    return "float32" if policy.compute_dtype != policy.variable_dtype else None


def _scale_offset(mode: str):
    """`x * scale + offset` on RGB 0-255 input (after RGB->BGR for caffe)."""
    if mode not in PREPROCESSING_MODES:
        raise ValueError(f"`mode` must be one of {PREPROCESSING_MODES}. Received: mode={mode!r}")
    mean, std = (np.array(v) for v in PREPROCESSING_CONSTANTS[mode])
    unit = 1.0 if mode in ("caffe", "none") else 255.0  # caffe works on 0-255 pixels
    return 1.0 / (unit * std), -mean / std


@keras.saving.register_keras_serializable(package="zoo")
class ImageNormalization(layers.Layer):
    """Turns raw RGB images (uint8 or float, 0-255) into a family's input.

    Modes follow `keras.applications.imagenet_utils.preprocess_input`:
    `"caffe"` (RGB->BGR, minus the ImageNet mean; VGG, ResNet v1),
    `"torch"` (0-1, minus mean, over std; torchvision-trained models),
    `"tf"` (-1..1; ResNet v2), `"none"` (unchanged: models that normalise
    inside, as keras.applications' EfficientNet, MobileNetV3, ConvNeXt).

    Args:
        mode: str. One of `"caffe"`, `"torch"`, `"tf"`, `"none"`.

    Example:

        >>> import keras, numpy as np, zoo
        >>> layer = zoo.layers.ImageNormalization("tf")
        >>> keras.ops.convert_to_numpy(layer(np.full((1, 2, 2, 3), 255, "uint8")))[0, 0, 0]
        array([1., 1., 1.], dtype=float32)
    """

    def __init__(self, mode: str = "caffe", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        scale, offset = _scale_offset(mode)
        self.mode = mode
        self._scale = scale.astype("float32")
        self._offset = offset.astype("float32")

    def call(self, x):
        # In float32 whatever the policy, one rounding to the compute dtype
        # at the end: under mixed_bfloat16, `pixel - mean` in bfloat16 would
        # round twice (and CPUs have no bfloat16 elementwise arithmetic).
        x = ops.cast(x, "float32")
        if self.mode == "caffe":
            x = ops.flip(x, axis=-1)
        return ops.cast(ops.add(ops.multiply(x, self._scale), self._offset), self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "mode": self.mode}


def classifier_head(
    num_classes: int,
    *,
    pooling: str | None = "avg",
    hidden_units: Sequence[int] = (),
    hidden_activation: str = "relu",
    batch_norm: bool = False,
    dropout: float = 0.0,
    activation: str | None = "softmax",
    prefix: str = "",
    hidden_name: str = "fc",
    output_name: str | None = None,
) -> list:
    """The layers of a classifier head, in order: the one head of the toolkit.

    pooling -> [Dense(units, hidden_activation) -> BatchNorm? -> Dropout?]*
    -> Dropout? (only without hidden layers) -> Dense(num_classes). Every
    family's head (VGG's flatten-fc1-fc2, GoogLeNet's pool-dropout and its
    auxiliary classifiers, the global-pool default) and the tuner's
    searchable head are this function with different arguments. The output
    layer is float32 under a mixed precision policy.

    Args:
        num_classes: int. Units of the output layer.
        pooling: str or None. `"avg"`/`"max"` (global pooling, named
            `{prefix}avg_pool`/`{prefix}max_pool`), `"flatten"`
            (`{prefix}flatten`) or `None` (input already flat).
            Defaults to `"avg"`.
        hidden_units: sequence of int. Hidden Dense layers, named
            `{prefix}{hidden_name}{i}` from 1. Defaults to `()`.
        hidden_activation: str. Activation of the hidden layers.
        batch_norm: bool. BatchNorm after each hidden layer
            (`{prefix}bn{i}`). Defaults to `False`.
        dropout: float. Dropout after each hidden layer (or before the
            output without hidden layers); named `{prefix}dropout`, with the
            index when there are several. Defaults to 0.
        activation: str or None. Activation of the output; `None` gives
            logits. Defaults to `"softmax"`.
        prefix: str. Prefix of every layer name. Defaults to `""`.
        hidden_name: str. Stem of the hidden layers' names. Defaults to
            `"fc"`.
        output_name: str. Name of the output layer. Defaults to
            `"{prefix}predictions"`.

    Returns:
        A list of layers; `zoo.layers.apply(layers, x)` or
        `keras.Sequential(layers)` uses them.

    Example:

        >>> import keras, zoo
        >>> head = zoo.layers.classifier_head(10, pooling="flatten",
        ...                                   hidden_units=(64, 64))
        >>> [l.name for l in head]
        ['flatten', 'fc1', 'fc2', 'predictions']
        >>> zoo.layers.apply(head, keras.Input((7, 7, 8))).shape
        (None, 10)
    """
    if pooling not in ("avg", "max", "flatten", None):
        raise ValueError(
            f"`pooling` must be one of ('avg', 'max', 'flatten', None). Received: pooling={pooling!r}"
        )
    out = []
    if pooling == "avg":
        out.append(layers.GlobalAveragePooling2D(name=f"{prefix}avg_pool"))
    elif pooling == "max":
        out.append(layers.GlobalMaxPooling2D(name=f"{prefix}max_pool"))
    elif pooling == "flatten":
        out.append(layers.Flatten(name=f"{prefix}flatten"))
    hidden_units = tuple(hidden_units)
    several = len(hidden_units) > 1
    for i, units in enumerate(hidden_units, start=1):
        out.append(layers.Dense(units, activation=hidden_activation, name=f"{prefix}{hidden_name}{i}"))
        if batch_norm:
            out.append(layers.BatchNormalization(name=f"{prefix}bn{i}"))
        if dropout > 0:
            out.append(layers.Dropout(dropout, name=f"{prefix}dropout{i if several else ''}"))
    if not hidden_units and dropout > 0:
        out.append(layers.Dropout(dropout, name=f"{prefix}dropout"))
    out.append(
        layers.Dense(
            num_classes,
            activation=activation,
            name=output_name or f"{prefix}predictions",
            dtype=output_dtype(),
        )
    )
    return out


def apply(layer_list: Sequence[keras.layers.Layer], x: keras.KerasTensor) -> keras.KerasTensor:
    """Call `layer_list` in order on `x` (a head from `classifier_head`).

    Example:

        >>> import keras, zoo
        >>> zoo.layers.apply([keras.layers.Dense(3)], keras.Input((2,))).shape
        (None, 3)
    """
    for layer in layer_list:
        x = layer(x)
    return x


def conv_bn(
    x: keras.KerasTensor,
    filters: int,
    kernel_size: int,
    *,
    name: str,
    strides: int = 1,
    padding: str = "same",
    use_bias: bool = False,
    batch_norm: bool = True,
    bn_epsilon: float = 1e-5,
    activation: str | None = "relu",
) -> keras.KerasTensor:
    """Convolution, optional BatchNorm, optional activation.

    Layers are named `{name}_conv`, `{name}_bn`, `{name}_{activation}`.
    `padding="symmetric"` pads `kernel_size // 2` on every side before a
    "valid" convolution: PyTorch/Caffe semantics, which differ from Keras'
    "same" for even inputs with stride 2 (needed for weight parity).

    Example:

        >>> import keras, zoo
        >>> x = keras.Input((32, 32, 3))
        >>> zoo.layers.conv_bn(x, 8, 3, strides=2, padding="symmetric",
        ...                    name="stem").shape
        (None, 16, 16, 8)
    """
    if padding == "symmetric":
        pad = kernel_size // 2
        if pad:
            x = layers.ZeroPadding2D(pad, name=f"{name}_pad")(x)
        padding = "valid"
    x = layers.Conv2D(
        filters,
        kernel_size,
        strides=strides,
        padding=padding,
        use_bias=use_bias,
        name=f"{name}_conv",
    )(x)
    if batch_norm:
        x = layers.BatchNormalization(epsilon=bn_epsilon, name=f"{name}_bn")(x)
    if activation:
        x = layers.Activation(activation, name=f"{name}_{act_name(activation)}")(x)
    return x


def act_name(activation: str | Callable | None) -> str:
    """The name an activation gives its layers (`"relu"`, `"mish"`, a function's name).

    Example:

        >>> import keras, zoo
        >>> zoo.layers.act_name("mish"), zoo.layers.act_name(keras.activations.gelu)
        ('mish', 'gelu')
    """
    return activation if isinstance(activation, str) else getattr(activation, "__name__", "act")


def leaf_layers(model: keras.Model) -> list:
    """All non-model layers of `model`, nested models flattened, in order.

    Example:

        >>> import keras, zoo
        >>> base = zoo.build("vgg11", input_shape=(32, 32, 3), include_top=False)
        >>> outer = keras.Sequential([base, keras.layers.Dense(2)])
        >>> len(zoo.layers.leaf_layers(outer)) == len(base.layers) + 1
        True
    """
    out = []
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            out.extend(leaf_layers(layer))
        else:
            out.append(layer)
    return out
