"""The `tuning` package's only uses of Keras, KerasTuner and TensorFlow internals, fenced here with the reason for each.

None of these libraries has a public API for them; everything else in
`tuning` uses `keras`, `keras.ops` and `keras_tuner` only.
"""

from __future__ import annotations

import os
import sys
import time

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


def serve_oracle(oracle, poll: float = 0.2) -> None:
    """Serve `oracle` to KerasTuner's workers until they are done (the chief's `search`).

    KerasTuner's `oracle_chief.start_server` does the same but looks every
    second for the end of the search, then every 20 seconds for the workers
    to leave: a run with workers finished up to 20 s after its last trial
    (16 s in `tests/tuning/test_cli.py`'s workers test). This is its loop
    with one short poll. The servicer, the exit test and the protocol live
    in `keras_tuner.src.distribute`; nothing public starts a chief.
    """
    from concurrent import futures

    import grpc
    from keras_tuner.src import protos
    from keras_tuner.src.distribute import oracle_chief

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
    servicer = oracle_chief.OracleServicer(oracle)
    protos.get_service_grpc().add_OracleServicer_to_server(servicer, server)
    server.add_insecure_port(f"{os.environ['KERASTUNER_ORACLE_IP']}:{os.environ['KERASTUNER_ORACLE_PORT']}")
    server.start()
    try:
        while not (servicer.stop_triggered and oracle_chief.exit_chief(oracle)):
            time.sleep(poll)
    finally:
        server.stop(grace=None)


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
