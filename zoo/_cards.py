"""Model cards: `zoo.info` and `zoo.count_macs`.

A card is the spec's data (family, paper, stages, weight sources with
their preprocessing and reported accuracy) plus what only a build can tell
(parameters, MACs); `info` builds the model once, at its default size, and
caches the card.
"""

from __future__ import annotations

import dataclasses
import functools

import keras
import numpy as np

from zoo._builder import build
from zoo._keras import inbound_nodes
from zoo._sizes import SIZES
from zoo.layers import leaf_layers
from zoo.registry import get_spec, specs

_COUNTED = (
    keras.layers.Conv1D,
    keras.layers.Conv2D,
    keras.layers.Conv3D,
    keras.layers.DepthwiseConv2D,
    keras.layers.Dense,
)


def count_macs(model: keras.Model) -> int:
    """Multiply-accumulates of one forward pass for one image.

    Counts convolutions (incl. transposed, depthwise and separable) and
    dense layers, which dominate CNN cost; needs a model built with a fixed
    input size.

    Example:

        >>> import zoo
        >>> m = zoo.build("resnet18", input_shape=(224, 224, 3))
        >>> round(zoo.count_macs(m) / 1e9, 2)
        1.81
    """
    total = 0
    for layer in leaf_layers(model):
        if not layer.weights:
            continue
        for node in inbound_nodes(layer):
            out_shape = node.outputs[0].shape
            in_shape = node.arguments.keras_tensors[0].shape
            if None in out_shape[1:] or None in in_shape[1:]:
                raise ValueError(
                    "count_macs needs a fixed input size; build with "
                    f"input_shape=(H, W, C). Layer {layer.name!r} has output {out_shape}."
                )
            spatial = int(np.prod(out_shape[1:-1])) if len(out_shape) > 2 else 1
            if isinstance(layer, keras.layers.Conv2DTranspose):
                total += int(np.prod(in_shape[1:-1])) * int(np.prod(layer.kernel.shape))
            elif isinstance(layer, keras.layers.SeparableConv2D):
                in_spatial = spatial  # depthwise at the output resolution, then 1x1
                total += in_spatial * int(np.prod(layer.depthwise_kernel.shape))
                total += spatial * int(np.prod(layer.pointwise_kernel.shape))
            elif isinstance(layer, _COUNTED):
                total += spatial * int(np.prod(layer.kernel.shape))
    return total


@dataclasses.dataclass(frozen=True)
class ModelCard:
    """What `zoo.info` returns; `print(card)` shows a readable card.

    Args:
        name, family, description, paper: str. From the spec.
        task: str. `"classification"` or the task of a task model.
        params, trainable_params: int. Of the model with its default head.
        gmacs: float. Billions of multiply-accumulates per image at
            `default_size`.
        default_size, min_size: int. Input sides.
        preprocessing: str. The default weights' (or family's) input
            normalisation.
        stages: tuple of `zoo.Stage` (a task's are its backbone's).
        weights: dict of tag to `WeightSource`.
        num_classes: int. Classes of the default head.
    """

    name: str
    family: str
    description: str
    paper: str
    params: int
    trainable_params: int
    gmacs: float
    default_size: int
    min_size: int
    preprocessing: str
    stages: tuple
    weights: dict
    num_classes: int = 1000
    task: str = "classification"

    def __str__(self) -> str:
        lines = [
            f"{self.name} — {self.description}",
            f"  family         {self.family} ({self.task})",
            f"  paper          {self.paper}",
            f"  parameters     {self.params:,} ({self.trainable_params:,} trainable), "
            f"{self.num_classes}-class head",
            f"  compute        {self.gmacs:.2f} GMACs at {self.default_size}x{self.default_size}",
            f"  input          {self.default_size}x{self.default_size}x3 (min {self.min_size}), "
            f"preprocessing {self.preprocessing!r}",
            "  stages         name        layer                          stride  channels",
        ]
        for s in self.stages:
            lines.append(f"                 {s.name:<11} {s.layer:<30} {s.reduction:>6}  {s.channels:>8}")
        if self.weights:
            lines.append("  weights")
            for tag, w in self.weights.items():
                lines.append(f"                 {tag:<15} {w.describe()}")
                lines.append(f"                 {'':<15} {w.file_name} (hash {w.file_hash})")
        else:
            lines.append("  weights        none known (random initialisation; load your own file)")
        return "\n".join(lines)


def weights_table(names=None) -> str:
    """A markdown table of every zoo model: size, cost and weight sources (pure data).

    One row per source: model, parameters (millions) and GMACs at the
    default input size with the ImageNet head (from `zoo/_sizes.py`, which a
    test keeps current), tag, who trained it, preprocessing, input size,
    reported ImageNet top-1, file; a model without a source says so. The
    The table of docs/models.md is this function's output (a test keeps it current).

    Example:

        >>> import zoo
        >>> print(zoo._cards.weights_table(["resnet18"]))  # doctest: +NORMALIZE_WHITESPACE
        | model | params | GMACs | weights | origin | preprocessing | input | top-1 | file |
        | --- | --- | --- | --- | --- | --- | --- | --- | --- |
        | resnet18 | 11.7 M | 1.81 | imagenet | torchvision | torch | 224 | 69.758 % | resnet18-f37072fd.pth |
    """

    chosen = [get_spec(n) for n in names] if names is not None else [s for s in specs() if s.builtin]
    lines = [
        "| model | params | GMACs | weights | origin | preprocessing | input | top-1 | file |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for spec in chosen:
        params, macs = SIZES.get(spec.name, (None, None))
        size = f"{params / 1e6:.1f} M | {macs / 1e9:.2f}" if params is not None else " | "
        if spec.is_task:
            lines.append(f"| {spec.name} | {size} | backbone's (default {spec.default_backbone}) | | | | | |")
            continue
        if not spec.weights:
            lines.append(f"| {spec.name} | {size} | none (random init) | | {spec.preprocessing} | | | |")
        for i, (tag, w) in enumerate(spec.weights.items()):
            top1 = f"{w.top1} %" if w.top1 is not None else ""
            shown = size if i == 0 else " | "
            lines.append(
                f"| {spec.name} | {shown} | {tag} | {w.origin} | {w.preprocessing} "
                f"| {w.input_size} | {top1} | {w.file_name} |"
            )
    return "\n".join(lines)


@functools.cache
def _card(name: str) -> ModelCard:

    spec = get_spec(name)
    size = spec.default_size
    model = build(name, input_shape=(size, size, 3))  # the one build of a card
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    stages = get_spec(spec.default_backbone).stages if spec.is_task else spec.stages
    return ModelCard(
        name=spec.name,
        family=spec.family,
        description=spec.description,
        paper=spec.paper,
        params=model.count_params(),
        trainable_params=trainable,
        gmacs=count_macs(model) / 1e9,
        default_size=size,
        min_size=spec.min_size,
        preprocessing=spec.preprocessing,
        stages=tuple(stages),
        weights=dict(spec.weights),
        num_classes=spec.default_classes,
        task=spec.task,
    )


def info(name: str) -> ModelCard:
    """The model card of a registered model (built once, then cached).

    Stages and weight sources come from the spec; parameters and MACs from
    one build at the default size. For stages alone, `zoo.get_spec(name).stages`
    builds nothing.

    Example:

        >>> import zoo
        >>> card = zoo.info("resnet18")
        >>> card.trainable_params, [s.reduction for s in card.stages]
        (11689512, [2, 4, 8, 16, 32])
    """
    return _card(get_spec(name).name)
