"""The toolkit against its GPU targets, in one run: one JSON and one markdown table.

    bash scripts/gpu_check.sh                  # on the GPU machine (installs carried wheels)
    GPU_CHECK_TINY=1 python scripts/gpu_check.py --out /tmp/check   # tiny settings, any CPU

Steps, in order of importance, each in its own process with a time limit
taken from what is left of `--budget` (a step that runs out is recorded as
timed out and the next one runs; the files are rewritten after every step):

1. `python -m zoo bench` for resnet50, bf16, batch 256, 224 px, every side
   (zoo `fit`/`predict`, keras.applications, the jitted step, torchvision
   eager and `torch.compile`), with MFU against the card's bf16 peak;
2. peak device memory of each side alone (resnet50): zoo and keras.app on
   JAX, torchvision eager and compiled on torch;
3. the converters against real torchvision (`scripts/check_torchvision.py`,
   every torchvision-layout model, on the CPU: it checks weights, not the
   GPU's arithmetic, and TF32 convolutions would blur it);
4. `python -m tuning run` on the demo data with `--precision bf16`: wall
   time and test accuracy;
5. the same bench for vgg16 and googlenet.

Writes `gpu_check.json` (every number, each step's status and command),
`gpu_check.md` (the tables for the README) and `gpu_check.log` (each step's
output) under `--out` (default `$OUT`), and nothing else there. The targets (issue 20) are stated
beside the measured ratios: train >= 1.0x torch.compile and >= 0.9x the
jitted step, inference >= 1.0x torch.compile, peak memory <= keras.app.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BF16_PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0}  # dense, spec sheets
FULL = dict(batch=256, size=224, steps=20, repeats=3, memory_steps=5, parity=[], demo=[])
TINY = dict(
    batch=2,
    size=64,
    steps=2,
    repeats=1,
    memory_steps=1,
    parity=["resnet18"],
    demo=["--max-trials", "1", "--epochs", "1", "--demo-images-per-class", "6", "--image-size", "32"],
)


STEPS = ("bench_resnet50", "memory", "parity", "tuning_run", "bench_vgg16_googlenet")


def card():
    """`(name, memory MiB)` of the first GPU from nvidia-smi, or `(None, None)`."""
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=30,
        ).stdout.strip()
        name, memory = out.splitlines()[0].rsplit(",", 1)
        return name.strip(), int(memory)
    except (OSError, ValueError, IndexError, subprocess.SubprocessError):
        return None, None


def peak_tflops(name):
    for key, value in BF16_PEAK_TFLOPS.items():
        if name and key in name:
            return value
    return None


class Check:
    def __init__(self, out, budget, tiny):
        self.out, self.tiny = out, tiny
        self.settings = TINY if tiny else FULL
        self.start = time.time()
        self.deadline = self.start + budget
        self.steps = []
        gpu, memory = card()
        self.result = {
            "date": time.strftime("%Y-%m-%d"),
            "card": gpu or "no GPU (CPU)",
            "card_memory_mib": memory,
            "peak_tflops_bf16": peak_tflops(gpu),
            "tiny": tiny,
            "versions": self._versions(),
            "steps": self.steps,
        }
        os.makedirs(out, exist_ok=True)
        # Only the three result files go to `out` (the device returns a few
        # small files); benches' JSON and the demo run live here.
        self.work = tempfile.mkdtemp(prefix="gpu_check_")
        self.log = open(os.path.join(out, "gpu_check.log"), "w")

    def _versions(self):
        code = (
            "import importlib.metadata as m\n"
            "for p in ('keras', 'jax', 'jaxlib', 'torch', 'torchvision', 'keras-tuner', 'numpy'):\n"
            "    try: print(p, m.version(p))\n"
            "    except m.PackageNotFoundError: print(p, '-')\n"
        )
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout
        return dict(line.split(" ", 1) for line in out.splitlines() if " " in line)

    def run(self, name, argv, *, cap, env=None, parse=None):
        """Run one step with a limit of min(cap, time left); record and write at once."""
        left = self.deadline - time.time() - 5
        step = {"step": name, "command": " ".join(shlex.quote(a) for a in argv)}
        if left < 20:
            step.update(status="skipped: out of time", seconds=0.0)
            self.steps.append(step)
            self.write()
            return step
        limit = min(cap, left)
        t0 = time.time()
        full_env = {**os.environ, **(env or {})}
        full_env["PYTHONPATH"] = os.pathsep.join(filter(None, [ROOT, full_env.get("PYTHONPATH")]))
        # Output to files, not pipes: torch.compile's worker processes inherit
        # the pipes and keep them open after the step has finished, so
        # reading a pipe to its end would wait out the whole time limit.
        # Each step is its own process group, killed whole when it overruns.
        out_path, err_path = (os.path.join(self.work, f"{name}.{k}") for k in ("out", "err"))
        with open(out_path, "w") as out, open(err_path, "w") as err:
            proc = subprocess.Popen(
                argv, cwd=ROOT, env=full_env, stdout=out, stderr=err, start_new_session=True
            )
            try:
                code = proc.wait(timeout=limit)
                status = "ok" if code == 0 else f"failed (exit {code})"
            except subprocess.TimeoutExpired:
                status = f"timed out after {limit:.0f} s"
            finally:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)  # what it left running
                except ProcessLookupError:
                    pass
                proc.wait()
        with open(out_path, errors="replace") as f:
            stdout = f.read()
        with open(err_path, errors="replace") as f:
            stderr = f.read()
        step.update(status=status, seconds=round(time.time() - t0, 1))
        self.log.write(f"=== {name}: {status}, {step['seconds']} s\n$ {step['command']}\n")
        self.log.write(
            stdout[-20000:] + ("\n--- stderr ---\n" + stderr[-8000:] if stderr.strip() else "") + "\n"
        )
        self.log.flush()
        if parse is not None:
            try:
                step.update(parse(stdout))
            except Exception as e:  # a step's output that does not parse is reported, not fatal
                step["parse_error"] = f"{type(e).__name__}: {e}"
        print(f"[gpu_check] {name}: {status} ({step['seconds']} s)", flush=True)
        self.steps.append(step)
        self.write()
        return step

    # ---------------------------------------------------------------- steps
    def bench(self, models, *, cap, name="bench", sides=None, backend="jax", steps=None, repeats=None):
        s = self.settings
        path = os.path.join(self.work, f"{name}.json")
        argv = [
            sys.executable, "-m", "zoo", "bench", "--models", ",".join(models),
            "--batch", str(s["batch"]), "--size", str(s["size"]),
            "--steps", str(steps or s["steps"]), "--repeats", str(repeats or s["repeats"]),
            "--precision", "bf16", "--json", path,
        ]  # fmt: skip
        if self.result["peak_tflops_bf16"]:
            argv += ["--peak-tflops", str(self.result["peak_tflops_bf16"])]
        # The sides its tables report; the Keras torch backend's side stays
        # out of the GPU budget (the torch and compiled sides time torch).
        argv += ["--sides", sides or "zoo,keras,ceiling,torch,compiled,input_u8,input_f32"]
        if os.path.exists(path):
            os.remove(path)

        def parse(_):
            with open(path) as f:
                return {"rows": json.load(f)}

        return self.run(name, argv, cap=cap, env={"KERAS_BACKEND": backend}, parse=parse)

    def parity(self, cap):
        argv = [sys.executable, os.path.join("scripts", "check_torchvision.py"), *self.settings["parity"]]

        def parse(stdout):
            if "skipped" in stdout:
                return {"skipped": "torch or torchvision not installed", "models": {}}
            lines = [l for l in stdout.splitlines() if l.rstrip().endswith(("OK", "MISMATCH")) and "|" in l]
            return {"models": {l.split()[0]: l.split()[-1] for l in lines}, "lines": lines}

        # On the CPU: the converters' weights are the question, and the GPU's
        # TF32 convolutions would differ from the float64 reference by 1e-3.
        return self.run(
            "parity", argv, cap=cap, env={"KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu"}, parse=parse
        )

    def demo(self, cap):
        out = os.path.join(self.work, "demo_run")
        argv = [sys.executable, "-m", "tuning", "run", "--out", out, "--overwrite", "--precision", "bf16"]
        argv += self.settings["demo"]

        def parse(stdout):
            m = re.search(
                r"(test accuracy|validation \(used for selection\)) ([0-9.]+) on (\d+) images", stdout
            )
            wall = re.search(r" in (\d+) s\s*$", stdout.strip())
            return {
                "accuracy": float(m.group(2)),
                "measured_on": m.group(1),
                "images": int(m.group(3)),
                "job_seconds": int(wall.group(1)) if wall else None,
            }

        return self.run("tuning_run", argv, cap=cap, env={"KERAS_BACKEND": "jax"}, parse=parse)

    # --------------------------------------------------------------- output
    def write(self):
        self.result["seconds"] = round(time.time() - self.start, 1)
        for name, text in (
            ("gpu_check.json", json.dumps(self.result, indent=2)),
            ("gpu_check.md", markdown(self.result)),
        ):
            tmp = os.path.join(self.out, f".{name}.tmp")
            with open(tmp, "w") as f:
                f.write(text)
            os.replace(tmp, os.path.join(self.out, name))


def _fmt(value, digits=0):
    if value is None:
        return "n/a"
    return f"{value:,.{digits}f}"


def markdown(result) -> str:
    """The README's GPU tables from a result (throughput, ratios, MFU, memory, the rest)."""
    lines = [
        f"Measured by `bash scripts/gpu_check.sh` on {result['card']} on {result['date']} "
        f"(bf16, {'tiny settings' if result['tiny'] else 'batch 256, 224 px'}; "
        + ", ".join(f"{k} {v}" for k, v in result["versions"].items() if v != "-")
        + ").",
        "",
    ]
    rows = [r for s in result["steps"] if s["step"].startswith("bench") and "rows" in s for r in s["rows"]]
    if rows:
        lines += [
            "| model | | zoo | keras.app | jit step | torch eager | torch.compile | zoo / compiled | zoo / jit step | zoo TFLOP/s | MFU |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in rows:
            for what in ("train", "infer"):
                sides = {
                    k: r.get(f"{k}_{what}_img_s") for k in ("zoo", "keras", "ceiling", "torch", "compiled")
                }
                lines.append(
                    f"| {r['model']} | {what} img/s | {_fmt(sides['zoo'])} | {_fmt(sides['keras'])} | "
                    f"{_fmt(sides['ceiling'])} | {_fmt(sides['torch'])} | {_fmt(sides['compiled'])} | "
                    f"{_fmt(r.get(f'compiled_{what}_ratio'), 2)} | {_fmt(r.get(f'ceiling_{what}_ratio'), 2)} | "
                    f"{_fmt(r.get(f'zoo_{what}_tflops'), 1)} | {_fmt(r.get(f'zoo_{what}_mfu'), 3)} |"
                )
        lines.append("")
    memory, what = {}, "device memory"
    for s in result["steps"]:
        if s["step"].startswith("memory_") and s.get("rows"):
            row = s["rows"][0]
            if "peak_memory_mb" not in row:  # a CPU: the process's peak RSS
                what = "resident memory (no GPU)"
            memory[s["step"][len("memory_") :]] = row.get("peak_memory_mb", row.get("peak_rss_mb"))
    if memory:
        lines += [
            f"Peak {what}, resnet50 train + infer, each side alone in its process (MiB): "
            + ", ".join(f"{k} {_fmt(v)}" for k, v in memory.items()),
            "",
        ]
    targets = []
    r50 = next((r for r in rows if r["model"] == "resnet50"), None)
    if r50:
        for label, key, target in (
            ("train vs torch.compile", "compiled_train_ratio", 1.0),
            ("train vs jitted step", "ceiling_train_ratio", 0.9),
            ("inference vs torch.compile", "compiled_infer_ratio", 1.0),
        ):
            value = r50.get(key)
            verdict = "n/a" if value is None else ("met" if value >= target else "not met")
            shown = "n/a" if value is None else f"{value:.2f}x"
            targets.append(f"| resnet50 {label} | >= {target:.1f}x | {shown} | {verdict} |")
        if memory.get("zoo") and memory.get("keras") and what == "device memory":
            ok = memory["zoo"] <= memory["keras"]
            targets.append(
                f"| resnet50 peak memory vs keras.app | <= 1.0x | {memory['zoo'] / memory['keras']:.2f}x | "
                f"{'met' if ok else 'not met'} |"
            )
    if targets:
        lines += ["| target | wanted | measured | |", "|---|---:|---:|---|", *targets, ""]
    for s in result["steps"]:
        if s["step"] == "parity" and s.get("skipped"):
            lines.append(f"Converters against real torchvision: skipped ({s['skipped']}).")
        elif s["step"] == "parity" and "models" in s:
            bad = [m for m, v in s["models"].items() if v != "OK"]
            lines.append(
                f"Converters against real torchvision: {len(s['models']) - len(bad)}/{len(s['models'])} "
                f"models match{' (mismatch: ' + ', '.join(bad) + ')' if bad else ''}."
            )
        if s["step"] == "tuning_run" and "accuracy" in s:
            lines.append(
                f"`python -m tuning run --precision bf16` on the demo data: {s['measured_on']} "
                f"{s['accuracy']:.3f} on {s['images']} images, {s['seconds']:.0f} s wall."
            )
    lines += ["", "| step | status | seconds |", "|---|---|---:|"]
    lines += [f"| {s['step']} | {s['status']} | {s['seconds']} |" for s in result["steps"]]
    return "\n".join(lines) + "\n"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=os.environ.get("OUT"), help="output folder (default: $OUT)")
    p.add_argument("--budget", type=float, default=450, help="seconds for all steps (default: 450)")
    p.add_argument(
        "--only",
        default=",".join(STEPS),
        help=f"comma-separated steps to run, e.g. for a rerun (default: all: {','.join(STEPS)})",
    )
    args = p.parse_args(argv)
    if not args.out:
        p.error("give --out or set OUT")
    only = args.only.split(",")
    unknown = sorted(set(only) - set(STEPS))
    if unknown:
        p.error(f"unknown step(s) {unknown}; choose from {','.join(STEPS)}")
    tiny = os.environ.get("GPU_CHECK_TINY") == "1"
    check = Check(args.out, args.budget, tiny)
    print(f"[gpu_check] {check.result['card']}, budget {args.budget:.0f} s, tiny={tiny}", flush=True)
    if "bench_resnet50" in only:
        check.bench(["resnet50"], cap=200, name="bench_resnet50")
    if "memory" in only:
        for side, backend in (("zoo", "jax"), ("keras", "jax"), ("torch", "torch"), ("compiled", "torch")):
            steps = check.settings["memory_steps"]
            check.bench(
                ["resnet50"],
                cap=60,
                name=f"memory_{side}",
                sides=side,
                backend=backend,
                steps=steps,
                repeats=1,
            )
    if "parity" in only:
        check.parity(cap=120)
    if "tuning_run" in only:
        check.demo(cap=150)
    if "bench_vgg16_googlenet" in only:
        check.bench(["vgg16", "googlenet"], cap=240, name="bench_vgg16_googlenet")
    check.write()
    print(markdown(check.result))
    return 0 if all(s["status"] == "ok" for s in check.steps) else 1


if __name__ == "__main__":
    raise SystemExit(main())
