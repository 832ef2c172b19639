"""Building blocks shared by the zoo's families (and by `surgery`, `tuning`).

Blocks are plain functions `x -> x` that create layers with stable, readable
names (Keras' scheme: `conv{stage}_block{i}_{j}_{op}`, every block ends in a
`_out` layer), so users can `model.get_layer(...)` and `surgery.cut` at them.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import layers, ops

# Per-channel constants of the three ImageNet normalisations, as `x * scale +
# offset` on RGB 0-255 input (after an RGB->BGR flip for "caffe").
_CAFFE_MEAN_BGR = np.array([103.939, 116.779, 123.68])
_TORCH_MEAN = np.array([0.485, 0.456, 0.406])
_TORCH_STD = np.array([0.229, 0.224, 0.225])
PREPROCESSING_MODES = ("caffe", "torch", "tf")


def _scale_offset(mode: str):
    if mode == "caffe":
        return np.ones(3), -_CAFFE_MEAN_BGR
    if mode == "torch":
        return 1.0 / (255.0 * _TORCH_STD), -_TORCH_MEAN / _TORCH_STD
    if mode == "tf":
        return np.full(3, 1 / 127.5), np.full(3, -1.0)
    raise ValueError(
        f"`mode` must be one of {PREPROCESSING_MODES}. Received: mode={mode!r}"
    )


@keras.saving.register_keras_serializable(package="zoo")
class ImageNormalization(layers.Layer):
    """Turns raw RGB images (uint8 or float, 0-255) into a family's input.

    Modes follow `keras.applications.imagenet_utils.preprocess_input`:
    `"caffe"` (RGB->BGR, minus the ImageNet mean; VGG, ResNet v1),
    `"torch"` (0-1, minus mean, over std; torchvision-trained models),
    `"tf"` (-1..1; ResNet v2).

    Args:
        mode: str. One of `"caffe"`, `"torch"`, `"tf"`.

    Example:

    >>> import keras, numpy as np, zoo
    >>> layer = zoo.layers.ImageNormalization("tf")
    >>> keras.ops.convert_to_numpy(layer(np.full((1, 2, 2, 3), 255, "uint8")))[0, 0, 0]
    array([1., 1., 1.], dtype=float32)
    """

    def __init__(self, mode: str = "caffe", **kwargs):
        super().__init__(**kwargs)
        scale, offset = _scale_offset(mode)
        self.mode = mode
        self._scale = scale.astype("float32")
        self._offset = offset.astype("float32")

    def call(self, x):
        x = ops.cast(x, self.compute_dtype)
        if self.mode == "caffe":
            x = ops.flip(x, axis=-1)
        scale = ops.cast(self._scale, self.compute_dtype)
        offset = ops.cast(self._offset, self.compute_dtype)
        return x * scale + offset

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "mode": self.mode}


def conv_bn(
    x,
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
):
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
        x = layers.Activation(activation, name=f"{name}_{_act_name(activation)}")(x)
    return x


def _act_name(activation) -> str:
    return activation if isinstance(activation, str) else getattr(activation, "__name__", "act")


def basic_block(
    x,
    filters: int,
    *,
    name: str,
    strides: int = 1,
    conv_shortcut: bool = False,
    bn_epsilon: float = 1e-5,
    activation: str = "relu",
):
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
            x, filters, 1, strides=strides, bn_epsilon=bn_epsilon,
            activation=None, name=f"{name}_0",
        )
    else:
        shortcut = x
    y = conv_bn(
        x, filters, 3, strides=strides, padding="symmetric",
        bn_epsilon=bn_epsilon, activation=activation, name=f"{name}_1",
    )
    y = conv_bn(
        y, filters, 3, padding="symmetric", bn_epsilon=bn_epsilon,
        activation=None, name=f"{name}_2",
    )
    y = layers.Add(name=f"{name}_add")([shortcut, y])
    return layers.Activation(activation, name=f"{name}_out")(y)


def bottleneck_block(
    x,
    filters: int,
    *,
    name: str,
    strides: int = 1,
    conv_shortcut: bool = False,
    use_bias: bool = True,
    bn_epsilon: float = 1.001e-5,
    activation: str = "relu",
    expansion: int = 4,
):
    """ResNet v1 bottleneck block (1x1, 3x3, 1x1), keras.applications layout.

    The stride sits on the first 1x1 convolution, as in keras.applications
    (and Caffe's original ResNet), so its ImageNet weights load unchanged.

    Example:

    >>> import keras, zoo
    >>> x = keras.Input((16, 16, 64))
    >>> zoo.layers.bottleneck_block(x, 64, conv_shortcut=True,
    ...                             name="conv2_block1").shape
    (None, 16, 16, 256)
    """
    if conv_shortcut:
        shortcut = conv_bn(
            x, expansion * filters, 1, strides=strides, use_bias=use_bias,
            bn_epsilon=bn_epsilon, activation=None, name=f"{name}_0",
        )
    else:
        shortcut = x
    common = dict(use_bias=use_bias, bn_epsilon=bn_epsilon)
    y = conv_bn(x, filters, 1, strides=strides, activation=activation, name=f"{name}_1", **common)
    y = conv_bn(y, filters, 3, activation=activation, name=f"{name}_2", **common)
    y = conv_bn(y, expansion * filters, 1, activation=None, name=f"{name}_3", **common)
    y = layers.Add(name=f"{name}_add")([shortcut, y])
    return layers.Activation(activation, name=f"{name}_out")(y)


def preact_bottleneck_block(
    x,
    filters: int,
    *,
    name: str,
    strides: int = 1,
    conv_shortcut: bool = False,
    bn_epsilon: float = 1.001e-5,
    activation: str = "relu",
    expansion: int = 4,
):
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
    preact = layers.Activation(activation, name=f"{name}_preact_{_act_name(activation)}")(preact)
    if conv_shortcut:
        shortcut = layers.Conv2D(
            expansion * filters, 1, strides=strides, name=f"{name}_0_conv"
        )(preact)
    elif strides > 1:
        shortcut = layers.MaxPooling2D(1, strides=strides, name=f"{name}_0_pool")(x)
    else:
        shortcut = x
    y = conv_bn(preact, filters, 1, bn_epsilon=bn_epsilon, activation=activation, name=f"{name}_1")
    y = conv_bn(
        y, filters, 3, strides=strides, padding="symmetric",
        bn_epsilon=bn_epsilon, activation=activation, name=f"{name}_2",
    )
    y = layers.Conv2D(expansion * filters, 1, name=f"{name}_3_conv")(y)
    return layers.Add(name=f"{name}_out")([shortcut, y])
