"""Losses the search needs that Keras lacks."""

from __future__ import annotations

from typing import Any

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="tuning")
class SparseCategoricalCrossentropyWithSmoothing(keras.losses.Loss):
    """Cross-entropy from integer labels with label smoothing.

    Keras' `SparseCategoricalCrossentropy` has no `label_smoothing`; this
    one-hot encodes inside the loss and calls Keras' `categorical_crossentropy`,
    so datasets keep their integer labels.

    Args:
        label_smoothing: float in [0, 1). Defaults to 0.
        from_logits: bool. Defaults to False.

    Example:

        >>> import numpy as np, tuning
        >>> loss = tuning.losses.SparseCategoricalCrossentropyWithSmoothing(0.1)
        >>> round(float(loss(np.array([0]), np.array([[0.9, 0.1]]))), 4)
        0.2152
    """

    def __init__(
        self,
        label_smoothing: float = 0.0,
        from_logits: bool = False,
        name: str = "sparse_categorical_crossentropy",
        **kwargs: Any,
    ) -> None:
        super().__init__(name=name, **kwargs)
        self.label_smoothing = label_smoothing
        self.from_logits = from_logits

    def call(self, y_true, y_pred):
        y_true = ops.reshape(ops.cast(y_true, "int32"), ops.shape(y_pred)[:-1])
        one_hot = ops.one_hot(y_true, ops.shape(y_pred)[-1], dtype=y_pred.dtype)
        return keras.losses.categorical_crossentropy(
            one_hot, y_pred, from_logits=self.from_logits, label_smoothing=self.label_smoothing
        )

    def get_config(self):
        return {
            **super().get_config(),
            "label_smoothing": self.label_smoothing,
            "from_logits": self.from_logits,
        }
