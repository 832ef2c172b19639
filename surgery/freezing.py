"""Selective training: which layers learn. Freezing is in place (Keras' own
idiom, `layer.trainable = False`); every function returns a `FreezeResult`
that reminds you to recompile a compiled model, and warns when it is one."""

from __future__ import annotations

import dataclasses
import fnmatch
import warnings

import keras
import numpy as np

from surgery.engine import SurgeryError, _mark_container_trainable, resolve
from zoo import stages_of
from zoo.layers import leaf_layers


@dataclasses.dataclass
class FreezeResult:
    """What a freezing call did.

    Attributes:
        trainable: names of layers (with weights) now trainable.
        frozen: names of layers (with weights) now frozen.
        needs_recompile: whether the model was compiled before the change;
            Keras only picks up `trainable` changes at `compile()`.
    """

    trainable: list
    frozen: list
    needs_recompile: bool

    def __repr__(self):
        note = " — recompile the model before training" if self.needs_recompile else ""
        return f"FreezeResult({len(self.trainable)} trainable, {len(self.frozen)} frozen layers{note})"


def _finish(model, layers) -> FreezeResult:
    compiled = bool(getattr(model, "compiled", False) or getattr(model, "optimizer", None))
    if compiled:
        warnings.warn(
            f"Model {model.name!r} was compiled before its trainable flags changed; "
            "call `model.compile(...)` again or the change has no effect on training.",
            stacklevel=3,
        )
    weighted = [l for l in layers if l.weights]
    return FreezeResult(
        trainable=[l.name for l in weighted if l.trainable],
        frozen=[l.name for l in weighted if not l.trainable],
        needs_recompile=compiled,
    )


def _layers(model, leaf: bool):
    return leaf_layers(model) if leaf else list(model.layers)


def freeze_until(
    model: keras.Model,
    until: int | str | keras.layers.Layer,
    *,
    leaf: bool = False,
    keep_bn_frozen: bool = False,
) -> FreezeResult:
    """Freeze `model.layers[:until]`, make the rest trainable.

    Exactly the idiom `for layer in model.layers[:-4]: layer.trainable = False`
    (with the remaining layers set trainable). `until` is an index (negative
    too) or a layer name; a name freezes everything before that layer.

    Args:
        model: keras.Model.
        until: int or str.
        leaf: bool. Count the flattened leaf layers of nested models instead of
            the top-level `model.layers` (a nested base then counts as its
            layers, not as one). Defaults to False.
        keep_bn_frozen: bool. Keep every BatchNormalization frozen (inference
            mode) even in the trainable part. Defaults to False.

    Example:

        >>> import keras, surgery
        >>> vgg = keras.applications.VGG16(weights=None)
        >>> _ = surgery.freeze_until(vgg, -4)
        >>> [l.trainable for l in vgg.layers[-5:]]
        [False, True, True, True, True]
    """
    layers = _layers(model, leaf)
    if isinstance(until, str):
        names = [l.name for l in layers]
        if until not in names:
            resolve(model, until)  # raises with suggestions
            raise SurgeryError(f"{until!r} is inside a nested model; pass `leaf=True` to count leaf layers.")
        until = names.index(until)
    elif not isinstance(until, int) or isinstance(until, bool):
        raise TypeError(f"`until` must be an int or a layer name. Received: {until!r}")
    frozen = set()
    for layer in layers[:until]:
        frozen |= {id(l) for l in (leaf_layers(layer) if isinstance(layer, keras.Model) else [layer])}
    return _apply(model, frozen, keep_bn_frozen)


def _match(layer, pattern, types):
    if pattern is not None and not fnmatch.fnmatchcase(layer.name, pattern):
        return False
    if types is not None and not isinstance(
        layer, tuple(types) if isinstance(types, (list, tuple)) else types
    ):
        return False
    return True


def freeze(
    model: keras.Model, pattern: str | None = None, *, types: type | tuple[type, ...] | None = None
) -> FreezeResult:
    """Freeze leaf layers matching a name glob and/or layer types (all if none given).

    Example:

        >>> import keras, zoo, surgery
        >>> m = zoo.build("resnet18", input_shape=(32, 32, 3))
        >>> r = surgery.freeze(m, types=keras.layers.BatchNormalization)
        >>> m.get_layer("conv1_bn").trainable, m.get_layer("conv1_conv").trainable
        (False, True)
    """
    frozen = {id(l) for l in leaf_layers(model) if not l.trainable or _match(l, pattern, types)}
    return _apply(model, frozen, False)


def unfreeze(
    model: keras.Model,
    pattern: str | None = None,
    *,
    types: type | tuple[type, ...] | None = None,
    keep_bn_frozen: bool = False,
) -> FreezeResult:
    """Make leaf layers matching a name glob and/or types trainable (all if none).

    Also marks the nested models containing them trainable (Keras needs the
    container trainable for its layers to train).

    Example:

        >>> import zoo, surgery
        >>> m = zoo.build("resnet18", input_shape=(32, 32, 3))
        >>> _ = surgery.freeze(m)
        >>> _ = surgery.unfreeze(m, "conv5_*")
        >>> m.get_layer("conv5_block1_1_conv").trainable, m.get_layer("conv1_conv").trainable
        (True, False)
    """
    frozen = {id(l) for l in leaf_layers(model) if not l.trainable and not _match(l, pattern, types)}
    return _apply(model, frozen, keep_bn_frozen)


def _stage_boundaries(model):
    stages = stages_of(model)
    if not stages:
        raise SurgeryError(
            f"Model {model.name!r} has no stages (no downsampling layers found). "
            "Use `freeze_until` or `freeze(pattern=...)` instead."
        )
    order = {l.name: i for i, l in enumerate(leaf_layers(model))}
    return stages, [order[s.layer] for s in stages]


def stage_groups(model: keras.Model) -> dict[str, list[keras.layers.Layer]]:
    """Leaf layers grouped by stage, in graph order: `{stage name: [layers]}`.

    Everything after the last stage (pooling, the head) is grouped under
    `"head"`. `trainable_summary(by="stage")` and per-stage learning rates
    (`tuning`) both read this one grouping.

    Example:

        >>> import zoo, surgery
        >>> m = zoo.build("resnet18", input_shape=(32, 32, 3), num_classes=3)
        >>> groups = surgery.stage_groups(m)
        >>> list(groups)
        ['stem', 'conv2', 'conv3', 'conv4', 'conv5', 'head']
        >>> groups["conv5"][-1].name, [l.name for l in groups["head"]]
        ('conv5_block2_out', ['avg_pool', 'predictions'])
    """
    stages, ends = _stage_boundaries(model)
    groups = {s.name: [] for s in stages}
    groups["head"] = []
    for idx, layer in enumerate(leaf_layers(model)):
        key = next((s.name for s, e in zip(stages, ends) if idx <= e), "head")
        groups[key].append(layer)
    return groups


def freeze_stages(model: keras.Model, n: int, *, keep_bn_frozen: bool = False) -> FreezeResult:
    """Freeze the first `n` stages (everything up to the end of stage `n`).

    Stages come from the zoo's metadata (`zoo.stages_of`): for zoo models the
    declared ones, for other models the downsampling steps found in the
    graph. `n=0` makes everything trainable; `n=len(stages)` freezes the
    whole backbone (the head stays trainable).

    Example:

        >>> import zoo, surgery
        >>> m = zoo.build("resnet18", input_shape=(32, 32, 3))
        >>> _ = surgery.freeze_stages(m, 3)   # stem, conv2, conv3 frozen
        >>> m.get_layer("conv3_block2_out").trainable, m.get_layer("conv4_block1_1_conv").trainable
        (False, True)
    """
    stages, ends = _stage_boundaries(model)
    if not 0 <= n <= len(stages):
        raise SurgeryError(
            f"Model {model.name!r} has {len(stages)} stages "
            f"({', '.join(s.name for s in stages)}); `n` must be in 0..{len(stages)}. Received: n={n}"
        )
    cut = ends[n - 1] if n else -1
    return _freeze_by_order(model, cut, keep_bn_frozen)


def unfreeze_stages(model: keras.Model, k: int, *, keep_bn_frozen: bool = False) -> FreezeResult:
    """Train only the last `k` stages and the head; freeze everything before.

    `k=0` freezes the whole backbone; `k=len(stages)` trains everything
    (for zoo models the stem is the first stage).

    Example:

        >>> import zoo, surgery
        >>> m = zoo.build("resnet18", input_shape=(32, 32, 3))
        >>> r = surgery.unfreeze_stages(m, 1, keep_bn_frozen=True)
        >>> m.get_layer("conv5_block2_2_conv").trainable, m.get_layer("conv5_block2_2_bn").trainable
        (True, False)
    """
    stages, _ = _stage_boundaries(model)
    if not 0 <= k <= len(stages):
        raise SurgeryError(f"`k` must be in 0..{len(stages)} for {model.name!r}. Received: k={k}")
    return freeze_stages(model, len(stages) - k, keep_bn_frozen=keep_bn_frozen)


def _freeze_by_order(model, cut_index, keep_bn_frozen):
    frozen = {id(l) for l in leaf_layers(model)[: cut_index + 1]}
    return _apply(model, frozen, keep_bn_frozen)


def _apply(model, frozen_ids, keep_bn_frozen) -> FreezeResult:
    """The one place flags are set: leaves in `frozen_ids` frozen, others trainable."""
    if keep_bn_frozen:
        frozen_ids = frozen_ids | {
            id(l) for l in leaf_layers(model) if isinstance(l, keras.layers.BatchNormalization)
        }
    _apply_flags(model, frozen_ids)
    return _finish(model, leaf_layers(model))


def _apply_flags(model, frozen_ids):
    """Set leaf flags; a container is trainable iff any leaf inside trains."""
    any_trainable = False
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            sub = _apply_flags(layer, frozen_ids)
            any_trainable |= sub
        else:
            layer.trainable = id(layer) not in frozen_ids
            any_trainable |= layer.trainable
    # Keras: a container's `trainable=False` overrides its children, so only
    # mark it when everything inside is frozen (setting the attribute on the
    # container would reset every child).
    _mark_container_trainable(model, any_trainable)
    return any_trainable


@dataclasses.dataclass
class TrainableSummary:
    """Per-layer (or per-stage) trainable and non-trainable parameter counts."""

    rows: list
    trainable: int
    non_trainable: int

    def __str__(self):
        width = max([len(r[0]) for r in self.rows] + [5])
        lines = [f"{'layer':<{width}}  {'type':<22} {'trainable':>12} {'non-trainable':>14}"]
        for name, kind, t, n in self.rows:
            lines.append(f"{name:<{width}}  {kind:<22} {t:>12,} {n:>14,}")
        lines.append(f"{'total':<{width}}  {'':<22} {self.trainable:>12,} {self.non_trainable:>14,}")
        return "\n".join(lines)


def _count(weights):
    return int(sum(np.prod(w.shape) for w in weights))


def trainable_summary(model: keras.Model, *, by: str = "layer") -> TrainableSummary:
    """Trainable / non-trainable parameter counts per layer or per stage.

    Totals equal Keras' own (`model.trainable_weights`, `non_trainable_weights`).

    Args:
        model: keras.Model.
        by: str. `"layer"` (weighted leaf layers) or `"stage"`.

    Example:

        >>> import zoo, surgery
        >>> m = zoo.build("resnet18", input_shape=(32, 32, 3))
        >>> _ = surgery.freeze_stages(m, 5)
        >>> s = surgery.trainable_summary(m, by="stage")
        >>> s.rows[-1][0], s.trainable
        ('head', 513000)
    """
    layers = [l for l in leaf_layers(model) if l.weights]
    rows = [
        (l.name, type(l).__name__, _count(l.trainable_weights), _count(l.non_trainable_weights))
        for l in layers
    ]
    if by == "stage":
        rows = [
            (
                key,
                "stage" if key != "head" else "after last stage",
                sum(_count(l.trainable_weights) for l in group),
                sum(_count(l.non_trainable_weights) for l in group),
            )
            for key, group in stage_groups(model).items()
        ]
    elif by != "layer":
        raise ValueError(f"`by` must be 'layer' or 'stage'. Received: by={by!r}")
    return TrainableSummary(rows, _count(model.trainable_weights), _count(model.non_trainable_weights))
