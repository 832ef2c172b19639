"""ResNet v1 and v2.

- v1: "Deep Residual Learning for Image Recognition", He et al. 2015,
  https://arxiv.org/abs/1512.03385. ResNet-18/34 use basic blocks in
  torchvision's layout (no conv biases); ResNet-50/101/152 use bottleneck
  blocks in keras.applications' layout (conv biases, stride on the 1x1) so
  keras.applications ImageNet files load unchanged.
- v2: "Identity Mappings in Deep Residual Networks", He et al. 2016,
  https://arxiv.org/abs/1603.05027, keras.applications layout (the stride
  sits on the last block of a stage).
"""

from __future__ import annotations

import functools

import keras
from keras import layers

from zoo import torchvision as tv
from zoo.layers import act_name, conv_bn
from zoo.registry import Body, Hooks, Stage, check_stage, register
from zoo.weights import keras_applications_sources, legacy_keras_files

# Table 1 of the v1 paper: blocks per stage (conv2_x .. conv5_x).
DEPTHS = {
    18: (2, 2, 2, 2),
    34: (3, 4, 6, 3),
    50: (3, 4, 6, 3),
    101: (3, 4, 23, 3),
    152: (3, 8, 36, 3),
}
STAGE_FILTERS = (64, 128, 256, 512)

# (with top, without top) md5 hashes of keras.applications' files.
_KERAS_HASHES = {
    "resnet50": ("2cb95161c43110f7111970584f804107", "4d473c1dd8becc155b73f8504c6f6626"),
    "resnet101": ("f1aeb4b969a6efcfb50fad2f0c20cfc5", "88cf7a10940856eca736dc7b7e228a21"),
    "resnet152": ("100835be76be38e30d865e96f2aaae62", "ee4c566cf9a93f14d82f913c2dc6dd0c"),
    "resnet50v2": ("3ef43a0b657b3be2300d5770ece849e0", "fac2f116257151a9d068a22e544a4917"),
    "resnet101v2": ("6343647c601c52e1368623803854d971", "c0ed64b8031c3730f411d2eb4eea35b5"),
    "resnet152v2": ("a49b44d1979771252814e80f8ec446f9", "ed17cf2e0169df9d443503ef94b23b33"),
}

# keras.applications' table: ImageNet top-1 (%) of each file, caffe/tf preprocessing.
_KERAS_TOP1 = {
    "resnet50": 74.9,
    "resnet101": 76.4,
    "resnet152": 76.6,
    "resnet50v2": 76.0,
    "resnet101v2": 77.2,
    "resnet152v2": 78.0,
}

# torchvision's IMAGENET1K_V1 files of the basic-block ResNets (acc@1).
_TORCHVISION = {
    "resnet18": {"imagenet": tv.source("resnet18-f37072fd.pth", 69.758)},
    "resnet34": {"imagenet": tv.source("resnet34-b627a593.pth", 73.314)},
}


PAPER_V1 = "He et al. 2015, Deep Residual Learning for Image Recognition, https://arxiv.org/abs/1512.03385"
PAPER_V2 = "He et al. 2016, Identity Mappings in Deep Residual Networks, https://arxiv.org/abs/1603.05027"


def _keras_sources(name: str) -> dict:
    return keras_applications_sources(
        *legacy_keras_files("resnet", name, _KERAS_HASHES[name]),
        preprocessing="tf" if name.endswith("v2") else "caffe",
        top1=_KERAS_TOP1[name],
        license="MIT (keras.applications)",
    )


def resnet_v1_stages(depths, *, bottleneck: bool, activation: str = "relu") -> tuple:
    """The stages of a ResNet v1, from Table 1 alone (no Keras needed).

    Example:

        >>> import zoo
        >>> [s.layer for s in zoo.models.resnet.resnet_v1_stages((2, 2, 2, 2), bottleneck=False)]
        ['conv1_relu', 'conv2_block2_out', 'conv3_block2_out', 'conv4_block2_out', 'conv5_block2_out']
    """
    expansion = 4 if bottleneck else 1
    stages = [Stage("stem", f"conv1_{act_name(activation)}", 2, 64)]
    for i, (filters, depth) in enumerate(zip(STAGE_FILTERS, depths)):
        stages.append(
            Stage(f"conv{i + 2}", f"conv{i + 2}_block{depth}_out", 2 ** (i + 2), filters * expansion)
        )
    return tuple(stages)


def resnet_v2_stages(depths, *, activation: str = "relu") -> tuple:
    """The stages of a ResNet v2: the normalised activation at each resolution.

    The stride-4/8/16 stages end at the pre-activation of the block that
    downsamples next (`conv2_block3_preact_relu`), stride 32 at `post_relu`.

    Example:

        >>> import zoo
        >>> [s.channels for s in zoo.models.resnet.resnet_v2_stages((3, 4, 6, 3))]
        [64, 256, 512, 1024, 2048]
    """
    act = act_name(activation)
    stages = [Stage("stem", "conv1_conv", 2, 64)]
    last = len(depths) - 1
    for i, (filters, depth) in enumerate(zip(STAGE_FILTERS, depths)):
        layer = f"conv{i + 2}_block{depth}_preact_{act}" if i < last else f"post_{act}"
        stages.append(Stage(f"conv{i + 2}", layer, 2 ** (i + 2), filters * 4))
    return tuple(stages)


# --------------------------------------------------------------------------
# Blocks
# --------------------------------------------------------------------------


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
        >>> zoo.models.resnet.basic_block(x, 128, strides=2, conv_shortcut=True,
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
        >>> zoo.models.resnet.bottleneck_block(x, 64, conv_shortcut=True,
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
        >>> zoo.models.resnet.preact_bottleneck_block(x, 64, conv_shortcut=True,
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


# --------------------------------------------------------------------------
# torchvision's names for the layers (rows for zoo.torchvision)
# --------------------------------------------------------------------------


def torchvision_rows(depths, *, bottleneck: bool = False) -> list:
    """Rows of a torchvision ResNet: basic blocks (resnet18/34) or bottlenecks (50/101/152).

    Example:

        >>> import zoo
        >>> zoo.models.resnet.torchvision_rows((2, 2, 2, 2))[:3]
        [('conv1', 'conv1_conv', 'conv'), ('bn1', 'conv1_bn', 'bn'), ('layer1.0.conv1', 'conv2_block1_1_conv', 'conv')]
    """
    rows = [("conv1", "conv1_conv", "conv"), ("bn1", "conv1_bn", "bn")]
    for s, depth in enumerate(depths, start=1):
        for b in range(depth):
            t, k = f"layer{s}.{b}", f"conv{s + 1}_block{b + 1}"
            for i in range(1, 4 if bottleneck else 3):
                rows += [(f"{t}.conv{i}", f"{k}_{i}_conv", "conv"), (f"{t}.bn{i}", f"{k}_{i}_bn", "bn")]
            # The first block of a stage projects its shortcut when the shape
            # changes: always with bottlenecks (64 -> 256), from stage 2 on otherwise.
            if b == 0 and (s > 1 or bottleneck):
                rows += [
                    (f"{t}.downsample.0", f"{k}_0_conv", "conv"),
                    (f"{t}.downsample.1", f"{k}_0_bn", "bn"),
                ]
    return rows + [("fc", "predictions", "linear")]


def resnet_v1(x, *, depths, bottleneck: bool, activation: str = "relu", layout: str = "keras") -> Body:
    """ResNet v1 body: stem, four stages of residual blocks.

    Args:
        x: KerasTensor. Preprocessed images.
        depths: tuple of 4 ints. Blocks per stage.
        bottleneck: bool. Bottleneck blocks (keras.applications layout) or
            basic blocks (torchvision layout).
        activation: str. Activation used throughout. Defaults to `"relu"`.
        layout: str. For bottleneck blocks: `"keras"` (keras.applications:
            conv biases, stride on the first 1x1, BN epsilon 1.001e-5) or
            `"torchvision"` (no biases, stride on the 3x3, epsilon 1e-5).
            Basic blocks are always torchvision's.
    """
    stages = resnet_v1_stages(depths, bottleneck=bottleneck, activation=activation)
    keras_layout = bottleneck and layout == "keras"
    eps = 1.001e-5 if keras_layout else 1e-5
    x = conv_bn(
        x,
        64,
        7,
        strides=2,
        padding="symmetric",
        use_bias=keras_layout,
        bn_epsilon=eps,
        activation=activation,
        name="conv1",
    )
    x = check_stage(x, stages[0])
    x = layers.ZeroPadding2D(1, name="pool1_pad")(x)
    x = layers.MaxPooling2D(3, strides=2, name="pool1_pool")(x)
    in_channels = 64
    for i, (filters, depth, declared) in enumerate(zip(STAGE_FILTERS, depths, stages[1:])):
        stage = declared.name
        for b in range(depth):
            strides = 2 if (b == 0 and i > 0) else 1
            name = f"{stage}_block{b + 1}"
            if bottleneck:
                x = bottleneck_block(
                    x,
                    filters,
                    strides=strides,
                    conv_shortcut=(b == 0),
                    activation=activation,
                    name=name,
                    use_bias=keras_layout,
                    bn_epsilon=eps,
                    stride_on="1x1" if keras_layout else "3x3",
                )
            else:
                x = basic_block(
                    x,
                    filters,
                    strides=strides,
                    conv_shortcut=(b == 0 and (strides > 1 or in_channels != filters)),
                    activation=activation,
                    name=name,
                )
        in_channels = filters * (4 if bottleneck else 1)
        x = check_stage(x, declared)
    return Body(x)


def resnet_v2(x, *, depths, activation: str = "relu") -> Body:
    """ResNet v2 (pre-activation) body, keras.applications layout.

    Stage outputs for features are the normalised activations at each
    resolution: the next block's `preact_relu` (strides 4, 8, 16) and
    `post_relu` (stride 32).
    """
    stages = resnet_v2_stages(depths, activation=activation)
    x = layers.ZeroPadding2D(3, name="conv1_pad")(x)
    x = check_stage(layers.Conv2D(64, 7, strides=2, name="conv1_conv")(x), stages[0])
    x = layers.ZeroPadding2D(1, name="pool1_pad")(x)
    x = layers.MaxPooling2D(3, strides=2, name="pool1_pool")(x)
    last = len(depths) - 1
    for i, (filters, depth, declared) in enumerate(zip(STAGE_FILTERS, depths, stages[1:])):
        for b in range(depth):
            strides = 2 if (b == depth - 1 and i < last) else 1
            # The last block of a stage downsamples (but the last stage's);
            # its pre-activation `declared.layer` ends the stage.
            x = preact_bottleneck_block(
                x,
                filters,
                strides=strides,
                conv_shortcut=(b == 0),
                activation=activation,
                name=f"{declared.name}_block{b + 1}",
            )
    x = layers.BatchNormalization(epsilon=1.001e-5, name="post_bn")(x)
    x = layers.Activation(activation, name=f"post_{act_name(activation)}")(x)
    return Body(check_stage(x, stages[-1]))


for _depth in (18, 34, 50, 101, 152):
    _name = f"resnet{_depth}"
    _bottleneck = _depth >= 50
    register(
        _name,
        family="resnet",
        paper=PAPER_V1,
        stages=resnet_v1_stages(DEPTHS[_depth], bottleneck=_bottleneck),
        stage_fn=functools.partial(resnet_v1_stages, DEPTHS[_depth], bottleneck=_bottleneck),
        preprocessing="caffe" if _bottleneck else "torch",
        weights=_keras_sources(_name) if _name in _KERAS_HASHES else _TORCHVISION[_name],
        hooks=Hooks()
        if _bottleneck
        else Hooks(
            state_dict_converter=functools.partial(
                tv.from_torchvision, rows=torchvision_rows(DEPTHS[_depth]), model_name=_name
            )
        ),
        description=(
            f"ResNet-{_depth} v1, "
            + (
                "bottleneck blocks, keras.applications layout"
                if _bottleneck
                else "basic blocks, torchvision layout"
            )
        ),
    )(functools.partial(resnet_v1, depths=DEPTHS[_depth], bottleneck=_bottleneck))

# torchvision's bottleneck ResNets ("v1.5"): IMAGENET1K_V2 (the better
# recipe, evaluated at resize 232) as 'imagenet', IMAGENET1K_V1 as 'imagenet_v1'.
_TORCHVISION_V15 = {
    50: {
        "imagenet": tv.source("resnet50-11ad3fa6.pth", 80.858, resize=232),
        "imagenet_v1": tv.source("resnet50-0676ba61.pth", 76.130),
    },
    101: {
        "imagenet": tv.source("resnet101-cd907fc2.pth", 81.886, resize=232),
        "imagenet_v1": tv.source("resnet101-63fe2227.pth", 77.374),
    },
    152: {
        "imagenet": tv.source("resnet152-f82ba261.pth", 82.284, resize=232),
        "imagenet_v1": tv.source("resnet152-394f9c45.pth", 78.312),
    },
}

for _depth in (50, 101, 152):
    _name = f"resnet{_depth}_tv"
    register(
        _name,
        family="resnet",
        paper=PAPER_V1,
        stages=resnet_v1_stages(DEPTHS[_depth], bottleneck=True),
        stage_fn=functools.partial(resnet_v1_stages, DEPTHS[_depth], bottleneck=True),
        weights=_TORCHVISION_V15[_depth],
        hooks=Hooks(
            state_dict_converter=functools.partial(
                tv.from_torchvision, rows=torchvision_rows(DEPTHS[_depth], bottleneck=True), model_name=_name
            )
        ),
        description=f"ResNet-{_depth} v1.5, torchvision layout (stride on the 3x3, no conv biases)",
    )(functools.partial(resnet_v1, depths=DEPTHS[_depth], bottleneck=True, layout="torchvision"))

for _depth in (50, 101, 152):
    _name = f"resnet{_depth}v2"
    register(
        _name,
        family="resnet_v2",
        paper=PAPER_V2,
        stages=resnet_v2_stages(DEPTHS[_depth]),
        stage_fn=functools.partial(resnet_v2_stages, DEPTHS[_depth]),
        weights=_keras_sources(_name),
        description=f"ResNet-{_depth} v2 (pre-activation), keras.applications layout",
    )(functools.partial(resnet_v2, depths=DEPTHS[_depth]))
