"""surgery: edit any functional Keras 3 model, restore its parameters, choose what trains.

Every edit (`remove`, `cut`, `tail`, `graft`, `insert`, `replace`, `copy`,
`delete_channels`, `prune`) returns a
new model built by one engine (`surgery.engine.rewrite`); the original keeps
working with its weights. Freezing acts in place, like Keras' own idiom.

>>> import keras, zoo, surgery
>>> base = zoo.build("resnet18", input_shape=(32, 32, 3))
>>> features = surgery.cut(base, "conv4")          # a stage or a layer name
>>> clf = surgery.graft(features, [keras.layers.GlobalAveragePooling2D(),
...                                keras.layers.Dense(3)])
>>> _ = surgery.freeze_until(clf, -2)
"""

from surgery.channels import ChannelGroup, SizeReport, channel_groups, delete_channels, prune, size_report
from surgery.edits import copy, cut, graft, insert, remove, replace, tail
from surgery.engine import SurgeryError, resolve, rewrite
from surgery.freezing import (
    FreezeResult,
    TrainableSummary,
    freeze,
    freeze_stages,
    freeze_until,
    stage_groups,
    trainable_summary,
    unfreeze,
    unfreeze_stages,
)
from surgery.hub import HubLayer, export_feature_extractor, hub_layer
from surgery.restore import RestoreReport, restore
from zoo import __version__  # one version for the three packages of kerazoo

__all__ = [
    "__version__",
    "ChannelGroup",
    "FreezeResult",
    "HubLayer",
    "RestoreReport",
    "SizeReport",
    "SurgeryError",
    "TrainableSummary",
    "channel_groups",
    "copy",
    "delete_channels",
    "cut",
    "export_feature_extractor",
    "freeze",
    "freeze_stages",
    "freeze_until",
    "graft",
    "hub_layer",
    "insert",
    "prune",
    "remove",
    "replace",
    "resolve",
    "restore",
    "rewrite",
    "size_report",
    "stage_groups",
    "tail",
    "trainable_summary",
    "unfreeze",
    "unfreeze_stages",
]
