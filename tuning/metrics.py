"""Imbalance-aware validation metrics for sparse labels: balanced accuracy and macro-F1.

Keras' `F1Score` wants one-hot labels and has no balanced accuracy; both are
read here off one confusion matrix, counted with `keras.ops.segment_sum` in
float32 (no int64 scatter, which JAX without x64 warns about every step).
They are compiled into every trial, so the leaderboard shows all three
figures and any of them can be the search objective (`val_<name>`).
"""

from __future__ import annotations

import keras
import numpy as np

NAMES = ("accuracy", "balanced_accuracy", "macro_f1")


class _SparseConfusion(keras.metrics.Metric):
    def __init__(self, num_classes: int, name: str | None = None, dtype: str | None = None) -> None:
        super().__init__(name=name, dtype=dtype)
        self.num_classes = int(num_classes)
        self.matrix = self.add_variable(
            shape=(self.num_classes, self.num_classes), initializer="zeros", name="matrix", dtype="float32"
        )

    def update_state(self, y_true, y_pred, sample_weight=None):
        ops, n = keras.ops, self.num_classes
        y_true = ops.cast(ops.reshape(y_true, [-1]), "int32")
        y_pred = ops.cast(ops.reshape(ops.argmax(y_pred, axis=-1), [-1]), "int32")
        weights = ops.ones_like(y_true, "float32") if sample_weight is None else sample_weight
        weights = ops.reshape(ops.cast(weights, "float32"), [-1])
        valid = ops.logical_and(ops.greater_equal(y_true, 0), ops.less(y_true, n))
        cells = ops.where(valid, y_true * n + y_pred, ops.zeros_like(y_true))
        weights = ops.where(valid, weights, ops.zeros_like(weights))
        counts = ops.segment_sum(weights, cells, num_segments=n * n)
        self.matrix.assign(ops.convert_to_tensor(self.matrix) + ops.reshape(counts, (n, n)))

    def reset_state(self):
        self.matrix.assign(keras.ops.zeros((self.num_classes, self.num_classes), "float32"))

    def _matrix(self):
        return keras.ops.convert_to_tensor(self.matrix)

    def get_config(self):
        return {"num_classes": self.num_classes, "name": self.name, "dtype": self.dtype}


@keras.saving.register_keras_serializable(package="tuning")
class BalancedAccuracy(_SparseConfusion):
    """The mean recall over the classes present in `y_true` (sparse labels, class scores).

    Example:

        >>> import numpy as np, tuning.metrics as m
        >>> b = m.BalancedAccuracy(2)
        >>> b.update_state(np.array([0, 0, 0, 1]), np.array([[1, 0], [1, 0], [1, 0], [1, 0.0]]))
        >>> float(b.result())
        0.5
    """

    def __init__(self, num_classes: int, name: str = "balanced_accuracy", dtype: str | None = None) -> None:
        super().__init__(num_classes, name=name, dtype=dtype)

    def result(self):
        ops, m = keras.ops, self._matrix()
        support = ops.sum(m, axis=1)
        recall = ops.diagonal(m) / ops.maximum(support, 1.0)
        present = ops.cast(support > 0, "float32")
        return ops.sum(recall * present) / ops.maximum(ops.sum(present), 1.0)


@keras.saving.register_keras_serializable(package="tuning")
class MacroF1(_SparseConfusion):
    """The unweighted mean of per-class F1 over the classes that occur (true or predicted).

    Example:

        >>> import numpy as np, tuning.metrics as m
        >>> f = m.MacroF1(2)
        >>> f.update_state(np.array([0, 0, 1, 1]), np.array([[1, 0], [1, 0], [1, 0], [0, 1.0]]))
        >>> round(float(f.result()), 4)
        0.7333
    """

    def __init__(self, num_classes: int, name: str = "macro_f1", dtype: str | None = None) -> None:
        super().__init__(num_classes, name=name, dtype=dtype)

    def result(self):
        ops, m = keras.ops, self._matrix()
        tp = ops.diagonal(m)
        true, predicted = ops.sum(m, axis=1), ops.sum(m, axis=0)
        f1 = 2 * tp / ops.maximum(true + predicted, 1.0)
        present = ops.cast((true + predicted) > 0, "float32")
        return ops.sum(f1 * present) / ops.maximum(ops.sum(present), 1.0)


def compiled_metrics(num_classes: int) -> list:
    """What every trial compiles: accuracy, balanced accuracy, macro-F1.

    Example:

        >>> import tuning.metrics as m
        >>> [getattr(x, "name", x) for x in m.compiled_metrics(3)]
        ['accuracy', 'balanced_accuracy', 'macro_f1']
    """
    return ["accuracy", BalancedAccuracy(num_classes), MacroF1(num_classes)]


def multilabel_metrics(num_classes: int) -> list:
    """What every multi-label trial compiles: mAP and micro-F1 at 0.5.

    `map` is Keras' area under the precision-recall curve of each label
    (200 thresholds, interpolated), averaged over the labels: the streaming
    form of macro average precision, the search objective (`val_map`).
    The report computes the exact average precision on the test split.

    Example:

        >>> import tuning.metrics as m
        >>> [x.name for x in m.multilabel_metrics(3)]
        ['map', 'micro_f1']
    """
    return [
        keras.metrics.AUC(curve="PR", multi_label=True, num_labels=num_classes, name="map"),
        keras.metrics.F1Score(average="micro", threshold=0.5, name="micro_f1"),
    ]


def from_confusion(confusion: np.ndarray) -> dict:
    """Accuracy, balanced accuracy and macro-F1 of a confusion matrix (rows: true).

    Example:

        >>> import numpy as np, tuning.metrics as m
        >>> m.from_confusion(np.array([[3, 0], [1, 0]]))["balanced_accuracy"]
        0.5
    """
    cm = np.asarray(confusion, "float64")
    true, predicted, tp = cm.sum(1), cm.sum(0), np.diag(cm)
    present = true > 0
    recall = tp[present] / true[present]
    occurs = (true + predicted) > 0
    f1 = 2 * tp[occurs] / (true + predicted)[occurs]
    return {
        "accuracy": float(tp.sum() / max(cm.sum(), 1)),
        "balanced_accuracy": float(recall.mean()) if present.any() else 0.0,
        "macro_f1": float(f1.mean()) if occurs.any() else 0.0,
    }


def balanced_class_weight(counts) -> dict:
    """`{class: n / (k * n_class)}` (scikit-learn's "balanced"); classes without images get 0.

    Example:

        >>> import tuning.metrics as m
        >>> m.balanced_class_weight([90, 10])
        {0: 0.5556, 1: 5.0}
    """
    counts = np.asarray(counts, "float64")
    present = counts > 0
    k, n = int(present.sum()), counts.sum()
    return {i: round(float(n / (k * c)), 4) if c > 0 else 0.0 for i, c in enumerate(counts)}


def imbalance_ratio(counts) -> float:
    """Images of the largest class over those of the smallest (inf with an empty class).

    Example:

        >>> import tuning.metrics as m
        >>> m.imbalance_ratio([90, 30, 10])
        9.0
    """
    counts = list(counts)
    return float(max(counts)) / min(counts) if min(counts) > 0 else float("inf")
