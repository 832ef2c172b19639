"""Model averaging: several trained classifiers as one Keras model."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import keras
from keras import layers, ops

ENSEMBLE_MODES = ("mean", "vote")


@keras.saving.register_keras_serializable(package="zoo")
class EnsembleCombine(layers.Layer):
    """Combines the members' class scores into one distribution.

    `"mean"`: the (optionally weighted) average of the members' outputs.
    `"vote"`: majority vote of the members' top-1 classes, as vote shares;
    ties are broken by the mean probability: the output is
    `(votes + mean / 2) / (n + 1/2)`, which still sums to 1 and whose argmax
    is always a class with the most votes.

    Args:
        mode: str. "mean" or "vote".
        weights: list of floats or None. Per-member weights for "mean"
            (normalised to sum to 1). Defaults to equal weights.

    Example:

        >>> import keras, numpy as np, zoo
        >>> a, b, c = (np.array([[0.6, 0.4, 0.0]]), np.array([[0.1, 0.5, 0.4]]),
        ...            np.array([[0.2, 0.7, 0.1]]))
        >>> vote = keras.ops.convert_to_numpy(zoo._averaging.EnsembleCombine("vote")([a, b, c]))
        >>> int(np.argmax(vote)), round(float(np.sum(vote)), 5)
        (1, 1.0)
    """

    def __init__(self, mode: str = "mean", weights: Sequence[float] | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if mode not in ENSEMBLE_MODES:
            raise ValueError(f"`mode` must be one of {ENSEMBLE_MODES}. Received: mode={mode!r}")
        if weights is not None and mode != "mean":
            raise ValueError("Per-member `weights` apply to mode='mean' only.")
        self.mode = mode
        self.member_weights = None if weights is None else [float(w) for w in weights]

    def call(self, inputs):
        inputs = [ops.cast(x, self.compute_dtype) for x in inputs]
        n = len(inputs)
        if self.member_weights is None:
            mean = ops.mean(ops.stack(inputs, axis=0), axis=0)
        else:
            total = sum(self.member_weights)
            mean = sum(x * (w / total) for x, w in zip(inputs, self.member_weights))
        if self.mode == "mean":
            return mean
        classes = ops.shape(inputs[0])[-1]
        votes = sum(ops.one_hot(ops.argmax(x, axis=-1), classes, dtype=self.compute_dtype) for x in inputs)
        return (votes + mean / 2.0) / (n + 0.5)

    def compute_output_shape(self, input_shapes):
        return tuple(input_shapes[0])

    def get_config(self):
        return {**super().get_config(), "mode": self.mode, "weights": self.member_weights}


def ensemble(
    models: Sequence[keras.Model],
    mode: str = "mean",
    *,
    weights: Sequence[float] | None = None,
    name: str = "ensemble",
) -> keras.Model:
    """Average several trained classifiers into one Keras model.

    The members run side by side on the same input; their class scores are
    averaged (`mode="mean"`, the seeds' "model averaging") or combined by
    majority vote (`mode="vote"`, ties broken by mean probability). The
    result is an ordinary functional model: `predict`, `evaluate`, save to
    `.keras` and load back like any other. Members keep their weights (they
    are shared, not copied, unless two have the same name, when later ones
    are cloned under a suffixed name).

    Args:
        models: list of at least two single-output Keras models with the same
            input shape and the same number of classes.
        mode: str. "mean" or "vote". Defaults to "mean".
        weights: list of floats. Per-member weights for "mean".
        name: str. The ensemble's name. Defaults to "ensemble".

    Returns:
        A functional `keras.Model`.

    Example:

        >>> import numpy as np, zoo
        >>> members = [zoo.build("vgg11", num_classes=3, input_shape=(32, 32, 3)) for _ in range(3)]
        >>> model = zoo.ensemble(members, mode="vote")
        >>> model.output_shape, [m.name for m in model.layers[1:4]]
        ((None, 3), ['vgg11', 'vgg11_2', 'vgg11_3'])
    """
    models = list(models)
    if mode not in ENSEMBLE_MODES:
        raise ValueError(f"`mode` must be one of {ENSEMBLE_MODES}. Received: mode={mode!r}")
    if len(models) < 2:
        raise ValueError(f"An ensemble needs at least two models. Received {len(models)}.")
    for i, m in enumerate(models):
        if not isinstance(m, keras.Model):
            raise TypeError(f"Member {i} is not a keras.Model: {m!r}")
        if len(m.inputs) != 1 or len(m.outputs) != 1:
            raise ValueError(
                f"Member {i} ({m.name!r}) has {len(m.inputs)} inputs and {len(m.outputs)} "
                "outputs; ensemble single-input, single-output classifiers (for GoogLeNet "
                "with auxiliary heads, use `zoo.strip_auxiliary(model)` first)."
            )
    in_shapes = {tuple(m.inputs[0].shape[1:]) for m in models}
    out_shapes = {tuple(m.outputs[0].shape[1:]) for m in models}
    if len(in_shapes) > 1 or len(out_shapes) > 1:
        raise ValueError(
            f"Members must share input and output shapes. Received inputs {sorted(in_shapes)} "
            f"and outputs {sorted(out_shapes)}; build them with the same `input_shape` and "
            "`num_classes`."
        )
    if weights is not None and len(weights) != len(models):
        raise ValueError(f"Give one weight per member: {len(models)} models, {len(weights)} weights.")
    inputs = keras.Input(shape=next(iter(in_shapes)), dtype=models[0].inputs[0].dtype, name="images")
    seen, outputs = Counter(), []
    for m in models:
        seen[m.name] += 1
        if seen[m.name] > 1:
            m = _renamed_copy(m, f"{m.name}_{seen[m.name]}")
        outputs.append(m(inputs))
    combined = EnsembleCombine(mode, weights=weights, dtype="float32", name=f"{mode}_combine")(outputs)
    return keras.Model(inputs, combined, name=name)


def _renamed_copy(model, name):
    """A copy with its own weights under another name (Keras' public cloning).

    `zoo` does not import `surgery` (surgery builds on zoo); a plain copy
    needs no rewrite engine.
    """
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    copy.name = name
    return copy
