"""python -m tuning run/predict: the main job with tiny settings, and bad input."""

import json
import os
import pathlib
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from tuning.__main__ import main

TINY = ["--max-trials", "1", "--epochs", "1", "--demo-images-per-class", "6", "--image-size", "32"]


@pytest.mark.tf_only  # image_dataset_from_directory + TensorBoard; the API is tested on all backends
def test_run_writes_everything_and_predict_reads_it(tmp_path, capsys):
    import warnings

    out = str(tmp_path / "run")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main(["run", "--out", out, *TINY]) == 0
    # A Keras warning about a model the job made is a bug (the error analysis' two-output
    # model once took its input as a one-element list and warned at every batch).
    assert not [
        str(w.message)[:200]
        for w in caught
        if issubclass(w.category, UserWarning) and f"{os.sep}keras{os.sep}" in w.filename
    ]
    names = set(os.listdir(out))
    assert {"best.keras", "leaderboard.csv", "report.md", "plots", "classes.json", "suspects.csv"} <= names
    plots = set(os.listdir(os.path.join(out, "plots")))
    assert {
        "learning_curves.png",
        "confusion_matrix.png",
        "trials.png",
        "grad_cam.png",
        "feature_maps_early.png",
        "feature_maps_late.png",
        "top_losses.png",
    } <= plots
    for p in plots:  # real, non-trivial images
        assert Image.open(os.path.join(out, "plots", p)).size[0] > 200
    report = pathlib.Path(os.path.join(out, "report.md")).read_text()
    assert "Test set: accuracy" in report and "| circle |" in report
    assert re.search(r"\| finetune/train_bn \| (true|false) \|", report)  # booleans as true/false
    capsys.readouterr()
    test_dir = os.path.join(out, "data", "test", "star")
    assert main(["predict", "--model", os.path.join(out, "best.keras"), test_dir]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == len(os.listdir(test_dir))
    classes = ("circle", "square", "triangle", "star", "cross", "ring")
    assert all(line.split(": ")[1].split()[0] in classes for line in lines)
    # Batches of 2 with a broken file among them: one line for it, the others as before.
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    for name in sorted(os.listdir(test_dir))[:3]:
        (mixed / name).write_bytes(pathlib.Path(test_dir, name).read_bytes())
    (mixed / "0_broken.png").write_bytes(b"not an image")
    assert main(["predict", "--model", os.path.join(out, "best.keras"), "--batch-size", "2", str(mixed)]) == 0
    got = capsys.readouterr().out.strip().splitlines()
    assert got[0].startswith(f"{mixed / '0_broken.png'}: cannot read (")
    assert [l.split(": ", 1)[1] for l in got[1:]] == [l.split(": ", 1)[1] for l in lines[:3]]
    # A fresh process (nothing imported yet) reads best.keras too.
    fresh = subprocess.run(
        [sys.executable, "-m", "tuning", "predict", "--model", os.path.join(out, "best.keras"), test_dir],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=300,
    )
    assert fresh.returncode == 0, fresh.stderr
    assert fresh.stdout.strip().splitlines() == lines
    assert "I0000" not in fresh.stderr and "cuda" not in fresh.stderr.lower()  # TF start-up noise
    # A uint8 SavedModel of best.keras serves the same top-1 as `predict`.
    import json

    import tensorflow as tf
    from keras.utils import img_to_array, load_img

    served = str(tmp_path / "served")
    assert main(["export", "--model", os.path.join(out, "best.keras"), "--out", served]) == 0
    assert json.loads(pathlib.Path(os.path.join(served, "classes.json")).read_text()) == json.loads(
        pathlib.Path(os.path.join(out, "classes.json")).read_text()
    )
    assert main(["export", "--model", os.path.join(out, "best.keras"), "--out", served]) == 2
    signature = tf.saved_model.load(served).signatures["serving_default"]
    names = json.loads(pathlib.Path(os.path.join(served, "classes.json")).read_text())
    files = sorted(os.listdir(test_dir))
    batch = np.stack(
        [img_to_array(load_img(os.path.join(test_dir, f), target_size=(32, 32))) for f in files]
    ).astype("uint8")
    probs = next(iter(signature(images=tf.constant(batch)).values())).numpy()
    served_top1 = [names[i] for i in probs.argmax(-1)]
    assert served_top1 == [line.split(": ")[1].split()[0] for line in lines]
    # The flip TTA served graph: the same input and output keys, the in-Keras TTA average.
    import keras

    import tuning

    served_tta = str(tmp_path / "served_tta")
    assert main(["export", "--model", os.path.join(out, "best.keras"), "--tta", "--out", served_tta]) == 0
    tta_signature = tf.saved_model.load(served_tta).signatures["serving_default"]
    tta_out = tta_signature(images=tf.constant(batch))
    assert set(tta_out) == set(signature(images=tf.constant(batch)))
    want = tuning.tta.tta_model(keras.saving.load_model(os.path.join(out, "best.keras")))(batch)
    assert np.abs(next(iter(tta_out.values())).numpy() - keras.ops.convert_to_numpy(want)).max() < 1e-5
    run_json = json.loads(pathlib.Path(os.path.join(out, "run.json")).read_text())
    assert set(run_json["evaluation"]) >= {"accuracy", "balanced_accuracy", "macro_f1", "tta"}
    # int8 LiteRT: calibrated on the run's training images, compared with float32 on its test split.
    capsys.readouterr()
    lite = str(tmp_path / "q.tflite")
    assert (
        main(["export", "--model", os.path.join(out, "best.keras"), "--out", lite, "--quantize", "int8"]) == 0
    )
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith("int8: test accuracy ") and "(float32 " in line and "ms per image" in line
    record = json.loads(pathlib.Path(lite + ".export.json").read_text())
    assert record["calibration_images"] == run_json["splits"]["train"]["images"]  # all 24, under 300
    assert record["images"] == len(files) * 6 and record["size_ratio"] > 3.5
    assert abs(record["int8"]["accuracy"] - record["float32"]["accuracy"]) <= 2 / record["images"]
    # A layer without an int8 kernel: refused with its name; --fallback float16 exports float16.
    # (A small model in the run's place, calibrated on the run's images: four LiteRT conversions
    # of resnet18 cost 35 s; tests/zoo/test_serving.py covers the refusal and resnet18's conversion.)
    rounded = tmp_path / "rounded"
    rounded.mkdir()
    for name in ("run.json", "classes.json"):
        shutil.copy(os.path.join(out, name), rounded / name)
    _rounded_model(len(names)).save(rounded / "best.keras")
    fell = str(tmp_path / "fell.tflite")
    args = ["export", "--model", str(rounded / "best.keras"), "--out", fell, "--quantize", "int8"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "'rounding' (ROUND)" in err and "--fallback float16" in err and not os.path.exists(fell)
    assert main([*args, "--fallback", "float16"]) == 0
    assert "float16 (not int8: " in capsys.readouterr().out.splitlines()[-1]
    record = json.loads(pathlib.Path(fell + ".export.json").read_text())
    assert (
        record["quantize"] == "float16" and record["asked"] == "int8" and "ROUND" in record["fallback_reason"]
    )
    # Bad input: one line each, nothing written.
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy(os.path.join(out, "best.keras"), alone / "best.keras")
    bad = str(tmp_path / "bad.tflite")
    model = os.path.join(out, "best.keras")
    for args, message in (
        (["--model", str(alone / "best.keras"), "--out", bad, "--quantize", "int8"], "holds no run.json"),
        (
            ["--model", model, "--out", bad, "--quantize", "int8", "--format", "saved_model"],
            "writes LiteRT files",
        ),
        (["--model", model, "--out", str(tmp_path / "x"), "--format", "litert"], "ending in .tflite"),
    ):
        assert main(["export", *args]) == 2
        assert message in capsys.readouterr().err
    assert not os.path.exists(bad) and not os.path.exists(tmp_path / "x")
    # The same command again resumes instead of clobbering.
    assert main(["run", "--out", out, *TINY]) == 0
    assert "resuming" in capsys.readouterr().out
    # Other settings would mix two runs: refused, nothing touched.
    before = os.path.getmtime(os.path.join(out, "best.keras"))
    assert main(["run", "--out", out, *TINY, "--backbone", "resnet34"]) == 2
    err = capsys.readouterr().err
    assert "backbone ['resnet18'] -> ['resnet34']" in err and "--overwrite" in err
    assert main(["run", "--out", out, *TINY, "--precision", "bf16"]) == 2
    assert "precision 'fp32' -> 'bf16'" in capsys.readouterr().err
    assert os.path.getmtime(os.path.join(out, "best.keras")) == before


def _rounded_model(classes):
    """A small raw-pixel classifier with its scores rounded to 2 decimals: ROUND has a float LiteRT kernel only."""
    import keras

    import zoo

    @keras.saving.register_keras_serializable(package="test_cli")
    class Round2(keras.layers.Layer):
        def call(self, p):
            return keras.ops.round(p * 100) / 100

    inputs = keras.Input((32, 32, 3))
    h = zoo.layers.ImageNormalization("torch")(inputs)
    h = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(8, 3, strides=2, activation="relu")(h))
    scores = keras.layers.Dense(classes, activation="softmax")(h)
    return keras.Model(inputs, Round2(name="rounding")(scores), name="rounded")


def _folder(root, spec):
    for cls, files in spec.items():
        os.makedirs(os.path.join(root, cls), exist_ok=True)
        for name, content in files:
            path = os.path.join(root, cls, name)
            if content == "png":
                Image.fromarray(np.zeros((8, 8, 3), "uint8")).save(path)
            else:
                pathlib.Path(path).write_bytes(content)
    return root


@pytest.mark.parametrize(
    "case, message",
    [
        ("missing", "does not exist"),
        ("empty", "no class sub-folders"),
        ("one_class", "one class"),
        ("empty_class", "without images"),
        ("corrupt", "cannot be read"),
    ],
)
def test_bad_data_folders_get_clear_errors(tmp_path, capsys, case, message):
    root = str(tmp_path / "data")
    os.makedirs(root)
    good = [("a.png", "png"), ("b.png", "png")]
    if case == "missing":
        root = str(tmp_path / "nope")
    elif case == "one_class":
        _folder(root, {"cat": good})
    elif case == "empty_class":
        _folder(root, {"cat": good, "dog": []})
    elif case == "corrupt":
        _folder(root, {"cat": good, "dog": good + [("c.png", b"not an image")]})
    assert main(["run", "--data", root, "--out", str(tmp_path / "out"), *TINY]) == 2
    assert message in capsys.readouterr().err


def test_bad_backbone_and_size(tmp_path, capsys):
    assert main(["run", "--backbone", "resnet5", "--out", str(tmp_path)]) == 2
    assert "Did you mean" in capsys.readouterr().err
    assert main(["run", "--image-size", "8", "--out", str(tmp_path)]) == 2
    assert "too small" in capsys.readouterr().err


def _env():
    return {**os.environ, "PYTHONPATH": os.getcwd() + os.pathsep + os.environ.get("PYTHONPATH", "")}


def _trial_dirs(project):
    return sorted(p for p in os.listdir(project) if p.startswith("trial_") and (project / p).is_dir())


@pytest.mark.tf_only
def test_mixed_greyscale_and_rgb_images_load_as_rgb(tmp_path):
    from tuning.data import load_splits

    root = str(tmp_path / "data")
    for cls in ("cat", "dog"):
        os.makedirs(os.path.join(root, cls))
        for i in range(4):
            mode, shape = ("L", (8, 8)) if i % 2 else ("RGB", (8, 8, 3))
            Image.fromarray(np.full(shape, 40 * i, "uint8"), mode).save(os.path.join(root, cls, f"{i}.png"))
    train, val, test, classes, info = load_splits(root, image_size=16, batch_size=4, seed=0)
    assert classes == ["cat", "dog"]
    shapes = {tuple(x.shape[1:]) for ds in (train, val, test) for x, _ in ds}
    assert shapes == {(16, 16, 3)}
    # No test/ folder: a held-out test split, disjoint from what the search sees.
    assert [info[k]["images"] for k in ("train", "val", "test")] == [4, 2, 2]
    assert "stratified, seed 0" in info["test"]["source"]


@pytest.mark.tf_only
def test_held_out_splits_are_disjoint_stratified_and_seeded(tmp_path):
    from tuning.data import DataError, load_splits

    root = str(tmp_path / "data")
    for c, cls in enumerate(("a", "b", "c")):
        os.makedirs(os.path.join(root, cls))
        for i in range(20):  # every image unique: its pixel values name it
            Image.fromarray(np.full((4, 4, 3), [c * 20 + i, c, 7], "uint8")).save(
                os.path.join(root, cls, f"{i}.png")
            )

    def ids(ds):
        return sorted(int(x[0, 0, 0]) for xb, _ in ds for x in xb.numpy())

    train, val, test, classes, info = load_splits(root, image_size=4, batch_size=8, seed=3)
    a, b, t = ids(train), ids(val), ids(test)
    assert not (set(a) & set(b) or set(a) & set(t) or set(b) & set(t))
    assert len(a) + len(b) + len(t) == 60 and len(t) == 9 and len(b) == 12  # 3 + 4 per class
    assert ids(load_splits(root, image_size=4, batch_size=8, seed=3)[2]) == t  # seeded
    # Small data is decoded once and kept; streamed from disk it is the same data.
    assert info["cached"] == ["train", "val", "test"]
    streamed = load_splits(root, image_size=4, batch_size=8, seed=3, cache_bytes=12 * 16 * 3)
    assert streamed[4]["cached"] == ["val"]  # train (39 images) did not fit; val (12) did; test no more
    order = lambda ds: [int(x[0, 0, 0]) for xb, _ in ds for x in xb.numpy()]  # noqa: E731
    assert order(streamed[1]) == order(val) and order(streamed[2]) == order(test)
    assert ids(streamed[0]) == a
    first, second = order(train), order(train)
    assert first != second and sorted(first) == sorted(second) == a  # reshuffled every epoch
    assert load_splits(root, image_size=4, test_fraction=0)[2] is None
    os.makedirs(os.path.join(root, "d"))
    Image.fromarray(np.zeros((4, 4, 3), "uint8")).save(os.path.join(root, "d", "0.png"))
    with pytest.raises(DataError, match=r"fewer than 3 images.*'d': 1"):
        load_splits(root, image_size=4)


NO_TENSORFLOW = """
import importlib.abc, json, sys
class Block(importlib.abc.MetaPathFinder):  # as on a machine without TensorFlow
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("tensorflow", "tensorboard"):
            raise ModuleNotFoundError(name)
sys.meta_path.insert(0, Block())
from tuning.data import ImageBatches, load_splits
out = {}
for root in sys.argv[1:]:
    *parts, classes, info = load_splits(root, image_size=4, batch_size=8, seed=3)
    assert all(isinstance(p, ImageBatches) for p in parts), parts
    out[root] = {"info": info, "ids": [[int(x[0, 0, 0]) for xb, _ in p for x in xb] for p in parts],
                 "labels": [[int(v) for _, yb in p for v in yb] for p in parts]}
assert "tensorflow" not in sys.modules
print(json.dumps(out))
"""


@pytest.mark.one_backend  # Pillow and threads: no backend involved
def test_image_batches_decode_only_what_is_asked_for(tmp_path, monkeypatch):
    import tuning.data
    from tuning.data import ImageBatches

    paths = []
    for i in range(10):  # every image unique: its pixel values name it
        paths.append(str(tmp_path / f"{i}.png"))
        Image.fromarray(np.full((6, 6, 3), i, "uint8")).save(paths[-1])
    reads = []
    real = tuning.data.read_image
    monkeypatch.setattr(tuning.data, "read_image", lambda p, s: reads.append(p) or real(p, s))
    for cache in (False, True):
        reads.clear()
        b = ImageBatches(
            paths, list(range(10)), image_size=4, batch_size=4, shuffle=True, seed=1, cache=cache
        )
        assert reads == []  # nothing read up front: memory does not grow with the files
        x, y = b[1]
        assert len(reads) == 4 and x.shape == (4, 4, 4, 3) and (x[:, 0, 0, 0] == y).all()
        epochs = []
        for _ in range(2):
            epochs.append([int(v) for _, yb in b for v in yb])  # in order, decoded ahead in threads
            b.on_epoch_end()
        assert sorted(epochs[0]) == sorted(epochs[1]) == list(range(10)) and epochs[0] != epochs[1]
        # Cached: each image decoded once (batch 1's four, then the other six); else every time.
        assert len(reads) == (10 if cache else 4 + 20)


@pytest.mark.tf_only  # compared with the tf.data path in this process
def test_without_tensorflow_the_same_splits_load_into_memory(tmp_path):
    from tuning.data import load_splits

    held_out, folders = str(tmp_path / "held_out"), str(tmp_path / "folders")
    for c, cls in enumerate(("a", "b", "c")):
        for i in range(10):  # every image unique: its pixel values name it
            image = Image.fromarray(np.full((4, 4, 3), [c * 20 + i, c, 7], "uint8"))
            for folder in (
                os.path.join(held_out, cls),
                os.path.join(folders, "val" if i > 6 else "train", cls),
            ):
                os.makedirs(folder, exist_ok=True)
                image.save(os.path.join(folder, f"{i}.png"))
    env = {**_env(), "KERAS_BACKEND": "jax"}
    run = subprocess.run(
        [sys.executable, "-c", NO_TENSORFLOW, held_out, folders], capture_output=True, text=True, env=env
    )
    assert run.returncode == 0, run.stderr[-2000:]
    got = json.loads(run.stdout.strip().splitlines()[-1])
    for root in (held_out, folders):
        *parts, classes, info = load_splits(root, image_size=4, batch_size=8, seed=3)
        ids = [[int(x[0, 0, 0]) for xb, _ in p for x in xb.numpy()] for p in parts if p is not None]
        assert got[root]["info"] == json.loads(json.dumps(info))
        assert sorted(got[root]["ids"][0]) == sorted(ids[0])  # train: the same images, shuffled
        assert got[root]["ids"][1 : len(ids)] == ids[1:]  # evaluation splits: the same order
        # Labels follow their images (image c * 20 + i is class c).
        assert all(i // 20 == l for p, q in zip(got[root]["ids"], got[root]["labels"]) for i, l in zip(p, q))


@pytest.mark.tf_only
def test_ctrl_c_keeps_the_best_model_and_the_leaderboard(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "run"
    cmd = [
        sys.executable,
        "-m",
        "tuning",
        "run",
        "--out",
        str(out),
        "--max-trials",
        "6",
        "--epochs",
        "2",
        "--demo-images-per-class",
        "6",
        "--image-size",
        "32",
    ]
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    times = out / "search" / "trial_times.json"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None and not times.exists():
        time.sleep(0.2)
    assert proc.poll() is None, "the run ended before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    assert "interrupted" in err
    assert (out / "search" / "best.keras").exists()
    assert (out / "search" / "leaderboard.csv").exists()


@pytest.mark.tf_only
def test_workers_run_every_trial_exactly_once(tmp_path):
    import json
    import subprocess
    import sys

    out = tmp_path / "run"
    cmd = [
        sys.executable,
        "-m",
        "tuning",
        "run",
        "--out",
        str(out),
        "--workers",
        "2",
        "--max-trials",
        "3",
        "--epochs",
        "1",
        "--demo-images-per-class",
        "6",
        "--image-size",
        "32",
    ]
    done = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    project = out / "search"
    trials = _trial_dirs(project)
    assert len(trials) == 3
    statuses = [json.loads((project / t / "trial.json").read_text())["status"] for t in trials]
    assert statuses == ["COMPLETED"] * 3
    board = (project / "leaderboard.csv").read_text().strip().splitlines()[1:]
    assert sorted(line.split(",")[0] for line in board) == sorted(t[len("trial_") :] for t in trials)
    logs = sorted(os.listdir(out / "workers"))
    assert logs == ["tuner0.log", "tuner1.log"]
    assert all("finished its trials" in (out / "workers" / f).read_text() for f in logs)
    # A worker's trial lines show the score it measured (its trial object never gets the oracle's).
    lines = [
        l for f in logs for l in (out / "workers" / f).read_text().splitlines() if l.startswith("[trial")
    ]
    assert lines and not any("=n/a" in l for l in lines), lines
    assert (out / "best.keras").exists() and (out / "report.md").exists()


@pytest.mark.one_backend  # argument handling: nothing is built
@pytest.mark.parametrize(
    "extra, message",
    [
        (
            ["--max-trials", "0"],
            "`max_trials` must be an int of at least 1 (KerasTuner reads 0 as 'no limit')",
        ),
        (["--epochs", "0"], "`epochs` must be an int of at least 1"),
        (["--batch-size", "-1"], "`batch_size` must be an int of at least 1"),
        (["--test-fraction", "0.9"], "`test_fraction` must be in [0, 0.5]"),
        (["--time-budget", "ten minutes"], "Cannot read the duration 'ten minutes'"),
        (["--time-budget", "0s"], "A time budget must be above 0 seconds"),
        (["--objective", "f1"], "`objective` must be one of"),
        (["--cv", "1"], "`cv` must be 0 (no cross-validation) or at least 2 folds"),
        (["--max-latency-ms", "fast"], "`max_latency_ms` must be a number. Received"),
        (["--max-latency-ms", "0"], "`max_latency_ms` must be a number of milliseconds above 0"),
        (["--fastest-within", "-0.01"], "`fastest_within` must be a number of score points"),
        (["--tuner", "grid"], "`tuner` must be one of"),
        (["--distribution", "data_parallel"], "Did you mean 'data-parallel'?"),
        (["--distribution", "data-parallel", "--task", "segment"], "a segmentation run trains each trial on"),
        (["--config", "FILE"], "is not valid JSON"),
        (
            ["--backbone", "googlenet_paper", "--weights", "imagenet"],
            "'googlenet_paper' has no pretrained weights. Backbones with ImageNet weights:",
        ),
        (
            ["--backbone", "resnet18,googlenet_paper", "--weights", "imagenet"],
            "'googlenet_paper' has no pretrained weights. Backbones with ImageNet weights:",
        ),
        (["--backbone", "resnet18,resnet19"], "Did you mean"),
        (["--backbone", " , "], "`backbone` needs at least one zoo model name"),
        (["--weights", "nowhere.h5"], "neither 'imagenet' nor an existing file"),
        (["--backbone", "fcn8s"], "is a segmentation model"),
        (["--backbone", "resnet19"], "Did you mean"),
        (["--out", "FILE/sub"], "which is a file"),
    ],
)
def test_bad_run_arguments_fail_in_one_line_before_writing(tmp_path, capsys, extra, message):
    (tmp_path / "FILE").write_text("not a folder")
    out = tmp_path / "run"
    extra = [str(tmp_path / a) if a.startswith("FILE") else a for a in extra]
    args = ["run", "--out", str(out), *TINY, *extra]
    if "--out" in extra:
        args = ["run", *TINY, *extra]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and err.startswith("error:") and len(err.splitlines()) == 1
    assert "Traceback" not in err and not out.exists()


@pytest.mark.one_backend
def test_offline_imagenet_weights_fail_before_writing(tmp_path, capsys, monkeypatch):
    import keras

    def no_network(*args, **kwargs):
        raise Exception("URL fetch failure: no network")  # what get_file raises offline

    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    monkeypatch.setattr(keras.utils, "get_file", no_network)
    out = tmp_path / "run"
    assert main(["run", "--out", str(out), *TINY, "--weights", "imagenet"]) == 2
    err = capsys.readouterr().err.strip()
    assert "resnet18-f37072fd.pth" in err and "f37072fd" in err and len(err.splitlines()) == 1
    assert str(tmp_path / "keras" / "models") in err and not out.exists()


@pytest.mark.one_backend
def test_overwrite_with_bad_data_keeps_the_earlier_search(tmp_path, capsys):
    out = tmp_path / "run"
    (out / "search").mkdir(parents=True)
    (out / "search" / "best.keras").write_text("the earlier search")
    assert main(["run", "--out", str(out), *TINY, "--overwrite", "--data", str(tmp_path / "typo")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert (out / "search" / "best.keras").read_text() == "the earlier search"
    assert not (out / "run.json").exists()


@pytest.mark.one_backend
def test_predict_bad_inputs_get_one_line_errors(tmp_path, capsys):
    text = tmp_path / "notes.txt"
    text.write_text("not a model")
    renamed = tmp_path / "notes.keras"
    renamed.write_text("not a model")
    empty = tmp_path / "empty"
    empty.mkdir()
    for model, images, message in [
        (text, [str(empty)], "is not a Keras model file"),
        (renamed, [str(empty)], "is not a Keras model file"),
        (tmp_path / "missing.keras", [str(empty)], "no model at"),
    ]:
        assert main(["predict", "--model", str(model), *images]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1
    assert main(["predict", "--model", str(text), "--batch-size", "0", str(empty)]) == 2
    assert "--batch-size must be at least 1. Received: --batch-size 0" in capsys.readouterr().err


def test_outputs_respect_the_umask(tmp_path):
    from tuning.files import atomic_write

    old = os.umask(0o022)
    try:
        atomic_write(str(tmp_path / "f.json"), lambda p: pathlib.Path(p).write_text("{}"))
    finally:
        os.umask(old)
    assert oct(os.stat(tmp_path / "f.json").st_mode & 0o777) == "0o644"


@pytest.mark.one_backend
def test_help_imports_neither_keras_nor_tensorflow():
    import subprocess
    import sys

    code = (
        "import sys, contextlib, io\n"
        "from tuning.__main__ import main\n"
        "with contextlib.redirect_stdout(io.StringIO()) as f:\n"
        "    try: main(['run', '--help'])\n"
        "    except SystemExit: pass\n"
        "text = f.getvalue()\n"
        "assert '--batch-size' in text and '--seed' in text and '--tuner' in text, text\n"
        "assert text.count('(default: 32)') == 1, text\n"
        "print(sorted(m for m in ('keras', 'tensorflow', 'jax', 'torch') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


@pytest.mark.one_backend  # the same trials as the cached-features tests; here: the report
def test_bench_compares_both_paths_over_seeds_on_a_trained_backbone(capsys):
    assert main(["bench", "--seeds", "0"]) == 2
    assert "--seeds must be at least 1" in capsys.readouterr().err
    args = ["bench", "--backbone", "resnet18", "--image-size", "32", "--per-class", "4"]
    args += ["--epochs", "1", "--trials", "1", "--seeds", "2", "--pretrain-epochs", "1"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "trained 1 epochs on the demo training split" in out
    rows = {line.split()[0]: line for line in out.splitlines() if line.startswith(("naive ", "cached "))}
    assert set(rows) == {"naive", "cached"}
    assert all("+-" in row for row in rows.values())  # a spread over the two seeds
    assert "per later trial" in out and "largest val-accuracy gap" in out
