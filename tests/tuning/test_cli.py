"""python -m tuning run/predict: the main job with tiny settings, and bad input."""

import os

import numpy as np
import pytest
from PIL import Image

from tuning.__main__ import main

TINY = ["--max-trials", "1", "--epochs", "1", "--demo-images-per-class", "6", "--image-size", "32"]


@pytest.mark.tf_only  # image_dataset_from_directory + TensorBoard; the API is tested on all backends
def test_run_writes_everything_and_predict_reads_it(tmp_path, capsys):
    out = str(tmp_path / "run")
    assert main(["run", "--out", out, *TINY]) == 0
    names = set(os.listdir(out))
    assert {"best.keras", "leaderboard.csv", "report.md", "plots", "classes.json"} <= names
    plots = set(os.listdir(os.path.join(out, "plots")))
    assert {"learning_curves.png", "confusion_matrix.png", "trials.png", "grad_cam.png",
            "feature_maps_early.png", "feature_maps_late.png"} <= plots
    for p in plots:  # real, non-trivial images
        assert Image.open(os.path.join(out, "plots", p)).size[0] > 200
    report = open(os.path.join(out, "report.md")).read()
    assert "Test set: accuracy" in report and "| circle |" in report
    capsys.readouterr()
    test_dir = os.path.join(out, "data", "test", "star")
    assert main(["predict", "--model", os.path.join(out, "best.keras"), test_dir]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == len(os.listdir(test_dir))
    classes = ("circle", "square", "triangle", "star", "cross", "ring")
    assert all(line.split(": ")[1].split()[0] in classes for line in lines)
    # The same command again resumes instead of clobbering.
    assert main(["run", "--out", out, *TINY]) == 0
    assert "resuming" in capsys.readouterr().out


def _folder(root, spec):
    for cls, files in spec.items():
        os.makedirs(os.path.join(root, cls), exist_ok=True)
        for name, content in files:
            path = os.path.join(root, cls, name)
            if content == "png":
                Image.fromarray(np.zeros((8, 8, 3), "uint8")).save(path)
            else:
                open(path, "wb").write(content)
    return root


@pytest.mark.parametrize("case, message", [
    ("missing", "does not exist"),
    ("empty", "no class sub-folders"),
    ("one_class", "one class"),
    ("empty_class", "without images"),
    ("corrupt", "cannot be read"),
])
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
