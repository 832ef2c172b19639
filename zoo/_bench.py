"""Side-by-side throughput: zoo vs keras.applications vs torchvision, in one run.

Each side is timed the way its users run it:

- `zoo`: the toolkit's path, Keras' own `fit` / `predict` on `uint8`
  images (4x fewer bytes than float32 cross to the device, Keras prefetches
  them); normalisation runs inside the compiled step
  (`include_preprocessing=True`).
- `keras`: `keras.applications` through `fit` / `predict` on float32 images
  already normalised by its `preprocess_input` on the host (done once,
  outside the clock: the comparison is generous to it).
- `ceiling` (JAX): the zoo model as one jitted stateless train step
  (`stateless_call` + `value_and_grad` + `optimizer.stateless_apply`) and a
  jitted forward, on data already on the device: what the hardware allows.
- `input_u8` / `input_f32`: `fit` / `predict` on a model that costs next to
  nothing, fed `uint8` and float32 images: the input path alone (Keras' data
  handling, the host-to-device copy, dispatch), to account for the
  difference between the sides.
- `keras_torch` (when torch imports and the backend is another): the zoo
  side again, on the Keras torch backend, in a child process: which Keras
  backend trains fastest here.
- `torch` / `compiled` (when torch and torchvision import): the torchvision
  model, channels-last, on normalised float32 data already on the device,
  eager and under `torch.compile`; bf16 via `torch.autocast`.

Same batch, optimizer (SGD, lr 1e-3) and loss on every side. `fit` and
`predict` are timed by a callback from the start of training (data adapter
built, step compiled by a warm-up call) to the last step's result, waiting
for nothing in between (Keras keeps dispatching asynchronously).
Repetitions are interleaved (zoo, keras, ceiling, torch, ..., zoo, ...) so
drift of the machine affects all sides alike; the median is reported.
Throughput is also given as achieved TFLOP/s from the model's MACs (train =
3 x forward) and as MFU when the device's peak is known (`peak_tflops`).

Why this lives inside the `zoo` package and not beside it in `benchmarks/`:
it is a user command (`python -m zoo bench`), installed with the package so
that anyone can measure the models on their own hardware, like
`timm`'s `benchmark.py` would be if it were installed. It uses only `zoo`'s
public API (`build`, `count_macs`, `precision_policy`), imports torch and
torchvision lazily (in a child process where TensorFlow is loaded), and no
other module of `zoo` imports it, so it costs nothing to users who never
run it. Scripts that measure the project itself (CI, GPU checks) stay in
`scripts/`.
"""

from __future__ import annotations

import json
import statistics
import sys
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
# torchvision constructors (`torchvision.models.<name>`) and their options.
TORCH_TWINS = {
    "vgg16": ("vgg16", {}),
    "vgg19": ("vgg19", {}),
    "resnet18": ("resnet18", {}),
    "resnet34": ("resnet34", {}),
    "resnet50": ("resnet50", {}),
    "resnet101": ("resnet101", {}),
    "resnet152": ("resnet152", {}),
    "googlenet": ("googlenet", {"aux_logits": False, "init_weights": True}),
}
_SIDES = ("zoo", "keras", "keras_torch", "ceiling", "torch", "compiled", "input_u8", "input_f32")
_RATIO_SIDES = ("keras", "keras_torch", "ceiling", "torch", "compiled")


def _input_probe(shape, dtype, num_classes=1000):
    """A model that costs next to nothing: `fit`/`predict` on it time the input path.

    Keras' own data handling, the transfer to the device and the step's
    dispatch, per batch, for `uint8` or float32 images: what the zoo side
    pays for its input and the keras.applications side for its.
    """
    inputs = keras.Input(shape, dtype=dtype)
    head = zoo.layers.classifier_head(num_classes, pooling="avg", activation=None)
    return _compiled(keras.Model(inputs, zoo.layers.apply(head, keras.ops.cast(inputs, "float32"))))


def _compiled(model, jit_compile="auto"):
    model.compile(
        optimizer=keras.optimizers.SGD(1e-3), loss="sparse_categorical_crossentropy", jit_compile=jit_compile
    )
    return model


class _SteadyClock(keras.callbacks.Callback):
    """Seconds per step of one `fit`/`predict` call, data set-up excluded.

    From `on_train_begin`/`on_predict_begin` (Keras has built its data
    adapter by then; the step is already compiled) to the completion of the
    last step, over all `steps + 1` steps. Only the last step's result is
    waited for, and `async_safe` keeps Keras' asynchronous dispatch in
    between (a callback with a batch hook that is not async-safe makes Keras
    fetch every step's logs). Timing from the first step's completion
    instead would undercount: on a CPU, JAX runs the next steps alongside it.
    """

    async_safe = True

    def __init__(self, steps):
        super().__init__()
        self.steps = steps
        self.marks = {}

    def _begin(self, logs=None):
        self.marks["begin"] = time.perf_counter()

    def _mark(self, batch, logs=None):
        if batch == self.steps:
            keras.ops.convert_to_numpy(keras.tree.flatten(logs)[0])
            self.marks["end"] = time.perf_counter()

    on_train_begin = on_predict_begin = _begin
    on_train_batch_end = on_predict_batch_end = _mark

    def seconds_per_step(self):
        return (self.marks["end"] - self.marks["begin"]) / (self.steps + 1)


def _keras_sides(model, x, y, *, batch, steps):
    """`(infer, train)` timers of a compiled Keras model through `predict`/`fit`."""

    def infer():
        clock = _SteadyClock(steps)
        model.predict(x, batch_size=batch, verbose=0, callbacks=[clock])
        return clock.seconds_per_step()

    def train():
        clock = _SteadyClock(steps)
        model.fit(x, y, batch_size=batch, epochs=1, shuffle=False, verbose=0, callbacks=[clock])
        return clock.seconds_per_step()

    return infer, train


def _timed(fn, steps, sync):
    """`(infer, train)`-style timer of a step function: seconds per call."""

    def run():
        start = time.perf_counter()
        for _ in range(steps):
            out = fn()
        sync(out)
        return (time.perf_counter() - start) / steps

    return run


def _interleaved(timers, repeats):
    """Warm every side up (compile, trace) then time them in turn, `repeats` times."""
    for infer, train in timers.values():
        infer()
        train()
    results = {k: {"infer": [], "train": []} for k in timers}
    for _ in range(repeats):
        for key, (infer, train) in timers.items():
            results[key]["infer"].append(infer())
            results[key]["train"].append(train())
    return results


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

    return (lambda: infer(state[0][0], state[0][1], x)), train


def torch_available() -> bool:
    """Whether torch and torchvision are installed (the torchvision columns).

    Looked up without importing them: a CUDA build of torchvision crashes a
    process that has imported TensorFlow (seen with torch 2.14 +
    TensorFlow 2.21), so where TensorFlow is loaded they run in a child
    process.

    Example:

        >>> from zoo._bench import torch_available
        >>> torch_available() in (True, False)
        True
    """
    return _importable("torch") and _importable("torchvision")


def _importable(module):
    import importlib.util

    return importlib.util.find_spec(module) is not None


def torch_steps(module, x8, y, *, precision="fp32", compile=False):
    """`(infer, train, sync)` step functions of a torch module, the torch way.

    The data is normalised (ImageNet mean/std) on the host once and put on the
    device, channels-last, like the H100 anchors in `reference.md`; one train
    step is forward, cross-entropy, backward and an SGD update; bf16 runs
    under `torch.autocast`.

    Example:

        >>> import numpy as np, torch
        >>> from zoo._bench import torch_steps
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten(), torch.nn.Linear(144, 5))
        >>> infer, train, sync = torch_steps(net, np.zeros((2, 8, 8, 3), "uint8"), np.array([0, 1]))
        >>> sync(train()).shape, tuple(sync(infer()).shape)
        ((), (2, 5))
    """
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1) * 255
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1) * 255
    x = (torch.from_numpy(np.ascontiguousarray(x8)).permute(0, 3, 1, 2).float() - mean) / std
    x = x.to(device).contiguous(memory_format=torch.channels_last)
    y = torch.from_numpy(np.asarray(y)).long().to(device)
    module = module.to(device).to(memory_format=torch.channels_last)
    net = torch.compile(module) if compile else module
    optimizer = torch.optim.SGD(module.parameters(), lr=1e-3)
    loss_fn = torch.nn.CrossEntropyLoss()
    autocast = dict(device_type=device, dtype=torch.bfloat16, enabled=precision == "bf16")

    def train():
        module.train()
        with torch.autocast(**autocast):
            loss = loss_fn(net(x), y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss

    def infer():
        module.eval()
        with torch.no_grad(), torch.autocast(**autocast):
            return net(x)

    def sync(out):
        if device == "cuda":
            torch.cuda.synchronize()
        return out.detach().float().cpu().numpy()

    return infer, train, sync


def _torch_child(name, batch, size, precision, steps, repeats, sides):
    """The torch sides timed in this (child) process: `{side: {what: [seconds]}}`."""
    rng = np.random.default_rng(0)
    x8 = rng.integers(0, 256, (batch, size, size, 3)).astype("uint8")
    y = rng.integers(0, 1000, (batch,))
    return _interleaved(
        _torch_sides(name, x8, y, precision=precision, steps=steps, sides=set(sides)), repeats
    )


def _keras_child(name, batch, size, precision, steps, repeats, jit_compile):
    """The zoo side timed in this (child) process, on its backend: `{what: [seconds]}`."""
    rng = np.random.default_rng(0)
    n = batch * (steps + 1)
    x8 = rng.integers(0, 256, (n, size, size, 3)).astype("uint8")
    y = rng.integers(0, 1000, (n,))
    with zoo.dtype_policy_scope(zoo.precision_policy(precision)):
        model = _compiled(
            zoo.build(name, input_shape=(size, size, 3), include_preprocessing=True), jit_compile
        )
        return _interleaved({"zoo": _keras_sides(model, x8, y, batch=batch, steps=steps)}, repeats)["zoo"]


def _in_child(function, backend, **kwargs):
    """Run `zoo._bench.<function>(**kwargs)` in a fresh process on `backend`; its JSON result."""
    import os
    import subprocess

    code = (
        f"import json, sys; from zoo._bench import {function}; "
        f"print('@@' + json.dumps({function}(**json.loads(sys.argv[1]))))"
    )
    env = {**os.environ, "KERAS_BACKEND": backend}
    done = subprocess.run(
        [sys.executable, "-c", code, json.dumps(kwargs)], env=env, capture_output=True, text=True
    )
    lines = [l for l in done.stdout.splitlines() if l.startswith("@@")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(
            f"The {backend} columns failed in their process (exit {done.returncode}):\n"
            f"{done.stderr[-2000:]}\nLeave them out with torch=False (--torch off)."
        )
    return json.loads(lines[-1][2:])


def _torch_sides(name, x8, y, *, precision, steps, sides):
    import torch
    import torchvision

    ctor, options = TORCH_TWINS[name]
    timers = {}
    for side, compile in (("torch", False), ("compiled", True)):
        if side not in sides:
            continue
        torch.manual_seed(0)
        module = getattr(torchvision.models, ctor)(weights=None, **options)
        infer, train, sync = torch_steps(module, x8, y, precision=precision, compile=compile)
        timers[side] = (_timed(infer, steps, sync), _timed(train, steps, sync))
    return timers


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


def bench_model(
    name: str,
    *,
    batch: int,
    steps: int,
    size: int,
    repeats: int = 3,
    precision: str = "fp32",
    peak_tflops: float | None = None,
    jit_compile="auto",
    torch: bool | None = None,
    sides=None,
) -> dict:
    """Train-step and inference img/s of one model on every side, in one run.

    Args:
        name: str. A zoo model name.
        batch, steps, size, repeats: int. Batch size, timed steps per
            repetition, input side, interleaved repetitions (median).
        precision: str. "fp32" or "bf16" (`mixed_bfloat16` on the Keras
            sides, `torch.autocast` on the torch ones).
        peak_tflops: float. The device's peak, for MFU. Defaults to None.
        jit_compile: "auto", True or False: the zoo side's `compile`
            option (Keras' "auto" is XLA on JAX and on TF with a GPU).
        torch: bool. Time the torch sides: the zoo model on the Keras torch
            backend (where torch imports and the backend is another) and
            the torchvision twin, eager and compiled (where torchvision
            imports too). Defaults to whichever import; False leaves them out.
        sides: iterable of str. Only these of `zoo`, `keras`, `keras_torch`, `ceiling`,
            `torch`, `compiled`, `input_u8`, `input_f32` (e.g. one per
            process, to read each one's peak device memory). Defaults to all
            that apply.

    Returns:
        A dict: `{side}_{infer|train}_img_s` for the sides that ran,
        `{infer|train}_ratio` (zoo / keras.applications),
        `keras_torch_{infer|train}_ratio` (zoo / the zoo model on the
        Keras torch backend), `ceiling_{infer|train}_ratio` (zoo / jitted
        step, JAX),
        `torch_{infer|train}_ratio` and `compiled_{infer|train}_ratio` (zoo /
        torchvision eager / torch.compile), achieved TFLOP/s, MFU and peak
        device memory where known.

    Example:

        >>> from zoo._bench import bench_model
        >>> row = bench_model("resnet18", batch=2, steps=1, size=32, repeats=1, torch=False)
        >>> row["zoo_train_img_s"] > 0
        True
    """
    policy = zoo.precision_policy(precision)
    if steps < 1 or batch < 1 or repeats < 1:
        raise ValueError(
            f"`batch`, `steps` and `repeats` must be >= 1. Received: "
            f"batch={batch}, steps={steps}, repeats={repeats}"
        )
    name = zoo.get_spec(name).name
    shape = (size, size, 3)
    rng = np.random.default_rng(0)
    n = batch * (steps + 1)  # one step before the clock starts
    x8 = rng.integers(0, 256, (n,) + shape).astype("uint8")
    y = rng.integers(0, 1000, (n,))
    use_torch = torch_available() if torch is None else torch
    if torch and not torch_available():
        raise ImportError(
            "The torchvision columns need torch and a torchvision built for it "
            "(e.g. `pip install torch torchvision` from the same index); or leave "
            "`torch` to None to skip them when they do not import."
        )
    wanted = set(_SIDES if sides is None else sides)
    if wanted - set(_SIDES):
        raise ValueError(f"Unknown sides {sorted(wanted - set(_SIDES))}; known: {_SIDES}.")
    timers = {}
    with zoo.dtype_policy_scope(policy):
        if "zoo" in wanted:
            model = _compiled(zoo.build(name, input_shape=shape, include_preprocessing=True), jit_compile)
            timers["zoo"] = _keras_sides(model, x8, y, batch=batch, steps=steps)
        for side, data in (("input_u8", x8), ("input_f32", None)):
            if side in wanted:
                data = x8.astype("float32") if data is None else data
                timers[side] = _keras_sides(
                    _input_probe(shape, data.dtype.name), data, y, batch=batch, steps=steps
                )
        if "keras" in wanted and name in KERAS_TWINS:
            ref = _compiled(getattr(keras.applications, KERAS_TWINS[name])(weights=None, input_shape=shape))
            xf = _keras_preprocess(name)(x8.astype("float32"))
            timers["keras"] = _keras_sides(ref, xf, y, batch=batch, steps=steps)
        if "ceiling" in wanted and keras.backend.backend() == "jax":
            model = zoo.build(name, input_shape=shape, include_preprocessing=True)
            infer, train = _jax_ceiling(model, x8[:batch], y[:batch])
            sync = keras.ops.convert_to_numpy
            timers["ceiling"] = (_timed(infer, steps, sync), _timed(train, steps, sync))
        torch_sides = wanted & {"torch", "compiled"} if use_torch and name in TORCH_TWINS else set()
        if torch_sides and "tensorflow" not in sys.modules:  # else a child process
            timers.update(
                _torch_sides(name, x8[:batch], y[:batch], precision=precision, steps=steps, sides=torch_sides)
            )
            torch_sides = set()
        results = _interleaved(timers, repeats)
    memory = _peak_memory_mb()  # before anything else is built
    # The sides timed in their own process, after the Keras sides: the zoo
    # model on the Keras torch backend, and torchvision where TensorFlow is
    # loaded (see `torch_available`).
    child = dict(name=name, batch=batch, size=size, precision=precision, steps=steps, repeats=repeats)
    keras_torch = torch is not False and keras.backend.backend() != "torch" and _importable("torch")
    if "keras_torch" in wanted and keras_torch:
        results["keras_torch"] = _in_child("_keras_child", "torch", **child, jit_compile="auto")
    if torch_sides:
        results.update(_in_child("_torch_child", "torch", **child, sides=sorted(torch_sides)))
    macs = zoo.count_macs(zoo.build(name, input_shape=shape))
    row = {
        "model": name,
        "batch": batch,
        "size": size,
        "precision": precision,
        "backend": keras.backend.backend(),
        "jit_compile": jit_compile,
        "gmacs": macs / 1e9,
    }
    for key in results:
        for what, flops_per_image in (("infer", 2 * macs), ("train", 6 * macs)):
            row[f"{key}_{what}_img_s"] = batch / statistics.median(results[key][what])
            if key.startswith("input"):
                continue
            row[f"{key}_{what}_tflops"] = row[f"{key}_{what}_img_s"] * flops_per_image / 1e12
            if peak_tflops:
                row[f"{key}_{what}_mfu"] = row[f"{key}_{what}_tflops"] / peak_tflops
    for other in _RATIO_SIDES:
        for what in ("infer", "train"):
            if "zoo" in results and other in results:
                prefix = "" if other == "keras" else f"{other}_"
                row[f"{prefix}{what}_ratio"] = row[f"zoo_{what}_img_s"] / row[f"{other}_{what}_img_s"]
    if memory is not None:
        row["peak_memory_mb"] = memory
    else:  # a CPU: the process's peak resident memory (compare one side per process)
        import resource

        row["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return row


def format_table(rows) -> str:
    """The rows as two text tables (inference, training), ratios beside each side."""
    first = (
        rows[0] if rows else {"backend": keras.backend.backend(), "precision": "fp32", "jit_compile": "auto"}
    )
    lines = [
        f"backend {first['backend']}, {first['precision']}, zoo jit_compile="
        f"{first['jit_compile']}; img/s (median of repeats); ratio = zoo / the side "
        "before it; input u8/f32 = the same fit/predict on a model that costs nothing"
    ]
    for what, title in (("infer", "inference"), ("train", "train step")):
        cols = [
            (f"zoo_{what}_img_s", "zoo", 8),
            (f"keras_{what}_img_s", "keras.app", 9),
            (f"{what}_ratio", "ratio", 6),
            (f"keras_torch_{what}_img_s", "k-torch", 8),
            (f"keras_torch_{what}_ratio", "ratio", 6),
            (f"ceiling_{what}_img_s", "jit step", 8),
            (f"ceiling_{what}_ratio", "ratio", 6),
            (f"torch_{what}_img_s", "torch", 8),
            (f"torch_{what}_ratio", "ratio", 6),
            (f"compiled_{what}_img_s", "compiled", 8),
            (f"compiled_{what}_ratio", "ratio", 6),
            (f"zoo_{what}_tflops", "TFLOP/s", 7),
            (f"zoo_{what}_mfu", "MFU", 5),
            (f"input_u8_{what}_img_s", "input u8", 9),
            (f"input_f32_{what}_img_s", "input f32", 9),
        ]
        if what == "train":
            cols += [("peak_memory_mb", "peak MiB", 8), ("peak_rss_mb", "RSS MiB", 8)]
        cols = [c for c in cols if any(c[0] in r for r in rows)]
        header = f"{title:<12} {'size':>4} {'batch':>5} | " + " ".join(f"{t:>{w}}" for _, t, w in cols)
        lines += ["", header, "-" * len(header)]
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


def main(
    models,
    *,
    batch,
    steps,
    size,
    repeats,
    json_path=None,
    precision="fp32",
    peak_tflops=None,
    jit_compile="auto",
    torch=None,
    sides=None,
    echo=print,
):
    """Bench each model (`bench_model`), print the table, optionally write JSON."""
    rows = []
    for name in models:
        rows.append(
            bench_model(
                name,
                batch=batch,
                steps=steps,
                size=size,
                repeats=repeats,
                precision=precision,
                peak_tflops=peak_tflops,
                jit_compile=jit_compile,
                torch=torch,
                sides=sides,
            )
        )
        keras.backend.clear_session()
    echo(format_table(rows))
    if json_path:
        tmp = f"{json_path}.tmp"
        with open(tmp, "w") as f:
            json.dump(rows, f, indent=2)
        import os

        os.replace(tmp, json_path)
    return rows
