import h5py
import keras
import numpy as np
import pytest
from keras.src.legacy.saving import legacy_h5_format

import surgery
import zoo
from tests.conftest import randomize_bn_stats
from zoo.weights import WeightFileError

np_ = keras.ops.convert_to_numpy
SHAPE = (32, 32, 3)


def test_keras_applications_file_into_zoo_model(tmp_path, rng):
    ref = keras.applications.ResNet50(weights=None, include_top=False, input_shape=SHAPE)
    randomize_bn_stats(ref, rng)
    path = tmp_path / "resnet50_notop.h5"
    with h5py.File(path, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, ref)
    ours = zoo.build("resnet50", include_top=False, input_shape=SHAPE)
    report = surgery.restore(ours, str(path), strict=True)
    assert report.complete and len(report.loaded) == len([l for l in ref.layers if l.weights])
    x = rng.uniform(0, 255, (2,) + SHAPE).astype("float32")
    np.testing.assert_allclose(np_(ours(x)), np_(ref(x)), atol=1e-5)


def test_different_layer_names_restore_by_order(rng):
    ref = keras.applications.VGG16(weights=None, include_top=False, input_shape=SHAPE)
    renamed = surgery.replace(
        ref,
        "block*_conv*",
        lambda old: keras.layers.Conv2D(
            old.filters, 3, padding="same", activation="relu", name=f"my_{old.name}"
        ),
    )
    auto = surgery.restore(renamed, ref)  # names do not match: auto falls back to order
    assert auto.match == "order" and not auto.missing
    x = rng.uniform(0, 255, (1,) + SHAPE).astype("float32")
    np.testing.assert_allclose(np_(renamed(x)), np_(ref(x)), atol=1e-5)


def test_pretrained_backbone_into_new_head_reports_missing(tmp_path, rng):
    base = zoo.build("resnet18", include_top=False, input_shape=SHAPE)
    randomize_bn_stats(base, rng)
    path = str(tmp_path / "base.weights.h5")
    base.save_weights(path)
    clf = zoo.build("resnet18", num_classes=7, input_shape=SHAPE)
    report = surgery.restore(clf, path)
    assert report.missing == ["predictions"] and not report.mismatched
    text = str(report)
    assert "missing" in text and "predictions" in text
    np.testing.assert_array_equal(
        np_(clf.get_layer("conv1_bn").moving_variance), np_(base.get_layer("conv1_bn").moving_variance)
    )


def test_other_architecture_strict_error_leaves_weights(tmp_path):
    path = str(tmp_path / "r34.keras")
    zoo.build("resnet34", input_shape=SHAPE).save(path)
    target = zoo.build("resnet18", input_shape=SHAPE)
    before = [np_(w) for w in target.weights]
    with pytest.raises(WeightFileError, match=r"strict restore[\s\S]*unexpected"):
        surgery.restore(target, path, strict=True)
    for a, w in zip(before, target.weights):
        np.testing.assert_array_equal(a, np_(w))


def test_shape_mismatch_is_reported_not_loaded(rng):
    a = zoo.build("resnet18", num_classes=5, input_shape=SHAPE)
    b = zoo.build("resnet18", num_classes=9, input_shape=SHAPE)
    head = np_(b.get_layer("predictions").kernel)
    report = surgery.restore(b, a)
    assert [m[0] for m in report.mismatched] == ["predictions"]
    np.testing.assert_array_equal(np_(b.get_layer("predictions").kernel), head)
    np.testing.assert_array_equal(
        np_(b.get_layer("conv1_conv").kernel), np_(a.get_layer("conv1_conv").kernel)
    )
