"""Side-by-side throughput: zoo models vs keras.applications, in one run.

Both sides get the same input, batch, optimizer and loss; measurements are
interleaved (zoo, reference, zoo, ...) so drift of the machine affects both
alike, and the median of the repetitions is reported.
"""

from __future__ import annotations

import json
import statistics
import time

import keras
import numpy as np

import zoo

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


def bench_model(name: str, *, batch: int, steps: int, size: int, repeats: int = 3) -> dict:
    """Train-step and inference img/s of zoo vs keras.applications for one model.

    Example:

    >>> from zoo.bench import bench_model
    >>> row = bench_model("resnet50", batch=2, steps=1, size=32, repeats=1)  # doctest: +SKIP
    """
    shape = (size, size, 3)
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (batch,) + shape).astype("float32")
    y = rng.integers(0, 1000, (batch,))
    models = {"zoo": _compiled(zoo.build(name, input_shape=shape))}
    if name in KERAS_TWINS:
        ctor = getattr(keras.applications, KERAS_TWINS[name])
        models["keras"] = _compiled(ctor(weights=None, input_shape=shape))
    for m in models.values():  # compile/trace outside the clock
        m.predict_on_batch(x)
        m.train_on_batch(x, y)
    results = {k: {"infer": [], "train": []} for k in models}
    for _ in range(repeats):
        for key, m in models.items():
            results[key]["infer"].append(_time_per_call(lambda: m.predict_on_batch(x), steps))
            results[key]["train"].append(_time_per_call(lambda: m.train_on_batch(x, y), steps))
    row = {"model": name, "batch": batch, "size": size, "backend": keras.backend.backend()}
    for key in models:
        for what in ("infer", "train"):
            row[f"{key}_{what}_img_s"] = batch / statistics.median(results[key][what])
    if "keras" in models:
        for what in ("infer", "train"):
            row[f"{what}_ratio"] = row[f"zoo_{what}_img_s"] / row[f"keras_{what}_img_s"]
    return row


def format_table(rows) -> str:
    header = f"{'model':<12} {'size':>5} {'batch':>5} | {'zoo infer':>10} {'keras infer':>11} {'ratio':>6} | {'zoo train':>10} {'keras train':>11} {'ratio':>6}"
    lines = [f"backend: {rows[0]['backend'] if rows else keras.backend.backend()}  (img/s, median of repeats)", header, "-" * len(header)]
    for r in rows:
        def g(k, fmt="{:>10.1f}"):
            return fmt.format(r[k]) if k in r else f"{'n/a':>10}"
        lines.append(
            f"{r['model']:<12} {r['size']:>5} {r['batch']:>5} | {g('zoo_infer_img_s')} {g('keras_infer_img_s', '{:>11.1f}')} "
            f"{g('infer_ratio', '{:>6.3f}')} | {g('zoo_train_img_s')} {g('keras_train_img_s', '{:>11.1f}')} {g('train_ratio', '{:>6.3f}')}"
        )
    return "\n".join(lines)


def main(models, *, batch, steps, size, repeats, json_path=None, echo=print):
    rows = []
    for name in models:
        rows.append(bench_model(name, batch=batch, steps=steps, size=size, repeats=repeats))
        keras.backend.clear_session()
    echo(format_table(rows))
    if json_path:
        with open(json_path, "w") as f:
            json.dump(rows, f, indent=2)
    return rows
