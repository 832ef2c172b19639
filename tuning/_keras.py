"""The `tuning` package's only uses of Keras and KerasTuner internals, fenced here with the reason for each.

Neither library has a public API for these; everything else in `tuning` uses
`keras`, `keras.ops` and `keras_tuner` only.
"""

from __future__ import annotations

import keras


def is_tuner_callback(callback: keras.callbacks.Callback) -> bool:
    """Whether `callback` is the one KerasTuner adds to every trial's `fit`.

    Its class, `TunerCallback`, is not exported by `keras_tuner`; we recognise
    it to idle its batch hooks (they make `fit` wait on every step).
    """
    from keras_tuner.src.engine import tuner_utils

    return isinstance(callback, tuner_utils.TunerCallback)


def tensorboard_traces(callback: keras.callbacks.TensorBoard) -> bool:
    """Whether a TensorBoard callback profiles or writes a graph on some batch.

    Keras keeps it in the private `_should_trace`; when it is False the
    callback's batch-end hook does nothing on non-TensorFlow backends.
    """
    return bool(getattr(callback, "_should_trace", True))
