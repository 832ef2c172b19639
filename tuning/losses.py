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


@keras.saving.register_keras_serializable(package="tuning")
class AsymmetricLoss(keras.losses.Loss):
    """Asymmetric loss for multi-label scores (Ben-Baruch et al., ICCV 2021).

    Binary cross-entropy in which the many easy negatives of a multi-label
    problem count less: negatives are focused with `gamma_negative` and
    their probabilities shifted down by `clip` (below it they count zero);
    positives with `gamma_positive`.

    `-y (1-p)^g+ log(p) - (1-y) q^g- log(1-q)`, with `q = max(p - clip, 0)`,
    averaged over the labels.

    Args:
        gamma_negative: float. Defaults to 4 (the paper's).
        gamma_positive: float. Defaults to 0.
        clip: float. Probability shift of the negatives. Defaults to 0.05.
        label_smoothing: float. Towards 0.5, as in binary cross-entropy.
            Defaults to 0.

    Example:

        >>> import numpy as np, tuning
        >>> asl = tuning.losses.AsymmetricLoss()
        >>> y = np.array([[1.0, 0.0]])
        >>> round(float(asl(y, np.array([[0.9, 0.04]]))), 4)  # the negative is under the clip
        0.0527
    """

    def __init__(
        self,
        gamma_negative: float = 4.0,
        gamma_positive: float = 0.0,
        clip: float = 0.05,
        label_smoothing: float = 0.0,
        name: str = "asymmetric_loss",
        **kwargs: Any,
    ) -> None:
        super().__init__(name=name, **kwargs)
        self.gamma_negative, self.gamma_positive = gamma_negative, gamma_positive
        self.clip, self.label_smoothing = clip, label_smoothing

    def call(self, y_true, y_pred):
        eps = keras.config.epsilon()
        p = ops.clip(ops.cast(y_pred, "float32"), eps, 1 - eps)
        y = ops.cast(y_true, "float32")
        if self.label_smoothing:
            y = y * (1 - self.label_smoothing) + 0.5 * self.label_smoothing
        q = ops.maximum(p - self.clip, 0.0) if self.clip else p
        positive = y * ops.power(1 - p, self.gamma_positive) * ops.log(p)
        negative = (1 - y) * ops.power(q, self.gamma_negative) * ops.log(ops.maximum(1 - q, eps))
        return -ops.mean(positive + negative, axis=-1)

    def get_config(self):
        return {
            **super().get_config(),
            "gamma_negative": self.gamma_negative,
            "gamma_positive": self.gamma_positive,
            "clip": self.clip,
            "label_smoothing": self.label_smoothing,
        }


MULTILABEL_LOSSES = ("bce", "focal", "asymmetric")


def multilabel_loss(name: str, label_smoothing: float = 0.0) -> keras.losses.Loss:
    """The loss of a multi-label (sigmoid) head: "bce", "focal" (gamma 2) or "asymmetric".

    Example:

        >>> import tuning
        >>> type(tuning.losses.multilabel_loss("focal")).__name__
        'BinaryFocalCrossentropy'
    """
    if name == "bce":
        return keras.losses.BinaryCrossentropy(label_smoothing=label_smoothing)
    if name == "focal":
        return keras.losses.BinaryFocalCrossentropy(gamma=2.0, label_smoothing=label_smoothing)
    if name == "asymmetric":
        return AsymmetricLoss(label_smoothing=label_smoothing)
    raise ValueError(f"A multi-label loss is one of {MULTILABEL_LOSSES}. Received: {name!r}")
