"""Building blocks shared by the zoo's families (and by `surgery`, `tuning`).

Blocks are plain functions `x -> x` that create layers with stable, readable
names (Keras' scheme: `conv{stage}_block{i}_{j}_{op}`, every block ends in a
`_out` layer), so users can `model.get_layer(...)` and `surgery.cut` at them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import keras
import numpy as np
from keras import layers, ops

from zoo.weights import PREPROCESSING_CONSTANTS

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


def basic_block(
    x: keras.KerasTensor,
    filters: int,
    *,
    name: str,
    strides: int = 1,
    conv_shortcut: bool = False,
    bn_epsilon: float = 1e-5,
    activation: str = "relu",
) -> keras.KerasTensor:
    """ResNet v1 basic block (two 3x3 convs), torchvision layout.

    Example:

        >>> import keras, zoo
        >>> x = keras.Input((32, 32, 64))
        >>> zoo.layers.basic_block(x, 128, strides=2, conv_shortcut=True,
        ...                        name="conv3_block1").shape
        (None, 16, 16, 128)
    """
    if conv_shortcut:
        shortcut = conv_bn(
            x,
            filters,
            1,
            strides=strides,
            bn_epsilon=bn_epsilon,
            activation=None,
            name=f"{name}_0",
        )
    else:
        shortcut = x
    y = conv_bn(
        x,
        filters,
        3,
        strides=strides,
        padding="symmetric",
        bn_epsilon=bn_epsilon,
        activation=activation,
        name=f"{name}_1",
    )
    y = conv_bn(
        y,
        filters,
        3,
        padding="symmetric",
        bn_epsilon=bn_epsilon,
        activation=None,
        name=f"{name}_2",
    )
    y = layers.Add(name=f"{name}_add")([shortcut, y])
    return layers.Activation(activation, name=f"{name}_out")(y)


def bottleneck_block(
    x: keras.KerasTensor,
    filters: int,
    *,
    name: str,
    strides: int = 1,
    conv_shortcut: bool = False,
    use_bias: bool = True,
    bn_epsilon: float = 1.001e-5,
    activation: str = "relu",
    expansion: int = 4,
    stride_on: str = "1x1",
) -> keras.KerasTensor:
    """ResNet v1 bottleneck block (1x1, 3x3, 1x1).

    `stride_on="1x1"` (default) is keras.applications' layout (and Caffe's
    original ResNet): the stride on the first 1x1 convolution, so its
    ImageNet weights load unchanged. `stride_on="3x3"` is torchvision's
    ("ResNet v1.5"): the stride on the 3x3, padded PyTorch-style.

    Example:

        >>> import keras, zoo
        >>> x = keras.Input((16, 16, 64))
        >>> zoo.layers.bottleneck_block(x, 64, conv_shortcut=True,
        ...                             name="conv2_block1").shape
        (None, 16, 16, 256)
    """
    if conv_shortcut:
        shortcut = conv_bn(
            x,
            expansion * filters,
            1,
            strides=strides,
            use_bias=use_bias,
            bn_epsilon=bn_epsilon,
            activation=None,
            name=f"{name}_0",
        )
    else:
        shortcut = x
    if stride_on not in ("1x1", "3x3"):
        raise ValueError(f"`stride_on` must be '1x1' or '3x3'. Received: stride_on={stride_on!r}")
    common = dict(use_bias=use_bias, bn_epsilon=bn_epsilon)
    first, second = (strides, 1) if stride_on == "1x1" else (1, strides)
    y = conv_bn(x, filters, 1, strides=first, activation=activation, name=f"{name}_1", **common)
    y = conv_bn(
        y,
        filters,
        3,
        strides=second,
        padding="symmetric" if second > 1 else "same",
        activation=activation,
        name=f"{name}_2",
        **common,
    )
    y = conv_bn(y, expansion * filters, 1, activation=None, name=f"{name}_3", **common)
    y = layers.Add(name=f"{name}_add")([shortcut, y])
    return layers.Activation(activation, name=f"{name}_out")(y)


def preact_bottleneck_block(
    x: keras.KerasTensor,
    filters: int,
    *,
    name: str,
    strides: int = 1,
    conv_shortcut: bool = False,
    bn_epsilon: float = 1.001e-5,
    activation: str = "relu",
    expansion: int = 4,
) -> keras.KerasTensor:
    """ResNet v2 (pre-activation) bottleneck block, keras.applications layout.

    BN-ReLU come before each convolution ("Identity Mappings in Deep
    Residual Networks", He et al. 2016); the stride sits on the 3x3.

    Example:

        >>> import keras, zoo
        >>> x = keras.Input((16, 16, 64))
        >>> zoo.layers.preact_bottleneck_block(x, 64, conv_shortcut=True,
        ...                                    name="conv2_block1").shape
        (None, 16, 16, 256)
    """
    preact = layers.BatchNormalization(epsilon=bn_epsilon, name=f"{name}_preact_bn")(x)
    preact = layers.Activation(activation, name=f"{name}_preact_{act_name(activation)}")(preact)
    if conv_shortcut:
        shortcut = layers.Conv2D(expansion * filters, 1, strides=strides, name=f"{name}_0_conv")(preact)
    elif strides > 1:
        shortcut = layers.MaxPooling2D(1, strides=strides, name=f"{name}_0_pool")(x)
    else:
        shortcut = x
    y = conv_bn(preact, filters, 1, bn_epsilon=bn_epsilon, activation=activation, name=f"{name}_1")
    y = conv_bn(
        y,
        filters,
        3,
        strides=strides,
        padding="symmetric",
        bn_epsilon=bn_epsilon,
        activation=activation,
        name=f"{name}_2",
    )
    y = layers.Conv2D(expansion * filters, 1, name=f"{name}_3_conv")(y)
    return layers.Add(name=f"{name}_out")([shortcut, y])


def max_pool_ceil(x: keras.KerasTensor, pool_size: int, strides: int, *, name: str) -> keras.KerasTensor:
    """Max pooling with PyTorch/Caffe `ceil_mode=True` output sizes.

    Pads `strides - 1` zeros at the bottom/right, then pools "valid": the
    output has `ceil((n - pool_size) / strides) + 1` rows, as Caffe's
    GoogLeNet and torchvision's do. Zero padding equals PyTorch's (ignored)
    padding here because the blocks feed it non-negative (post-ReLU) maps.

    Example:

        >>> import keras, zoo
        >>> x = keras.Input((57, 57, 8))
        >>> zoo.layers.max_pool_ceil(x, 3, 2, name="pool").shape
        (None, 28, 28, 8)
    """
    if strides > 1:
        x = layers.ZeroPadding2D(((0, strides - 1), (0, strides - 1)), name=f"{name}_pad")(x)
    return layers.MaxPooling2D(pool_size, strides=strides, name=name)(x)


def inception_module(
    x: keras.KerasTensor,
    *,
    filters_1x1: int,
    filters_3x3_reduce: int,
    filters_3x3: int,
    filters_5x5_reduce: int,
    filters_5x5: int,
    filters_pool_proj: int,
    name: str,
    batch_norm: bool = True,
    kernel_5x5: int = 3,
    bn_epsilon: float = 1e-3,
    activation: str = "relu",
) -> keras.KerasTensor:
    """Inception v1 module (Szegedy et al. 2014, Figure 2b).

    Four branches, concatenated on channels: a 1x1 convolution; a 1x1
    bottleneck then a 3x3; a 1x1 bottleneck then the "5x5"; a 3x3/1 max
    pool then a 1x1 projection. The 1x1 bottlenecks are what keep the module
    cheap. `batch_norm=True, kernel_5x5=3` is torchvision's layout (BN after
    every conv, no conv bias, a 3x3 in the "5x5" branch);
    `batch_norm=False, kernel_5x5=5` is the paper's.

    Layers: `{name}_1x1`, `{name}_3x3_reduce`, `{name}_3x3`,
    `{name}_5x5_reduce`, `{name}_5x5`, `{name}_pool`, `{name}_pool_proj`
    (each with `_conv`/`_bn`/`_relu`), and `{name}_out`.

    Example:

        >>> import keras, zoo
        >>> x = keras.Input((28, 28, 192))
        >>> zoo.layers.inception_module(
        ...     x, filters_1x1=64, filters_3x3_reduce=96, filters_3x3=128,
        ...     filters_5x5_reduce=16, filters_5x5=32, filters_pool_proj=32,
        ...     name="inception3a").shape
        (None, 28, 28, 256)
    """
    conv = dict(
        batch_norm=batch_norm,
        use_bias=not batch_norm,
        bn_epsilon=bn_epsilon,
        activation=activation,
    )
    b1 = conv_bn(x, filters_1x1, 1, name=f"{name}_1x1", **conv)
    b2 = conv_bn(x, filters_3x3_reduce, 1, name=f"{name}_3x3_reduce", **conv)
    b2 = conv_bn(b2, filters_3x3, 3, name=f"{name}_3x3", **conv)
    b3 = conv_bn(x, filters_5x5_reduce, 1, name=f"{name}_5x5_reduce", **conv)
    b3 = conv_bn(b3, filters_5x5, kernel_5x5, name=f"{name}_5x5", **conv)
    b4 = layers.MaxPooling2D(3, strides=1, padding="same", name=f"{name}_pool")(x)
    b4 = conv_bn(b4, filters_pool_proj, 1, name=f"{name}_pool_proj", **conv)
    return layers.Concatenate(axis=-1, name=f"{name}_out")([b1, b2, b3, b4])


@keras.saving.register_keras_serializable(package="zoo")
class LocalResponseNormalization(layers.Layer):
    """Cross-channel local response normalisation (AlexNet, GoogLeNet).

    Caffe's definition: `x / (bias + alpha / size * sum(x^2))^beta`, the sum
    over `size` neighbouring channels centred on each channel.

    Args:
        size: int. Channels in the window (odd). Defaults to 5.
        alpha: float. Scale. Defaults to 1e-4.
        beta: float. Exponent. Defaults to 0.75.
        bias: float. Additive constant. Defaults to 1.0.

    Example:

        >>> import keras, numpy as np, zoo
        >>> y = zoo.layers.LocalResponseNormalization(size=3, alpha=3.0, beta=1.0)(
        ...     np.ones((1, 1, 1, 3), "float32"))
        >>> [round(float(v), 3) for v in keras.ops.convert_to_numpy(y).ravel()]
        [0.333, 0.25, 0.333]
    """

    def __init__(
        self, size: int = 5, alpha: float = 1e-4, beta: float = 0.75, bias: float = 1.0, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        if size < 1 or size % 2 == 0:
            raise ValueError(f"`size` must be a positive odd int. Received: size={size}")
        self.size, self.alpha, self.beta, self.bias = size, alpha, beta, bias

    def call(self, x):
        half = self.size // 2
        sq = ops.pad(ops.square(x), [[0, 0], [0, 0], [0, 0], [half, half]])
        channels = x.shape[-1]
        total = sq[..., 0:channels]
        for i in range(1, self.size):
            total = total + sq[..., i : i + channels]
        return x / ops.power(self.bias + (self.alpha / self.size) * total, self.beta)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {
            **super().get_config(),
            "size": self.size,
            "alpha": self.alpha,
            "beta": self.beta,
            "bias": self.bias,
        }


def bilinear_kernel(factor: int, channels: int) -> np.ndarray:
    """The `(2f, 2f, C, C)` transposed-convolution kernel of bilinear upsampling.

    Caffe's `upsample_filt` on the channel diagonal (Long et al. 2015):
    channels do not mix. Cropping `factor // 2` pixels from the top-left of
    the stride-`factor` transposed convolution then equals half-pixel
    bilinear resizing away from the border.

    Example:

        >>> import zoo
        >>> zoo.layers.bilinear_kernel(2, 1)[:, 0, 0, 0].tolist()
        [0.0625, 0.1875, 0.1875, 0.0625]
    """
    size = 2 * factor
    center = factor - 0.5
    og = np.arange(size)
    filt1d = 1 - np.abs(og - center) / factor
    filt = np.outer(filt1d, filt1d)
    kernel = np.zeros((size, size, channels, channels), dtype="float32")
    for c in range(channels):
        kernel[:, :, c, c] = filt
    return kernel


@keras.saving.register_keras_serializable(package="zoo")
class BilinearUpsamplingInitializer(keras.initializers.Initializer):
    """Initialises a `Conv2DTranspose` kernel to bilinear upsampling.

    Args:
        factor: int. The transposed convolution's stride.

    Example:

        >>> import keras, zoo
        >>> init = zoo.layers.BilinearUpsamplingInitializer(2)
        >>> tuple(init((4, 4, 3, 3)).shape)
        (4, 4, 3, 3)
    """

    def __init__(self, factor: int):
        self.factor = factor

    def __call__(self, shape, dtype=None):
        kh, kw, out_c, in_c = shape
        if (kh, kw) != (2 * self.factor, 2 * self.factor) or out_c != in_c:
            raise ValueError(
                f"A bilinear kernel for factor {self.factor} has shape "
                f"({2 * self.factor}, {2 * self.factor}, C, C). Received: shape={shape}"
            )
        return ops.convert_to_tensor(bilinear_kernel(self.factor, in_c), dtype=dtype)

    def get_config(self):
        return {"factor": self.factor}


def bilinear_upsample(x: keras.KerasTensor, factor: int, *, name: str) -> keras.KerasTensor:
    """A learnable, bias-free transposed convolution initialised to bilinear.

    Output side is `(n + 1) * factor`; `CropLike(offset=factor // 2)` aligns it
    with a reference map (FCN's skips and final output).

    Example:

        >>> import keras, zoo
        >>> x = keras.Input((7, 7, 21))
        >>> zoo.layers.bilinear_upsample(x, 2, name="upscore2").shape
        (None, 16, 16, 21)
    """
    return layers.Conv2DTranspose(
        x.shape[-1],
        2 * factor,
        strides=factor,
        padding="valid",
        use_bias=False,
        kernel_initializer=BilinearUpsamplingInitializer(factor),
        name=name,
    )(x)


@keras.saving.register_keras_serializable(package="zoo")
class CropLike(layers.Layer):
    """Crops `x` to the spatial size of `reference`, starting at `offset`.

    Called as `CropLike(offset)([x, reference])`; works with unknown
    (None) sizes on every backend.

    Example:

        >>> import numpy as np, zoo
        >>> y = zoo.layers.CropLike(offset=1)([np.zeros((1, 9, 9, 2)), np.zeros((1, 5, 6, 3))])
        >>> tuple(y.shape)
        (1, 5, 6, 2)
    """

    def __init__(self, offset: int = 0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.offset = offset

    def call(self, inputs):
        x, reference = inputs
        ref_shape = ops.shape(reference)
        h, w = ref_shape[1], ref_shape[2]
        o = self.offset
        return x[:, o : o + h, o : o + w, :]

    def compute_output_shape(self, input_shapes):
        x_shape, ref_shape = input_shapes
        return (x_shape[0], ref_shape[1], ref_shape[2], x_shape[3])

    def get_config(self):
        return {**super().get_config(), "offset": self.offset}


@keras.saving.register_keras_serializable(package="zoo")
class FitLike(layers.Layer):
    """Centre-crops `x`, or extends its edges, to the spatial size of `reference`.

    Called as `FitLike()([x, reference])`. FCN aligns its scores with it on
    backbones whose maps do not divide the input exactly (valid padding:
    InceptionV3, Inception-ResNet-v2 lose a border at every reduction, so a
    stride-8 map of a 96 px input is 9 wide, not 12). Such a map covers the
    centre of the image, so the upsampled scores are centred on the
    reference, and a side that falls short repeats its outermost row or
    column. Works with unknown (None) sizes on every backend.

    Example:

        >>> import numpy as np, zoo
        >>> x = np.arange(4.0).reshape(1, 2, 2, 1)
        >>> y = zoo.layers.FitLike()([x, np.zeros((1, 4, 1, 1))])
        >>> np.asarray(y)[0, :, :, 0].tolist()
        [[0.0], [0.0], [2.0], [2.0]]
    """

    def call(self, inputs):
        x, reference = inputs
        for axis in (1, 2):
            x = _fit_axis(x, ops.shape(reference)[axis], axis)
        return x

    def compute_output_shape(self, input_shapes):
        x_shape, ref_shape = input_shapes
        return (x_shape[0], ref_shape[1], ref_shape[2], x_shape[3])


def _fit_axis(x, size, axis):
    """`x` along `axis` (1 or 2) edge-extended, then centre-cropped, to `size`."""
    n = ops.shape(x)[axis]
    short = ops.maximum(size - n, 0)
    before = short // 2
    first, last = (x[:, :1], x[:, -1:]) if axis == 1 else (x[:, :, :1], x[:, :, -1:])
    x = ops.concatenate(
        [ops.repeat(first, before, axis=axis), x, ops.repeat(last, short - before, axis=axis)], axis=axis
    )
    start = (ops.shape(x)[axis] - size) // 2
    return x[:, start : start + size] if axis == 1 else x[:, :, start : start + size]


@keras.saving.register_keras_serializable(package="zoo")
class PadToMultiple(layers.Layer):
    """Zero-pads height and width at the bottom/right up to a multiple.

    FCN pads its input to a multiple of the backbone's stride, so every skip
    divides exactly and the upsampled scores cover the whole image; the
    output is cropped back to the input size.

    Args:
        multiple: int. Defaults to 32.

    Example:

        >>> import numpy as np, zoo
        >>> tuple(zoo.layers.PadToMultiple(32)(np.zeros((1, 33, 64, 3))).shape)
        (1, 64, 64, 3)
    """

    def __init__(self, multiple: int = 32, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.multiple = multiple

    def call(self, x):
        shape = ops.shape(x)
        m = self.multiple
        pad_h = (m - shape[1] % m) % m
        pad_w = (m - shape[2] % m) % m
        return ops.pad(x, [[0, 0], [0, pad_h], [0, pad_w], [0, 0]])

    def compute_output_shape(self, input_shape):
        def up(n):
            return None if n is None else -(-n // self.multiple) * self.multiple

        return (input_shape[0], up(input_shape[1]), up(input_shape[2]), input_shape[3])

    def get_config(self):
        return {**super().get_config(), "multiple": self.multiple}
