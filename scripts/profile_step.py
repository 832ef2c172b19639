"""Where a training step's time goes, on each Keras backend: one line per part.

    python scripts/profile_step.py                     # resnet18, 64 px, batch 32, every backend
    python scripts/profile_step.py --size 224 --backends tensorflow

Each backend runs in its own process, one after the other. A step is cut
into parts by timing growing prefixes of it, each compiled the backend's
way (`tf.function`, `jax.jit`, torch eager), on one batch already in
memory, median of `--repeats` calls after two warm-up calls:

- forward: the model in inference mode;
- BatchNorm (training mode): forward in training mode minus forward;
- backward: loss and gradients minus the training-mode forward (all of
  them summed into one number, so that no compiler prunes any);
- optimizer: the whole step (SGD update applied) minus the gradients;
- augmentation: the job's flip + rotation layers alone, on the batch;
- input: one pass over the job's `tf.data` pipeline of that many images.

On TensorFlow and torch, `--onednn` adds the convolutions' own split
(forward, backward-data, backward-weights, weight reorders) read from
oneDNN's verbose log (`ONEDNN_VERBOSE=1`), in ms per step. The last column
is the train step's FLOP/s as a share of the forward's (train = 3 x
forward FLOPs): how close the step comes to inference's efficiency.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import subprocess
import sys

CHILD = r"""
import json, os, sys, time
a = json.loads(sys.argv[1])
import numpy as np, keras, zoo
from tuning.hypermodel import augmentation_layers
backend = keras.backend.backend()
B, size = a["batch"], a["size"]
rng = np.random.default_rng(0)
x8 = rng.integers(0, 256, (B, size, size, 3)).astype("uint8")
y = rng.integers(0, 1000, (B,)).astype("int32")
model = zoo.build(a["model"], input_shape=(size, size, 3), include_preprocessing=True)
loss_fn = keras.losses.SparseCategoricalCrossentropy()
optimizer = keras.optimizers.SGD(1e-3)
optimizer.build(model.trainable_variables)
augment = keras.Sequential(augmentation_layers(("flip", "rotation")))
augment.build((None, size, size, 3))
xf = keras.ops.convert_to_tensor(x8.astype("float32"))
x, yt = keras.ops.convert_to_tensor(x8), keras.ops.convert_to_tensor(y)

if backend == "tensorflow":
    import tensorflow as tf
    def grads():
        with tf.GradientTape() as tape:
            loss = loss_fn(yt, model(x, training=True))
        return tape.gradient(loss, model.trainable_variables)
    def step():
        g = grads()
        optimizer.apply(g, model.trainable_variables)
        return g[0]
    parts = {"forward": tf.function(lambda: model(x, training=False)),
             "forward_train": tf.function(lambda: model(x, training=True)),
             "gradients": tf.function(lambda: tf.add_n([tf.reduce_sum(g) for g in grads()])),
             "step": tf.function(step),
             "augmentation": tf.function(lambda: augment(xf, training=True))}
    sync = lambda out: out.numpy()
elif backend == "jax":
    import jax
    tv = [v.value for v in model.trainable_variables]
    ntv = [v.value for v in model.non_trainable_variables]
    ov = [v.value for v in optimizer.variables]
    def loss_of(tv, ntv):
        pred, ntv = model.stateless_call(tv, ntv, x, training=True)
        return loss_fn(yt, pred), ntv
    grad_fn = jax.value_and_grad(loss_of, has_aux=True)
    @jax.jit
    def step(tv, ntv, ov):
        (loss, ntv), g = grad_fn(tv, ntv)
        return optimizer.stateless_apply(ov, g, tv)[0][0]
    fwd = jax.jit(lambda tv, ntv: model.stateless_call(tv, ntv, x, training=False)[0])
    fwd_train = jax.jit(lambda tv, ntv: model.stateless_call(tv, ntv, x, training=True)[0])
    gradients = jax.jit(lambda tv, ntv: sum(g.sum() for g in grad_fn(tv, ntv)[1]))
    av = [v.value for v in augment.non_trainable_variables]
    aug = jax.jit(lambda av: augment.stateless_call([], av, xf, training=True)[0])
    parts = {"forward": lambda: fwd(tv, ntv), "forward_train": lambda: fwd_train(tv, ntv),
             "gradients": lambda: gradients(tv, ntv), "step": lambda: step(tv, ntv, ov),
             "augmentation": lambda: aug(av)}
    sync = lambda out: np.asarray(out)
else:
    import torch
    def grads():
        model.zero_grad(set_to_none=True)
        loss = loss_fn(yt, model(x, training=True))
        loss.backward()
        return [v.value.grad for v in model.trainable_variables]
    def step():
        g = grads()
        with torch.no_grad():
            optimizer.apply(g, model.trainable_variables)
        return g[0]
    def no_grad(f):
        def run():
            with torch.no_grad():
                return f()
        return run
    parts = {"forward": no_grad(lambda: model(x, training=False)),
             "forward_train": no_grad(lambda: model(x, training=True)),
             "gradients": lambda: grads()[0], "step": step,
             "augmentation": no_grad(lambda: augment(xf, training=True))}
    sync = lambda out: out.detach().cpu().numpy()

def median_seconds(f, n):
    sync(f()); sync(f())
    times = []
    for _ in range(n):
        t = time.perf_counter(); sync(f()); times.append(time.perf_counter() - t)
    return float(np.median(times))

out = {}
for name in ("forward", "forward_train", "gradients", "step", "augmentation"):
    if name == a.get("verbose_part"):
        print("@@VERBOSE-BEGIN", flush=True)
        out["verbose_steps"] = 3
        for _ in range(3):
            sync(parts[name]())
        print("@@VERBOSE-END", flush=True)
        continue
    out[name] = median_seconds(parts[name], a["repeats"])
try:
    import tensorflow as tf
    from tuning.data import file_dataset
    from zoo.datasets import write_shapes
    import tempfile
    root = write_shapes(tempfile.mkdtemp(), images_per_class=B, size=size)
    from tuning.data import split_files
    files, _, _ = split_files(root)
    paths, labels = files["train"]
    ds = file_dataset(paths, labels, image_size=size, batch_size=B, shuffle=True)
    for _ in ds: pass
    t = time.perf_counter(); n = sum(int(xb.shape[0]) for xb, _ in ds)
    out["input"] = (time.perf_counter() - t) * B / n
except ImportError:
    out["input"] = None
out["gmacs"] = zoo.count_macs(model) / 1e9
print("@@" + json.dumps(out), flush=True)
"""


def child(backend, args, verbose_part=None):
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3"}
    if verbose_part:
        env["ONEDNN_VERBOSE"] = "1"
    payload = dict(
        model=args.model, size=args.size, batch=args.batch, repeats=args.repeats, verbose_part=verbose_part
    )
    done = subprocess.run(
        [sys.executable, "-c", CHILD, json.dumps(payload)], env=env, capture_output=True, text=True
    )
    lines = [l for l in done.stdout.splitlines() if l.startswith("@@{")]
    if done.returncode != 0 or not lines:
        raise SystemExit(f"{backend} failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(lines[-1][2:]), done.stdout


def onednn_split(log, steps):
    """ms per step of each oneDNN primitive kind between the markers of `log`."""
    body = log.split("@@VERBOSE-BEGIN")[1].split("@@VERBOSE-END")[0]
    total = collections.Counter()
    for line in body.splitlines():
        p = line.split(",")
        if not line.startswith("onednn_verbose") or len(p) < 8 or p[3] != "exec":
            continue
        kind, prop = p[5], p[7]
        key = {
            "forward_training": "conv fwd",
            "forward_inference": "conv fwd",
            "backward_data": "conv bwd-data",
            "backward_weights": "conv bwd-weights",
        }.get(prop, prop)
        key = key if kind == "convolution" else ("reorder" if kind == "reorder" else "other oneDNN")
        total[key] += float(p[-1])
    return {k: v / steps for k, v in total.items()}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="resnet18")
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--backends", default="tensorflow,jax,torch")
    p.add_argument("--onednn", action="store_true", help="also the convolutions' split (TF, torch)")
    p.add_argument("--json", help="also write the rows here")
    args = p.parse_args(argv)
    rows = []
    ms = lambda s: f"{s * 1000:.0f}" if s is not None else "n/a"  # noqa: E731
    header = (
        "| backend | forward | BatchNorm (train) | backward | optimizer | step | augmentation | "
        "input | step img/s | train/forward FLOP/s |"
    )
    lines = [
        f"{args.model}, {args.size} px, batch {args.batch}, {os.cpu_count()} CPU cores; ms per batch "
        f"(median of {args.repeats})",
        "",
        header,
        "|---" * 10 + "|",
    ]
    for backend in args.backends.split(","):
        r, _ = child(backend, args)
        row = dict(backend=backend, **r)
        row["bn"] = r["forward_train"] - r["forward"]
        row["backward"] = r["gradients"] - r["forward_train"]
        row["optimizer"] = r["step"] - r["gradients"]
        row["efficiency"] = 3 * r["forward"] / r["step"]
        if args.onednn and backend in ("tensorflow", "torch"):
            _, log = child(backend, args, verbose_part="step")
            row["onednn"] = onednn_split(log, 3)
        rows.append(row)
        lines.append(
            f"| {backend} | {ms(r['forward'])} | {ms(row['bn'])} | {ms(row['backward'])} | "
            f"{ms(row['optimizer'])} | {ms(r['step'])} | {ms(r['augmentation'])} | {ms(r['input'])} | "
            f"{args.batch / r['step']:.1f} | {row['efficiency']:.2f} |"
        )
    for row in rows:
        if "onednn" in row:
            parts = ", ".join(f"{k} {v:.0f}" for k, v in sorted(row["onednn"].items(), key=lambda kv: -kv[1]))
            lines.append(f"\n{row['backend']}, oneDNN primitives in one step (ms, verbose log): {parts}")
    print("\n".join(lines))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
