"""The main job next to fastai on the same images: test accuracy, wall time, images/s.

    python scripts/bench_fastai.py --install                 # once: fastai in .bench/fastai
    python scripts/bench_fastai.py --data DIR --size 64      # class-per-folder images
    python scripts/bench_fastai.py                           # the embedded demo set

Repeats the comparison of the issue "training as fast as PyTorch on the same
CPU": ResNet-18 from random weights at `--size` px, the same number of
epochs on each side. Ours is `python -m tuning run` (`--trials` trials of
`--epochs` epochs each, its from-scratch recipe); fastai is
`vision_learner(resnet18, pretrained=False)` with `fit_one_cycle(trials x
epochs)` and its default `aug_transforms()`. Both see the same files: the
job's seeded split (or the folder's own train/val/test) is written once as
a tree of links, and fastai resizes by squishing, as the job does, so the
images are the same pixels.

One line per tool: test accuracy, wall time of the whole command, and the
training throughput, images/s over the epochs (training images x epochs /
seconds of the trials, validation included on both sides). Each side runs
in its own process, one after the other, so neither takes the other's
cores. `--table FILE` also writes the table as Markdown.

fastai is never installed unless asked (`--install`, not in CI): a venv in
`.bench/fastai` with torch, torchvision and fastai, the CPU-capable wheels
this project's README names. `--fastai-python` uses another interpreter.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VENV = os.path.join(ROOT, ".bench", "fastai")
# torch/torchvision pairs that import together on a CPU (README, "Facts").
WHEELS = {
    "x86_64": ["torch==2.14.1", "torchvision==0.29.1"],
    "aarch64": ["torch==2.9.1", "torchvision==0.24.1"],
}

FASTAI_CHILD = r"""
import json, sys, time
from fastai.vision.all import (Callback, ImageDataLoaders, Path, Resize, ResizeMethod, accuracy,
                               aug_transforms, get_image_files, resnet18, torch, vision_learner)
a = json.loads(sys.argv[1])
torch.manual_seed(a["seed"])
path = Path(a["data"])
dls = ImageDataLoaders.from_folder(path, train="train", valid="val", bs=a["batch"], seed=a["seed"],
                                   item_tfms=Resize(a["size"], method=ResizeMethod.Squish),
                                   batch_tfms=aug_transforms())
learn = vision_learner(dls, resnet18, pretrained=False, metrics=accuracy)
seconds = []
class Clock(Callback):
    def before_epoch(self): self.t = time.perf_counter()
    def after_epoch(self): seconds.append(time.perf_counter() - self.t)
with learn.no_bar():
    learn.fit_one_cycle(a["epochs"], cbs=[Clock()])
test = dls.test_dl(get_image_files(path / "test"), with_labels=True)
preds, targets = learn.get_preds(dl=test)
print("@@" + json.dumps({
    "test_accuracy": float((preds.argmax(1) == targets).float().mean()),
    "train_images": len(dls.train_ds), "epochs": a["epochs"], "epoch_seconds": seconds,
    "torch": torch.__version__, "threads": torch.get_num_threads()}))
"""


def install() -> str:
    """Create `.bench/fastai` with torch, torchvision and fastai; return its python."""
    wheels = WHEELS.get(platform.machine())
    if wheels is None:
        raise SystemExit(f"no known torch/torchvision pair for {platform.machine()}; use --fastai-python")
    python = os.path.join(VENV, "bin", "python")
    if not os.path.exists(python):
        subprocess.run([sys.executable, "-m", "venv", VENV], check=True)
    subprocess.run([python, "-m", "pip", "install", "-q", *wheels], check=True)
    subprocess.run([python, "-m", "pip", "install", "-q", "fastai", *wheels], check=True)
    return python


def same_files(data: str | None, work: str, seed: int, size: int) -> str:
    """A train/val/test tree of links to the job's split of `data` (the demo set if None)."""
    from tuning.data import split_files

    if data is None:
        from zoo.datasets import write_shapes

        data = write_shapes(os.path.join(work, "demo"), images_per_class=400, size=size, seed=seed)
    files, classes, _ = split_files(data, seed=seed)
    if "test" not in files:
        raise SystemExit("the comparison needs a test split: give --data with test/ or more images")
    tree = os.path.join(work, "data")
    for split, (paths, labels) in files.items():
        for path, label in zip(paths, labels):
            folder = os.path.join(tree, split, classes[label])
            os.makedirs(folder, exist_ok=True)
            os.symlink(os.path.abspath(path), os.path.join(folder, os.path.basename(path)))
    return tree


def run_ours(tree, work, args, backend, precision="fp32"):
    out = os.path.join(work, f"ours-{backend}-{precision}")
    cmd = [
        sys.executable,
        "-m",
        "tuning",
        "run",
        "--data",
        tree,
        "--out",
        out,
        "--overwrite",
        "--max-trials",
        str(args.trials),
        "--epochs",
        str(args.epochs),
        "--image-size",
        str(args.size),
        "--batch-size",
        str(args.batch),
        "--seed",
        str(args.seed),
        "--tta",
        "none",
        "--precision",
        precision,
    ]
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3"}
    start = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"python -m tuning run failed ({backend}):\n{done.stderr[-2000:]}")
    with open(os.path.join(out, "run.json")) as f:
        record = json.load(f)
    with open(os.path.join(out, "leaderboard.json")) as f:
        trials = json.load(f)
    n = record["splits"]["train"]["images"]
    seconds = sum(t["seconds"] for t in trials)
    return {
        "tool": f"kerazoo (python -m tuning run, {backend}, {precision})",
        "test_accuracy": record["evaluation"]["accuracy"],
        "wall_s": wall,
        "train_img_s": n * args.epochs * len(trials) / seconds,
        "epochs": f"{len(trials)} x {args.epochs}",
        "batch": args.batch,
    }


def run_fastai(python, tree, args):
    payload = dict(
        data=tree, size=args.size, batch=args.fastai_batch, seed=args.seed, epochs=args.trials * args.epochs
    )
    start = time.perf_counter()
    done = subprocess.run([python, "-c", FASTAI_CHILD, json.dumps(payload)], capture_output=True, text=True)
    wall = time.perf_counter() - start
    lines = [l for l in done.stdout.splitlines() if l.startswith("@@")]
    if done.returncode != 0 or not lines:
        raise SystemExit(f"fastai failed (exit {done.returncode}):\n{done.stderr[-2000:]}")
    r = json.loads(lines[-1][2:])
    return {
        "tool": f"fastai (vision_learner + fit_one_cycle, torch {r['torch']})",
        "test_accuracy": r["test_accuracy"],
        "wall_s": wall,
        "train_img_s": r["train_images"] * r["epochs"] / sum(r["epoch_seconds"]),
        "epochs": str(r["epochs"]),
        "batch": args.fastai_batch,
    }


def table(rows, args, images) -> str:
    base = next((r["train_img_s"] for r in rows if r["tool"].startswith("fastai")), None)
    lines = [
        f"ResNet-18 from random weights, {args.size} px, {images}; {os.cpu_count()} CPU cores; "
        "img/s = training images x epochs / seconds of the epochs (validation included)",
        "",
        "| tool | epochs | batch | test accuracy | wall (s) | train img/s | vs fastai |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        ratio = f"{r['train_img_s'] / base:.2f}x" if base else "n/a"
        lines.append(
            f"| {r['tool']} | {r['epochs']} | {r['batch']} | {r['test_accuracy']:.3f} | "
            f"{r['wall_s']:.0f} | {r['train_img_s']:.1f} | {ratio} |"
        )
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", help="class-per-folder images (train/val/test honoured); default: the demo set")
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--trials", type=int, default=2, help="our trials (fastai runs trials x epochs)")
    p.add_argument("--epochs", type=int, default=12, help="epochs per trial of ours")
    p.add_argument("--batch", type=int, default=32, help="our batch size")
    p.add_argument("--fastai-batch", type=int, default=64, help="fastai's batch size (its default)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--backends", default="tensorflow", help="Keras backends for our side, comma-separated")
    p.add_argument("--precisions", default="fp32", help="our --precision values, comma-separated (fp32,bf16)")
    p.add_argument("--install", action="store_true", help="install fastai into .bench/fastai first")
    p.add_argument("--fastai-python", help="an interpreter with fastai (default: .bench/fastai's)")
    p.add_argument("--table", help="also write the Markdown table here")
    p.add_argument("--work", help="where the link tree and the runs go (default: a temporary folder)")
    args = p.parse_args(argv)
    from tuning import console

    console.quiet_logs(False)  # the split below imports Keras (and TensorFlow)
    python = install() if args.install else (args.fastai_python or os.path.join(VENV, "bin", "python"))
    work = args.work or tempfile.mkdtemp(prefix="bench_fastai_")
    tree = same_files(args.data, work, args.seed, args.size)
    counts = {
        s: sum(len(fs) for _, _, fs in os.walk(os.path.join(tree, s))) for s in ("train", "val", "test")
    }
    images = ", ".join(f"{k} {v}" for k, v in counts.items())
    rows = [
        run_ours(tree, work, args, b, p) for b in args.backends.split(",") for p in args.precisions.split(",")
    ]
    if os.path.exists(python):
        rows.append(run_fastai(python, tree, args))
    else:
        print(
            f"fastai: no interpreter at {python} (run with --install); its line is left out", file=sys.stderr
        )
    text = table(rows, args, images)
    print(text)
    if args.table:
        with open(args.table, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
