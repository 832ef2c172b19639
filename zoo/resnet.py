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
from zoo.registry import Body, Stage, register
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

PAPER_V1 = "He et al. 2015, Deep Residual Learning for Image Recognition, https://arxiv.org/abs/1512.03385"
PAPER_V2 = "He et al. 2016, Identity Mappings in Deep Residual Networks, https://arxiv.org/abs/1603.05027"


def _keras_sources(name: str) -> dict:
    top_hash, notop_hash = _KERAS_HASHES[name]
    top = f"{name}_weights_tf_dim_ordering_tf_kernels.h5"
    notop = f"{name}_weights_tf_dim_ordering_tf_kernels_notop.h5"
    return {
        "imagenet": WeightSource(_BASE_URL + top, top, top_hash, include_top=True),
        "imagenet_notop": WeightSource(_BASE_URL + notop, notop, notop_hash, include_top=False),
    }


def resnet_v1(x, *, depths, bottleneck: bool, activation: str = "relu") -> Body:
    """ResNet v1 body: stem, four stages of residual blocks.

    Args:
        x: KerasTensor. Preprocessed images.
        depths: tuple of 4 ints. Blocks per stage.
        bottleneck: bool. Bottleneck blocks (keras.applications layout) or
            basic blocks (torchvision layout).
        activation: str. Activation used throughout. Defaults to `"relu"`.
    """
    eps = 1.001e-5 if bottleneck else 1e-5
    x = blocks.conv_bn(
        x, 64, 7, strides=2, padding="symmetric", use_bias=bottleneck,
        bn_epsilon=eps, activation=activation, name="conv1",
    )
    stages = [Stage("stem", f"conv1_{activation}", 2)]
    x = layers.ZeroPadding2D(1, name="pool1_pad")(x)
    x = layers.MaxPooling2D(3, strides=2, name="pool1_pool")(x)
    in_channels = 64
    for i, (filters, depth) in enumerate(zip(STAGE_FILTERS, depths)):
        stage = f"conv{i + 2}"
        for b in range(depth):
            strides = 2 if (b == 0 and i > 0) else 1
            name = f"{stage}_block{b + 1}"
            if bottleneck:
                x = blocks.bottleneck_block(
                    x, filters, strides=strides, conv_shortcut=(b == 0),
                    activation=activation, name=name,
                )
            else:
                x = blocks.basic_block(
                    x, filters, strides=strides,
                    conv_shortcut=(b == 0 and (strides > 1 or in_channels != filters)),
                    activation=activation, name=name,
                )
        in_channels = filters * (4 if bottleneck else 1)
        stages.append(Stage(stage, f"{stage}_block{depth}_out", 2 ** (i + 2)))
    return Body(x, tuple(stages))


def resnet_v2(x, *, depths, activation: str = "relu") -> Body:
    """ResNet v2 (pre-activation) body, keras.applications layout.

    Stage outputs for features are the normalised activations at each
    resolution: the next block's `preact_relu` (strides 4, 8, 16) and
    `post_relu` (stride 32).
    """
    x = layers.ZeroPadding2D(3, name="conv1_pad")(x)
    x = layers.Conv2D(64, 7, strides=2, name="conv1_conv")(x)
    stages = [Stage("stem", "conv1_conv", 2)]
    x = layers.ZeroPadding2D(1, name="pool1_pad")(x)
    x = layers.MaxPooling2D(3, strides=2, name="pool1_pool")(x)
    last = len(depths) - 1
    for i, (filters, depth) in enumerate(zip(STAGE_FILTERS, depths)):
        stage = f"conv{i + 2}"
        for b in range(depth):
            strides = 2 if (b == depth - 1 and i < last) else 1
            x = blocks.preact_bottleneck_block(
                x, filters, strides=strides, conv_shortcut=(b == 0),
                activation=activation, name=f"{stage}_block{b + 1}",
            )
        if i < last:
            # Block `depth` of this stage downsamples; its pre-activation is
            # the last feature map at this stage's resolution.
            stages.append(Stage(stage, f"{stage}_block{depth}_preact_{activation}", 2 ** (i + 2)))
    x = layers.BatchNormalization(epsilon=1.001e-5, name="post_bn")(x)
    x = layers.Activation(activation, name=f"post_{activation}")(x)
    stages.append(Stage(f"conv{last + 2}", f"post_{activation}", 2 ** (last + 2)))
    return Body(x, tuple(stages))


for _depth in (18, 34, 50, 101, 152):
    _name = f"resnet{_depth}"
    _bottleneck = _depth >= 50
    register(
        _name,
        family="resnet",
        paper=PAPER_V1,
        preprocessing="caffe" if _bottleneck else "torch",
        weights=_keras_sources(_name) if _name in _KERAS_HASHES else None,
        description=(
            f"ResNet-{_depth} v1, "
            + ("bottleneck blocks, keras.applications layout" if _bottleneck
               else "basic blocks, torchvision layout")
        ),
    )(functools.partial(resnet_v1, depths=DEPTHS[_depth], bottleneck=_bottleneck))

for _depth in (50, 101, 152):
    _name = f"resnet{_depth}v2"
    register(
        _name,
        family="resnet_v2",
        paper=PAPER_V2,
        preprocessing="tf",
        weights=_keras_sources(_name),
        description=f"ResNet-{_depth} v2 (pre-activation), keras.applications layout",
    )(functools.partial(resnet_v2, depths=DEPTHS[_depth]))
