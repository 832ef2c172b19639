"""The command line's console: quiet TensorFlow start-up, Ctrl-C that always stops a run.

Used by `python -m tuning`; nothing here is needed to call `tuning.run`.
"""

from __future__ import annotations

import os
import sys

_INTERRUPTED = []  # set by the SIGINT handler; module-level, callbacks are deep-copied


def on_sigint(signum, frame):
    _INTERRUPTED.append(signum)
    raise KeyboardInterrupt


def stop_when_interrupted():
    """A callback that re-raises Ctrl-C at the next batch.

    Python delivers the first KeyboardInterrupt wherever the interpreter
    happens to be, and inside a garbage-collection callback it is printed
    and dropped; this makes sure the run still stops.
    """
    import keras  # imported here: `--help` stays fast

    class StopWhenInterrupted(keras.callbacks.Callback):
        # Batch *begin* hooks: a batch-end hook would make Keras wait for
        # every step's logs (no asynchronous dispatch on JAX and PyTorch).
        def on_train_batch_begin(self, batch, logs=None):
            if _INTERRUPTED:
                raise KeyboardInterrupt

        on_test_batch_begin = on_train_batch_begin

    return StopWhenInterrupted()


def quiet_logs(debug):
    """TensorFlow's C++ and absl start-up noise off for the CLI's own commands."""
    if debug:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    try:
        import absl.logging

        absl.logging.set_verbosity(absl.logging.ERROR)
    except ImportError:
        pass
    import_tensorflow_quietly()


def import_tensorflow_quietly():
    """Import TensorFlow with file descriptor 2 pointed at /dev/null.

    TensorFlow 2.20's C++ start-up lines (oneDNN, "Could not find cuda
    drivers", cuInit) are written through absl before its logging is set
    up, so `TF_CPP_MIN_LOG_LEVEL` does not reach them; only the descriptor
    does. A failing import still raises its Python exception, reported by
    `main` after the descriptor is restored.
    """
    import importlib.util

    if os.environ.get("KERAS_BACKEND", "tensorflow") != "tensorflow" or "tensorflow" in sys.modules:
        return
    if importlib.util.find_spec("tensorflow") is None:
        return
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
        os.close(devnull)
        import tensorflow as tf

        tf.config.list_physical_devices("GPU")  # the cuInit probe happens here, still silenced
        # Its Python-side warnings too (a trial per model means a trace per
        # model, which TensorFlow reports as "excessive retracing").
        import logging

        logging.getLogger("tensorflow").setLevel(logging.ERROR)
    finally:
        os.dup2(saved, 2)
        os.close(saved)
