"""Weight interop: keras.applications parity through every format users have."""

import dataclasses
import hashlib
import os

import h5py
import keras
import numpy as np
import pytest
from keras.src.legacy.saving import legacy_h5_format

import zoo
from tests.conftest import randomize_bn_stats
from zoo import weights as zw

PAIRS = {
    "resnet50": keras.applications.ResNet50,
    "resnet101": keras.applications.ResNet101,
    "resnet152": keras.applications.ResNet152,
    "resnet50v2": keras.applications.ResNet50V2,
    "vgg16": keras.applications.VGG16,
    "vgg19": keras.applications.VGG19,
}


def _save_legacy_h5(model, path):
    """Write the Keras 2 format of keras.applications' ImageNet files."""
    with h5py.File(path, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, model)


def _reference(name, rng, **kwargs):
    ref = (
        PAIRS[name](weights=None, classifier_activation=None, **kwargs)
        if kwargs.get("include_top", True)
        else PAIRS[name](weights=None, **kwargs)
    )
    randomize_bn_stats(ref, rng)
    return ref


ONCE = pytest.mark.one_backend
# resnet50 on every backend; the other format, v2, the deeper ones (same
# code path, more blocks) and VGG19 on one: reading a file is the same on
# every backend, and the forward pass of both sides uses the same ops.
PARITY = [("resnet50", "weights.h5")] + [
    pytest.param(n, f, marks=ONCE)
    for n, f in [
        ("resnet50", "legacy.h5"),
        ("resnet50v2", "weights.h5"),
        ("resnet50v2", "legacy.h5"),
        ("resnet101", "weights.h5"),
        ("resnet101", "legacy.h5"),
        ("resnet152", "weights.h5"),
        ("resnet152", "legacy.h5"),
        ("vgg19", "weights.h5"),
        ("vgg19", "legacy.h5"),
    ]
]


@pytest.mark.parametrize("name,fmt", PARITY)
def test_keras_applications_parity(name, fmt, tmp_path, rng):
    shape = (32, 32, 3)
    top = not name.startswith("vgg")  # VGG's dense head needs 224: tested below
    kwargs = dict(input_shape=shape, include_top=top)
    ref = _reference(name, rng, **kwargs)
    path = str(tmp_path / f"w.{fmt}")
    ref.save_weights(path) if fmt == "weights.h5" else _save_legacy_h5(ref, path)
    ours = zoo.build(name, weights=path, classifier_activation=None, **kwargs)
    x = rng.uniform(0, 255, (2,) + shape).astype("float32")
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(ours(x)), keras.ops.convert_to_numpy(ref(x)), atol=1e-5
    )


@pytest.mark.one_backend  # writes keras.applications' 528 MB VGG16 file; loading is numpy + assign
def test_vgg16_full_head_parity_from_keras_applications_file(tmp_path, rng):
    ref = _reference("vgg16", rng)
    path = str(tmp_path / "vgg16_weights_tf_dim_ordering_tf_kernels.h5")
    _save_legacy_h5(ref, path)
    ours = zoo.build("vgg16", weights=path, classifier_activation=None)
    x = rng.uniform(0, 255, (1, 224, 224, 3)).astype("float32")
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(ours(x)), keras.ops.convert_to_numpy(ref(x)), atol=1e-5
    )
    # and a top file into include_top=False: head entries are ignored, features identical
    notop = zoo.build("vgg16", weights=path, include_top=False, input_shape=(32, 32, 3))
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(notop.get_layer("block5_conv3").kernel),
        keras.ops.convert_to_numpy(ref.get_layer("block5_conv3").kernel),
    )


@pytest.mark.parametrize("source", ["keras", "npz", "dict", "model"])
def test_other_sources(source, tmp_path, rng):
    a = zoo.build("resnet18", num_classes=5, input_shape=(32, 32, 3))
    randomize_bn_stats(a, rng)
    if source == "keras":
        src = str(tmp_path / "a.keras")
        a.save(src)
    elif source in ("npz", "dict"):
        arrays = {
            f"{l.name}/{i}": keras.ops.convert_to_numpy(w) for l in a.layers for i, w in enumerate(l.weights)
        }
        src = arrays
        if source == "npz":
            src = str(tmp_path / "a.npz")
            np.savez(src, **arrays)
    else:
        src = a
    b = zoo.build("resnet18", num_classes=5, input_shape=(32, 32, 3))
    plan = zw.load_weights(b, src)
    assert plan.match == "name" and not plan.missing
    x = rng.uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(b(x)), keras.ops.convert_to_numpy(a(x)))


def _snapshot(model):
    return [keras.ops.convert_to_numpy(w) for w in model.weights]


@pytest.mark.parametrize("damage", ["truncated", "garbage", "other_arch", "notop_into_top"])
def test_bad_weight_file_raises_and_leaves_model_untouched(damage, tmp_path, rng):
    src = zoo.build("resnet50", include_top=damage != "notop_into_top", input_shape=(32, 32, 3))
    path = str(tmp_path / "w.weights.h5")
    if damage == "other_arch":
        zoo.build("resnet18", input_shape=(32, 32, 3)).save_weights(path)
    else:
        src.save_weights(path)
    if damage == "truncated":
        with open(path, "r+b") as f:
            f.truncate(os.path.getsize(path) // 3)
    elif damage == "garbage":
        with open(path, "wb") as f:
            f.write(b"not a weight file" * 100)
    target = zoo.build("resnet50", input_shape=(32, 32, 3))
    before = _snapshot(target)
    with pytest.raises(zw.WeightFileError, match=r"(corrupt|do not fit)"):
        zw.load_weights(target, path)
    for a, b in zip(before, _snapshot(target)):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(zw.WeightFileError):
        zoo.build("resnet50", input_shape=(32, 32, 3), weights=path)


def test_mismatch_error_lists_problems(tmp_path):
    path = str(tmp_path / "r18.weights.h5")
    zoo.build("resnet18", input_shape=(32, 32, 3)).save_weights(path)
    with pytest.raises(zw.WeightFileError, match=r"nothing was loaded[\s\S]*missing from the source"):
        zoo.build("resnet34", input_shape=(32, 32, 3), weights=path)


def test_missing_path_and_unknown_tag():
    with pytest.raises(FileNotFoundError, match="neither a known source"):
        zoo.build("resnet50", weights="/nonexistent/file.h5")
    with pytest.raises(ValueError, match="has no 'imagenet' weights.*models with one: .*resnet18"):
        zoo.build("googlenet_paper", weights="imagenet")
    with pytest.raises(ValueError, match="need num_classes=1000"):
        zoo.build("resnet50", weights="imagenet", num_classes=10)
    with pytest.raises(ValueError, match="3-channel RGB"):
        zoo.build("resnet50", weights="imagenet", include_top=False, input_shape=(64, 64, 1))


def test_imagenet_offline_error_names_file_and_place(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))

    def no_network(*args, **kwargs):
        raise Exception("URL fetch failure: no network")  # what get_file raises offline

    monkeypatch.setattr(keras.utils, "get_file", no_network)
    with pytest.raises(zw.WeightFileError) as e:
        zoo.build("resnet50", weights="imagenet", include_top=False)
    msg = str(e.value)
    assert "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5" in msg
    assert os.path.join(str(tmp_path), "models") in msg and "4d473c1dd8becc155b73f8504c6f6626" in msg


def test_imagenet_path_uses_cached_file_with_hash_check(tmp_path, monkeypatch, rng):
    """The real download code path, offline: a correctly hashed file in the cache."""
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    ref = _reference("resnet50", rng, include_top=False, input_shape=(32, 32, 3))
    spec = zoo.get_spec("resnet50")
    name = spec.weights["imagenet_notop"].file_name
    os.makedirs(tmp_path / "models")
    path = tmp_path / "models" / name
    _save_legacy_h5(ref, path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    monkeypatch.setattr(keras.utils, "get_file", _raise_offline_after_hash_check(keras.utils.get_file))
    patched = {
        **spec.weights,
        "imagenet_notop": dataclasses.replace(spec.weights["imagenet_notop"], file_hash=digest),
    }
    monkeypatch.setitem(zoo.registry._REGISTRY, "resnet50", dataclasses.replace(spec, weights=patched))
    ours = zoo.build("resnet50", weights="imagenet", include_top=False, input_shape=(32, 32, 3))
    x = rng.uniform(0, 255, (1, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(ours(x)), keras.ops.convert_to_numpy(ref(x)), atol=1e-5
    )
    # a cached file with the wrong hash is refused (get_file re-downloads, which fails offline)
    path.write_bytes(path.read_bytes()[:-10] + b"0123456789")
    with pytest.raises(zw.WeightFileError, match="Could not download"):
        zoo.build("resnet50", weights="imagenet", include_top=False, input_shape=(32, 32, 3))


def _raise_offline_after_hash_check(get_file):
    def wrapper(fname, origin, **kwargs):
        cached = os.path.join(kwargs["cache_dir"], kwargs["cache_subdir"], fname)
        from keras.src.utils.file_utils import validate_file

        if os.path.exists(cached) and validate_file(cached, kwargs["file_hash"]):
            return get_file(fname, origin, **kwargs)
        raise Exception(f"URL fetch failure on {origin}: no network")

    return wrapper
