"""Distillation against the same student without its teacher, over seeds: test accuracy mean ± sd.

    python scripts/bench_distill.py --teacher runs/demo                # a finished `python -m tuning run`
    python scripts/bench_distill.py --teacher runs/demo --seeds 3 --student mobilenetv3small

For each seed it trains the student twice on the teacher run's splits, for the
same epochs: with the teacher (`--alpha`, `--temperature`) and on the labels
alone (`alpha=1.0`, the same loss code with the teacher's term off). Each
training runs in its own child process, so every one starts from a fresh
Keras session. One Markdown table: student and teacher test accuracy, MACs
and the ratio, mean ± sd over the seeds.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def one(teacher, student, out, alpha, temperature, seed, epochs):
    cmd = [sys.executable, "-m", "tuning", "distill", "--teacher", teacher, "--student", student]
    cmd += ["--out", out, "--alpha", str(alpha), "--temperature", str(temperature), "--seed", str(seed)]
    if epochs:
        cmd += ["--epochs", str(epochs)]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stderr[-2000:]}")
    with open(os.path.join(out, "distill.json")) as f:
        return json.load(f)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--teacher", required=True, help="the --out folder of a classification run")
    p.add_argument("--student", default="mobilenetv3small")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--alpha", type=float, default=0.5)
    p.add_argument("--temperature", type=float, default=4.0)
    p.add_argument("--epochs", type=int, help="default: the teacher run's epochs per trial")
    p.add_argument("--work", help="where the students go (default: a temporary folder)")
    args = p.parse_args(argv)
    work = args.work or tempfile.mkdtemp(prefix="bench_distill_")
    rows = {"with the teacher": [], "labels only": []}
    for seed in range(args.seeds):
        for name, alpha in (("with the teacher", args.alpha), ("labels only", 1.0)):
            out = os.path.join(work, f"{name.split()[0]}-{seed}")
            rows[name].append(
                one(args.teacher, args.student, out, alpha, args.temperature, seed, args.epochs)
            )
            r = rows[name][-1]
            print(f"seed {seed}, {name}: {r['student_accuracy']:.4f} ({r['seconds']:.0f} s)", flush=True)
    first = rows["with the teacher"][0]
    ratio = first["teacher_macs"] / first["student_macs"]
    lines = [
        f"teacher {first['teacher']}: {first['split']} accuracy {first['teacher_accuracy']:.4f}; "
        f"student {args.student}, {first['epochs']} epochs, {ratio:.1f}x fewer MACs; {args.seeds} seeds",
        "",
        f"| student | alpha | T | {first['split']} accuracy (mean ± sd) | vs teacher |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, alpha in (("with the teacher", args.alpha), ("labels only", 1.0)):
        accs = [r["student_accuracy"] for r in rows[name]]
        sd = statistics.stdev(accs) if len(accs) > 1 else 0.0
        mean = statistics.mean(accs)
        lines.append(
            f"| {args.student}, {name} | {alpha} | {args.temperature} | {mean:.4f} ± {sd:.4f} | "
            f"{(mean - first['teacher_accuracy']) * 100:+.1f} points |"
        )
    print("\n".join(lines))


if __name__ == "__main__":
    main()
