"""VGG: "Very Deep Convolutional Networks for Large-Scale Image Recognition",
Simonyan & Zisserman 2014, https://arxiv.org/abs/1409.1556.

Configurations A, B, D, E of the paper's Table 1 are VGG11/13/16/19. Layer
names follow keras.applications (`block{b}_conv{i}`, `block{b}_pool`, `fc1`,
`fc2`, `predictions`), so its ImageNet files load unchanged. `_bn` variants
add BatchNorm after every convolution (torchvision's layout).
"""

from __future__ import annotations

import functools

from keras import layers

from zoo.registry import Body, Stage, output_dtype, register
from zoo.weights import WeightSource

# Table 1: convolutions per block (all 3x3); channels double per block to 512.
CONFIGS = {
    "vgg11": (1, 1, 2, 2, 2),  # A
    "vgg13": (2, 2, 2, 2, 2),  # B
    "vgg16": (2, 2, 3, 3, 3),  # D
    "vgg19": (2, 2, 4, 4, 4),  # E
}
BLOCK_FILTERS = (64, 128, 256, 512, 512)
PAPER = "Simonyan & Zisserman 2014, Very Deep Convolutional Networks for Large-Scale Image Recognition, https://arxiv.org/abs/1409.1556"

_URL = "https://storage.googleapis.com/tensorflow/keras-applications/"
_KERAS_HASHES = {
    "vgg16": ("64373286793e3c8b2b4e3219cbf3544b", "6d6bbae143d832006294945121d1f1fc"),
    "vgg19": ("cbe5617147190e668d6c5d5026f83318", "253f8cb515780f3b799900260a226db6"),
}


def _keras_sources(name: str) -> dict:
    top_hash, notop_hash = _KERAS_HASHES[name]
    top = f"{name}_weights_tf_dim_ordering_tf_kernels.h5"
    notop = f"{name}_weights_tf_dim_ordering_tf_kernels_notop.h5"
    return {
        "imagenet": WeightSource(f"{_URL}{name}/{top}", top, top_hash, include_top=True),
        "imagenet_notop": WeightSource(f"{_URL}{name}/{notop}", notop, notop_hash, include_top=False),
    }


def vgg(x, *, convs_per_block, batch_norm: bool, activation: str = "relu") -> Body:
    """VGG body: five blocks of 3x3 convolutions, each ending in a 2x2 pool."""
    stages = []
    for b, (n, filters) in enumerate(zip(convs_per_block, BLOCK_FILTERS), start=1):
        for i in range(1, n + 1):
            name = f"block{b}_conv{i}"
            if batch_norm:
                x = layers.Conv2D(filters, 3, padding="same", name=name)(x)
                x = layers.BatchNormalization(epsilon=1e-5, name=f"{name}_bn")(x)
                x = layers.Activation(activation, name=f"{name}_{activation}")(x)
            else:
                x = layers.Conv2D(filters, 3, padding="same", activation=activation, name=name)(x)
        x = layers.MaxPooling2D(2, strides=2, name=f"block{b}_pool")(x)
        stages.append(Stage(f"block{b}", f"block{b}_pool", 2**b))
    return Body(x, tuple(stages))


def vgg_top(x, *, num_classes, classifier_activation):
    """VGG's classifier: Flatten, two 4096-unit layers, the predictions."""
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(4096, activation="relu", name="fc1")(x)
    x = layers.Dense(4096, activation="relu", name="fc2")(x)
    return layers.Dense(num_classes, activation=classifier_activation, name="predictions",
                        dtype=output_dtype())(x)


for _name, _convs in CONFIGS.items():
    for _bn in (False, True):
        _full = _name + ("_bn" if _bn else "")
        register(
            _full,
            family="vgg",
            paper=PAPER,
            top=vgg_top,
            fixed_size_top=True,
            preprocessing="caffe" if _name in _KERAS_HASHES and not _bn else "torch",
            weights=_keras_sources(_name) if (_name in _KERAS_HASHES and not _bn) else None,
            description=f"VGG-{_name[3:]} (config {'ABDE'[list(CONFIGS).index(_name)]})"
            + (" with BatchNorm" if _bn else ""),
        )(functools.partial(vgg, convs_per_block=_convs, batch_norm=_bn))
