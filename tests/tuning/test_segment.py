"""Segmentation in the main job: the ignore label, the FCN search, the report and predicted masks."""

import json
import os
import pathlib

import keras
import numpy as np
import pytest
from PIL import Image

import tuning
import zoo
from tuning.__main__ import main
from tuning.segment import SegmentationLoss, segmentation_metrics


@pytest.mark.parametrize("kind", ["ce", "ce+dice"])
def test_the_ignore_label_has_no_effect_on_the_loss_or_the_metric(kind):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, (2, 6, 5)).astype("int32")
    labels[:, :2] = 255  # two void rows
    logits = rng.normal(size=(2, 6, 5, 3)).astype("float32")
    other = logits.copy()
    other[:, :2] = rng.normal(size=other[:, :2].shape) * 10  # anything at the void pixels
    loss = SegmentationLoss(kind)
    assert float(loss(labels, logits)) == pytest.approx(float(loss(labels, other)), rel=1e-6)
    values = []
    for scores in (logits, other):
        (metric,) = segmentation_metrics(3)
        metric.update_state(labels, scores)
        values.append(float(metric.result()))
    assert values[0] == pytest.approx(values[1], abs=1e-7)
    if kind == "ce":  # the mean cross-entropy of the labelled pixels, as Keras computes it
        keep = labels[:, 2:]
        expected = keras.losses.SparseCategoricalCrossentropy(from_logits=True)(keep, logits[:, 2:])
        assert float(loss(labels, logits)) == pytest.approx(float(expected), rel=1e-5)


@pytest.mark.one_backend
def test_segment_settings_that_do_not_apply_are_refused():
    with pytest.raises(tuning.ConfigError, match="does not apply to task='segment'"):
        tuning.SearchConfig(task="segment", objective="accuracy")
    with pytest.raises(tuning.ConfigError, match="does not take them"):
        tuning.SearchConfig(task="segment", cv=3)
    with pytest.raises(tuning.ConfigError, match="segment_space"):
        tuning.SearchConfig(task="segment", segment_space={"variants": ["fcn8s"]})
    config = tuning.recipes.resolve(tuning.SearchConfig(task="segment"))
    assert config.segment_space["variant"] == ["fcn8s"]
    assert tuning.recipes.resolve(tuning.SearchConfig()).segment_space is None  # classification untouched
    # bf16: the FCN computes in mixed_bfloat16, its scores (and so the loss) stay float32.
    import keras_tuner as kt

    hm = tuning.segment.SegmentationHyperModel(
        "resnet18", num_classes=3, input_shape=(32, 32, 3), precision="bf16", variants=("fcn32s",)
    )
    model = hm.build(kt.HyperParameters())
    assert model.get_layer("score_fr").dtype_policy.name == "mixed_bfloat16"
    assert model.output.dtype == "float32" and keras.config.dtype_policy().name == "float32"
    partial = tuning.recipes.resolve(
        tuning.SearchConfig(task="segment", segment_space={"variant": ["fcn16s"]})
    )
    assert partial.segment_space["variant"] == ["fcn16s"] and partial.segment_space["loss"]


@pytest.mark.one_backend  # the job's files and the CLI; the FCN trains on every backend in test_fcn
def test_a_tiny_segment_run_writes_model_report_plots_and_predict_writes_masks(tmp_path, capsys):
    out = str(tmp_path / "run")
    config = tuning.SearchConfig(
        task="segment", max_trials=1, epochs=1, image_size=32, demo_images_per_class=3, tta=("flip",)
    )
    result = tuning.run(out=out, config=config, verbose=0)
    ev = result.evaluation
    assert result.objective == "val_mean_iou" and ev["split"] == "test"
    assert set(ev["per_class_iou"]) == {"background", *zoo.datasets.CLASSES}
    assert 0 <= ev["mean_iou"] <= 1 and 0 <= ev["pixel_accuracy"] <= 1 and ev["tta"]["views"] == ["flip"]
    for name in ("best.keras", "report.md", "leaderboard.csv", "classes.json", "run.json"):
        assert os.path.exists(os.path.join(out, name)), name
    report = pathlib.Path(os.path.join(out, "report.md")).read_text()
    assert "mean IoU" in report and "| background |" in report and "fcn8s" in report
    assert sorted(os.listdir(os.path.join(out, "plots"))) == [
        "best_and_worst.png",
        "learning_curves.png",
        "per_class_iou.png",
    ]
    with open(os.path.join(out, "run.json")) as f:
        assert json.load(f)["evaluation"]["mean_iou"] == ev["mean_iou"]
    # predict: one palette mask per image, at the image's own size.
    images = tmp_path / "new"
    images.mkdir()
    Image.fromarray(np.full((30, 41, 3), 120, "uint8")).save(images / "a.jpg")
    Image.fromarray(np.full((32, 32, 3), 20, "uint8")).save(images / "b.png")
    capsys.readouterr()
    assert main(["predict", "--model", os.path.join(out, "best.keras"), str(images)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and "masks" in lines[0]
    with Image.open(os.path.join(out, "masks", "a.png")) as mask:
        assert mask.mode == "P" and mask.size == (41, 30)
        assert np.asarray(mask).max() < 7
    # export: uint8 images of any size in, the class map out, equal to the Keras model's argmax.
    import tensorflow as tf

    served = str(tmp_path / "served")
    assert (
        main(["export", "--model", os.path.join(out, "best.keras"), "--out", served, "--probabilities"]) == 0
    )
    graph = tf.saved_model.load(served).signatures["serving_default"]
    image = np.random.default_rng(0).integers(0, 255, (1, 32, 32, 3)).astype("uint8")
    answer = {k: v.numpy() for k, v in graph(images=tf.constant(image)).items()}
    want = np.argmax(keras.ops.convert_to_numpy(result.model(image, training=False)), -1)
    np.testing.assert_array_equal(answer["class_map"], want)
    assert answer["probabilities"].shape == (1, 32, 32, 7)
    other = graph(images=tf.constant(np.zeros((2, 50, 37, 3), "uint8")))
    assert other["class_map"].shape == (2, 50, 37)
    with open(os.path.join(served, "classes.json")) as f:
        assert json.load(f)[0] == "background"
    # Resuming with another task is refused, naming it.
    with pytest.raises(tuning.ConfigError, match="task"):
        tuning.run(out=out, config=config.replace(task="classify"), verbose=0)


@pytest.mark.one_backend
def test_bad_masks_from_the_cli_are_one_line_and_exit_2(tmp_path, capsys):
    data = zoo.datasets.write_segmentation(tmp_path / "data", images=6, size=16)
    os.remove(os.path.join(data, "masks", "00003.png"))
    out = tmp_path / "out"
    assert main(["run", "--task", "segment", "--data", data, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "00003.png" in err and len(err.splitlines()) == 1
    assert not out.exists()  # nothing written
    # Segmentation data run as classification: refused, saying what to pass.
    assert main(["run", "--data", data, "--out", str(out)]) == 2
    assert "--task segment" in capsys.readouterr().err and not out.exists()


def test_resize_like_is_bilinear_resizing_at_a_size_known_only_at_run_time():
    from tuning.segment import ResizeLike

    x = np.random.default_rng(0).normal(size=(2, 5, 7, 3)).astype("float32")
    for h, w in ((11, 9), (3, 4), (5, 7)):
        ours = keras.ops.convert_to_numpy(ResizeLike()([x, np.zeros((2, h, w, 1), "float32")]))
        want = keras.ops.convert_to_numpy(keras.ops.image.resize(x, (h, w), interpolation="bilinear"))
        np.testing.assert_allclose(ours, want, atol=1e-5)
