"""Side-by-side throughput: zoo models vs keras.applications, in one run.

Each side is timed the way its users feed it:

- `zoo`: the toolkit's path. `uint8` host batches (4x fewer bytes than
  float32 to the device); normalisation runs inside the compiled step
  (`include_preprocessing=True`).
- `keras`: `keras.applications` with float32 host batches and its
  `preprocess_input` on the host, inside the timed step.
- `ceiling` (JAX): the zoo model as one jitted stateless train step
  (`stateless_call` + `value_and_grad` + `optimizer.stateless_apply`) and a
  jitted forward, on data already on the device: what the hardware allows.

Same batch, optimizer (SGD) and loss on every side; measurements are
interleaved (zoo, keras, ceiling, zoo, ...) so drift of the machine affects
all alike, and the median of the repetitions is reported. Throughput is also
given as achieved TFLOP/s from the model's MACs (train = 3 x forward), and as
MFU when the device's peak is known (`peak_tflops`).
"""

from __future__ import annotations

import json
import statistics
import time

import keras
import numpy as np

import zoo

PRECISIONS = {"fp32": "float32", "bf16": "mixed_bfloat16"}

# keras.applications constructors for the zoo models that have a twin there.
KERAS_TWINS = {
    "vgg16": "VGG16",
    "vgg19": "VGG19",
    "resnet50": "ResNet50",
    "resnet101": "ResNet101",
    "resnet152": "ResNet152",
    "resnet50v2": "ResNet50V2",
    "resnet101v2": "ResNet101V2",
    "resnet152v2": "ResNet152V2",
}


def _compiled(model):
    model.compile(optimizer=keras.optimizers.SGD(1e-3), loss="sparse_categorical_crossentropy")
    return model


def _time_per_call(fn, steps):
    start = time.perf_counter()
    for _ in range(steps):
        out = fn()
    keras.ops.convert_to_numpy(out if not isinstance(out, dict) else next(iter(out.values())))
    return (time.perf_counter() - start) / steps


def _keras_preprocess(name):
    family = "resnet_v2" if name.endswith("v2") else ("resnet" if name.startswith("resnet") else name)
    return getattr(keras.applications, family).preprocess_input


def _jax_ceiling(model, x, y):
    """Jitted stateless train step and forward on device-resident data (JAX only)."""
    import jax

    optimizer = keras.optimizers.SGD(1e-3)
    optimizer.build(model.trainable_variables)
    loss_fn = keras.losses.SparseCategoricalCrossentropy()
    tv = [v.value for v in model.trainable_variables]
    ntv = [v.value for v in model.non_trainable_variables]
    ov = [v.value for v in optimizer.variables]

    def loss_and_state(tv, ntv, x, y):
        pred, ntv = model.stateless_call(tv, ntv, x, training=True)
        return loss_fn(y, pred), ntv

    @jax.jit
    def train_step(state, x, y):
        tv, ntv, ov = state
        (loss, ntv), grads = jax.value_and_grad(loss_and_state, has_aux=True)(tv, ntv, x, y)
        tv, ov = optimizer.stateless_apply(ov, grads, tv)
        return loss, (tv, ntv, ov)

    @jax.jit
    def infer(tv, ntv, x):
        return model.stateless_call(tv, ntv, x, training=False)[0]

    x, y = jax.device_put(x), jax.device_put(y)
    state = [(tv, ntv, ov)]

    def train():
        loss, state[0] = train_step(state[0], x, y)
        return loss

    return train, (lambda: infer(state[0][0], state[0][1], x))


def _peak_memory_mb():
    """Peak device memory in MiB where the backend reports it (GPU), else None."""
    backend = keras.backend.backend()
    try:
        if backend == "jax":
            import jax

            stats = jax.devices()[0].memory_stats() or {}
            return stats["peak_bytes_in_use"] / 2**20 if "peak_bytes_in_use" in stats else None
        if backend == "torch":
            import torch

            return torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None
    except Exception:  # a device without memory statistics (CPU)
        return None
    return None


def bench_model(name: str, *, batch: int, steps: int, size: int, repeats: int = 3,
                precision: str = "fp32", peak_tflops: float | None = None) -> dict:
    """Train-step and inference img/s of zoo vs keras.applications for one model.

    Args:
        name: str. A zoo model name.
        batch, steps, size, repeats: int. Batch size, timed steps per
            repetition, input side, interleaved repetitions (median).
        precision: str. "fp32" or "bf16" (`mixed_bfloat16` on every side).
        peak_tflops: float. The device's peak, for MFU. Defaults to None.

    Returns:
        A dict: `{side}_{infer|train}_img_s`, `{infer|train}_ratio` (zoo /
        keras), `ceiling_train_ratio` (zoo / ceiling, JAX), achieved TFLOP/s
        and MFU.

    Example:

    >>> from zoo.bench import bench_model
    >>> row = bench_model("resnet50", batch=2, steps=1, size=32, repeats=1)  # doctest: +SKIP
    """
    if precision not in PRECISIONS:
        raise ValueError(f"`precision` must be one of {tuple(PRECISIONS)}. Received: {precision!r}")
    shape = (size, size, 3)
    rng = np.random.default_rng(0)
    x8 = rng.integers(0, 256, (batch,) + shape).astype("uint8")
    y = rng.integers(0, 1000, (batch,))
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(PRECISIONS[precision])
    try:
        zoo_model = _compiled(zoo.build(name, input_shape=shape, include_preprocessing=True))
        macs = zoo.count_macs(zoo_model)
        sides = {"zoo": (lambda: zoo_model.predict_on_batch(x8),
                         lambda: zoo_model.train_on_batch(x8, y))}
        if name in KERAS_TWINS:
            ref = _compiled(getattr(keras.applications, KERAS_TWINS[name])(weights=None, input_shape=shape))
            prep = _keras_preprocess(name)
            sides["keras"] = (lambda: ref.predict_on_batch(prep(x8.astype("float32"))),
                              lambda: ref.train_on_batch(prep(x8.astype("float32")), y))
        if keras.backend.backend() == "jax":
            ceiling_model = zoo.build(name, input_shape=shape, include_preprocessing=True)
            train, infer = _jax_ceiling(ceiling_model, x8, y)
            sides["ceiling"] = (infer, train)
        for infer, train in sides.values():  # compile/trace outside the clock
            keras.ops.convert_to_numpy(infer())
            train()
        results = {k: {"infer": [], "train": []} for k in sides}
        for _ in range(repeats):
            for key, (infer, train) in sides.items():
                results[key]["infer"].append(_time_per_call(infer, steps))
                results[key]["train"].append(_time_per_call(train, steps))
    finally:
        keras.config.set_dtype_policy(previous)
    row = {"model": name, "batch": batch, "size": size, "precision": precision,
           "backend": keras.backend.backend(), "gmacs": macs / 1e9}
    for key in sides:
        for what in ("infer", "train"):
            row[f"{key}_{what}_img_s"] = batch / statistics.median(results[key][what])
    for what, flops_per_image in (("infer", 2 * macs), ("train", 6 * macs)):
        row[f"zoo_{what}_tflops"] = row[f"zoo_{what}_img_s"] * flops_per_image / 1e12
        if peak_tflops:
            row[f"zoo_{what}_mfu"] = row[f"zoo_{what}_tflops"] / peak_tflops
        for other in ("keras", "ceiling"):
            if other in sides:
                prefix = "" if other == "keras" else "ceiling_"
                row[f"{prefix}{what}_ratio"] = row[f"zoo_{what}_img_s"] / row[f"{other}_{what}_img_s"]
    memory = _peak_memory_mb()
    if memory is not None:
        row["peak_memory_mb"] = memory
    return row


def format_table(rows) -> str:
    cols = [("zoo_infer_img_s", "zoo inf", 9), ("keras_infer_img_s", "keras inf", 9),
            ("infer_ratio", "ratio", 6), ("zoo_train_img_s", "zoo train", 9),
            ("keras_train_img_s", "keras trn", 9), ("train_ratio", "ratio", 6),
            ("ceiling_train_img_s", "ceil trn", 9), ("ceiling_train_ratio", "/ceil", 6),
            ("zoo_train_tflops", "TFLOP/s", 7), ("zoo_train_mfu", "MFU", 5),
            ("peak_memory_mb", "peak MiB", 8)]
    cols = [c for c in cols if any(c[0] in r for r in rows)]
    first = rows[0] if rows else {"backend": keras.backend.backend(), "precision": "fp32"}
    header = f"{'model':<12} {'size':>4} {'batch':>5} | " + " ".join(f"{t:>{w}}" for _, t, w in cols)
    lines = [f"backend {first['backend']}, {first['precision']}; img/s (median of repeats); "
             "ratio = zoo / keras.applications, /ceil = zoo / jitted stateless step",
             header, "-" * len(header)]
    for r in rows:
        cells = []
        for key, _, w in cols:
            if key not in r:
                cells.append(f"{'n/a':>{w}}")
            elif key.endswith(("ratio", "mfu", "tflops")):
                cells.append(f"{r[key]:>{w}.3f}")
            else:
                cells.append(f"{r[key]:>{w}.1f}")
        lines.append(f"{r['model']:<12} {r['size']:>4} {r['batch']:>5} | " + " ".join(cells))
    return "\n".join(lines)


def main(models, *, batch, steps, size, repeats, json_path=None, precision="fp32",
         peak_tflops=None, echo=print):
    rows = []
    for name in models:
        rows.append(bench_model(name, batch=batch, steps=steps, size=size, repeats=repeats,
                                precision=precision, peak_tflops=peak_tflops))
        keras.backend.clear_session()
    echo(format_table(rows))
    if json_path:
        with open(json_path, "w") as f:
            json.dump(rows, f, indent=2)
    return rows
