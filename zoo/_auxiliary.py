"""Models with auxiliary classifiers: one label for every output, weighted losses, stripping.

Generic machinery: `zoo.build(..., aux_logits=True)` returns an
`AuxiliaryClassifierModel` for any family whose body returns auxiliary
feature maps (`zoo.Body.aux`); GoogLeNet's are the built-in ones.
"""

from __future__ import annotations

from typing import Any

import keras

from zoo._keras import inputs_struct, outputs_struct

# The paper's weight of each auxiliary loss (Szegedy et al. 2014, section 6).
AUX_LOSS_WEIGHT = 0.3


@keras.saving.register_keras_serializable(package="zoo")
class AuxiliaryClassifierModel(keras.Model):
    """A functional model with a `main` output and auxiliary classifiers.

    `compile(loss=...)` with a single loss applies it to every output,
    weighting the auxiliary ones by `aux_weight` (0.3, as in the paper);
    metrics given as a list apply to `main`. `fit`/`evaluate` then take one
    label array `y` for all outputs: nobody duplicates labels by hand.
    Explicit dicts (`loss={...}`, `loss_weights={...}`) still work.

    Example:

        >>> import numpy as np, zoo
        >>> m = zoo.build("googlenet", num_classes=3, aux_logits=True,
        ...               input_shape=(96, 96, 3))
        >>> sorted(m(np.zeros((1, 96, 96, 3))))
        ['aux1', 'aux2', 'main']
        >>> m.compile("sgd", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        >>> x, y = np.random.rand(2, 96, 96, 3), np.array([0, 2])
        >>> logs = m.fit(x, y, epochs=1, verbose=0).history
        >>> "loss" in logs
        True
    """

    def compile(
        self,
        optimizer: str | keras.optimizers.Optimizer = "rmsprop",
        loss: Any = None,
        loss_weights: Any = None,
        metrics: Any = None,
        aux_weight: float = AUX_LOSS_WEIGHT,
        **kwargs: Any,
    ) -> None:
        keys = self._output_keys()
        if loss is not None and not isinstance(loss, dict):
            loss = {k: loss for k in keys}
        if loss_weights is None:
            loss_weights = {k: 1.0 if k == "main" else aux_weight for k in keys}
        if metrics is not None and not isinstance(metrics, dict):
            metrics = {"main": metrics}
        super().compile(optimizer=optimizer, loss=loss, loss_weights=loss_weights, metrics=metrics, **kwargs)

    def _output_keys(self):
        return sorted(outputs_struct(self)) if isinstance(outputs_struct(self), dict) else []

    def _expand(self, y, y_pred):
        if y is not None and isinstance(y_pred, dict) and not isinstance(y, dict):
            return {k: y for k in y_pred}
        return y

    def compute_loss(
        self,
        x: Any = None,
        y: Any = None,
        y_pred: Any = None,
        sample_weight: Any = None,
        training: bool = True,
    ) -> Any:
        return super().compute_loss(
            x=x,
            y=self._expand(y, y_pred),
            y_pred=y_pred,
            sample_weight=self._expand(sample_weight, y_pred),
            training=training,
        )

    def compute_metrics(self, x: Any, y: Any, y_pred: Any, sample_weight: Any = None) -> dict:
        return super().compute_metrics(
            x, self._expand(y, y_pred), y_pred, self._expand(sample_weight, y_pred)
        )


def strip_auxiliary(model: keras.Model, output: str = "predictions") -> keras.Model:
    """The inference model: the main classifier only, sharing the weights.

    Args:
        model: keras.Model. A model with auxiliary outputs (e.g.
            `zoo.build("googlenet", aux_logits=True)`).
        output: str. Name of the main classifier layer. Defaults to
            `"predictions"`.

    Returns:
        A single-output functional `keras.Model` using the same layers (and
        so the same, trained, variables).

    Example:

        >>> import zoo
        >>> train = zoo.build("googlenet", num_classes=5, aux_logits=True,
        ...                   input_shape=(96, 96, 3))
        >>> infer = zoo.strip_auxiliary(train)
        >>> infer.output_shape, len(infer.weights) < len(train.weights)
        ((None, 5), True)
    """
    try:
        main = model.get_layer(output)
    except ValueError as e:
        raise ValueError(
            f"Model {model.name!r} has no layer {output!r} to keep as the main "
            f"output. Received: output={output!r}"
        ) from e
    return keras.Model(inputs_struct(model), main.output, name=model.name)
