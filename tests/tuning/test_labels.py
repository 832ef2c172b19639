"""Labels from a CSV file: both layouts, bad input, the multi-label split, thresholds, a tiny run, predict."""

import csv
import json
import os

import numpy as np
import pytest
from PIL import Image

import tuning
import zoo
from tuning.__main__ import main
from tuning.data import DataError, split_files
from tuning.labels import (
    average_precision,
    choose_thresholds,
    f1_scores,
    iterative_split,
    read_labels,
    split_labels,
)


def _images(root, names):
    for name in names:
        path = os.path.join(root, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        Image.fromarray(np.full((8, 8, 3), 100, "uint8")).save(path)


def _csv(root, rows, name="labels.csv"):
    path = os.path.join(root, name)
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows(rows)
    return path


@pytest.mark.one_backend  # file parsing, numpy
def test_both_layouts_separators_ids_without_extension_and_a_split_column(tmp_path):
    root = str(tmp_path)
    _images(root, ["img/a.png", "img/b.png", "img/c.jpg", "img/d.png", "img/e.png"])
    _csv(
        root,
        [
            ["image_id", "tags"],
            ["img/a.png", "cat dog"],
            ["img/b.png", "dog;bird"],
            ["img/c", "cat|bird"],
            ["img/d.png", " cat "],
            ["img/e.png", "dog  bird"],
        ],
    )
    t = read_labels("labels.csv", root)
    assert t.layout == "labels column" and t.multilabel and t.classes == ["bird", "cat", "dog"]
    assert t.targets.tolist() == [[0, 1, 1], [1, 0, 1], [1, 1, 0], [0, 1, 0], [1, 0, 1]]
    assert t.paths[2] == os.path.join(root, "img", "c.jpg")  # the extension was found

    _csv(
        root,
        [
            ["file", "cat", "dog", "split"],
            ["img/a.png", 1, 0, "train"],
            ["img/b.png", 0, 1, "train"],
            ["img/c.jpg", 1, 0, "valid"],
            ["img/d.png", 0, 1, "val"],
            ["img/e.png", 1, 0, "test"],
        ],
        name="onehot.csv",
    )
    t = read_labels(os.path.join(root, "onehot.csv"), root)
    assert t.layout == "0/1 columns" and not t.multilabel and t.classes == ["cat", "dog"]
    assert t.targets.tolist() == [0, 1, 0, 1, 0] and t.splits == ["train", "train", "val", "val", "test"]
    files, classes, info = split_labels(t)
    assert [len(files[s][0]) for s in ("train", "val", "test")] == [2, 2, 1]
    assert info["val"]["source"] == "onehot.csv rows marked val" and info["class_counts"] == [1, 1]


@pytest.mark.one_backend
def test_single_label_csv_makes_the_same_split_as_the_folders(tmp_path):
    root = str(tmp_path)
    names = [f"{c}/{i:02d}.png" for c in ("cat", "dog", "owl") for i in range(7 + 3 * (c == "owl"))]
    _images(root, names)
    _csv(root, [["path", "label"]] + [[n, n.split("/")[0]] for n in names])
    folder, folder_classes, _ = split_files(root, seed=3)
    table, table_classes, info = split_labels(read_labels("labels.csv", root), seed=3)
    assert table_classes == folder_classes == ["cat", "dog", "owl"]
    for s in ("train", "val", "test"):
        assert table[s][0] == folder[s][0] and table[s][1].tolist() == folder[s][1]
    assert "stratified" in info["val"]["source"]


@pytest.mark.one_backend
@pytest.mark.parametrize(
    "rows, message",
    [
        (
            [
                ["path", "labels"],
                ["a.png", "cat"],
                ["gone1.png", "cat"],
                ["gone2.png", "dog"],
                ["gone3.png", "dog"],
                ["gone4.png", "dog"],
            ],
            "4 files that do not exist .*'gone1.png', 'gone2.png', 'gone3.png' and 1 more",
        ),
        (
            [["path", "labels"], ["a.png", "cat"], ["b.png", ""], ["c.png", "cat"]],
            "rows 3 have an empty label",
        ),
        (
            [["path", "labels"], ["a.png", "cat"], ["b.png", "cat"], ["c.png", "dog"]],
            "fewer than 2 rows .*'dog': 1",
        ),
        ([["path", "labels"], ["a.png", "cat"], ["../outside.png", "cat"]], "outside --data"),
        ([["a.png", "cat"], ["b.png", "cat"], ["c.png", "dog"]], "no header row"),
        (
            [["path", "labels"], ["a.png", "cat"], ["./a.png", "dog"], ["b.png", "cat dog"]],
            "lists 1 images twice: './a.png'",
        ),
        ([["path", "kind"], ["a.png", "cat"], ["b.png", "dog"]], "no labels column"),
        ([["a", "cat"], ["b", "cat"], ["c", "dog"]], "no header row: its first line .*'a'"),
    ],
    ids=[
        "missing",
        "empty",
        "rare",
        "outside",
        "no-header",
        "duplicate",
        "no-labels-column",
        "no-header-ids",
    ],
)
def test_bad_label_files_fail_in_one_line(tmp_path, rows, message):
    root = tmp_path / "data"
    _images(str(root), ["a.png", "b.png", "c.png"])
    _images(str(tmp_path), ["outside.png"])
    _csv(str(root), rows)
    with pytest.raises(DataError, match=message) as e:
        read_labels("labels.csv", str(root))
    assert "\n" not in str(e.value)


@pytest.mark.one_backend
def test_cli_refuses_a_bad_labels_file_before_writing(tmp_path, capsys):
    root = tmp_path / "data"
    _images(str(root), ["a.png", "b.png"])
    _csv(str(root), [["path", "labels"], ["a.png", "cat"], ["b.png", "cat"], ["c.png", "dog"]])
    out = tmp_path / "out"
    assert main(["run", "--data", str(root), "--labels", "labels.csv", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "'c.png'" in err and not out.exists()
    assert main(["run", "--task", "multilabel", "--data", str(root), "--out", str(out)]) == 2
    assert "--labels" in capsys.readouterr().err and not out.exists()


@pytest.mark.one_backend
def test_iterative_split_keeps_every_label_share_within_one_image():
    demo = np.stack(
        [zoo.datasets.render_multilabel(np.random.default_rng([0, 11, i]), 16)[1] for i in range(600)]
    )
    rng = np.random.default_rng(1)
    skewed = rng.random((500, 8)) < np.array([0.02, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.7])
    for y in (demo, skewed):
        parts = iterative_split(y, (0.2, 0.15), seed=0)
        assert sorted(i for p in parts for i in p) == list(range(len(y)))
        for share, part in zip((0.65, 0.2, 0.15), parts):
            assert abs(len(part) - share * len(y)) <= 1
            assert np.abs(y[part].sum(0) - share * y.sum(0)).max() <= 1


@pytest.mark.one_backend
def test_thresholds_chosen_on_validation_beat_one_half_on_a_skewed_label():
    rng = np.random.default_rng(0)

    def draw(n):  # a rare label whose positives score 0.2-0.45: under 0.5, above the negatives
        y = (rng.random((n, 1)) < 0.1).astype("uint8")
        p = np.where(y == 1, rng.uniform(0.2, 0.45, (n, 1)), rng.uniform(0.0, 0.25, (n, 1)))
        return y, p

    y_val, p_val = draw(400)
    y_test, p_test = draw(400)
    t = choose_thresholds(y_val, p_val)
    chosen = f1_scores(y_test, p_test >= t)["macro_f1"]
    half = f1_scores(y_test, p_test >= 0.5)["macro_f1"]
    assert 0.2 < t[0] < 0.3 and half == 0.0 and chosen > 0.8
    # Average precision: the mean precision at each positive's rank, ties ranked together.
    assert average_precision(np.array([[1], [0], [1]]), np.array([[0.5], [0.5], [0.1]]))[0] == pytest.approx(
        0.5 * 0.5 + 0.5 * (2 / 3)
    )


@pytest.mark.one_backend  # the job's logic; the multi-label head trains on every backend in test_hypermodel
def test_tiny_multilabel_run_reports_and_predict_uses_the_stored_thresholds(tmp_path, capsys):
    data = zoo.datasets.write_multilabel(tmp_path / "data", images=60, size=32)
    config = tuning.SearchConfig(
        labels="labels.csv",  # task "classify": the CSV's rows with several labels make it multi-label
        backbone="resnet18",
        image_size=32,
        recipe="pretrained",
        max_trials=2,
        epochs=2,
        head_space={
            "pooling": ["avg"],
            "dense_layers": [0, 0],
            "learning_rate": [3e-2, 3e-2],
            "optimizer": ["adam"],
            "loss": ["bce", "asymmetric"],
        },
        unfreeze_space={"stages": [0], "augment": [False]},
        patience=0,
    )
    out = tmp_path / "out"
    result = tuning.run(data, str(out), config, verbose=1)
    said = capsys.readouterr().out
    assert "labels.csv: some images have several labels: a multi-label run" in said
    assert result.config.task == "multilabel" and result.objective == "val_map"
    assert result.config.augmentation == ("flip",)  # the recipe again, for the task found: flips only
    assert set(result.evaluation) >= {"map", "micro_f1", "macro_f1", "subset_accuracy", "thresholds"}
    assert {os.path.basename(p) for p in result.paths["plots"]} == {
        "learning_curves.png",
        "precision_recall.png",
        "trials.png",
        "wrong_labels.png",
    }
    assert all(os.path.getsize(p) > 1000 for p in result.paths["plots"])
    report = (out / "report.md").read_text()
    assert "| class | AP | F1 | threshold | precision | recall | support |" in report
    stored = json.loads((out / "classes.json").read_text())
    assert stored["task"] == "multilabel" and len(stored["thresholds"]) == len(stored["classes"]) == 6
    # The run resumes under the same settings (the task found in the CSV included).
    again = tuning.run(data, str(out), config, verbose=0)
    assert again.evaluation["map"] == pytest.approx(result.evaluation["map"])
    capsys.readouterr()  # KerasTuner's "Reloading Tuner" line

    images = sorted(os.listdir(os.path.join(data, "images")))[:4]
    paths = [os.path.join(data, "images", n) for n in images]
    assert main(["predict", "--model", str(out / "best.keras"), *paths]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    model = tuning.job.load_model(str(out / "best.keras"))
    for path, line in zip(paths, lines):
        x = np.asarray(Image.open(path).convert("RGB"))[None]
        probs = np.asarray(model(x, training=False))[0]
        want = {stored["classes"][i] for i in range(6) if probs[i] >= stored["thresholds"][i]}
        shown = line.split(": ", 1)[1]
        got = set() if shown.startswith("no label") else {item.split()[0] for item in shown.split(", ")}
        assert got == want, (line, probs, stored["thresholds"])
