import keras
import numpy as np
import pytest

import zoo

SMALL = (64, 64, 3)


@pytest.mark.one_backend  # symbolic shapes and structure
@pytest.mark.parametrize("name", ["vgg11", "vgg13_bn", "resnet18", "resnet50", "resnet50v2"])
def test_features_only_strides(name):
    model = zoo.build(name, features_only=True, input_shape=SMALL)
    sides = [o.shape[1] for o in model.outputs]
    assert sides == [32, 16, 8, 4, 2]
    card_channels = [s.channels for s in zoo.info(name).stages]
    assert [o.shape[-1] for o in model.outputs] == card_channels


def test_out_indices_and_errors():
    model = zoo.build("resnet18", features_only=True, out_indices=(1, -1), input_shape=SMALL)
    assert [tuple(o.shape) for o in model.outputs] == [(None, 16, 16, 64), (None, 2, 2, 512)]
    with pytest.raises(ValueError, match="has 5 stages"):
        zoo.build("resnet18", features_only=True, out_indices=(5,))
    with pytest.raises(ValueError, match="only applies with `features_only=True`"):
        zoo.build("resnet18", out_indices=(1,))


def test_features_share_weights_with_full_model(rng):
    feats = zoo.build("resnet18", features_only=True, input_shape=SMALL)
    x = rng.uniform(0, 255, (1,) + SMALL).astype("float32")
    full = keras.Model(feats.inputs[0], feats.get_layer("conv5_block2_out").output)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(full(x)), keras.ops.convert_to_numpy(feats(x)[-1]), atol=0
    )


@pytest.mark.one_backend  # symbolic shapes and structure
def test_include_top_and_pooling_semantics():
    m = zoo.build("resnet18", include_top=False, input_shape=SMALL)
    assert m.output_shape == (None, 2, 2, 512)
    assert zoo.build("resnet18", include_top=False, pooling="avg").output_shape == (None, 512)
    assert zoo.build("resnet18", include_top=False, pooling="max").output_shape == (None, 512)
    assert zoo.build("resnet18", include_top=False).input_shape == (None, None, None, 3)
    assert zoo.build("vgg11").input_shape == (None, 224, 224, 3)  # flatten head: fixed size
    logits = zoo.build("resnet18", num_classes=7, classifier_activation=None, input_shape=SMALL)
    assert logits.get_layer("predictions").activation is keras.activations.linear
    probs = zoo.build("resnet18", num_classes=7, input_shape=SMALL)
    out = keras.ops.convert_to_numpy(probs(np.ones((2,) + SMALL, "float32")))
    np.testing.assert_allclose(out.sum(-1), 1.0, rtol=1e-5)


@pytest.mark.parametrize("name,mode", [("resnet50", "caffe"), ("resnet18", "torch"), ("resnet50v2", "tf")])
def test_include_preprocessing_matches_keras_preprocess_input(name, mode, rng):
    images = rng.integers(0, 256, (2,) + SMALL).astype("uint8")
    ours = keras.ops.convert_to_numpy(zoo.preprocess(images.astype("float32"), name))
    ref = keras.applications.imagenet_utils.preprocess_input(images.astype("float32"), mode=mode)
    np.testing.assert_allclose(ours, keras.ops.convert_to_numpy(ref), atol=1e-4)
    raw = zoo.build(name, include_top=False, input_shape=SMALL, include_preprocessing=True)
    plain = keras.Model(raw.get_layer("preprocessing").output, raw.output)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(raw(images)), keras.ops.convert_to_numpy(plain(ours)), atol=1e-4
    )


def test_uint8_input_and_serialization(tmp_path, rng):
    model = zoo.build("resnet18", num_classes=3, input_shape=SMALL, include_preprocessing=True)
    images = rng.integers(0, 256, (2,) + SMALL).astype("uint8")
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(loaded(images)), keras.ops.convert_to_numpy(model(images)), atol=1e-6
    )


def test_dtype_policy():
    model = zoo.build("resnet18", num_classes=3, input_shape=SMALL, dtype="mixed_bfloat16")
    assert model.get_layer("conv1_conv").compute_dtype == "bfloat16"
    assert model.get_layer("conv1_conv").kernel.dtype == "float32"
    assert keras.config.dtype_policy().name == "float32"  # restored


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(input_shape=(16, 16, 3)), r"at least 32x32"),
        (dict(input_shape=(64, 64)), r"\(height, width, channels\)"),
        (dict(pooling="mean", include_top=False), r"`pooling` must be one of"),
        (dict(num_classes=0), r"positive int"),
    ],
)
def test_bad_arguments_fail_before_building(kwargs, match):
    with pytest.raises(ValueError, match=match):
        zoo.build("resnet50", **kwargs)


def test_vgg_dense_head_needs_fixed_size():
    with pytest.raises(ValueError, match="needs a fixed input size"):
        zoo.build("vgg16", input_shape=(None, None, 3))


@pytest.mark.one_backend  # symbolic shapes and structure
def test_stages_of_zoo_and_foreign_models():
    m = zoo.build("resnet18", include_top=False, input_shape=SMALL)
    assert [s.layer for s in zoo.stages_of(m)][-1] == "conv5_block2_out"
    foreign = keras.applications.MobileNetV2(weights=None, include_top=False, input_shape=(64, 64, 3))
    inferred = zoo.stages_of(foreign)
    assert [s.reduction for s in inferred] == [2, 4, 8, 16, 32]
    assert inferred[-1].layer == foreign.layers[-1].name


def test_mixed_precision_keeps_predictions_in_float32():
    model = zoo.build("resnet18", num_classes=5, input_shape=(32, 32, 3), dtype="mixed_bfloat16")
    assert model.get_layer("conv1_conv").compute_dtype == "bfloat16"
    assert model.get_layer("predictions").compute_dtype == "float32"
    out = model(np.zeros((1, 32, 32, 3), "float32"))
    assert keras.backend.standardize_dtype(out.dtype) == "float32"
    assert (
        zoo.build("resnet18", num_classes=5, input_shape=(32, 32, 3)).get_layer("predictions").compute_dtype
        == "float32"
    )
    assert zoo.precision_policy("fp32") == "float32"
