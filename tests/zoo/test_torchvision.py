"""torchvision converters: exact key names, an independent forward pass, round trips, refusals."""

import dataclasses
import hashlib
import os

import keras
import numpy as np
import pytest

import zoo
from tests.conftest import randomize_bn_stats
from zoo import torchvision as tv
from zoo.models import resnet, vgg

torch = pytest.importorskip("torch")
F = torch.nn.functional


def _np(x):
    return keras.ops.convert_to_numpy(x)


def _random_state_dict(model, rows, seed=0):
    """The model's torchvision state dict, filled with random values."""
    rng = np.random.default_rng(seed)
    out = {}
    for k, v in tv.to_torchvision(model, rows).items():
        if k.endswith("num_batches_tracked"):
            out[k] = v
        elif k.endswith("running_var"):
            out[k] = rng.uniform(0.5, 2.0, v.shape).astype("float32")
        else:
            out[k] = (rng.standard_normal(v.shape) * 0.05).astype("float32")
    return out


def _bn(x, sd, p):
    t = {
        k: torch.from_numpy(np.asarray(sd[f"{p}.{k}"]))
        for k in ("weight", "bias", "running_mean", "running_var")
    }
    return F.batch_norm(x, t["running_mean"], t["running_var"], t["weight"], t["bias"], False, 0.0, 1e-5)


def _torch_resnet(sd, x, depths, bottleneck=False):
    """torchvision's ResNet forward (BasicBlock or Bottleneck), with torch.nn.functional."""
    w = {k: torch.from_numpy(np.asarray(v)) for k, v in sd.items()}
    x = F.relu(_bn(F.conv2d(x, w["conv1.weight"], stride=2, padding=3), sd, "bn1"))
    x = F.max_pool2d(x, 3, 2, 1)
    for s, depth in enumerate(depths, start=1):
        for b in range(depth):
            p, stride = f"layer{s}.{b}", 2 if (b == 0 and s > 1) else 1
            if bottleneck:  # 1x1, 3x3 with the stride, 1x1
                y = F.relu(_bn(F.conv2d(x, w[f"{p}.conv1.weight"]), sd, f"{p}.bn1"))
                y = F.relu(_bn(F.conv2d(y, w[f"{p}.conv2.weight"], stride=stride, padding=1), sd, f"{p}.bn2"))
                y = _bn(F.conv2d(y, w[f"{p}.conv3.weight"]), sd, f"{p}.bn3")
            else:
                y = F.relu(_bn(F.conv2d(x, w[f"{p}.conv1.weight"], stride=stride, padding=1), sd, f"{p}.bn1"))
                y = _bn(F.conv2d(y, w[f"{p}.conv2.weight"], padding=1), sd, f"{p}.bn2")
            if f"{p}.downsample.0.weight" in w:
                x = _bn(F.conv2d(x, w[f"{p}.downsample.0.weight"], stride=stride), sd, f"{p}.downsample.1")
            x = F.relu(x + y)
    return F.linear(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1), w["fc.weight"], w["fc.bias"])


def _torch_vgg_features(sd, x, convs, batch_norm):
    """torchvision's `VGG.features` Sequential, index by index (not through vgg.torchvision_rows)."""
    w = {k: torch.from_numpy(np.asarray(v)) for k, v in sd.items()}
    i = 0
    for n in convs:
        for _ in range(n):
            x = F.conv2d(x, w[f"features.{i}.weight"], w[f"features.{i}.bias"], padding=1)
            i += 1
            if batch_norm:
                x = _bn(x, sd, f"features.{i}")
                i += 1
            x = F.relu(x)
            i += 1
        x = F.max_pool2d(x, 2, 2)
        i += 1
    return x


def test_resnet18_matches_an_independent_torch_forward_pass(tmp_path):
    rows = resnet.torchvision_rows((2, 2, 2, 2))
    model = zoo.build("resnet18", num_classes=7, input_shape=(64, 64, 3), classifier_activation=None)
    sd = _random_state_dict(model, rows)
    pth = str(tmp_path / "resnet18.pth")
    torch.save({k: torch.from_numpy(np.asarray(v)) for k, v in sd.items()}, pth)
    ours = zoo.build(
        "resnet18", num_classes=7, input_shape=(64, 64, 3), classifier_activation=None, weights=pth
    )
    x = np.random.default_rng(1).standard_normal((2, 64, 64, 3)).astype("float32")
    with torch.no_grad():
        ref = _torch_resnet(sd, torch.from_numpy(x.transpose(0, 3, 1, 2)), (2, 2, 2, 2)).numpy()
    np.testing.assert_allclose(_np(ours(x, training=False)), ref, atol=1e-4, rtol=1e-4)
    # A wrong state dict (here: every weight scaled) gives other logits: the check bites.
    bad = {k: v * 1.5 if k.endswith("weight") else v for k, v in sd.items()}
    worse = zoo.build("resnet18", num_classes=7, input_shape=(64, 64, 3), classifier_activation=None)
    zoo.weights.load_weights(worse, tv.from_torchvision(bad, rows))
    assert not np.allclose(_np(worse(x, training=False)), ref, atol=1e-2)


@pytest.mark.one_backend  # the same Keras layers as resnet18's parity, in a bottleneck
def test_resnet50_tv_matches_torchvision_and_refuses_keras_files(tmp_path):
    rows = resnet.torchvision_rows((3, 4, 6, 3), bottleneck=True)
    model = zoo.build("resnet50_tv", num_classes=5, input_shape=(64, 64, 3), classifier_activation=None)
    sd = _random_state_dict(model, rows, seed=7)
    assert "layer1.0.downsample.0.weight" in sd and "layer4.2.conv3.weight" in sd
    zoo.weights.load_weights(model, zoo.get_spec("resnet50_tv").hooks.state_dict_converter(sd))
    x = np.random.default_rng(8).standard_normal((2, 64, 64, 3)).astype("float32")
    with torch.no_grad():
        ref = _torch_resnet(sd, torch.from_numpy(x.transpose(0, 3, 1, 2)), (3, 4, 6, 3), True).numpy()
    np.testing.assert_allclose(_np(model(x, training=False)), ref, atol=1e-4, rtol=1e-4)
    # Same shapes but another layout: a keras.applications file does not fit (conv biases).
    path = str(tmp_path / "keras.weights.h5")
    keras.applications.ResNet50(weights=None, include_top=False, input_shape=(64, 64, 3)).save_weights(path)
    with pytest.raises(zoo.weights.WeightFileError, match="nothing was loaded"):
        zoo.build("resnet50_tv", include_top=False, input_shape=(64, 64, 3), weights=path)
    with pytest.raises(zoo.weights.WeightFileError, match="no mapping from PyTorch names"):
        pth = str(tmp_path / "tv.pth")
        torch.save({k: torch.from_numpy(np.asarray(v)) for k, v in sd.items()}, pth)
        zoo.build("resnet50", num_classes=5, input_shape=(64, 64, 3), weights=pth)


@pytest.mark.parametrize(
    "name, convs, bn",
    [
        ("vgg11_bn", (1, 1, 2, 2, 2), True),
        pytest.param("vgg13", (2, 2, 2, 2, 2), False, marks=pytest.mark.one_backend),
    ],
)
def test_vgg_features_match_an_independent_torch_forward_pass(name, convs, bn):
    rows = vgg.torchvision_rows(convs, batch_norm=bn)
    model = zoo.build(name, include_top=False, input_shape=(32, 32, 3))
    sd = _random_state_dict(model, rows, seed=2)
    ours = zoo.build(name, include_top=False, input_shape=(32, 32, 3), weights=None)
    zoo.weights.load_weights(ours, tv.from_torchvision(sd, rows))
    x = np.random.default_rng(3).standard_normal((2, 32, 32, 3)).astype("float32")
    with torch.no_grad():
        ref = _torch_vgg_features(sd, torch.from_numpy(x.transpose(0, 3, 1, 2)), convs, bn).numpy()
    np.testing.assert_allclose(_np(ours(x, training=False)), ref.transpose(0, 2, 3, 1), atol=1e-4, rtol=1e-4)


@pytest.mark.one_backend  # numpy re-ordering of VGG's 25088x4096 fc1: the same on every backend
def test_vgg_dense_head_round_trips_bit_identically():
    rows = vgg.torchvision_rows((1, 1, 2, 2, 2), batch_norm=False)
    model = zoo.build("vgg11", num_classes=5, input_shape=(224, 224, 3))
    sd = tv.to_torchvision(model, rows)
    assert sd["classifier.0.weight"].shape == (4096, 512 * 7 * 7)
    # torch's (C, H, W) flatten: row c*49 + h*7 + w of fc1 is Keras' row (h*7 + w)*512 + c.
    kernel = _np(model.get_layer("fc1").kernel)
    np.testing.assert_array_equal(
        sd["classifier.0.weight"][:, 3 * 49 + 2 * 7 + 5], kernel[(2 * 7 + 5) * 512 + 3]
    )
    back = tv.from_torchvision(sd, rows)
    for layer in ("fc1", "fc2", "predictions", "block4_conv2"):
        for i, w in enumerate(model.get_layer(layer).weights):
            np.testing.assert_array_equal(back[f"{layer}/{i}"], _np(w))


def test_round_trip_and_refusals_keep_the_model():
    rows18 = resnet.torchvision_rows((2, 2, 2, 2))
    a = zoo.build("resnet18", num_classes=4, input_shape=(32, 32, 3))
    randomize_bn_stats(a, np.random.default_rng(0))
    sd = tv.to_torchvision(a, rows18)
    assert "layer2.0.downsample.1.running_var" in sd and "layer1.0.downsample.0.weight" not in sd
    b = zoo.build("resnet18", num_classes=4, input_shape=(32, 32, 3))
    zoo.weights.load_weights(b, tv.from_torchvision(sd, rows18))
    for wa, wb in zip(a.weights, b.weights):
        np.testing.assert_array_equal(_np(wa), _np(wb))
    # A resnet34 state dict into resnet18: its extra blocks are named, nothing is loaded.
    r34 = zoo.build("resnet34", num_classes=4, input_shape=(32, 32, 3))
    with pytest.raises(ValueError, match=r"not part of resnet18's torchvision layout: \['layer1.2"):
        zoo.get_spec("resnet18").hooks.state_dict_converter(
            tv.to_torchvision(r34, resnet.torchvision_rows((3, 4, 6, 3)))
        )
    before = [_np(w).copy() for w in b.weights]
    with pytest.raises(ValueError, match="not part of"):
        zoo.weights.load_weights(
            b, tv.from_torchvision({"features.0.weight": np.zeros((64, 3, 3, 3))}, rows18)
        )
    assert all(np.array_equal(x, _np(w)) for x, w in zip(before, b.weights))


def test_imagenet_for_resnet18_through_a_hashed_file_in_the_keras_cache(tmp_path, monkeypatch):
    """The real download path, offline: torchvision's file name, its sha256 prefix checked."""
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    spec = zoo.get_spec("resnet18")
    source = spec.weights["imagenet"]
    assert (source.file_name, source.file_hash, source.preprocessing) == (
        "resnet18-f37072fd.pth",
        "f37072fd",
        "torch",
    )
    ref = zoo.build("resnet18", input_shape=(32, 32, 3))
    randomize_bn_stats(ref, np.random.default_rng(5))
    os.makedirs(tmp_path / "models")
    path = tmp_path / "models" / source.file_name
    torch.save(
        {
            k: torch.from_numpy(v)
            for k, v in tv.to_torchvision(ref, resnet.torchvision_rows((2, 2, 2, 2))).items()
        },
        str(path),
    )
    prefix = hashlib.sha256(path.read_bytes()).hexdigest()[:8]

    def offline(fname, origin, **kwargs):
        cached = os.path.join(kwargs["cache_dir"], kwargs["cache_subdir"], fname)
        if os.path.exists(cached):
            return cached
        raise Exception(f"URL fetch failure on {origin}: no network")

    monkeypatch.setattr(keras.utils, "get_file", offline)
    monkeypatch.setitem(
        zoo.registry._REGISTRY,
        "resnet18",
        dataclasses.replace(spec, weights={"imagenet": dataclasses.replace(source, file_hash=prefix)}),
    )
    ours = zoo.build(
        "resnet18", weights="imagenet", include_top=False, input_shape=(32, 32, 3), include_preprocessing=True
    )
    assert ours.get_layer("preprocessing").mode == "torch"
    x = np.random.default_rng(6).uniform(0, 255, (1, 32, 32, 3)).astype("float32")
    feats = keras.Model(ref.inputs[0], ref.get_layer("conv5_block2_out").output)
    np.testing.assert_allclose(_np(ours(x)), _np(feats(_np(zoo.preprocess(x, "torch")))), atol=1e-4)
    # A file that does not match its published prefix is refused and removed.
    monkeypatch.setitem(
        zoo.registry._REGISTRY,
        "resnet18",
        dataclasses.replace(spec, weights={"imagenet": dataclasses.replace(source, file_hash="00000000")}),
    )
    with pytest.raises(zoo.weights.WeightFileError, match="does not match its published sha256 prefix"):
        zoo.build("resnet18", weights="imagenet", include_top=False, input_shape=(32, 32, 3))
    assert not path.exists()
