"""The `tuning` package's only uses of Keras, KerasTuner and TensorFlow internals, fenced here with the reason for each.

None of these libraries has a public API for them; everything else in
`tuning` uses `keras`, `keras.ops` and `keras_tuner` only.
"""

from __future__ import annotations

import sys

import keras


def is_tuner_callback(callback: keras.callbacks.Callback) -> bool:
    """Whether `callback` is the one KerasTuner adds to every trial's `fit`.

    Its class, `TunerCallback`, is not exported by `keras_tuner`; we recognise
    it to idle its batch hooks (they make `fit` wait on every step).
    """
    from keras_tuner.src.engine import tuner_utils

    return isinstance(callback, tuner_utils.TunerCallback)


def is_checkpoint_callback(callback: keras.callbacks.Callback) -> bool:
    """Whether `callback` is KerasTuner's per-trial checkpoint (`SaveBestEpoch`).

    KerasTuner adds it to every trial's `fit` and does not export its class.
    It writes the whole model's weights at each better epoch (resnet18: 45 MB,
    about 0.45 s, 3 % of a 64 px epoch on a 2-core CPU); the job drops it
    where no checkpoint is read again (`JobTuner.checkpoints_read`).
    """
    from keras_tuner.src.engine import tuner_utils

    return isinstance(callback, tuner_utils.SaveBestEpoch)


def tensorboard_traces(callback: keras.callbacks.TensorBoard) -> bool:
    """Whether a TensorBoard callback profiles or writes a graph on some batch.

    Keras keeps it in the private `_should_trace`; when it is False the
    callback's batch-end hook does nothing on non-TensorFlow backends.
    """
    return bool(getattr(callback, "_should_trace", True))


def custom_gradient_names() -> frozenset:
    """Names under which TensorFlow has registered custom gradients so far.

    Empty on JAX and PyTorch. Pair with `release_custom_gradients` around
    each trial; see there for why.
    """
    registry = _tf_gradient_registry()
    return frozenset(registry) if registry is not None else frozenset()


def release_custom_gradients(before: frozenset) -> int:
    """Unregister the custom gradients TensorFlow registered since `before`.

    Why: tracing a training step on TensorFlow calls `tf.custom_gradient` in
    graph mode (Keras' TensorFlow optimizer all-reduces the gradients through
    the default distribution strategy, which wraps them in one). Each call
    registers a gradient function under a fresh name ("CustomGradient-<n>")
    in TensorFlow's global gradient registry and never removes it. The
    function's closure holds tensors of the traced step, hence its graph,
    whose captures hold every variable of the model and the optimizer: a
    whole model and optimizer state per trial stay in memory (resnet18 with
    Adam: about 200 MB per trial). Upstream: tensorflow/tensorflow#97697,
    #27492; keras-team/keras#20245. The registry is private and nothing
    public unregisters a gradient.

    The names registered during a trial belong to that trial's traced
    functions; they are looked up only while those functions are traced,
    so removing them once the trial is over is safe. Returns how many were
    removed (0 off TensorFlow).
    """
    registry = _tf_gradient_registry()
    if registry is None:
        return 0
    stale = [name for name in registry if name not in before and name.startswith("CustomGradient-")]
    for name in stale:
        registry.pop(name, None)
    return len(stale)


def _tf_gradient_registry():
    if keras.backend.backend() != "tensorflow" or "tensorflow" not in sys.modules:
        return None
    try:
        from tensorflow.python.framework import ops
    except ImportError:  # pragma: no cover - a TensorFlow without the module
        return None
    registry = getattr(getattr(ops, "_gradient_registry", None), "_registry", None)
    return registry if isinstance(registry, dict) else None
