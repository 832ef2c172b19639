"""GoogLeNet (Inception v1): "Going Deeper with Convolutions", Szegedy et al.
2014, https://arxiv.org/abs/1409.4842.

Two layouts of the same Table 1:

- `googlenet`: torchvision's (BatchNorm after every convolution, no conv
  biases, a 3x3 convolution in the "5x5" branch, 2x2 max pool before 5a).
  It loads torchvision's ImageNet state dict through `from_torchvision`.
- `googlenet_paper`: the 2014 topology as published (5x5 branch, conv
  biases, no BatchNorm, local response normalisation after the stem pool and
  after conv3, 3x3/2 pool before 5a, dropout 0.4).

`zoo.build("googlenet", aux_logits=True)` adds the two auxiliary classifiers
after 4a and 4d and returns an `AuxiliaryClassifierModel`: named outputs
`main`, `aux1`, `aux2`, trained from one label with loss
main + 0.3 * (aux1 + aux2). `strip_auxiliary` gives the inference model.
"""

from __future__ import annotations

import functools
from typing import Any

import keras
from keras import layers, ops

from zoo import torchvision as tv
from zoo.layers import act_name, apply, classifier_head, conv_bn
from zoo.registry import Body, Hooks, Stage, check_stage, register
from zoo.weights import WeightSource

PAPER = "Szegedy et al. 2014, Going Deeper with Convolutions, https://arxiv.org/abs/1409.4842"

# Table 1: #1x1, #3x3 reduce, #3x3, #5x5 reduce, #5x5, pool proj.
INCEPTION = {
    "3a": (64, 96, 128, 16, 32, 32),
    "3b": (128, 128, 192, 32, 96, 64),
    "4a": (192, 96, 208, 16, 48, 64),
    "4b": (160, 112, 224, 24, 64, 64),
    "4c": (128, 128, 256, 24, 64, 64),
    "4d": (112, 144, 288, 32, 64, 64),
    "4e": (256, 160, 320, 32, 128, 128),
    "5a": (256, 160, 320, 32, 128, 128),
    "5b": (384, 192, 384, 48, 128, 128),
}
_FIELDS = (
    "filters_1x1",
    "filters_3x3_reduce",
    "filters_3x3",
    "filters_5x5_reduce",
    "filters_5x5",
    "filters_pool_proj",
)
# Between groups: (the stage that ends, the pool that follows it).
_POOL_BEFORE = {"4a": ("inception3", "pool3"), "5a": ("inception4", "pool4")}
AUX_AFTER = ("4a", "4d")  # the auxiliary classifiers tap these modules

TORCHVISION_WEIGHTS = {
    # torchvision's GoogLeNet_Weights.IMAGENET1K_V1 (ported from TensorFlow);
    # the hash is the sha256 prefix torchvision puts in the file name.
    "imagenet": WeightSource(
        "https://download.pytorch.org/models/googlenet-1378be20.pth",
        "googlenet-1378be20.pth",
        "1378be20",
        include_top=True,
        origin="torchvision",
        # transform_input=True: the model re-maps mean/std input to (x - 0.5) / 0.5.
        preprocessing="tf",
        top1=69.778,
        license="BSD-3-Clause (torchvision)",
    ),
}


def googlenet_stages(*, layout: str = "torchvision", activation: str = "relu") -> tuple:
    """GoogLeNet's stages from Table 1: stem, conv3, the three inception groups.

    Example:

        >>> import zoo
        >>> [s.channels for s in zoo.models.googlenet.googlenet_stages()]
        [64, 192, 480, 832, 1024]
    """
    act = act_name(activation)

    def width(block):  # 1x1 + 3x3 + 5x5 + pool projection
        f = dict(zip(_FIELDS, INCEPTION[block]))
        return f["filters_1x1"] + f["filters_3x3"] + f["filters_5x5"] + f["filters_pool_proj"]

    return (
        Stage("stem", f"conv1_{act}", 2, 64),
        Stage("conv3", "conv3_lrn" if layout == "paper" else f"conv3_{act}", 4, 192),
        Stage("inception3", "inception3b_out", 8, width("3b")),
        Stage("inception4", "inception4e_out", 16, width("4e")),
        Stage("inception5", "inception5b_out", 32, width("5b")),
    )


# --------------------------------------------------------------------------
# Blocks
# --------------------------------------------------------------------------


def max_pool_ceil(x: keras.KerasTensor, pool_size: int, strides: int, *, name: str) -> keras.KerasTensor:
    """Max pooling with PyTorch/Caffe `ceil_mode=True` output sizes.

    Pads `strides - 1` zeros at the bottom/right, then pools "valid": the
    output has `ceil((n - pool_size) / strides) + 1` rows, as Caffe's
    GoogLeNet and torchvision's do. Zero padding equals PyTorch's (ignored)
    padding here because the blocks feed it non-negative (post-ReLU) maps.

    Example:

        >>> import keras, zoo
        >>> x = keras.Input((57, 57, 8))
        >>> zoo.models.googlenet.max_pool_ceil(x, 3, 2, name="pool").shape
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
        >>> zoo.models.googlenet.inception_module(
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
        >>> y = zoo.models.googlenet.LocalResponseNormalization(size=3, alpha=3.0, beta=1.0)(
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


def googlenet(x, *, layout: str = "torchvision", aux_logits: bool = False, activation: str = "relu") -> Body:
    """GoogLeNet body: stem, inception 3a-5b with pools between groups.

    Args:
        x: KerasTensor. Preprocessed images.
        layout: str. `"torchvision"` (BN layout) or `"paper"` (2014).
        aux_logits: bool. Expose the 4a and 4d outputs for the auxiliary
            classifiers (`Body.aux`). Defaults to `False`.
        activation: str. Defaults to `"relu"`.
    """
    paper = layout == "paper"
    stages = dict((s.name, s) for s in googlenet_stages(layout=layout, activation=activation))
    conv = dict(batch_norm=not paper, use_bias=paper, bn_epsilon=1e-3, activation=activation)
    x = conv_bn(x, 64, 7, strides=2, padding="symmetric", name="conv1", **conv)
    x = check_stage(x, stages["stem"])
    x = max_pool_ceil(x, 3, 2, name="pool1")
    if paper:
        x = LocalResponseNormalization(name="pool1_lrn")(x)
    x = conv_bn(x, 64, 1, name="conv2", **conv)
    x = conv_bn(x, 192, 3, name="conv3", **conv)
    if paper:
        x = LocalResponseNormalization(name="conv3_lrn")(x)
    x = check_stage(x, stages["conv3"])
    x = max_pool_ceil(x, 3, 2, name="pool2")
    aux = []
    for block, filters in INCEPTION.items():
        if block in _POOL_BEFORE:
            stage, pool = _POOL_BEFORE[block]
            x = check_stage(x, stages[stage])
            # torchvision pools 2x2 before 5a where the paper pools 3x3.
            size = 2 if (block == "5a" and not paper) else 3
            x = max_pool_ceil(x, size, 2, name=pool)
        x = inception_module(
            x,
            **dict(zip(_FIELDS, filters)),
            name=f"inception{block}",
            batch_norm=not paper,
            kernel_5x5=5 if paper else 3,
            activation=activation,
        )
        if aux_logits and block in AUX_AFTER:
            aux.append(x)
    return Body(check_stage(x, stages["inception5"]), aux=tuple(aux))


def googlenet_top(x, *, num_classes, classifier_activation, dropout: float = 0.2):
    """Main classifier: global average pool, dropout, one Dense layer."""
    head = classifier_head(num_classes, pooling="avg", dropout=dropout, activation=classifier_activation)
    return apply(head, x)


def googlenet_aux_top(x, *, num_classes, classifier_activation, name: str, layout: str = "torchvision"):
    """Auxiliary classifier: pool to 4x4, 1x1 conv 128, FC 1024, dropout 0.7, FC.

    The paper pools 5x5/3 (4x4 at 224x224 input); torchvision pools
    adaptively to 4x4, which fits any input size.
    """
    if layout == "paper":
        x = layers.AveragePooling2D(5, strides=3, name=f"{name}_pool")(x)
        x = conv_bn(x, 128, 1, batch_norm=False, use_bias=True, name=name)
    else:
        x = layers.AdaptiveAveragePooling2D((4, 4), name=f"{name}_pool")(x)
        x = conv_bn(x, 128, 1, bn_epsilon=1e-3, name=name)
    head = classifier_head(
        num_classes,
        pooling="flatten",
        hidden_units=(1024,),
        dropout=0.7,
        activation=classifier_activation,
        prefix=f"{name}_",
    )
    return apply(head, x)


# --------------------------------------------------------------------------
# torchvision weights
# --------------------------------------------------------------------------


def torchvision_rows() -> list:
    """GoogLeNet's torchvision mapping as `zoo.torchvision` rows (aux heads included).

    BasicConv2d `m` (conv without bias + BN) -> `<layer>_conv`/`<layer>_bn`;
    the auxiliary `fc1` reads a (128, 4, 4) map flattened CHW by torch.

    Example:

        >>> import zoo
        >>> zoo.models.googlenet.torchvision_rows()[:2]
        [('conv1.conv', 'conv1_conv', 'conv'), ('conv1.bn', 'conv1_bn', 'bn')]
    """
    convs = [("conv1", "conv1"), ("conv2", "conv2"), ("conv3", "conv3")]
    branches = (
        ("branch1", "1x1"),
        ("branch2.0", "3x3_reduce"),
        ("branch2.1", "3x3"),
        ("branch3.0", "5x5_reduce"),
        ("branch3.1", "5x5"),
        ("branch4.1", "pool_proj"),
    )
    for block in INCEPTION:
        convs += [(f"inception{block}.{t}", f"inception{block}_{k}") for t, k in branches]
    convs += [(f"aux{i}.conv", f"aux{i}") for i in (1, 2)]
    rows = []
    for t, k in convs:
        rows += [(f"{t}.conv", f"{k}_conv", "conv"), (f"{t}.bn", f"{k}_bn", "bn")]
    for i in (1, 2):
        rows += [
            (f"aux{i}.fc1", f"aux{i}_fc1", ("linear_chw", 128, 4, 4)),
            (f"aux{i}.fc2", f"aux{i}_predictions", "linear"),
        ]
    return rows + [("fc", "predictions", "linear")]


def from_torchvision(state_dict) -> dict:
    """Convert a torchvision GoogLeNet state dict to zoo weights.

    The mapping (`torchvision_rows`, shared with `to_torchvision`):
    `conv1` -> `conv1_conv`/`conv1_bn`; `inception4b.branch2.1` ->
    `inception4b_3x3_conv`/`_bn` (branch1 -> `_1x1`, branch2.0 ->
    `_3x3_reduce`, branch3.0/3.1 -> `_5x5_reduce`/`_5x5`, branch4.1 ->
    `_pool_proj`); `aux1.conv/fc1/fc2` -> `aux1_conv`, `aux1_fc1`,
    `aux1_predictions`; `fc` -> `predictions`.

    Args:
        state_dict: mapping of torch parameter names to arrays (numpy or
            torch tensors), e.g. `torch.load("googlenet.pth", weights_only=True)`.

    Returns:
        A dict `{"<layer>/<index>": array}` that `zoo.build(weights=...)`,
        `zoo.weights.load_weights` and `surgery.restore` accept.

    Example:

        >>> import zoo
        >>> m = zoo.build("googlenet", num_classes=10, input_shape=(64, 64, 3))
        >>> sd = zoo.models.googlenet.to_torchvision(m)
        >>> zoo.weights.load_weights(m, zoo.models.googlenet.from_torchvision(sd)).ok
        True
    """

    return tv.from_torchvision(state_dict, torchvision_rows(), model_name="GoogLeNet")


def to_torchvision(model: keras.Model) -> dict:
    """The inverse of `from_torchvision`: a zoo GoogLeNet as a torchvision state dict.

    Returns numpy arrays keyed like `torchvision.models.googlenet().state_dict()`
    (`num_batches_tracked` included); auxiliary heads are included when the
    model has them. A model built with `aux_logits=True` loads into
    `torchvision.models.googlenet(aux_logits=True, init_weights=False)` with
    `load_state_dict({k: torch.from_numpy(v) ...}, strict=True)`.

    Example:

        >>> import zoo
        >>> m = zoo.build("googlenet", num_classes=10, input_shape=(64, 64, 3))
        >>> sd = zoo.models.googlenet.to_torchvision(m)
        >>> sd["conv1.conv.weight"].shape, sd["fc.weight"].shape
        ((64, 3, 7, 7), (10, 1024))
    """

    return tv.to_torchvision(model, torchvision_rows())


register(
    "googlenet",
    family="googlenet",
    paper=PAPER,
    stages=googlenet_stages(),
    stage_fn=googlenet_stages,
    weights=TORCHVISION_WEIGHTS,
    hooks=Hooks(
        top=googlenet_top, aux_top=googlenet_aux_top, state_dict_converter=lambda sd: from_torchvision(sd)
    ),
    description="GoogLeNet (Inception v1), BatchNorm layout of torchvision",
)(functools.partial(googlenet, layout="torchvision"))

register(
    "googlenet_paper",
    family="googlenet",
    paper=PAPER,
    stages=googlenet_stages(layout="paper"),
    stage_fn=functools.partial(googlenet_stages, layout="paper"),
    preprocessing="caffe",
    hooks=Hooks(
        top=functools.partial(googlenet_top, dropout=0.4),
        aux_top=functools.partial(googlenet_aux_top, layout="paper"),
        aux_needs_fixed_size=True,
    ),
    description="GoogLeNet (Inception v1) as published in 2014: 5x5 branches, LRN, no BatchNorm",
)(functools.partial(googlenet, layout="paper"))
