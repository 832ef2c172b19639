"""Callbacks of the main job, general enough for any `fit`.

`EpochLogger`/`EpochProgress` print one line per epoch without making Keras
wait on every step; `TimeBudget` stops a `fit` at a wall-clock deadline
(the best epoch is still restored by `EarlyStopping`); `Redirect` runs a
callback against a full model while only a part of it trains;
`keep_async_dispatch` drops the idle batch hooks that cost asynchronous
dispatch on JAX and PyTorch; `ReleaseFreedMemory` hands the C heap's free
pages back to the system as training goes.
"""

from __future__ import annotations

import functools
import gc
import sys
import threading
import time
import types
from typing import Any

import keras
import keras_tuner as kt

_BATCH_END_HOOKS = ("on_batch_end", "on_train_batch_end", "on_test_batch_end", "on_predict_batch_end")


def _no_batch_end_hooks(callback) -> bool:
    """Whether a callback leaves every batch-end hook as `Callback`'s no-op."""
    return all(
        getattr(getattr(callback, h), "__func__", None) is getattr(keras.callbacks.Callback, h)
        for h in _BATCH_END_HOOKS
    )


def keep_async_dispatch(callbacks):
    """Drop batch-end hooks that do nothing but make `fit` wait on every step.

    Keras (JAX, PyTorch) overlaps a step with the next one's dispatch and
    input only when no callback has a batch-end hook (or says `async_safe`);
    otherwise it waits for each step's logs, and on JAX a hook that reads
    `self.model` also copies the whole training state back into the model
    every step. Two callbacks of every trial have such hooks without using
    them: KerasTuner's `TunerCallback`, whose `on_batch_end` hands
    `self.model` to `Tuner.on_batch_end` (a no-op unless a tuner subclass
    overrides it), and Keras' `TensorBoard` writing per epoch without
    profiling (its batch-end hook writes batch scalars only for
    `update_freq="batch"` and a graph only of a TensorFlow function). Their
    hooks are reset to `Callback`'s no-ops; anything else is left alone.
    """
    from tuning._keras import is_tuner_callback, tensorboard_traces

    def idle(cb, *hooks):
        for hook in hooks:
            setattr(cb, hook, types.MethodType(getattr(keras.callbacks.Callback, hook), cb))

    for cb in callbacks:
        if is_tuner_callback(cb):
            hooks = ("on_batch_begin", "on_batch_end")
            if all(getattr(type(cb.tuner), h) is getattr(kt.Tuner, h) for h in hooks):
                idle(cb, *hooks)
        elif (
            type(cb) is keras.callbacks.TensorBoard
            and cb.update_freq == "epoch"
            and not tensorboard_traces(cb)
            and keras.backend.backend() != "tensorflow"
        ):
            idle(cb, "on_train_batch_end")
    return callbacks


@functools.cache
def malloc_trim():
    """glibc's `malloc_trim`, or None (another C library, another system).

    Example:

        >>> from tuning.callbacks import malloc_trim
        >>> trim = malloc_trim()
        >>> trim is None or trim(0) in (0, 1)
        True
    """
    import ctypes

    if not sys.platform.startswith("linux"):
        return None
    try:
        return getattr(ctypes.CDLL(None), "malloc_trim", None)
    except OSError:
        return None


def release_memory() -> None:
    """Collect Python's reference cycles, then hand the C heap's free pages back to the system.

    A finished trial's model, optimizer and compiled steps live in
    reference cycles (layers and their model point at each other) until
    the cycle collector runs, and glibc keeps what they free. After a
    one-trial search on JAX without TensorFlow (2,000 images at 96 px) it
    took the process from 1,226 to 887 MB before the report reads every
    image. Does nothing more than `gc.collect()` where `malloc_trim` does
    not exist.

    Example:

        >>> from tuning.callbacks import release_memory
        >>> release_memory()
    """
    gc.collect()
    _trim()


def _trim():
    trim = malloc_trim()
    if trim is not None:
        trim(0)


class ReleaseFreedMemory(keras.callbacks.Callback):
    """Give the C heap's free pages back to the system every `every` batches (glibc's `malloc_trim`).

    XLA on the CPU (JAX) allocates each step's activations with `malloc`
    and frees them; glibc keeps the freed pages, scattered over its arenas,
    so a process' memory rose through a one-epoch run from 1.4 to 2.7 GB
    with nothing alive to show for it (2,000 images at 96 px,
    `scripts/bench_scale.py`); trimmed every 10 batches it stayed near
    2 GB, at the same epoch time. It never waits on a step (`async_safe`),
    and does nothing where `malloc_trim` does not exist.

    Args:
        every: int. Batches between two trims. Defaults to 10.

    Example:

        >>> import numpy as np, keras
        >>> from tuning.callbacks import ReleaseFreedMemory
        >>> m = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
        >>> m.compile("sgd", "mse")
        >>> m.fit(np.zeros((40, 2)), np.zeros(40), batch_size=4, verbose=0,
        ...       callbacks=[ReleaseFreedMemory(every=5)]).epoch
        [0]
    """

    async_safe = True  # needs no logs: Keras keeps dispatching steps ahead

    def __init__(self, every: int = 10):
        super().__init__()
        if not isinstance(every, int) or every < 1:
            raise ValueError(f"`every` must be an int of at least 1. Received: every={every!r}")
        self.every = every
        self.releases = 0  # calls so far (a ctypes function on `self` would not deep-copy)

    def release(self):
        _trim()
        self.releases += 1

    def on_train_batch_end(self, batch, logs=None):
        if batch % self.every == self.every - 1:
            self.release()

    def on_test_batch_end(self, batch, logs=None):
        if batch % self.every == self.every - 1:
            self.release()

    def on_epoch_end(self, epoch, logs=None):
        self.release()


class EpochLogger(keras.callbacks.Callback):
    """One line per epoch (`fit(verbose=2)`'s), without waiting on every step.

    Args:
        stream: file. Where the lines go. Defaults to `sys.stdout`.

    Example:

        >>> import keras, numpy as np, tuning.callbacks as cb
        >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
        >>> model.compile("sgd", "mse")
        >>> _ = model.fit(np.zeros((4, 2)), np.zeros(4), epochs=1, verbose=0,
        ...               callbacks=[cb.EpochLogger()])  # doctest: +ELLIPSIS
        epoch 1/1 - ...s - loss: 0.0000
    """

    def __init__(self, stream: Any = None) -> None:
        super().__init__()
        self.stream = stream

    def _out(self):
        return self.stream if self.stream is not None else sys.stdout

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        seconds = time.perf_counter() - getattr(self, "_start", time.perf_counter())
        values = " - ".join(f"{k}: {v:.4f}" for k, v in (logs or {}).items() if isinstance(v, (int, float)))
        print(
            f"epoch {epoch + 1}/{self.params.get('epochs', '?')} - {seconds:.0f}s - {values}",
            file=self._out(),
            flush=True,
        )


class EpochProgress(EpochLogger):
    """`EpochLogger` with a progress bar inside each epoch, for a terminal.

    The bar reads only the step number, never the step's logs, and is
    `async_safe`: on JAX and PyTorch, Keras keeps dispatching the next
    steps while the bar is drawn (a plain `verbose=1` waits for every
    step's loss). Redrawn at most 5 times a second, then replaced by the
    epoch's line.

    Example:

        >>> import io, keras, numpy as np, tuning.callbacks as cb
        >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
        >>> model.compile("sgd", "mse")
        >>> out = io.StringIO()
        >>> _ = model.fit(np.zeros((8, 2)), np.zeros(8), batch_size=2, epochs=1,
        ...               verbose=0, callbacks=[cb.EpochProgress(out, every=0)])
        >>> bar, line = out.getvalue().rsplit("\\033[K", 1)
        >>> "] 4/4 " in bar, line.startswith("epoch 1/1 - ")
        (True, True)
    """

    async_safe = True

    def __init__(self, stream: Any = None, *, every: float = 0.2) -> None:
        super().__init__(stream)
        self.every = every
        self._lock = threading.Lock()

    @staticmethod
    def wanted() -> bool:
        """Whether standard output is a terminal (a bar in a log file is noise)."""
        return sys.stdout.isatty()

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        super().on_epoch_begin(epoch, logs)
        self._epoch, self._shown, self._drawn_at = epoch, -1, 0.0

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        steps = self.params.get("steps") or 0
        now = time.perf_counter()
        with self._lock:  # hooks may run in Keras' worker threads, out of order
            if batch <= self._shown or (now - self._drawn_at < self.every and batch + 1 != steps):
                return
            self._shown, self._drawn_at = batch, now
            done = batch + 1
            bar = ""
            if steps:
                filled = int(24 * done / steps)
                bar = f"[{'=' * filled}{'.' * (24 - filled)}] {done}/{steps}"
            else:
                bar = f"step {done}"
            seconds = now - self._start
            print(
                f"\repoch {self._epoch + 1}/{self.params.get('epochs', '?')} {bar} {seconds:.0f}s",
                end="",
                file=self._out(),
                flush=True,
            )

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        with self._lock:
            print("\r\033[K", end="", file=self._out())  # clear the bar's line
            self._shown = float("inf")
        super().on_epoch_end(epoch, logs)


class Redirect(keras.callbacks.Callback):
    """Runs a callback against the full model while a part of it trains.

    Cached-feature trials fit the head alone; KerasTuner's checkpoint,
    EarlyStopping and TensorBoard must still see (and save) the full model,
    which shares the head's weights.
    """

    def __init__(self, inner, model):
        super().__init__()
        self.inner = inner
        self.full = model
        inner.set_model(model)
        self._fit_model = None
        # Async-safe when the wrapped callback is (its batch hooks are no-ops
        # or it says so): `_sync_stop` only reads and sets a flag.
        self.async_safe = getattr(inner, "async_safe", False) or _no_batch_end_hooks(inner)

    def set_model(self, model):
        self._fit_model = model

    def set_params(self, params):
        self.inner.set_params(params)

    def _sync_stop(self):
        if self.full.stop_training and self._fit_model is not None:
            self._fit_model.stop_training = True

    def on_train_begin(self, logs=None):
        self.full.stop_training = False
        self.inner.on_train_begin(logs)

    def on_train_end(self, logs=None):
        self.inner.on_train_end(logs)

    def on_epoch_begin(self, epoch, logs=None):
        self.inner.on_epoch_begin(epoch, logs)

    def on_epoch_end(self, epoch, logs=None):
        self.inner.on_epoch_end(epoch, logs)
        self._sync_stop()

    def on_train_batch_begin(self, batch, logs=None):
        self.inner.on_train_batch_begin(batch, logs)
        self._sync_stop()

    def on_train_batch_end(self, batch, logs=None):
        self.inner.on_train_batch_end(batch, logs)
        self._sync_stop()


class TimeBudget(keras.callbacks.Callback):
    """Stops a `fit` once a wall-clock deadline has passed.

    Checked before each training batch (a batch-begin hook keeps Keras'
    asynchronous dispatch), so a `fit` ends at most one batch and one
    validation pass after the deadline; `EarlyStopping(restore_best_weights=True)`
    then restores the best epoch as usual. One object serves every trial
    of a search: KerasTuner deep-copies each trial's callbacks, and a copy
    of this one is itself, so `stops` collects what the budget cut.

    Args:
        deadline: float. A `time.time()` value.

    Example:

        >>> import time, keras, numpy as np, tuning.callbacks as cb
        >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
        >>> model.compile("sgd", "mse")
        >>> budget = cb.TimeBudget(time.time() - 1)  # already past
        >>> h = model.fit(np.zeros((8, 2)), np.zeros(8), batch_size=2, epochs=5, verbose=0,
        ...               callbacks=[budget])
        >>> len(h.history["loss"]), budget.stops
        (1, [{'epoch': 1, 'batch': 1}])
    """

    async_safe = True

    def __init__(self, deadline: float) -> None:
        super().__init__()
        self.deadline = float(deadline)
        self.stops: list = []
        self._epoch = 0

    def __deepcopy__(self, memo):
        return self

    def remaining(self) -> float:
        """Seconds left (negative once past)."""
        return self.deadline - time.time()

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._epoch = epoch

    def on_train_batch_begin(self, batch: int, logs: dict | None = None) -> None:
        if time.time() >= self.deadline and not self.model.stop_training:
            self.model.stop_training = True
            self.stops.append({"epoch": self._epoch + 1, "batch": batch + 1})
