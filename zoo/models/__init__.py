"""The model families, one module each: its stage table, blocks, weight sources and converter rows.

Importing this package registers every family with `zoo.registry` (VGG,
ResNet, GoogLeNet, then the keras.applications backbones).
"""

from zoo.models import applications, googlenet, resnet, vgg

__all__ = ["applications", "googlenet", "resnet", "vgg"]
