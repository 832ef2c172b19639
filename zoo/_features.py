"""Stages of a model, read from its spec (zoo models) or its graph (others).

timm's `_features.py` counterpart: `zoo.stages_of(model)` finds a zoo
model's spec by the stamp on its input layer (`<name>_input`, kept by
`.keras` save/load and by `surgery` edits), else by the model's name, and
returns the spec's declared stages; any other model's stages are inferred
from its graph (the last layer at each resolution). It never builds a
model.
"""

from __future__ import annotations

import dataclasses
import math

import keras

from zoo.layers import leaf_layers
from zoo.registry import _REGISTRY, Stage


def select_stages(stages, out_indices, name):
    """The stages picked by `out_indices` (all of them for None), checked.

    Example:

        >>> import zoo
        >>> [s.name for s in zoo._features.select_stages(zoo.get_spec("vgg11").stages, (0, -1), "vgg11")]
        ['block1', 'block5']
    """
    stages = list(stages)
    if not stages:
        raise ValueError(
            f"{name!r} declares no stages, so it has no feature maps to return. "
            "Register it with `stages=` or use `zoo.stages_of(model)` on a built model."
        )
    if out_indices is None:
        return stages
    picked = []
    for i in out_indices:
        if not -len(stages) <= i < len(stages):
            raise ValueError(
                f"{name!r} has {len(stages)} stages (indices 0..{len(stages) - 1}, "
                f"or negative). Received: out_indices={list(out_indices)}"
            )
        picked.append(stages[i])
    return picked


def spec_of(model: keras.Model):
    """The registered backbone spec a model was built from, or None.

    Looks at the input stamp first (`<name>_input`), then the model's name
    (`resnet18`, `resnet18_features`). Builds nothing.

    Example:

        >>> import zoo
        >>> m = zoo.build("vgg11", input_shape=(32, 32, 3), include_top=False, name="mine")
        >>> zoo._features.spec_of(m).name
        'vgg11'
    """
    try:
        inputs = list(model.inputs or [])
    except (AttributeError, ValueError):  # a Sequential model that was never built
        inputs = []
    names = [getattr(t, "name", "") or "" for t in inputs]
    names += [layer.name for layer in leaf_layers(model) if isinstance(layer, keras.layers.InputLayer)]
    keys = [n.removesuffix("_input") for n in names if n.endswith("_input")]
    keys.append(model.name.removesuffix("_features"))
    for key in keys:
        spec = _REGISTRY.get(key)
        if spec is not None and not spec.is_task and spec.stages:
            return spec
    return None


def stages_of(model: keras.Model) -> list[Stage]:
    """The stages of a model: declared ones for zoo models, inferred otherwise.

    For a zoo model (also after `.keras` save/load, or surgery that keeps
    the input and the stage layers) the spec's declaration is used, with the
    channels read from the model (so pruned stages report their width). For
    any other model the stages are inferred from the graph: the last layer
    at each spatial resolution. Nothing is built.

    Example:

        >>> import zoo
        >>> m = zoo.build("vgg11", input_shape=(32, 32, 3), include_top=False)
        >>> [s.layer for s in zoo.stages_of(m)][-1]
        'block5_pool'
    """
    by_name = {layer.name: layer for layer in leaf_layers(model)}
    spec = spec_of(model)
    if spec is not None:
        # A non-default activation renames activation layers (conv1_mish).
        activations = {None} | {
            layer.get_config().get("activation")
            for layer in by_name.values()
            if isinstance(layer, keras.layers.Activation)
        }
        for act in sorted(activations, key=lambda a: (a is not None, str(a))):
            if act is not None and not isinstance(act, str):
                continue
            stages = spec.stages_for(activation=act)
            if all(s.layer in by_name for s in stages):
                return [
                    dataclasses.replace(s, channels=_channels(by_name[s.layer], s.channels)) for s in stages
                ]
    return infer_stages(model)


def _channels(layer, declared):
    try:
        return int(layer.output.shape[-1])
    except (AttributeError, ValueError, TypeError):
        return declared


def infer_stages(model: keras.Model) -> list[Stage]:
    """Stages from the graph alone: the last layer at each power-of-two stride.

    Example:

        >>> import keras, zoo
        >>> m = keras.applications.MobileNetV2(weights=None, include_top=False,
        ...                                    input_shape=(64, 64, 3))
        >>> [s.reduction for s in zoo._features.infer_stages(m)]
        [2, 4, 8, 16, 32]
    """
    stages, last_by_reduction = [], {}
    in_shape = None
    for layer in leaf_layers(model):
        try:
            shape = layer.output.shape
        except (AttributeError, ValueError):
            continue
        if isinstance(layer, keras.layers.InputLayer):
            in_shape = shape
            continue
        if in_shape is None or len(shape) != 4 or shape[1] is None or in_shape[1] is None:
            continue
        if isinstance(layer, (keras.layers.ZeroPadding2D, keras.layers.Cropping2D)):
            continue  # padding is not a feature map of its own
        reduction = 2 ** max(0, round(math.log2(in_shape[1] / shape[1])))
        last_by_reduction[reduction] = (layer.name, shape[-1])
    for reduction, (layer, channels) in sorted(last_by_reduction.items()):
        if reduction > 1:
            stages.append(Stage(f"stage{len(stages) + 1}", layer, reduction, int(channels)))
    return stages
