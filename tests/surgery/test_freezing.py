import warnings

import keras
import numpy as np
import pytest

import surgery
import zoo

np_ = keras.ops.convert_to_numpy
SHAPE = (32, 32, 3)


def test_freeze_until_matches_the_seeds_loop_on_keras_vgg16():
    # 32x32 keeps every layer of the 224 model (fc1 shrinks to 512 inputs).
    ours = keras.applications.VGG16(weights=None, input_shape=SHAPE)
    seeds = keras.applications.VGG16(weights=None, input_shape=SHAPE)
    for layer in seeds.layers[:-4]:
        layer.trainable = False
    result = surgery.freeze_until(ours, -4)
    assert [l.trainable for l in ours.layers] == [l.trainable for l in seeds.layers]
    assert len(ours.trainable_weights) == len(seeds.trainable_weights) == 6  # fc1, fc2, predictions
    assert result.frozen[-1] == "block5_conv3" and result.trainable == ["fc1", "fc2", "predictions"]
    surgery.freeze_until(ours, "fc1")
    assert ours.get_layer("block5_conv3").trainable is False and ours.get_layer("fc1").trainable


def _train_step(model, x, y):
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="sparse_categorical_crossentropy")
    model.fit(x, y, epochs=1, batch_size=len(x), verbose=0)


def test_frozen_weights_and_bn_statistics_do_not_move(rng):
    model = zoo.build("resnet18", num_classes=3, input_shape=SHAPE)
    surgery.freeze_stages(model, 3)
    frozen = {w.path: np_(w) for l in model.layers if not l.trainable for w in l.weights}
    trainable = {w.path: np_(w) for l in model.layers if l.trainable for w in l.weights}
    x = rng.uniform(0, 255, (8,) + SHAPE).astype("float32")
    _train_step(model, x, rng.integers(0, 3, 8))
    after = {w.path: np_(w) for w in model.weights}
    assert "conv3_block2_2_bn/moving_mean" in frozen
    for path, value in frozen.items():
        np.testing.assert_array_equal(after[path], value)  # weights and BN moving stats
    moved = [p for p, v in trainable.items() if not np.array_equal(after[p], v)]
    assert "predictions/kernel" in moved and "conv5_block2_2_bn/moving_mean" in moved


def test_keep_bn_frozen_while_the_rest_trains(rng):
    model = zoo.build("resnet18", num_classes=3, input_shape=SHAPE)
    surgery.unfreeze_stages(model, 2, keep_bn_frozen=True)
    bn = model.get_layer("conv5_block2_2_bn")
    assert bn.trainable is False and model.get_layer("conv5_block2_2_conv").trainable
    stats = np_(bn.moving_mean)
    _train_step(model, rng.uniform(0, 255, (8,) + SHAPE).astype("float32"), rng.integers(0, 3, 8))
    np.testing.assert_array_equal(np_(bn.moving_mean), stats)


def test_stage_freezing_counts_and_errors():
    model = zoo.build("resnet18", input_shape=SHAPE)
    surgery.freeze_stages(model, 5)
    summary = surgery.trainable_summary(model, by="stage")
    assert [r[0] for r in summary.rows] == ["stem", "conv2", "conv3", "conv4", "conv5", "head"]
    assert summary.trainable == 513_000 and all(r[2] == 0 for r in summary.rows[:-1])
    surgery.unfreeze_stages(model, 4)  # all but the stem
    assert surgery.trainable_summary(model).trainable == 11_689_512 - 64 * 3 * 49 - 128
    surgery.unfreeze_stages(model, 5)
    assert surgery.trainable_summary(model).trainable == 11_689_512
    with pytest.raises(surgery.SurgeryError, match="has 5 stages"):
        surgery.freeze_stages(model, 6)


def test_trainable_summary_totals_match_keras():
    model = zoo.build("vgg11_bn", include_top=False, input_shape=SHAPE)
    surgery.freeze(model, "block1_*")
    s = surgery.trainable_summary(model)
    assert s.trainable == sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    assert s.non_trainable == sum(int(np.prod(w.shape)) for w in model.non_trainable_weights)
    assert sum(r[2] for r in s.rows) == s.trainable and "total" in str(s)


def test_freeze_unfreeze_by_pattern_and_type_on_nested_model():
    base = zoo.build("resnet18", include_top=False, input_shape=SHAPE)
    inp = keras.Input(SHAPE)
    clf = keras.Model(
        inp, keras.layers.Dense(2, name="cls")(keras.layers.GlobalAveragePooling2D()(base(inp)))
    )
    surgery.freeze(clf)
    assert clf.trainable_weights == []
    surgery.unfreeze(clf, "conv5_*", types=keras.layers.Conv2D)
    names = {w.path.split("/")[0] for w in clf.trainable_weights}
    assert names and all(n.startswith("conv5_") for n in names)
    assert base.trainable  # container unlocked so its layers can train
    surgery.freeze_until(clf, -1)  # top level: the nested base counts as one layer
    assert {w.path.split("/")[0] for w in clf.trainable_weights} == {"cls"}


def test_recompile_reminder():
    model = zoo.build("resnet18", num_classes=2, input_shape=SHAPE)
    assert surgery.freeze_until(model, -1).needs_recompile is False
    model.compile(optimizer="sgd", loss="mse")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = surgery.freeze_until(model, -2)
    assert result.needs_recompile and any("compile" in str(w.message) for w in caught)
    assert "recompile" in repr(result)
