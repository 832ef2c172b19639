"""GoogLeNet: exact sizes, auxiliary losses from one label, torchvision interop."""

import keras
import numpy as np
import pytest

import zoo
from tests.conftest import randomize_bn_stats
from zoo.models.googlenet import INCEPTION


def _trainable(model):
    return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


@pytest.mark.one_backend
@pytest.mark.parametrize(
    "aux, total, trainable",
    [(False, 6_639_464, 6_624_904), (True, 13_019_960, 13_004_888)],
)
def test_torchvision_layout_counts(aux, total, trainable):
    m = zoo.build("googlenet", aux_logits=aux, input_shape=(224, 224, 3))
    assert m.count_params() == total
    assert _trainable(m) == trainable


def _paper_count(aux: bool, num_classes=1000) -> int:
    """Weights + biases of the paper's network, straight from Table 1's columns."""
    total = 3 * 49 * 64 + 64  # conv 7x7/2
    total += 64 * 64 + 64 + 64 * 9 * 192 + 192  # conv 1x1 reduce, conv 3x3
    c_in = 192
    for n1, r3, n3, r5, n5, pp in INCEPTION.values():
        total += c_in * n1 + n1
        total += c_in * r3 + r3 + r3 * 9 * n3 + n3
        total += c_in * r5 + r5 + r5 * 25 * n5 + n5
        total += c_in * pp + pp
        c_in = n1 + n3 + n5 + pp
    total += c_in * num_classes + num_classes
    if aux:
        for c in (512, 528):  # 4a and 4d outputs
            total += c * 128 + 128 + 4 * 4 * 128 * 1024 + 1024 + 1024 * num_classes + num_classes
    return total


@pytest.mark.one_backend
@pytest.mark.parametrize("aux", [False, True])
def test_paper_layout_count_from_table1(aux):
    m = zoo.build("googlenet_paper", aux_logits=aux, input_shape=(224, 224, 3))
    assert m.count_params() == _paper_count(aux)
    # The table's own "params" column (weights only, in K) agrees with its
    # channel columns to within 5% per module, except 4c, where the paper's
    # 463K is 10% below what its own channel numbers give (509K).
    table_k = {
        "3a": 159,
        "3b": 380,
        "4a": 364,
        "4b": 437,
        "4c": 463,
        "4d": 580,
        "4e": 840,
        "5a": 1072,
        "5b": 1388,
    }
    for block, k in table_k.items():
        layer_weights = sum(
            int(np.prod(l.kernel.shape))
            for l in m.layers
            if l.name.startswith(f"inception{block}_") and hasattr(l, "kernel")
        )
        bound = 0.11 if block == "4c" else 0.05
        assert abs(layer_weights / 1000 - k) / k < bound, (block, layer_weights)


@pytest.mark.one_backend
def test_paper_layout_has_lrn_and_5x5():
    m = zoo.build("googlenet_paper", input_shape=(224, 224, 3))
    names = {l.name for l in m.layers}
    assert {"pool1_lrn", "conv3_lrn"} <= names
    assert m.get_layer("inception3a_5x5_conv").kernel.shape[:2] == (5, 5)
    assert not any(isinstance(l, keras.layers.BatchNormalization) for l in m.layers)


@pytest.mark.one_backend
def test_stages_and_feature_shapes():
    m = zoo.build("googlenet", features_only=True, input_shape=(224, 224, 3))
    assert [tuple(o.shape[1:]) for o in m.outputs] == [
        (112, 112, 64),
        (56, 56, 192),
        (28, 28, 480),
        (14, 14, 832),
        (7, 7, 1024),
    ]


def _aux_model(num_classes=4, size=64):
    return zoo.build(
        "googlenet",
        num_classes=num_classes,
        aux_logits=True,
        input_shape=(size, size, 3),
        classifier_activation=None,
    )


# The loss bookkeeping is Keras' compute_loss/compute_metrics, the same on every
# backend; compiling this graph for training cost JAX 78 s (116 s eagerly).
@pytest.mark.one_backend
def test_aux_loss_is_main_plus_weighted_aux_from_one_label():
    model = _aux_model()
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile(optimizer="sgd", loss=loss, metrics=["accuracy"])
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (6, 64, 64, 3)).astype("float32")
    y = rng.integers(0, 4, 6)
    result = model.evaluate(x, y, batch_size=6, verbose=0, return_dict=True)
    pred = model(x, training=False)
    by_hand = sum(
        w * float(keras.ops.convert_to_numpy(loss(y, pred[k])))
        for k, w in (("main", 1.0), ("aux1", 0.3), ("aux2", 0.3))
    )
    np.testing.assert_allclose(result["loss"], by_hand, rtol=1e-5)
    # One `y` trains all three heads.
    before = keras.ops.convert_to_numpy(model.get_layer("aux1_predictions").kernel)
    history = model.fit(x, y, epochs=1, batch_size=3, verbose=0).history
    assert np.all(np.isfinite(history["loss"]))
    after = keras.ops.convert_to_numpy(model.get_layer("aux1_predictions").kernel)
    assert not np.allclose(before, after)


@pytest.mark.one_backend  # a graph cut and a .keras round trip: the same on every backend
def test_strip_auxiliary_equals_main_output(tmp_path):
    model = _aux_model()
    randomize_bn_stats(model, np.random.default_rng(0))
    x = np.random.default_rng(1).uniform(0, 255, (2, 64, 64, 3)).astype("float32")
    main = keras.ops.convert_to_numpy(model(x, training=False)["main"])
    infer = zoo.strip_auxiliary(model)
    assert len(infer.outputs) == 1
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(infer(x)), main)
    assert infer.get_layer("predictions") is model.get_layer("predictions")  # shared weights
    # The training model survives .keras save/load, class and all.
    path = str(tmp_path / "aux.keras")
    model.save(path)
    back = keras.saving.load_model(path)
    assert isinstance(back, zoo.AuxiliaryClassifierModel)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(back(x, training=False)["main"]), main, atol=1e-5)


@pytest.mark.one_backend
def test_options_are_checked():
    with pytest.raises(ValueError, match="does not take `aux_logits`"):
        zoo.build("resnet18", aux_logits=True)
    with pytest.raises(ValueError, match="include_top=True"):
        zoo.build("googlenet", aux_logits=True, include_top=False)


@pytest.mark.one_backend  # layer structure
def test_activation_option_reaches_every_block():
    m = zoo.build("googlenet", activation="mish", input_shape=(64, 64, 3))
    acts = {l.activation.__name__ for l in m.layers if isinstance(l, keras.layers.Activation)}
    assert acts == {"mish"}


# -------------------------------------------------------------------------
# torchvision weights
# -------------------------------------------------------------------------


def _random_state_dict(seed=0, num_classes=10):
    """A torchvision-named GoogLeNet state dict of random arrays."""
    ref = zoo.build("googlenet", num_classes=num_classes, aux_logits=True, input_shape=(64, 64, 3))
    sd = zoo.models.googlenet.to_torchvision(ref)
    rng = np.random.default_rng(seed)
    out = {}
    for k, v in sd.items():
        if k.endswith("running_var"):
            out[k] = rng.uniform(0.5, 2.0, v.shape).astype("float32")
        else:
            out[k] = (rng.standard_normal(v.shape) * 0.05).astype("float32")
        out[k.rsplit(".", 1)[0] + ".num_batches_tracked"] = np.array(3) if "bn." in k else None
    return {k: v for k, v in out.items() if v is not None}


# The mapping is numpy; loading torchvision's layout into the model is checked on
# every backend by test_outputs_match_torchvision_architecture.
@pytest.mark.one_backend
def test_torchvision_state_dict_round_trips(tmp_path):
    sd = _random_state_dict()
    a = zoo.build("googlenet", num_classes=10, aux_logits=True, input_shape=(64, 64, 3), weights=None)
    zoo.weights.load_weights(a, zoo.models.googlenet.from_torchvision(sd))
    back = zoo.models.googlenet.to_torchvision(a)
    assert set(back) == set(sd)  # num_batches_tracked included: torchvision loads it strictly
    for k, v in back.items():
        if not k.endswith("num_batches_tracked"):
            np.testing.assert_array_equal(v, sd[k])
    # The same names in an .npz load through zoo.build(weights=...), aux
    # heads ignored when the model has none.
    npz = str(tmp_path / "googlenet_tv.npz")
    np.savez(npz, **sd)
    b = zoo.build("googlenet", num_classes=10, input_shape=(64, 64, 3), weights=npz)
    x = np.random.default_rng(2).uniform(-1, 1, (2, 64, 64, 3)).astype("float32")
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(b(x)),
        keras.ops.convert_to_numpy(a(x, training=False)["main"]),
    )


def test_foreign_state_dict_is_refused():
    with pytest.raises(ValueError, match="not part of GoogLeNet.s torchvision layout"):
        zoo.models.googlenet.from_torchvision({"features.0.weight": np.zeros((64, 3, 3, 3))})


def _torch_googlenet(num_classes):
    """torchvision's GoogLeNet architecture in plain torch.nn (no torchvision
    CPU build exists here); eval-mode forward returning all three heads."""
    import torch
    from torch import nn
    from torch.nn import functional as F

    class Conv(nn.Module):
        def __init__(self, cin, cout, **kw):
            super().__init__()
            self.conv = nn.Conv2d(cin, cout, bias=False, **kw)
            self.bn = nn.BatchNorm2d(cout, eps=0.001)

        def forward(self, x):
            return F.relu(self.bn(self.conv(x)))

    class Inception(nn.Module):
        def __init__(self, cin, n1, r3, n3, r5, n5, pp):
            super().__init__()
            self.branch1 = Conv(cin, n1, kernel_size=1)
            self.branch2 = nn.Sequential(Conv(cin, r3, kernel_size=1), Conv(r3, n3, kernel_size=3, padding=1))
            self.branch3 = nn.Sequential(Conv(cin, r5, kernel_size=1), Conv(r5, n5, kernel_size=3, padding=1))
            self.branch4 = nn.Sequential(
                nn.MaxPool2d(3, stride=1, padding=1, ceil_mode=True), Conv(cin, pp, kernel_size=1)
            )

        def forward(self, x):
            return torch.cat([self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)], 1)

    class Aux(nn.Module):
        def __init__(self, cin):
            super().__init__()
            self.conv = Conv(cin, 128, kernel_size=1)
            self.fc1 = nn.Linear(2048, 1024)
            self.fc2 = nn.Linear(1024, num_classes)

        def forward(self, x):
            x = self.conv(F.adaptive_avg_pool2d(x, (4, 4)))
            return self.fc2(F.relu(self.fc1(torch.flatten(x, 1))))

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = Conv(3, 64, kernel_size=7, stride=2, padding=3)
            self.conv2 = Conv(64, 64, kernel_size=1)
            self.conv3 = Conv(64, 192, kernel_size=3, padding=1)
            cin = 192
            for block, f in INCEPTION.items():
                setattr(self, f"inception{block}", Inception(cin, *f))
                cin = f[0] + f[2] + f[4] + f[5]
            self.aux1, self.aux2 = Aux(512), Aux(528)
            self.fc = nn.Linear(1024, num_classes)

        def forward(self, x):
            pool = lambda x, k=3: F.max_pool2d(x, k, 2, ceil_mode=True)  # noqa: E731
            x = pool(self.conv1(x))
            x = pool(self.conv3(self.conv2(x)))
            x = pool(self.inception3b(self.inception3a(x)))
            x = self.inception4a(x)
            a1 = self.aux1(x)
            x = self.inception4d(self.inception4c(self.inception4b(x)))
            a2 = self.aux2(x)
            x = pool(self.inception4e(x), 2)
            x = self.inception5b(self.inception5a(x))
            return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)), a1, a2

    return Net().eval()


@pytest.mark.parametrize("size", [99, pytest.param(112, marks=pytest.mark.one_backend)])
def test_outputs_match_torchvision_architecture(size, tmp_path):
    torch = pytest.importorskip("torch")
    sd = _random_state_dict(seed=3, num_classes=7)
    net = _torch_googlenet(7)
    net.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in sd.items()})
    # Through a real .pth file, read with torch.load(weights_only=True).
    pth = str(tmp_path / "googlenet.pth")
    torch.save(net.state_dict(), pth)
    model = zoo.build(
        "googlenet",
        num_classes=7,
        aux_logits=True,
        classifier_activation=None,
        input_shape=(size, size, 3),
        weights=pth,
    )
    x = np.random.default_rng(4).standard_normal((2, size, size, 3)).astype("float32")
    with torch.no_grad():
        ref = [t.numpy() for t in net(torch.from_numpy(x.transpose(0, 3, 1, 2)))]
    ours = model.predict_on_batch(x)  # compiled: op-by-op on JAX compiles each op (10 s more)
    for key, r in zip(("main", "aux1", "aux2"), ref):
        np.testing.assert_allclose(keras.ops.convert_to_numpy(ours[key]), r, atol=1e-4, rtol=1e-4)
