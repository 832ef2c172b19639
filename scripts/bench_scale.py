"""The main job as the image count grows: input pipeline, train step, a one-trial run's memory and time.

    python scripts/bench_scale.py                          # 20,000 JPEGs at 256 px, every part
    python scripts/bench_scale.py --images 5000 --parts input,step
    python scripts/bench_scale.py --counts 2000,10000,20000 --paths tf,no-tf --table scale.md

Writes (once, into `--root`, default `.bench/scale`) a class-per-folder
tree of `--images` synthetic JPEGs at `--source-size` px in 10 classes,
then measures, each in a child process of its own, one after the other:

- input: the job's input pipeline alone (`tuning.data.file_dataset`,
  streaming from disk, nothing cached), images/s at `--size` px over up to
  `--input-images` files: `tf` is the `tf.data` path, `no-tf` the
  `ImageBatches` path on JAX with TensorFlow blocked from importing (a
  machine without it);
- step: the training step alone (resnet18, batch 32, `fit` on `uint8`
  arrays in memory, after a warm-up), images/s at `--size` and 224 px, on
  the backend each path trains with (TensorFlow; JAX);
- run: `python -m tuning run` with one trial of one epoch at `--size` px on
  the first N images of each class for each of `--counts`: wall time and
  peak RSS, with the growth per 1,000 images between the smallest and the
  largest N (least squares) and the wall time per image;
- cache: the frozen-trial feature cache of the largest N (resnet18 at
  `--size` px): bytes in memory under the limit, bytes of the float16 file
  over it, and the RSS each adds.

Prints one Markdown table per part (`--table FILE` also writes them). The
targets of the issue "the main job at 100,000 images": the input path at
least 2x the step at `--size` px, at most 20 MB of peak RSS per 1,000 images,
wall time linear in the images (per-image time within 10 %).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLASSES = 10

# Run first by a child on the no-tf path: as on a machine without TensorFlow and TensorBoard,
# importing them fails, importlib.util.find_spec finds neither, and sys.modules holds neither.
BLOCK_TF = """
import importlib.abc, importlib.util, sys
_BLOCKED = ("tensorflow", "tensorboard")
class _Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in _BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
sys.meta_path.insert(0, _Block())
_find_spec = importlib.util.find_spec
importlib.util.find_spec = lambda name, package=None: (
    None if name.split(".")[0] in _BLOCKED else _find_spec(name, package))
"""

INPUT_CHILD = """
import json, sys, time
a = json.load(open(sys.argv[1]))
from tuning.data import file_dataset
ds = file_dataset(a["paths"], a["labels"], image_size=a["size"], batch_size=32, shuffle=True, cache=False)
start, n = time.perf_counter(), 0
for x, y in ds:
    n += len(y)
seconds = time.perf_counter() - start
print("@@" + json.dumps({"images": n, "seconds": seconds, "loader": type(ds).__name__}))
"""

STEP_CHILD = """
import json, sys, time
a = json.load(open(sys.argv[1]))
import numpy as np, keras, zoo
rng = np.random.default_rng(0)
out = {}
for size in a["sizes"]:
    keras.backend.clear_session()
    model = zoo.build("resnet18", input_shape=(size, size, 3), num_classes=CLASSES, include_preprocessing=True)
    model.compile("adam", "sparse_categorical_crossentropy")
    x = rng.integers(0, 256, (32 * a["steps"], size, size, 3)).astype("uint8")
    y = rng.integers(0, CLASSES, (32 * a["steps"],)).astype("int32")
    model.fit(x[:64], y[:64], batch_size=32, epochs=1, verbose=0)  # trace and warm up
    start = time.perf_counter()
    model.fit(x, y, batch_size=32, epochs=1, verbose=0)
    out[str(size)] = len(x) / (time.perf_counter() - start)
print("@@" + json.dumps({"backend": keras.backend.backend(), "img_s": out}))
""".replace("CLASSES", str(CLASSES))

CACHE_CHILD = """
import json, os, resource, sys
a = json.load(open(sys.argv[1]))
import numpy as np, tuning
from tuning.data import file_dataset
def rss():
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) * 1024 for l in f if l.startswith("VmRSS"))
ds = file_dataset(a["paths"], a["labels"], image_size=a["size"], batch_size=64, cache=False)
out = {}
for where, limit in (("memory", 2**40), ("file", 0)):
    hm = tuning.TransferHyperModel("resnet18", num_classes=CLASSES, input_shape=(a["size"], a["size"], 3),
                                   feature_cache_bytes=limit, feature_cache_dir=a["dir"])
    before = rss()
    features, labels = hm.features(ds)
    on_disk = sum(os.path.getsize(os.path.join(a["dir"], f)) for f in os.listdir(a["dir"]))
    out[where] = {"bytes": int(features.nbytes) if where == "memory" else on_disk,
                  "rss_added": rss() - before, "shape": list(features.shape)}
    del hm, features
print("@@" + json.dumps(out))
""".replace("CLASSES", str(CLASSES))

RUN_CHILD = """
import resource, subprocess, sys, time
start = time.perf_counter()
code = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
wall = time.perf_counter() - start
if code.returncode != 0:
    sys.stderr.write(code.stderr[-3000:])
    sys.exit(code.returncode)
print("@@%f %d" % (wall, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024))
"""


def write_tree(root: str, images: int, size: int, seed: int = 0) -> str:
    """`images` JPEGs of `size` px in `CLASSES` class folders under `root/full` (kept for the next run)."""
    import numpy as np
    from PIL import Image

    full = os.path.join(root, "full")
    marker = os.path.join(full, "done.json")
    want = {"images": images, "size": size, "seed": seed}
    if os.path.exists(marker):
        with open(marker) as f:
            if json.load(f) == want:
                return full
    rng = np.random.default_rng(seed)
    start = time.perf_counter()
    per_class = images // CLASSES
    yy, xx = np.mgrid[0:size, 0:size]
    for c in range(CLASSES):
        folder = os.path.join(full, f"class{c}")
        os.makedirs(folder, exist_ok=True)
        base = rng.integers(40, 216, 3)
        for i in range(per_class):
            # A class colour, a gradient, a bright disc somewhere and noise: JPEG-typical content.
            cy, cx, r = rng.integers(0, size, 2).tolist() + [int(rng.integers(size // 10, size // 4))]
            img = base + (xx[..., None] * 40 // size) + rng.normal(0, 12, (size, size, 3))
            img[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] += 60
            Image.fromarray(np.clip(img, 0, 255).astype("uint8")).save(
                os.path.join(folder, f"{i:06d}.jpg"), quality=90
            )
    with open(marker, "w") as f:
        json.dump(want, f)
    print(f"wrote {per_class * CLASSES} JPEGs in {time.perf_counter() - start:.0f} s to {full}", flush=True)
    return full


def subset(root: str, full: str, n: int) -> str:
    """A tree of links to the first n / CLASSES images of each class."""
    tree = os.path.join(root, f"n{n}")
    if os.path.isdir(tree):
        return tree
    for c in range(CLASSES):
        src = os.path.join(full, f"class{c}")
        os.makedirs(os.path.join(tree, f"class{c}"))
        for name in sorted(os.listdir(src))[: n // CLASSES]:
            os.symlink(os.path.join(src, name), os.path.join(tree, f"class{c}", name))
    return tree


def files_of(tree: str, limit: int | None = None):
    paths, labels = [], []
    for c in range(CLASSES):
        names = sorted(os.listdir(os.path.join(tree, f"class{c}")))
        paths += [os.path.join(tree, f"class{c}", n) for n in names]
        labels += [c] * len(names)
    if limit is not None and len(paths) > limit:
        step = len(paths) / limit
        keep = [int(i * step) for i in range(limit)]
        paths, labels = [paths[i] for i in keep], [labels[i] for i in keep]
    return paths, labels


def _env(path: str) -> dict:
    backend = "tensorflow" if path == "tf" else "jax"
    return {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": ROOT}


def _child(code: str, payload: dict, path: str) -> dict:
    prefix = BLOCK_TF if path == "no-tf" else ""
    with tempfile.NamedTemporaryFile("w", suffix=".json") as f:  # thousands of paths: too long for argv
        json.dump(payload, f)
        f.flush()
        done = subprocess.run(
            [sys.executable, "-c", prefix + code, f.name],
            capture_output=True,
            text=True,
            env=_env(path),
            cwd=ROOT,
        )
    lines = [l for l in done.stdout.splitlines() if l.startswith("@@")]
    if done.returncode != 0 or not lines:
        raise SystemExit(f"child ({path}) failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(lines[-1][2:])


def run_job(tree: str, path: str, size: int, batch: int) -> tuple[float, int]:
    """Wall seconds and peak RSS bytes of a one-trial, one-epoch `python -m tuning run` on `tree`."""
    out = tempfile.mkdtemp(prefix="bench_scale_run_")
    argv = ["run", "--data", tree, "--out", out, "--max-trials", "1", "--epochs", "1"]
    argv += ["--image-size", str(size), "--batch-size", str(batch), "--tta", "none"]
    job = (
        [sys.executable, "-m", "tuning", *argv]
        if path == "tf"
        else [sys.executable, "-c", BLOCK_TF + "from tuning.__main__ import main; sys.exit(main())", *argv]
    )
    done = subprocess.run(
        [sys.executable, "-c", RUN_CHILD, *job], capture_output=True, text=True, env=_env(path), cwd=ROOT
    )
    lines = [l for l in done.stdout.splitlines() if l.startswith("@@")]
    if done.returncode != 0 or not lines:
        raise SystemExit(f"python -m tuning run ({path}) failed:\n{done.stderr[-3000:]}")
    wall, rss = lines[-1][2:].split()
    return float(wall), int(rss)


def _slope(xs, ys):
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--images", type=int, default=20000, help="JPEGs in the tree (default: %(default)s)")
    p.add_argument("--source-size", type=int, default=256, help="their side in px (default: %(default)s)")
    p.add_argument("--size", type=int, default=96, help="training image size (default: %(default)s)")
    p.add_argument("--counts", default="2000,10000,20000", help="image counts of the one-trial runs")
    p.add_argument("--paths", default="tf,no-tf", help="tf (tf.data, TensorFlow) and/or no-tf (JAX)")
    p.add_argument("--parts", default="input,step,run,cache", help="which measurements")
    p.add_argument("--input-images", type=int, default=4000, help="files the input part reads")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--root", default=os.path.join(ROOT, ".bench", "scale"))
    p.add_argument("--table", help="also write the tables (Markdown) here")
    args = p.parse_args(argv)
    paths_wanted = args.paths.split(",")
    parts = args.parts.split(",")
    counts = sorted(int(c) for c in args.counts.split(","))
    if max(counts) > args.images:
        raise SystemExit(f"--counts go up to {max(counts)} but the tree has --images {args.images}")
    full = write_tree(args.root, args.images, args.source_size)
    tables = [
        f"{os.cpu_count()} CPU cores; {args.images} JPEGs at {args.source_size} px in {CLASSES} classes; "
        f"training at {args.size} px, batch {args.batch}"
    ]
    results = {}
    if "input" in parts or "step" in parts:
        rows = [
            "| path | loader | input img/s | train step img/s | input / step |",
            "|---|---|---:|---:|---:|",
        ]
        paths, labels = files_of(full, args.input_images)
        for path in paths_wanted:
            got = {}
            if "input" in parts:
                got["input"] = _child(
                    INPUT_CHILD, {"paths": paths, "labels": labels, "size": args.size}, path
                )
            if "step" in parts:
                got["step"] = _child(STEP_CHILD, {"sizes": [args.size, 224], "steps": 8}, path)
            results[path] = got
            inp = got.get("input", {})
            rate = inp["images"] / inp["seconds"] if inp else None
            steps = got.get("step", {}).get("img_s", {})
            step = steps.get(str(args.size))
            ratio = f"{rate / step:.1f}x" if rate and step else "n/a"
            step_text = ", ".join(f"{v:.1f} ({k} px)" for k, v in steps.items()) or "n/a"
            rows.append(
                f"| {path} ({got.get('step', {}).get('backend', _env(path)['KERAS_BACKEND'])}) | "
                f"{inp.get('loader', 'n/a')} | {f'{rate:.0f}' if rate else 'n/a'} | {step_text} | {ratio} |"
            )
            print(rows[-1], flush=True)
        tables.append("\n".join(rows))
    if "run" in parts:
        rows = [
            "| path | images | wall (s) | peak RSS (MB) | s per 1,000 images |",
            "|---|---:|---:|---:|---:|",
        ]
        summary = []
        for path in paths_wanted:
            walls, peaks = [], []
            for n in counts:
                wall, rss = run_job(subset(args.root, full, n), path, args.size, args.batch)
                walls.append(wall)
                peaks.append(rss / 1e6)
                rows.append(f"| {path} | {n} | {wall:.0f} | {rss / 1e6:.0f} | {1000 * wall / n:.1f} |")
                print(rows[-1], flush=True)
            if len(counts) > 1:
                # Marginal cost: seconds per 1,000 more images between neighbouring counts
                # (the fixed start-up and report time cancels out).
                steps = [
                    1000 * (walls[i + 1] - walls[i]) / (counts[i + 1] - counts[i])
                    for i in range(len(counts) - 1)
                ]
                summary.append(
                    f"- {path}: peak RSS grows {1000 * _slope(counts, peaks):.1f} MB per 1,000 images "
                    f"(least squares); wall time {', '.join(f'{s:.1f}' for s in steps)} s per 1,000 more "
                    f"images between neighbouring counts (spread {max(steps) / min(steps) - 1:.0%})"
                )
            results[f"run-{path}"] = {"counts": counts, "wall_s": walls, "peak_rss_mb": peaks}
        tables.append("\n".join(rows + [""] + summary))
    if "cache" in parts:
        rows = [
            "| path | images | feature map | in memory (MB) | RSS added | float16 file (MB) | RSS added |"
        ]
        rows.append("|---|---:|---|---:|---:|---:|---:|")
        paths, labels = files_of(subset(args.root, full, counts[-1]))
        for path in paths_wanted:
            with tempfile.TemporaryDirectory(prefix="bench_scale_features_") as d:
                payload = {"paths": paths, "labels": labels, "size": args.size, "dir": d}
                got = _child(CACHE_CHILD, payload, path)
            m, f = got["memory"], got["file"]
            rows.append(
                f"| {path} | {len(paths)} | {'x'.join(map(str, m['shape'][1:]))} | {m['bytes'] / 1e6:.0f} | "
                f"{m['rss_added'] / 1e6:.0f} | {f['bytes'] / 1e6:.0f} | {f['rss_added'] / 1e6:.0f} |"
            )
            print(rows[-1], flush=True)
            results[f"cache-{path}"] = got
        tables.append("\n".join(rows))
    text = "\n\n".join(tables)
    print(text)
    if args.table:
        with open(args.table, "w") as f:
            f.write(text + "\n")
    return results


if __name__ == "__main__":
    main()
