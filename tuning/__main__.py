"""`python -m tuning run|predict|export|bench`: the main job and its companions.

python -m tuning run                       # demo data, default settings
python -m tuning run --data DIR --out DIR --backbone resnet50 --weights imagenet
python -m tuning run --config settings.json --time-budget 20m --cv 5
python -m tuning predict --model runs/demo/best.keras IMAGE_OR_DIR ...
python -m tuning export --model runs/demo/best.keras --out served --tta
python -m tuning bench                     # cached features vs naive trials

`run` only turns its arguments into a `tuning.SearchConfig` and calls
`tuning.run`; every setting and check lives there.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import signal
import sys

from tuning import console
from tuning.config import SearchConfig

DEFAULTS = SearchConfig()
# Flags that set the SearchConfig field of their name (type and default from SearchConfig).
RUN_FLAGS = {
    "--task": "classify (one class per image), multilabel (several per image, from --labels; "
    "default data: the multi-label demo) or segment (images/ + masks/ of class indices, FCN)",
    "--labels": "a CSV (its paths relative to --data): a path column and a labels column (names split "
    "by space, ; or |) or one 0/1 column per class; optional split column. Rows with several labels: "
    "multi-label",
    "--backbone": "zoo model name (`python -m zoo list`); several, comma-separated, are searched",
    "--weights": "backbone weights: a path or 'imagenet' (none: random init, every stage trains)",
    "--recipe": "auto (pretrained with --weights, else from_scratch), from_scratch or pretrained",
    "--image-size": "square input side in pixels",
    "--max-trials": "trials of a random/bayesian search, at least 1",
    "--epochs": "epochs per trial",
    "--tuner": "search strategy: KerasTuner's hyperband, random or bayesian",
    "--workers": "KerasTuner's chief plus N worker processes on 127.0.0.1 (README: several hosts)",
    "--batch-size": "images per training step (per device with --distribution data-parallel)",
    "--distribution": "none, or data-parallel: each trial on every local device (JAX, TensorFlow), "
    "global batch --batch-size x devices, learning rates x devices",
    "--precision": "bf16: mixed_bfloat16; faster on GPUs and CPUs with AMX/AVX512-BF16",
    "--seed": "seed of the data split, the search and the weights",
    "--test-fraction": "without test/: share of each class held out for the test figure (0: none)",
    "--time-budget": "search budget (90s, 20m, 1h30m): trials that cannot fit do not start",
    "--max-latency-ms": "keep as best.keras only trials whose latency per image (batch 1, measured "
    "here after training) is at most this; the leaderboard shows every trial's",
    "--fastest-within": "keep as best.keras the fastest trial (latency per image) whose score is within "
    "this of the best, in the objective's units (0.01: one accuracy point)",
    "--objective": "accuracy, balanced_accuracy, macro_f1 (validation), or auto (balanced if 3x "
    "imbalance; map for multilabel; mean_iou for --task segment)",
    "--class-weight": "none, balanced (loss weights n / (k * n_class)) or search (a searched choice)",
    "--tta": "test-time augmentation reported beside the plain figure: flip or none",
    "--cv": "K: retrain the best configuration on K folds of train+val, report mean +- sd (0: none)",
    "--demo-images-per-class": argparse.SUPPRESS,
}


def _show(value):
    if isinstance(value, tuple):
        return ",".join(value) or "none"
    return "none" if value is None else value


def _parser():
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--debug", action="store_true", help="show Python tracebacks and TensorFlow's log messages"
    )
    p = argparse.ArgumentParser(prog="python -m tuning", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser(
        "run", parents=[common], help="search, fine-tune, evaluate and report on an image folder"
    )
    run.add_argument(
        "--data",
        help="image folder, one sub-folder per class (train/val/test sub-folders honoured); with "
        "--task segment, images/ and masks/; default: write and use the embedded demo set",
    )
    run.add_argument(
        "--out", default=os.path.join("runs", "demo"), help="output folder (default: %(default)s)"
    )
    run.add_argument(
        "--config", help="a JSON file of SearchConfig settings (or an earlier run.json); flags override it"
    )
    for flag, text in RUN_FLAGS.items():
        default = getattr(DEFAULTS, flag[2:].replace("-", "_"))
        kind = type(default) if isinstance(default, (int, float)) else str
        if text is not argparse.SUPPRESS:
            text += f" (default: {_show(default)})"
        run.add_argument(flag, type=kind, default=None, help=text)
    run.add_argument(
        "--keep-checkpoints",
        action="store_true",
        default=None,
        help="keep every trial's checkpoint (default: only the best trial's)",
    )
    run.add_argument(
        "--overwrite",
        action="store_true",
        help="start afresh in an --out folder holding an earlier run (default: resume it)",
    )
    _companion_parsers(sub, common)
    return p


def _companion_parsers(sub, common):
    """`predict`, `export` and `bench`."""
    pred = sub.add_parser(
        "predict", parents=[common], help="top-k labels, the labels above their thresholds, or masks"
    )
    pred.add_argument("--model", required=True, help="a best.keras written by `run`")
    pred.add_argument(
        "--top", type=int, default=3, help="single-label models: labels per image (default: %(default)s)"
    )
    pred.add_argument(
        "--batch-size", type=int, default=32, help="images per forward pass (default: %(default)s)"
    )
    pred.add_argument(
        "--masks",
        help="segmentation models: folder for one palette PNG mask per image, at the image's "
        "size (default: masks/ beside the model)",
    )
    pred.add_argument("images", nargs="+", help="image files or folders")

    exp = sub.add_parser(
        "export", parents=[common], help="a serving artifact (SavedModel, LiteRT, ONNX) taking uint8 images"
    )
    exp.add_argument("--model", required=True, help="a best.keras written by `run`")
    exp.add_argument(
        "--format",
        choices=("saved_model", "litert", "onnx"),
        help="(default: from --out: .tflite litert, .onnx onnx, else saved_model; litert with --quantize)",
    )
    exp.add_argument(
        "--quantize",
        choices=("int8", "float16", "dynamic"),
        help="LiteRT post-training quantization: int8 (weights and activations, calibrated on the "
        "run's training images), float16 or dynamic (int8 weights). Evaluates the quantized and the "
        "float32 file on the run's test split and writes both beside --out (<out>.export.json)",
    )
    exp.add_argument(
        "--calibration-images",
        type=int,
        default=300,
        help="training images int8 calibrates on (default: %(default)s)",
    )
    exp.add_argument(
        "--fallback",
        choices=("float16", "dynamic"),
        help="with --quantize int8: export this instead when a layer has no int8 kernel in LiteRT "
        "(default: refuse, naming the layers)",
    )
    exp.add_argument(
        "--input-dtype",
        default="uint8",
        choices=("uint8", "float32"),
        help="uint8: clients send raw 0-255 pixels (default: %(default)s)",
    )
    exp.add_argument(
        "--tta",
        action="store_true",
        help="serve the flip test-time augmentation: the average of the image's and its mirror's "
        "class scores (same input and output)",
    )
    exp.add_argument(
        "--probabilities",
        action="store_true",
        help="segmentation models: also serve the per-pixel class probabilities (default: the class map only)",
    )
    exp.add_argument(
        "--out",
        required=True,
        help="folder (saved_model) or file (litert .tflite, onnx .onnx) to write; "
        "classes.json of the run is stored beside it",
    )

    bench = sub.add_parser(
        "bench", parents=[common], help="head-only trials: cached features vs the naive path"
    )
    bench.add_argument("--backbone", default="resnet50", help="zoo model name (default: %(default)s)")
    bench.add_argument("--image-size", type=int, default=96, help="(default: %(default)s)")
    bench.add_argument(
        "--per-class", type=int, default=40, help="training images per class (default: %(default)s)"
    )
    bench.add_argument("--epochs", type=int, default=3, help="epochs per trial (default: %(default)s)")
    bench.add_argument(
        "--trials", type=int, default=3, help="trials per path and seed (default: %(default)s)"
    )
    bench.add_argument("--seeds", type=int, default=3, help="seeds per path (default: %(default)s)")
    bench.add_argument(
        "--backbone-weights",
        default=None,
        help="weights for the backbone (a path, or 'imagenet'); default: train the whole model on the "
        "demo's training split first (--pretrain-epochs), so the features carry information",
    )
    bench.add_argument(
        "--pretrain-epochs", type=int, default=4, help="epochs of that training (default: %(default)s)"
    )

    dist = sub.add_parser(
        "distill",
        parents=[common],
        help="train a small student on a run's images and its best model's softened outputs",
    )
    dist.add_argument(
        "--teacher", required=True, help="the --out folder of a classification run (or its best.keras)"
    )
    dist.add_argument(
        "--student", default="mobilenetv3small", help="zoo backbone name (default: %(default)s)"
    )
    dist.add_argument(
        "--out", help="where student.keras and distill.json go (default: TEACHER/distill-STUDENT)"
    )
    dist.add_argument(
        "--epochs",
        type=int,
        help="(default: the teacher run's epochs per trial; 2.5x that from random --weights)",
    )
    dist.add_argument(
        "--temperature", type=float, default=4.0, help="softens both outputs (default: %(default)s)"
    )
    dist.add_argument(
        "--alpha",
        type=float,
        default=0.5,
        help="weight of the labels' cross-entropy; 1.0 trains without the teacher (default: %(default)s)",
    )
    dist.add_argument(
        "--weights", help="the student backbone's weights: imagenet or a file (default: random)"
    )
    dist.add_argument("--seed", type=int, default=0, help="(default: %(default)s)")


def run_config(args) -> SearchConfig:
    """The `SearchConfig` of `run`'s arguments: the --config file's, then the flags given."""
    config = SearchConfig.load(args.config) if args.config else SearchConfig()
    names = {f.name for f in dataclasses.fields(SearchConfig)}
    given = {k: v for k, v in vars(args).items() if k in names and v is not None}
    if given.get("class_weight") == "none":
        given["class_weight"] = None
    return config.replace(**given)


def run(args) -> int:
    import tuning

    config = run_config(args)
    try:
        tuning.run(
            args.data,
            args.out,
            config,
            overwrite=args.overwrite,
            callbacks=[console.stop_when_interrupted()],
            verbose=2,
        )
    except tuning.RunInterrupted as e:
        print(f"\n{e}", file=sys.stderr)
        return 130
    return 0


def bench(args) -> int:
    from tuning.bench import bench as run_bench

    return run_bench(args)


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)
    try:
        # Inside the try: a broken TensorFlow install fails in one line too.
        console.quiet_logs(args.debug)
        commands = {"run": run, "predict": predict, "export": export, "bench": bench, "distill": distill}
        return commands[args.command](args)
    except (OSError, ValueError, TypeError, ImportError, RuntimeError) as e:
        if args.debug:
            raise
        # One line, what is wrong and what to do; --debug shows where.
        message = " ".join(str(e).split())
        print(f"error: {message} (--debug shows the traceback)", file=sys.stderr)
        return 2


class UsageError(ValueError):
    """A bad command line or input; the message says what to do."""


def export(args):
    from tuning.deploy import comparison_line
    from tuning.deploy import export as write

    record = write(
        args.model,
        args.out,
        format=args.format,
        input_dtype=args.input_dtype,
        tta=args.tta,
        probabilities=args.probabilities,
        quantize=args.quantize,
        calibration_images=args.calibration_images,
        fallback=args.fallback,
    )
    classes = record["classes"]
    used = record["comparison"]["quantize"] if args.quantize else None
    print(
        f"wrote {record['path']} ({record['format']}{', ' + used if used else ''}, "
        f"{args.input_dtype} input{', flip TTA' if args.tta else ''}"
        + (f", {len(classes)} class names beside it)" if classes else ")")
    )
    if used:
        print(comparison_line(record["comparison"], record["path"]))
    return 0


def distill(args):
    from tuning.distillation import distill as train_student

    train_student(
        args.teacher,
        args.student,
        args.out,
        epochs=args.epochs,
        temperature=args.temperature,
        alpha=args.alpha,
        weights=args.weights,
        seed=args.seed,
    )
    return 0


def predict(args):
    import numpy as np

    from tuning.data import IMAGE_EXTENSIONS
    from tuning.deploy import predict_files
    from tuning.job import load_classes, load_model

    if args.batch_size < 1:
        raise UsageError(f"--batch-size must be at least 1. Received: --batch-size {args.batch_size}")
    model = load_model(args.model)
    stored = load_classes(args.model)
    classes, thresholds = stored["classes"], stored["thresholds"]
    files = []
    for item in args.images:
        if os.path.isdir(item):
            for root, _, fs in sorted(os.walk(item)):
                files += [os.path.join(root, f) for f in sorted(fs) if f.lower().endswith(IMAGE_EXTENSIONS)]
        elif os.path.exists(item):
            files.append(item)
        else:
            raise UsageError(f"no image or folder at {item!r}.")
    if not files:
        raise UsageError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in {' '.join(args.images)}.")
    if len(model.output_shape) == 4:  # per-pixel scores: a segmentation model
        return _predict_masks(model, files, classes, args)
    # Batches decoded ahead in threads, as in training (bilinear resize):
    # memory stays at a few batches however many files are given.
    for path, p, error in predict_files(model, files, batch_size=args.batch_size):
        if error is not None:
            print(f"{path}: cannot read ({error})")
        elif thresholds is not None:  # multi-label: every class at or above its threshold
            print(f"{path}: {_labels_above(p, classes, thresholds)}")
        else:
            top = np.argsort(p)[::-1][: args.top]
            print(f"{path}: " + ", ".join(f"{classes[i] if classes else i} {p[i]:.3f}" for i in top))
    return 0


def _labels_above(probs, classes, thresholds) -> str:
    """`"circle 0.97, star 0.88"`: the classes at or above their thresholds, most probable first."""
    import numpy as np

    on = [i for i in np.argsort(probs)[::-1] if probs[i] >= thresholds[i]]
    if not on:
        best = int(np.argmax(probs))
        return f"no label above its threshold (highest: {classes[best]} {probs[best]:.3f}, threshold {thresholds[best]:.3f})"
    return ", ".join(f"{classes[i]} {probs[i]:.3f}" for i in on)


def _predict_masks(model, files, classes, args):
    """One palette PNG of class indices per image, at the image's own size."""
    import numpy as np
    from PIL import Image

    from tuning.segment import predict_mask_file

    out = os.path.abspath(args.masks or os.path.join(os.path.dirname(os.path.abspath(args.model)), "masks"))
    if os.path.exists(out) and not os.path.isdir(out):
        raise UsageError(f"--masks {out!r} is a file; give a folder for the masks.")
    stems = [os.path.splitext(os.path.basename(p))[0] for p in files]
    twice = sorted({s for s in stems if stems.count(s) > 1})
    if twice:
        raise UsageError(f"several images are named {twice[:3]}: their masks would overwrite each other.")
    os.makedirs(out, exist_ok=True)
    for path, stem in zip(files, stems):
        try:
            with Image.open(path) as img:
                image = np.asarray(img.convert("RGB"))
        except Exception as e:  # PIL raises many types for unreadable files
            print(f"{path}: cannot read ({type(e).__name__}: {e})")
            continue
        target = os.path.join(out, stem + ".png")
        mask = predict_mask_file(model, image, target)
        shares = np.bincount(mask.ravel(), minlength=len(classes or [])) / mask.size
        top = ", ".join(
            f"{classes[i] if classes else i} {shares[i]:.0%}"
            for i in np.argsort(shares)[::-1][:3]
            if shares[i]
        )
        print(f"{path}: {target} ({top})")
    return 0


if __name__ == "__main__":
    # Ctrl-C must reach the run (it keeps the best model and the leaderboard)
    # even when a non-interactive shell started us with SIGINT ignored.
    signal.signal(signal.SIGINT, console.on_sigint)
    sys.exit(main())
