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

from keras import layers

from zoo import layers as blocks
from zoo import torchvision as tv
from zoo.registry import Body, Stage, check_stage, register
from zoo.weights import WeightSource

# Table 1 of the v1 paper: blocks per stage (conv2_x .. conv5_x).
DEPTHS = {
    18: (2, 2, 2, 2),
    34: (3, 4, 6, 3),
    50: (3, 4, 6, 3),
    101: (3, 4, 23, 3),
    152: (3, 8, 36, 3),
}
STAGE_FILTERS = (64, 128, 256, 512)

_BASE_URL = "https://storage.googleapis.com/tensorflow/keras-applications/resnet/"
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
    top_hash, notop_hash = _KERAS_HASHES[name]
    top = f"{name}_weights_tf_dim_ordering_tf_kernels.h5"
    notop = f"{name}_weights_tf_dim_ordering_tf_kernels_notop.h5"
    meta = dict(
        preprocessing="tf" if name.endswith("v2") else "caffe",
        top1=_KERAS_TOP1[name],
        license="MIT (keras.applications)",
    )
    return {
        "imagenet": WeightSource(_BASE_URL + top, top, top_hash, include_top=True, **meta),
        "imagenet_notop": WeightSource(_BASE_URL + notop, notop, notop_hash, include_top=False, **meta),
    }


def resnet_v1_stages(depths, *, bottleneck: bool, activation: str = "relu") -> tuple:
    """The stages of a ResNet v1, from Table 1 alone (no Keras needed).

    Example:

        >>> import zoo
        >>> [s.layer for s in zoo.resnet.resnet_v1_stages((2, 2, 2, 2), bottleneck=False)]
        ['conv1_relu', 'conv2_block2_out', 'conv3_block2_out', 'conv4_block2_out', 'conv5_block2_out']
    """
    expansion = 4 if bottleneck else 1
    stages = [Stage("stem", f"conv1_{blocks.act_name(activation)}", 2, 64)]
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
        >>> [s.channels for s in zoo.resnet.resnet_v2_stages((3, 4, 6, 3))]
        [64, 256, 512, 1024, 2048]
    """
    act = blocks.act_name(activation)
    stages = [Stage("stem", "conv1_conv", 2, 64)]
    last = len(depths) - 1
    for i, (filters, depth) in enumerate(zip(STAGE_FILTERS, depths)):
        layer = f"conv{i + 2}_block{depth}_preact_{act}" if i < last else f"post_{act}"
        stages.append(Stage(f"conv{i + 2}", layer, 2 ** (i + 2), filters * 4))
    return tuple(stages)


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
    x = blocks.conv_bn(
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
                x = blocks.bottleneck_block(
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
                x = blocks.basic_block(
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
            x = blocks.preact_bottleneck_block(
                x,
                filters,
                strides=strides,
                conv_shortcut=(b == 0),
                activation=activation,
                name=f"{declared.name}_block{b + 1}",
            )
    x = layers.BatchNormalization(epsilon=1.001e-5, name="post_bn")(x)
    x = layers.Activation(activation, name=f"post_{blocks.act_name(activation)}")(x)
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
        state_dict_converter=None
        if _bottleneck
        else functools.partial(tv.from_torchvision, rows=tv.resnet_rows(DEPTHS[_depth]), model_name=_name),
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
        state_dict_converter=functools.partial(
            tv.from_torchvision, rows=tv.resnet_rows(DEPTHS[_depth], bottleneck=True), model_name=_name
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
