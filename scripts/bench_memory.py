"""Memory and disk of a full-model search: RSS after every trial, the folder's size.

    python scripts/bench_memory.py                      # 20 trials, resnet18, TensorFlow
    KERAS_BACKEND=jax python scripts/bench_memory.py --trials 20

Every trial builds, compiles and trains the whole backbone (the CLI's
from-scratch setting, not cached-feature heads), in one process, as
`python -m tuning run` does. Prints the resident set size after each trial,
the growth per trial (least-squares slope from the third trial on: the first
ones fill caches), and the search folder's size on disk next to one
`best.keras`. Linux only (reads /proc/self/status).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def folder_mb(path) -> float:
    seen, total = set(), 0
    for root, _, files in os.walk(path):
        for name in files:
            st = os.lstat(os.path.join(root, name))
            if st.st_ino not in seen:  # hard links count once, as on disk
                seen.add(st.st_ino)
                total += st.st_size
    return total / 2**20


def main(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--trials", type=int, default=20, help="full-model trials")
    p.add_argument("--backbone", default="resnet18", help="zoo backbone")
    p.add_argument("--image-size", type=int, default=32, help="square input side")
    p.add_argument("--per-class", type=int, default=16, help="demo training images per class")
    p.add_argument("--out", default=None, help="search folder (default: a temporary one)")
    args = p.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

    import keras

    import tuning
    import zoo

    rss = []

    class AfterTrial(keras.callbacks.Callback):
        def on_train_end(self, logs=None):
            rss.append(rss_mb())

    x, y, _ = zoo.datasets.shapes(args.per_class, size=args.image_size, split="train")
    xv, yv, _ = zoo.datasets.shapes(max(2, args.per_class // 4), size=args.image_size, split="val")
    out = args.out or tempfile.mkdtemp(prefix="bench_memory_")
    stages = len(zoo.get_spec(args.backbone).stages)
    start, t0 = rss_mb(), time.time()
    tuning.search(
        (x, y),
        (xv, yv),
        backbone=args.backbone,
        tuner="random",
        max_trials=args.trials,
        epochs=1,
        batch_size=16,
        directory=out,
        project_name="mem",
        phase1_fraction=0.0,
        tensorboard=False,
        unfreeze_space={"stages": [stages], "augment": [False]},
        callbacks=[AfterTrial()],
    )
    print(
        f"backend {keras.backend.backend()}, {args.backbone} {args.image_size}px, "
        f"{len(x)} images, {args.trials} full-model trials in {time.time() - t0:.0f} s"
    )
    print(f"RSS before the search {start:.0f} MB")
    print("trial  RSS MB  change")
    for i, mb in enumerate(rss, start=1):
        print(f"{i:>5}  {mb:>6.0f}  {mb - (rss[i - 2] if i > 1 else start):>+6.0f}")
    tail = rss[2:]
    if len(tail) >= 2:
        n = len(tail)
        mean_i, mean_r = (n - 1) / 2, sum(tail) / n
        slope = sum((i - mean_i) * (r - mean_r) for i, r in enumerate(tail)) / sum(
            (i - mean_i) ** 2 for i in range(n)
        )
        print(
            f"growth from trial 3 on: {slope:+.1f} MB per trial (least squares), "
            f"{tail[-1] - tail[0]:+.0f} MB in all"
        )
    project = os.path.join(out, "mem")
    best = os.path.getsize(os.path.join(project, "best.keras")) / 2**20
    size = folder_mb(project)
    print(f"disk: search folder {size:.0f} MB, best.keras {best:.0f} MB ({size / best:.2f}x)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
