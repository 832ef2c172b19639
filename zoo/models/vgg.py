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

from zoo import torchvision as tv
from zoo.layers import apply, classifier_head
from zoo.registry import Body, Hooks, Stage, check_stage, register
from zoo.weights import keras_applications_sources, legacy_keras_files

# Table 1: convolutions per block (all 3x3); channels double per block to 512.
CONFIGS = {
    "vgg11": (1, 1, 2, 2, 2),  # A
    "vgg13": (2, 2, 2, 2, 2),  # B
    "vgg16": (2, 2, 3, 3, 3),  # D
    "vgg19": (2, 2, 4, 4, 4),  # E
}
BLOCK_FILTERS = (64, 128, 256, 512, 512)
PAPER = "Simonyan & Zisserman 2014, Very Deep Convolutional Networks for Large-Scale Image Recognition, https://arxiv.org/abs/1409.1556"

_KERAS_HASHES = {
    "vgg16": ("64373286793e3c8b2b4e3219cbf3544b", "6d6bbae143d832006294945121d1f1fc"),
    "vgg19": ("cbe5617147190e668d6c5d5026f83318", "253f8cb515780f3b799900260a226db6"),
}


# torchvision's IMAGENET1K_V1 files and their acc@1.
_TORCHVISION = {
    "vgg11": ("vgg11-8a719046.pth", 69.020),
    "vgg13": ("vgg13-19584684.pth", 69.928),
    "vgg16": ("vgg16-397923af.pth", 71.592),
    "vgg19": ("vgg19-dcbb9e9d.pth", 72.376),
    "vgg11_bn": ("vgg11_bn-6002323d.pth", 70.370),
    "vgg13_bn": ("vgg13_bn-abd245e5.pth", 71.586),
    "vgg16_bn": ("vgg16_bn-6c64b313.pth", 73.360),
    "vgg19_bn": ("vgg19_bn-c79401a0.pth", 74.218),
}


def _sources(name: str) -> dict:
    """keras.applications' files (caffe) where they exist, and torchvision's (torch)."""
    torchvision = tv.source(*_TORCHVISION[name])
    if name in _KERAS_HASHES:
        return {**_keras_sources(name), "torchvision": torchvision}
    return {"imagenet": torchvision}


def _keras_sources(name: str) -> dict:
    # keras.applications' table reports 71.3 % top-1 for both VGG16 and VGG19.
    return keras_applications_sources(
        *legacy_keras_files(name, name, _KERAS_HASHES[name]),
        preprocessing="caffe",
        top1=71.3,
        license="CC BY 4.0 (Oxford VGG)",
    )


def vgg_stages() -> tuple:
    """VGG's stages: the five pools (the same for every configuration).

    Example:

        >>> import zoo
        >>> zoo.models.vgg.vgg_stages()[-1]
        Stage(name='block5', layer='block5_pool', reduction=32, channels=512)
    """
    return tuple(Stage(f"block{b}", f"block{b}_pool", 2**b, f) for b, f in enumerate(BLOCK_FILTERS, start=1))


def vgg(x, *, convs_per_block, batch_norm: bool, activation: str = "relu") -> Body:
    """VGG body: five blocks of 3x3 convolutions, each ending in a 2x2 pool."""
    stages = vgg_stages()
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
        x = check_stage(x, stages[b - 1])
    return Body(x)


def vgg_top(x, *, num_classes, classifier_activation):
    """VGG's classifier: Flatten, two 4096-unit layers, the predictions."""
    head = classifier_head(
        num_classes, pooling="flatten", hidden_units=(4096, 4096), activation=classifier_activation
    )
    return apply(head, x)


def vgg_conv_head(x):
    """VGG's fc1/fc2 as convolutions, fc6 (7x7x4096) and fc7 (1x1x4096).

    The dense-prediction form of the classifier (Long et al. 2015, 3.1):
    FCN puts it on the stride-32 map; `conv_head_names` maps the
    classifier's fc1/fc2 weights onto it.
    """
    x = layers.Conv2D(4096, 7, padding="same", activation="relu", name="fc6")(x)
    x = layers.Dropout(0.5, name="drop6")(x)
    x = layers.Conv2D(4096, 1, activation="relu", name="fc7")(x)
    return layers.Dropout(0.5, name="drop7")(x)


# --------------------------------------------------------------------------
# torchvision's names for the layers (rows for zoo.torchvision)
# --------------------------------------------------------------------------


def torchvision_rows(convs_per_block, *, batch_norm: bool) -> list:
    """Rows of a torchvision VGG (`features.{i}` in its Sequential order).

    Example:

        >>> import zoo
        >>> zoo.models.vgg.torchvision_rows((1, 1, 2, 2, 2), batch_norm=True)[:3]
        [('features.0', 'block1_conv1', 'conv'), ('features.1', 'block1_conv1_bn', 'bn'), ('features.4', 'block2_conv1', 'conv')]
    """
    rows, i = [], 0
    for b, n in enumerate(convs_per_block, start=1):
        for j in range(1, n + 1):
            rows.append((f"features.{i}", f"block{b}_conv{j}", "conv"))
            if batch_norm:
                rows.append((f"features.{i + 1}", f"block{b}_conv{j}_bn", "bn"))
            i += 3 if batch_norm else 2  # conv, [bn], relu
        i += 1  # the block's max pool
    # torchvision pools to 7x7 and flattens (C, H, W); Keras flattens (H, W, C).
    return rows + [
        ("classifier.0", "fc1", ("linear_chw", 512, 7, 7)),
        ("classifier.3", "fc2", "linear"),
        ("classifier.6", "predictions", "linear"),
    ]


for _name, _convs in CONFIGS.items():
    for _bn in (False, True):
        _full = _name + ("_bn" if _bn else "")
        register(
            _full,
            family="vgg",
            paper=PAPER,
            stages=vgg_stages(),
            weights=_sources(_full),
            hooks=Hooks(
                top=vgg_top,
                fixed_size_top=True,
                conv_head=vgg_conv_head,
                conv_head_names={"fc1": "fc6", "fc2": "fc7"},
                state_dict_converter=functools.partial(
                    tv.from_torchvision, rows=torchvision_rows(_convs, batch_norm=_bn), model_name=_full
                ),
            ),
            description=f"VGG-{_name[3:]} (config {'ABDE'[list(CONFIGS).index(_name)]})"
            + (" with BatchNorm" if _bn else ""),
        )(functools.partial(vgg, convs_per_block=_convs, batch_norm=_bn))
