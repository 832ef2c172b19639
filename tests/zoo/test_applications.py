"""keras.applications backbones: the catalogue against Keras, stages, weights, names."""

import hashlib
import os

import h5py
import keras
import numpy as np
import pytest
from keras.src.legacy.saving import legacy_h5_format
from keras.src.utils import file_utils

import surgery
import zoo
from tests.conftest import randomize_bn_stats
from zoo import weights as zw
from zoo.models.applications import _TABLE

APPS = {app.constructor.lower(): app for app in _TABLE if hasattr(keras.applications, app.constructor)}
ONCE = pytest.mark.one_backend  # Keras' own code: the same on every backend


def test_every_keras_application_is_registered():
    native = {
        "resnet50",
        "resnet101",
        "resnet152",
        "resnet50v2",
        "resnet101v2",
        "resnet152v2",
        "vgg16",
        "vgg19",
    }
    keras_names = {n.lower() for n in dir(keras.applications) if n[0].isupper()}
    assert keras_names - native <= set(APPS) and len(APPS) >= 32
    assert set(APPS) <= set(zoo.list_models(pretrained=True))
    assert zoo.list_models("efficientnetv2*") == [
        "efficientnetv2b0",
        "efficientnetv2b1",
        "efficientnetv2b2",
        "efficientnetv2b3",
        "efficientnetv2l",
        "efficientnetv2m",
        "efficientnetv2s",
    ]


# One of each kind of Keras head: MobileNet's 1x1 convolution, MobileNetV3's
# hidden 1x1 convolution, ConvNeXt's layer norm, EfficientNet's dropout (the
# others are pooling and Dense, as ResNet's). Every model's count with the
# head is checked against zoo/_sizes.py in tests/zoo/test_models.py.
SMALL = ["mobilenet", "mobilenetv3small", "convnexttiny", "efficientnetb0"]


@ONCE
@pytest.mark.parametrize("name", SMALL)
def test_head_parameters_equal_keras(name):
    """Keras' counts with the head (MobileNetV3's 1x1 convolutions, ConvNeXt's layer norm) and without."""
    constructor = getattr(keras.applications, APPS[name].constructor)
    ref = constructor(weights=None, input_shape=(64, 64, 3), classes=7)
    ours = zoo.build(name, num_classes=7, input_shape=(64, 64, 3))
    assert ours.count_params() == ref.count_params()
    notop = zoo.build(name, include_top=False, pooling="avg", input_shape=(64, 64, 3))
    assert (
        notop.count_params()
        == constructor(weights=None, include_top=False, pooling="avg", input_shape=(64, 64, 3)).count_params()
    )
    assert notop.count_params() == APPS[name].params[1]
    assert ours.output_shape == (None, 7)
    feats = zoo.build(name, features_only=True, out_indices=(-2, -1), input_shape=(64, 64, 3))
    assert [o.shape[-1] for o in feats.outputs] == [s.channels for s in zoo.get_spec(name).stages[-2:]]


def _save_legacy_h5(model, path):
    with h5py.File(path, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, model)


def _place_source(tmp_path, monkeypatch, name, tag, ref):
    """keras.applications' file for `tag`, made from `ref`, hashed into the Keras cache."""
    import dataclasses

    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    spec = zoo.get_spec(name)
    source = spec.weights[tag]
    os.makedirs(tmp_path / "models", exist_ok=True)
    path = tmp_path / "models" / source.file_name
    _save_legacy_h5(ref, path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    patched = {**spec.weights, tag: dataclasses.replace(source, file_hash=digest)}
    monkeypatch.setitem(zoo.registry._REGISTRY, name, dataclasses.replace(spec, weights=patched))
    return str(path)


def _keras_imagenet(constructor, path, **kwargs):
    """Keras' own model with `weights="imagenet"`, its download answered by `path`."""
    real = file_utils.get_file
    file_utils.get_file = lambda *a, **k: path
    try:
        return constructor(weights="imagenet", **kwargs)
    finally:
        file_utils.get_file = real


# (model, with the head, input side): EfficientNet's file quirk and a
# "none"-preprocessing conv head; a "tf" and a "torch" model without the head.
PRETRAINED = [
    ("efficientnetb0", True, 224),
    ("mobilenetv3small", True, 224),
    ("mobilenetv2", False, 96),
    ("densenet121", False, 64),
]


@ONCE
@pytest.mark.parametrize("name,top,side", PRETRAINED)
def test_imagenet_weights_match_keras(name, top, side, tmp_path, monkeypatch, rng):
    """weights="imagenet" through a hashed file in the Keras cache equals Keras' own loading."""
    constructor = getattr(keras.applications, APPS[name].constructor)
    kwargs = dict(include_top=top, input_shape=(side, side, 3))
    if top:  # logits: softmax over 1000 near-uniform classes would hide differences
        kwargs["classifier_activation"] = None
    maker = constructor(weights=None, **kwargs)
    randomize_bn_stats(maker, rng)
    for layer in maker.layers:  # EfficientNet's Normalization statistics, as in Keras' files
        if isinstance(layer, keras.layers.Normalization) and layer.weights:
            stats = {"mean": [0.485, 0.456, 0.406], "variance": [0.229, 0.224, 0.225]}
            for w in layer.weights:
                if w.name in stats:
                    w.assign(np.array(stats[w.name], "float32"))
            layer.finalize_state()
    path = _place_source(tmp_path, monkeypatch, name, "imagenet" if top else "imagenet_notop", maker)
    ref = _keras_imagenet(constructor, path, **kwargs)
    ours = zoo.build(name, weights="imagenet", include_preprocessing=True, **kwargs)
    x = rng.uniform(0, 255, (2, side, side, 3)).astype("float32")
    preprocess = {
        "mobilenetv2": keras.applications.mobilenet_v2.preprocess_input,
        "densenet121": keras.applications.densenet.preprocess_input,
    }.get(name)
    x_ref = preprocess(x.copy()) if preprocess else x  # Keras' is a pass-through for the others
    # A random-init deep network barely depends on its input at the logits;
    # the first stage Keras names explicitly does, so compare there as well.
    layer = next(st.layer for st in zoo.get_spec(name).stages if st.layer in {l.name for l in ref.layers})
    for a, b in (
        (ours, ref),
        (
            keras.Model(ours.input, ours.get_layer(layer).output),
            keras.Model(ref.input, ref.get_layer(layer).output),
        ),
    ):
        got, want = keras.ops.convert_to_numpy(a(x)), keras.ops.convert_to_numpy(b(x_ref))
        scale = np.abs(want).max()
        assert scale > 1e-2
        np.testing.assert_allclose(got, want, atol=1e-4 * scale, rtol=1e-3)
    assert np.abs(want[0] - want[1]).max() > 0.1 * scale  # the check bites: images differ
    if name == "efficientnetb0":  # without the quirk fix the features differ
        plain = keras.Model(maker.input, maker.get_layer(layer).output)
        assert np.abs(keras.ops.convert_to_numpy(plain(x)) - want).max() > 0.1 * scale


def test_offline_error_names_keras_file(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    monkeypatch.setattr(
        keras.utils,
        "get_file",
        lambda *a, **k: (_ for _ in ()).throw(Exception("URL fetch failure: no network")),
    )
    with pytest.raises(zw.WeightFileError) as e:
        zoo.build("efficientnetv2b0", weights="imagenet", include_top=False)
    msg = str(e.value)
    source = zoo.get_spec("efficientnetv2b0").weights["imagenet_notop"]
    assert source.file_name in msg and source.url in msg and source.file_hash in msg
    assert os.path.join(str(tmp_path), "models") in msg


@ONCE  # Keras' graph building: the same on every backend
def test_default_names_do_not_depend_on_the_session():
    """InceptionV3's unnamed layers get the names of a fresh session, build after build."""
    keras.layers.Activation("relu")  # bump Keras' counter, as any earlier model would
    first = zoo.build("inceptionv3", include_top=False, input_shape=(75, 75, 3))
    second = zoo.build("inceptionv3", include_top=False, input_shape=(75, 75, 3))
    assert [l.name for l in first.layers] == [l.name for l in second.layers]
    assert first.get_layer("activation_4").output.shape[-1] == 192
    assert zoo.get_spec("inceptionv3").stages[1].layer == "activation_4"


@ONCE
def test_freeze_by_stage_and_mixed_precision_head():
    model = zoo.build("mobilenetv3small", num_classes=4, input_shape=(64, 64, 3), dtype="mixed_bfloat16")
    assert model.output.dtype == "float32"
    assert model.get_layer("predictions_activation").dtype_policy.name == "float32"
    surgery.unfreeze_stages(model, 1)
    names = [l.name for l in model.layers]
    cut = names.index(zoo.get_spec("mobilenetv3small").stages[-2].layer)
    weighted = [l for l in model.layers if l.weights]
    assert all(not l.trainable for l in weighted if names.index(l.name) <= cut)
    assert all(l.trainable for l in weighted if names.index(l.name) > cut)


def test_preprocessing_modes_follow_keras():
    assert zoo.get_spec("efficientnetb0").preprocessing == "none"
    assert zoo.get_spec("mobilenetv2").preprocessing == "tf"
    assert zoo.get_spec("densenet121").weights["imagenet"].preprocessing == "torch"
    x = np.full((1, 2, 2, 3), 200.0, "float32")
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(zoo.preprocess(x, "convnexttiny")), x)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(zoo.preprocess(x, "xception")),
        keras.applications.xception.preprocess_input(x.copy()),
        atol=1e-6,
    )
    with pytest.raises(ValueError, match="fixed input size"):
        zoo.build("nasnetmobile", include_top=False, input_shape=(None, None, 3))
