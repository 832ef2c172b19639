"""`python -m tuning run|predict|bench`: the main job and its companions.

python -m tuning run                       # demo data, default settings
python -m tuning run --data DIR --out DIR --backbone resnet50 --weights imagenet
python -m tuning predict --model runs/demo/best.keras IMAGE_OR_DIR ...
python -m tuning bench                     # cached features vs naive trials
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import time

DEFAULT_OUT = os.path.join("runs", "demo")


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
        help="image folder, one sub-folder per class (train/val/test "
        "sub-folders honoured); default: write and use the embedded demo set",
    )
    run.add_argument("--out", default=DEFAULT_OUT, help="output folder (default: %(default)s)")
    run.add_argument(
        "--backbone",
        default="resnet18",
        help="zoo model name, see `python -m zoo list`; several, comma-separated "
        "(resnet18,efficientnetv2b0), make the backbone a searched choice "
        "(default: %(default)s)",
    )
    run.add_argument(
        "--weights",
        default=None,
        help="backbone weights: a path or 'imagenet' (default: random init, which fine-tunes every stage)",
    )
    run.add_argument(
        "--image-size", type=int, default=48, help="square input side in pixels (default: %(default)s)"
    )
    run.add_argument(
        "--max-trials",
        type=int,
        default=2,
        help="trials of a random/bayesian search, at least 1 (default: %(default)s)",
    )
    run.add_argument("--epochs", type=int, default=12, help="epochs per trial (default: %(default)s)")
    run.add_argument(
        "--tuner",
        default="random",
        choices=["hyperband", "random", "bayesian"],
        help="search strategy: KerasTuner's Hyperband, random search or Bayesian "
        "optimisation (default: %(default)s)",
    )
    run.add_argument(
        "--workers",
        type=int,
        default=0,
        help="run the search as KerasTuner's chief plus N worker processes on this "
        "machine (127.0.0.1); see the README for several hosts (default: %(default)s)",
    )
    run.add_argument(
        "--batch-size", type=int, default=32, help="images per training step (default: %(default)s)"
    )
    run.add_argument(
        "--precision",
        default="fp32",
        choices=["fp32", "bf16"],
        help="bf16: mixed_bfloat16 (bfloat16 compute, float32 weights); faster on "
        "GPUs and on CPUs with AMX/AVX512-BF16 (default: %(default)s)",
    )
    run.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of the data split, the search and the weights (default: %(default)s)",
    )
    run.add_argument(
        "--test-fraction",
        type=float,
        default=0.15,
        help="without a test/ folder: share of each class held out as a test split "
        "that no trial sees; 0 keeps none, and the report then says that its figure "
        "is the validation accuracy used for selection (default: %(default)s)",
    )
    run.add_argument(
        "--keep-checkpoints",
        action="store_true",
        help="keep every trial's checkpoint (default: only the best trial's)",
    )
    run.add_argument(
        "--overwrite",
        action="store_true",
        help="start afresh in an --out folder holding an earlier run (default: resume it)",
    )
    run.add_argument("--demo-images-per-class", type=int, default=400, help=argparse.SUPPRESS)

    pred = sub.add_parser("predict", parents=[common], help="top-k labels for images")
    pred.add_argument("--model", required=True, help="a best.keras written by `run`")
    pred.add_argument("--top", type=int, default=3, help="labels per image (default: %(default)s)")
    pred.add_argument("images", nargs="+", help="image files or folders")

    exp = sub.add_parser(
        "export", parents=[common], help="a serving artifact (SavedModel, LiteRT, ONNX) taking uint8 images"
    )
    exp.add_argument("--model", required=True, help="a best.keras written by `run`")
    exp.add_argument(
        "--format",
        default="saved_model",
        choices=("saved_model", "litert", "onnx"),
        help="(default: %(default)s)",
    )
    exp.add_argument(
        "--input-dtype",
        default="uint8",
        choices=("uint8", "float32"),
        help="uint8: clients send raw 0-255 pixels (default: %(default)s)",
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
    return p


_INTERRUPTED = []  # set by the SIGINT handler; module-level, callbacks are deep-copied


def _on_sigint(signum, frame):
    _INTERRUPTED.append(signum)
    raise KeyboardInterrupt


def _stop_when_interrupted():
    """A callback that re-raises Ctrl-C at the next batch.

    Python delivers the first KeyboardInterrupt wherever the interpreter
    happens to be, and inside a garbage-collection callback it is printed
    and dropped; this makes sure the run still stops.
    """
    import keras  # imported here: `--help` stays fast

    class StopWhenInterrupted(keras.callbacks.Callback):
        # Batch *begin* hooks: a batch-end hook would make Keras wait for
        # every step's logs (no asynchronous dispatch on JAX and PyTorch).
        def on_train_batch_begin(self, batch, logs=None):
            if _INTERRUPTED:
                raise KeyboardInterrupt

        on_test_batch_begin = on_train_batch_begin

    return StopWhenInterrupted()


def _quiet_logs(debug):
    """TensorFlow's C++ and absl start-up noise off for the CLI's own commands."""
    if debug:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    try:
        import absl.logging

        absl.logging.set_verbosity(absl.logging.ERROR)
    except ImportError:
        pass
    _import_tensorflow_quietly()


def _import_tensorflow_quietly():
    """Import TensorFlow with file descriptor 2 pointed at /dev/null.

    TensorFlow 2.20's C++ start-up lines (oneDNN, "Could not find cuda
    drivers", cuInit) are written through absl before its logging is set
    up, so `TF_CPP_MIN_LOG_LEVEL` does not reach them; only the descriptor
    does. A failing import still raises its Python exception, reported by
    `main` after the descriptor is restored.
    """
    import importlib.util

    if os.environ.get("KERAS_BACKEND", "tensorflow") != "tensorflow" or "tensorflow" in sys.modules:
        return
    if importlib.util.find_spec("tensorflow") is None:
        return
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
        os.close(devnull)
        import tensorflow as tf

        tf.config.list_physical_devices("GPU")  # the cuInit probe happens here, still silenced
        # Its Python-side warnings too (a trial per model means a trace per
        # model, which TensorFlow reports as "excessive retracing").
        import logging

        logging.getLogger("tensorflow").setLevel(logging.ERROR)
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)
    args.argv = argv
    try:
        # Inside the try: a broken TensorFlow install fails in one line too.
        _quiet_logs(args.debug)
        return {"run": run, "predict": predict, "export": export, "bench": bench}[args.command](args)
    except (UsageError, OSError, ValueError, TypeError, ImportError) as e:
        if args.debug:
            raise
        # One line, what is wrong and what to do; --debug shows where.
        message = " ".join(str(e).split())
        print(f"error: {message} (--debug shows the traceback)", file=sys.stderr)
        return 2


class UsageError(ValueError):
    """A bad command line or input; the message says what to do."""


def _child_argv(argv, data):
    """`run`'s arguments for a chief/worker: same settings, the data fixed, no fan-out."""
    out, skip = [], 0
    for a in argv:
        if skip:
            skip -= 1
            continue
        name = a.split("=", 1)[0]
        if name in ("--workers", "--data"):
            skip = 0 if "=" in a else 1
            continue
        if name == "--overwrite":  # done once by the launcher, never by each process
            continue
        out.append(a)
    return out + ["--data", data]


def _launch(args, data):
    """Start KerasTuner's chief and `args.workers` workers on loopback; wait for all."""
    import socket
    import subprocess

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    argv = [sys.executable, "-m", "tuning"] + _child_argv(args.argv, data)
    env = {**os.environ, "KERASTUNER_ORACLE_IP": "127.0.0.1", "KERASTUNER_ORACLE_PORT": str(port)}
    logs = os.path.join(os.path.abspath(args.out), "workers")
    os.makedirs(logs, exist_ok=True)
    print(f"chief on 127.0.0.1:{port}, {args.workers} workers (logs in {logs})", flush=True)
    chief = subprocess.Popen(argv, env={**env, "KERASTUNER_TUNER_ID": "chief"})
    workers = []
    for i in range(args.workers):
        log = open(os.path.join(logs, f"tuner{i}.log"), "w")
        workers.append(
            (
                subprocess.Popen(
                    argv,
                    env={**env, "KERASTUNER_TUNER_ID": f"tuner{i}"},
                    stdout=log,
                    stderr=subprocess.STDOUT,
                ),
                log,
            )
        )
    procs = [p for p, _ in workers]
    try:
        chief.wait()
        if chief.returncode != 0:  # the workers would wait for it forever
            for p in procs:
                if p.poll() is None:
                    p.terminate()
        codes = [p.wait() for p in procs]
        code = chief.returncode
    except KeyboardInterrupt:
        for p in [chief] + [p for p, _ in workers]:
            p.terminate()
        print(f"\ninterrupted: rerun the same command to resume from {args.out}.", file=sys.stderr)
        return 130
    finally:
        for _, log in workers:
            log.close()
    failed = [f"tuner{i}" for i, c in enumerate(codes) if c != 0]
    if failed:
        print(f"error: workers {failed} failed; see {logs}/", file=sys.stderr)
        return code or 1
    return code


# What a resumed run must share with the earlier one (trials, epochs and
# workers may change: a search can be extended).
_RESUME_KEYS = (
    "data",
    "backbone",
    "weights",
    "image_size",
    "tuner",
    "batch_size",
    "seed",
    "precision",
    "demo_images_per_class",
    "test_fraction",
)


def _settings(args):
    data = os.path.abspath(args.data) if args.data else None
    return {k: (data if k == "data" else getattr(args, k)) for k in _RESUME_KEYS}


def _changed_settings(path, settings):
    """`'--flag earlier -> now'` for each setting that differs from the earlier run's."""
    if not os.path.exists(path):
        return ""
    try:
        with open(path) as f:
            earlier = json.load(f)
    except (OSError, ValueError):
        return f"{path} is unreadable"
    return ", ".join(
        f"--{k.replace('_', '-')} {earlier.get(k)!r} -> {v!r}"
        for k, v in settings.items()
        if k in earlier and earlier[k] != v
    )


def _check_writable(out):
    """Refuse an --out that cannot be created or written, before anything is written.

    A probe file in the nearest existing folder (removed at once) answers for
    read-only file systems and permissions alike, also for root.
    """
    import tempfile

    if os.path.exists(out) and not os.path.isdir(out):
        raise UsageError(f"--out {out!r} is a file, not a folder. Choose another --out.")
    existing = out
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise UsageError(f"--out {out!r} lies under {existing!r}, which is a file. Choose another --out.")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as e:
        raise UsageError(
            f"cannot write to --out {out!r}: {existing!r} is not writable "
            f"({e.strerror}). Choose a folder you can write to."
        ) from None


def _check_run(args):
    """Every argument of `run`, checked before anything is written or deleted."""
    import zoo

    for flag, value, low, why in (
        ("--max-trials", args.max_trials, 1, " (KerasTuner reads 0 as 'no limit')"),
        ("--epochs", args.epochs, 1, ""),
        ("--batch-size", args.batch_size, 1, ""),
        ("--workers", args.workers, 0, ""),
        ("--demo-images-per-class", args.demo_images_per_class, 3, ""),
    ):
        if value < low:
            raise UsageError(f"{flag} must be at least {low}{why}. Received: {flag} {value}")
    if not 0 <= args.test_fraction <= 0.5:
        raise UsageError(
            f"--test-fraction must be in [0, 0.5]. Received: --test-fraction {args.test_fraction}"
        )
    names = backbones(args)
    for name in names:
        _check_backbone(args, name)
    if args.weights is not None and not os.path.isfile(args.weights):
        for name in names:
            # Fetched now (or found in the cache): offline, the error names the file to place.
            spec = zoo.get_spec(name)
            zoo.weights.fetch(zoo.builder.resolve_source(spec, args.weights, include_top=False))
    _check_writable(os.path.abspath(args.out))


def backbones(args) -> list:
    """The backbone names of `--backbone` (comma-separated), checked to exist."""
    import zoo

    names = [n.strip() for n in args.backbone.split(",") if n.strip()]
    if not names:
        raise UsageError(
            f"--backbone needs at least one zoo model name. Received: --backbone {args.backbone!r}"
        )
    for name in names:
        try:
            zoo.get_spec(name)
        except ValueError as e:
            raise UsageError(f"--backbone: {e}") from None
    return list(dict.fromkeys(zoo.get_spec(n).name for n in names))


def _check_backbone(args, name):
    import zoo

    spec = zoo.get_spec(name)
    if spec.is_task:
        raise UsageError(
            f"--backbone {name!r} is a {spec.task} model; pick a classification "
            "backbone from `python -m zoo list`."
        )
    if args.image_size < spec.min_size:
        raise UsageError(
            f"--image-size {args.image_size} is too small for {name!r} (minimum {spec.min_size})."
        )
    if args.weights is not None and not os.path.isfile(args.weights):
        if args.weights != "imagenet" and args.weights not in spec.weights:
            raise UsageError(f"--weights {args.weights!r} is neither 'imagenet' nor an existing file.")
        if not spec.weights:
            raise UsageError(
                f"{name!r} has no pretrained weights. Backbones with ImageNet weights: "
                f"{', '.join(zoo.registry.models_with_weights())}. Leave out --weights to train "
                "from scratch, or pass a weight file."
            )


def run(args):
    import keras

    import tuning
    import zoo
    from tuning import report
    from tuning.data import load_splits
    from tuning.hypermodel import AUGMENTATIONS
    from tuning.tuners import _atomic_write as atomic_write
    from tuning.tuners import _is_worker

    t0 = time.time()
    _check_run(args)
    out = os.path.abspath(args.out)

    def splits(folder):
        return load_splits(
            folder,
            image_size=args.image_size,
            batch_size=args.batch_size,
            seed=args.seed,
            test_fraction=args.test_fraction,
        )

    loaded = splits(args.data) if args.data else None  # the data is checked before any write
    project = os.path.join(out, "search")
    settings = _settings(args)
    settings_path = os.path.join(out, "run.json")
    launched = "KERASTUNER_TUNER_ID" in os.environ  # a chief/worker: the launcher checked
    if os.path.exists(project) and not launched:
        if args.overwrite:
            shutil.rmtree(project)
            print(f"--overwrite: removed the earlier search in {project}")
        else:
            changed = _changed_settings(settings_path, settings)
            if changed:
                raise UsageError(
                    f"{out} holds an earlier run with other settings ({changed}); "
                    "resuming it would mix the two. Pass --overwrite to replace it, "
                    "or choose another --out."
                )
            print(f"resuming the earlier run in {out} (pass --overwrite to start afresh)")
    data = args.data
    if data is None:
        data = zoo.datasets.write_shapes(
            os.path.join(out, "data"),
            images_per_class=args.demo_images_per_class,
            size=args.image_size,
            seed=args.seed,
        )
        print(f"demo data: {data} (six shape classes, train/val/test)")
        loaded = splits(data)
    train, val, test, classes, split_info = loaded
    if not launched:  # the settings the next run must match to resume, and the splits
        os.makedirs(out, exist_ok=True)
        record = {**settings, "splits": split_info}
        atomic_write(settings_path, lambda p: open(p, "w").write(json.dumps(record, indent=2)))
    if args.workers and not launched:
        return _launch(args, data)
    worker = _is_worker()
    counts = {name: split_info[name]["images"] for name in ("train", "val", "test")}
    print(
        "images: "
        + "; ".join(
            f"{n} {i['images']} ({i['source']})" for n, i in split_info.items() if isinstance(i, dict)
        )
    )
    keras.utils.set_random_seed(args.seed)
    pretrained = args.weights is not None
    # From random weights there is nothing to protect: train every stage at
    # the full rate from the first epoch (a frozen random backbone or a 100x
    # smaller phase-2 rate only wastes the budget).
    # BatchNorm must train too: frozen at its initial statistics it would
    # normalise nothing. Augmentation is what closes the gap between train
    # and test accuracy on a few hundred images per class.
    names = backbones(args)
    unfreeze = (
        None
        if pretrained
        else {
            "stages": [max(len(zoo.get_spec(n).stages) for n in names)],
            "augment": [True],
            "lr_factor": [1.0],
            "train_bn": [True],
        }
    )
    t_search = time.time()
    try:
        result = tuning.search(
            train,
            val,
            backbone=names if len(names) > 1 else names[0],
            num_classes=len(classes),
            input_shape=(args.image_size, args.image_size, 3),
            weights=args.weights,
            tuner=args.tuner,
            max_trials=args.max_trials,
            epochs=args.epochs,
            directory=out,
            project_name="search",
            seed=args.seed,
            print_trials=True,
            verbose=2,
            unfreeze_space=unfreeze,
            phase1_fraction=0.5 if pretrained else 0.0,
            # A cosine schedule ends on its best epochs: no early stop from scratch.
            schedule="cosine",
            patience=args.epochs if not pretrained else 3,
            # The demo's shapes already vary in position and size; flips and
            # rotations are what a from-scratch network cannot learn from a
            # few hundred images (zoom and translation mostly slow it down).
            augmentation=("flip", "rotation") if not pretrained else AUGMENTATIONS,
            head_space=None
            if pretrained
            else {
                "pooling": ["avg"],
                "optimizer": ["adam"],
                "dense_layers": (0, 1),
                "dropout": (0.0, 0.3),
                "learning_rate": (1e-3, 2e-3),
            },
            callbacks=[_stop_when_interrupted()],
            precision=args.precision,
            keep_checkpoints=args.keep_checkpoints,
        )
    except KeyboardInterrupt:
        kept = os.path.join(project, "best.keras")
        if os.path.exists(kept):
            _publish(kept, os.path.join(out, "best.keras"))
            board = os.path.join(project, "leaderboard.csv")
            if os.path.exists(board):
                shutil.copyfile(board, os.path.join(out, "leaderboard.csv"))
            where = f"the best model so far is {out}/best.keras, the leaderboard {out}/leaderboard.csv"
        else:
            where = "no trial had finished"
        print(f"\ninterrupted: {where}. Run the same command again to resume.", file=sys.stderr)
        return 130
    if worker:  # trials done; the chief evaluates and reports
        print(f"worker {os.environ['KERASTUNER_TUNER_ID']} finished its trials")
        return 0
    search_seconds = time.time() - t_search
    print("\nleaderboard (best first):\n" + str(result))
    atomic_write(os.path.join(out, "classes.json"), lambda p: open(p, "w").write(json.dumps(classes)))
    _publish(os.path.join(project, "best.keras"), os.path.join(out, "best.keras"))
    atomic_write(
        os.path.join(out, "leaderboard.csv"),
        lambda p: shutil.copyfile(os.path.join(project, "leaderboard.csv"), p),
    )
    # Without a test split the only figure left is the validation accuracy
    # that chose the best trial: say so wherever it is shown.
    measured_on = "test" if test is not None else "val"
    evaluation = report.evaluate(result.model, test if test is not None else val, classes)
    evaluation["split"] = measured_on
    evaluation["source"] = split_info[measured_on]["source"]
    with open(os.path.join(project, "best.json")) as f:
        history = json.load(f).get("history", {})
    plots = report.write_plots(
        out,
        model=result.model,
        history=history,
        leaderboard=result.leaderboard,
        evaluation=evaluation,
        class_names=classes,
        backbone=result.hyperparameters.get("backbone", names[0]),
    )
    timings = {"search": search_seconds, "total": time.time() - t0}
    path = report.write_report(
        out,
        args=args,
        classes=classes,
        counts=counts,
        result=result,
        evaluation=evaluation,
        timings=timings,
        plots=plots,
        splits=split_info,
    )
    figure = (
        "test accuracy"
        if measured_on == "test"
        else "validation accuracy (used for selection; no test split)"
    )
    print(
        f"\n{figure} {evaluation['accuracy']:.4f} on {split_info[measured_on]['images']} images "
        f"({evaluation['source']}); wrote {out}/best.keras, leaderboard.csv, "
        f"{os.path.basename(path)}, plots/ ({len(plots)} PNGs) in {timings['total']:.0f} s"
    )
    return 0


def _publish(stored, target):
    """`target` as a second name of the search's best model (stored once on disk)."""
    from tuning.tuners import _atomic_write

    tmp = target + ".link"
    try:
        if os.path.exists(tmp):
            os.remove(tmp)
        os.link(stored, tmp)
        os.replace(tmp, target)
    except OSError:  # no hard links here (another file system): a copy
        _atomic_write(target, lambda p: shutil.copyfile(stored, p))


def export(args):
    import keras

    import zoo

    if args.format in ("saved_model", "litert") and keras.backend.backend() != "tensorflow":
        raise UsageError(
            f"--format {args.format} needs the TensorFlow backend; run with "
            "KERAS_BACKEND=tensorflow (best.keras loads on any backend)."
        )
    out = os.path.abspath(args.out)
    if os.path.exists(out):
        raise UsageError(f"--out {args.out!r} exists; choose a new path (nothing is overwritten).")
    parent = os.path.dirname(out)
    if not os.path.isdir(parent):
        raise UsageError(f"--out {args.out!r}: its folder {parent!r} does not exist.")
    model = _load_model(args.model)
    names_path = os.path.join(os.path.dirname(args.model), "classes.json")
    classes = json.load(open(names_path)) if os.path.exists(names_path) else None
    # Written next to the target and renamed into place: an interrupted
    # export leaves no half-written artifact at --out.
    tmp = os.path.join(parent, f".{os.path.basename(out)}.tmp-{os.getpid()}")
    try:
        zoo.export(model, tmp, format=args.format, input_dtype=args.input_dtype, class_names=classes)
        beside = tmp + ".classes.json"
        os.replace(tmp, out)
        if os.path.exists(beside):
            os.replace(beside, out + ".classes.json")
    finally:
        for leftover in (tmp, tmp + ".classes.json"):
            if os.path.isdir(leftover):
                shutil.rmtree(leftover, ignore_errors=True)
            elif os.path.exists(leftover):
                os.remove(leftover)
    print(
        f"wrote {out} ({args.format}, {args.input_dtype} input"
        + (f", {len(classes)} class names beside it)" if classes else ")")
    )
    return 0


def predict(args):
    import keras
    import numpy as np

    from tuning.data import IMAGE_EXTENSIONS

    model = _load_model(args.model)
    names_path = os.path.join(os.path.dirname(args.model), "classes.json")
    classes = json.load(open(names_path)) if os.path.exists(names_path) else None
    size = model.input_shape[1:3]
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
    for path in files:
        try:
            img = keras.utils.img_to_array(keras.utils.load_img(path, target_size=size))
        except Exception as e:  # PIL raises many types for unreadable files
            print(f"{path}: cannot read ({type(e).__name__}: {e})")
            continue
        probs = keras.ops.convert_to_numpy(model(img[None].astype("uint8"), training=False))[0]
        top = np.argsort(probs)[::-1][: args.top]
        labels = ", ".join(f"{classes[i] if classes else i} {probs[i]:.3f}" for i in top)
        print(f"{path}: {labels}")
    return 0


def _load_model(path):
    """The Keras model at `path`, or a one-line error saying what the file is."""
    import zipfile

    import keras

    if not os.path.exists(path):
        raise UsageError(
            f"no model at {path!r}; run `python -m tuning run` first (it writes OUT/best.keras)."
        )
    if os.path.isdir(path) or not path.endswith(".keras") or not zipfile.is_zipfile(path):
        raise UsageError(
            f"{path!r} is not a Keras model file: give the best.keras that `python -m tuning run` wrote."
        )
    # The serializable classes a tuned model holds register on import; the
    # package imports lazily, so a fresh `predict`/`export` process must
    # import them before loading.
    import tuning.losses  # noqa: F401
    import tuning.optimizers  # noqa: F401
    import zoo  # noqa: F401

    try:
        return keras.saving.load_model(path)
    except Exception as e:  # Keras raises many types for a damaged archive
        raise UsageError(
            f"{path!r} could not be loaded as a Keras model ({type(e).__name__}: "
            f"{' '.join(str(e).split())[:200]}). Write it again with "
            "`python -m tuning run`."
        ) from e


def _pretrained_backbone(args, x, y, xv, yv) -> str:
    """Train the whole model on the demo's training split; the weights file its backbone loads."""
    import tempfile

    import keras

    import zoo

    model = zoo.build(
        args.backbone,
        num_classes=len(zoo.datasets.CLASSES),
        input_shape=(args.image_size,) * 2 + (3,),
        include_preprocessing=True,
    )
    model.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy", metrics=["accuracy"])
    start = time.perf_counter()
    h = model.fit(x, y, batch_size=32, epochs=args.pretrain_epochs, verbose=0)
    _recalibrate_batch_norm(model, x)
    _, val = model.evaluate(xv, yv, verbose=0)
    print(
        f"backbone: {args.backbone} trained {args.pretrain_epochs} epochs on the demo training split "
        f"in {time.perf_counter() - start:.0f} s (train acc {h.history['accuracy'][-1]:.3f}, val acc {val:.3f})"
    )
    path = os.path.join(tempfile.mkdtemp(prefix="tuning_bench_"), "backbone.weights.h5")
    model.save_weights(path)
    return path


def _recalibrate_batch_norm(model, x, batch_size: int = 32) -> None:
    """Moving statistics of every BatchNormalization = the mean over `x`'s batches.

    A few epochs on a small set leave them near their initial values
    (momentum 0.99 over a few dozen steps), so the trained backbone would
    give chance-level features in inference mode. Each batch in training
    mode with momentum k/(k+1) makes them a running mean of the batch
    statistics, as SWA's `bn_update` does.
    """
    import keras

    import zoo

    layers = [l for l in zoo.weights.leaf_layers(model) if isinstance(l, keras.layers.BatchNormalization)]
    saved = [l.momentum for l in layers]
    try:
        for k, i in enumerate(range(0, len(x), batch_size)):
            for layer in layers:
                layer.momentum = k / (k + 1)
            model(x[i : i + batch_size], training=True)
    finally:
        for layer, momentum in zip(layers, saved):
            layer.momentum = momentum


def _spread(values) -> str:
    import statistics

    if len(values) < 2:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} +- {statistics.stdev(values):.3f}"


def bench(args):
    import keras
    import keras_tuner as kt

    import tuning
    import zoo
    from tuning._keras import custom_gradient_names, release_custom_gradients

    for flag, value, low in (
        ("--image-size", args.image_size, 32),
        ("--per-class", args.per_class, 2),
        ("--epochs", args.epochs, 1),
        ("--trials", args.trials, 1),
        ("--seeds", args.seeds, 1),
        ("--pretrain-epochs", args.pretrain_epochs, 1),
    ):
        if value < low:
            raise UsageError(f"{flag} must be at least {low}. Received: {flag} {value}")
    zoo.get_spec(args.backbone)  # an unknown name fails here, with suggestions
    x, y, _ = zoo.datasets.shapes(args.per_class, size=args.image_size, split="train")
    xv, yv, _ = zoo.datasets.shapes(max(2, args.per_class // 4), size=args.image_size, split="val")
    weights = args.backbone_weights or _pretrained_backbone(args, x, y, xv, yv)
    space = {
        "finetune/stages": 0,
        "finetune/augment": False,
        "head/pooling": "avg",
        "head/dense_layers": 1,
        "head/units": 128,
        "head/dropout": 0.2,
        "head/batch_norm": False,
        "head/optimizer": "adam",
        "head/learning_rate": 1e-3,
    }
    rows = []
    for cached in (False, True):
        hm = tuning.TransferHyperModel(
            args.backbone,
            num_classes=len(zoo.datasets.CLASSES),
            input_shape=(args.image_size,) * 2 + (3,),
            weights=weights,
            cache_features=cached,
        )
        first, later, scores = [], [], []
        for seed in range(args.seeds):
            for trial in range(args.trials):
                hp = kt.HyperParameters()
                for k, v in space.items():
                    hp.Fixed(k, v)
                keras.utils.set_random_seed(seed)
                gradients = custom_gradient_names()
                model = hm.build(hp)
                start = time.perf_counter()
                h = hm.fit(
                    hp, model, x, y, epochs=args.epochs, validation_data=(xv, yv), verbose=0, batch_size=32
                )
                (first if seed == 0 and trial == 0 else later).append(time.perf_counter() - start)
                del model
                release_custom_gradients(gradients)  # each trial's model is freed (TensorFlow)
                if trial == args.trials - 1:
                    scores.append(h.history["val_accuracy"][-1])
        rows.append(("cached" if cached else "naive", first, later, scores))
    print(
        f"{args.backbone} {args.image_size}px, {len(x)} train / {len(xv)} val images, {args.epochs} epochs, "
        f"{args.trials} head-only trials x {args.seeds} seeds per path (keras backend {keras.backend.backend()})"
    )
    print(f"{'path':<8} {'first trial s':>14} {'later trials s':>15}   val acc (mean +- sd over seeds)")
    for name, first, later, scores in rows:
        mean_later = sum(later) / max(1, len(later))
        print(f"{name:<8} {first[0]:>14.2f} {mean_later:>15.2f}   {_spread(scores)}")
    (_, nf, nl, ns), (_, cf, cl, cs) = rows
    gap = max(abs(a - b) for a, b in zip(ns, cs))
    print(
        f"speed-up: {(sum(nf) + sum(nl)) / (sum(cf) + sum(cl)):.1f}x over all trials, "
        f"{(sum(nl) / max(1, len(nl))) / max(1e-9, sum(cl) / max(1, len(cl))):.1f}x per later trial; "
        f"largest val-accuracy gap between the paths on one seed: {gap:.3f}"
    )
    return 0


if __name__ == "__main__":
    # Ctrl-C must reach the run (it keeps the best model and the leaderboard)
    # even when a non-interactive shell started us with SIGINT ignored.
    signal.signal(signal.SIGINT, _on_sigint)
    sys.exit(main())
