"""Channel deletion and pruning.

The reference for every deletion: on the kept channels, the pruned model
computes what the original computes when the deleted channels are zeroed
where they enter the next weighted layers (their kernel rows set to 0).
"""

import keras
import numpy as np
import pytest

import surgery
import zoo
from tests.conftest import randomize_bn_stats

L = keras.layers
np_ = keras.ops.convert_to_numpy


def _zeroed(model, rows: dict, recurrent: dict | None = None):
    """A copy of `model` whose layers `{name: input rows}` ignore those input channels.

    `recurrent` zeroes recurrent-kernel rows: a deleted RNN unit also stops
    feeding the other units of its own layer.
    """
    copy = surgery.copy(model)
    for name, idx in (recurrent or {}).items():
        w = next(w for w in copy.get_layer(name).weights if w.path.endswith("recurrent_kernel"))
        v = np_(w).copy()
        v[list(idx)] = 0
        w.assign(v)
    for name, idx in rows.items():
        layer = copy.get_layer(name)
        inner = layer.layer if isinstance(layer, L.TimeDistributed) else layer
        transposed = isinstance(inner, (L.Conv1DTranspose, L.Conv2DTranspose, L.Conv3DTranspose))
        for w in layer.weights:
            leaf = w.path.split("/")[-1]
            if leaf in ("kernel", "depthwise_kernel"):
                v = np_(w).copy()
                axis = -1 if transposed else -2
                index = [slice(None)] * v.ndim
                index[axis] = list(idx)
                v[tuple(index)] = 0
                w.assign(v)
    return copy


def _consumers(before, after):
    """Layers whose kernels lost input rows (the edit's consumers)."""
    out = []
    for layer in after.layers:
        if not any(w.path.split("/")[-1] in ("kernel", "depthwise_kernel") for w in layer.weights):
            continue
        old = before.get_layer(layer.name)
        transposed = isinstance(layer, (L.Conv1DTranspose, L.Conv2DTranspose, L.Conv3DTranspose))
        axis = -1 if transposed else -2
        k_new = next(w for w in layer.weights if w.path.split("/")[-1] in ("kernel", "depthwise_kernel"))
        k_old = next(w for w in old.weights if w.path.split("/")[-1] in ("kernel", "depthwise_kernel"))
        if k_new.shape[axis] < k_old.shape[axis]:
            out.append(layer.name)
    return sorted(out)


def _same(a, b, x, atol=1e-4):
    for u, v in zip(keras.tree.flatten(a(x, training=False)), keras.tree.flatten(b(x, training=False))):
        np.testing.assert_allclose(np_(u), np_(v), atol=atol, rtol=1e-4)


def _weights(model):
    return [np_(w).copy() for w in model.weights]


def _roundtrip(model, tmp_path, x):
    path = tmp_path / "pruned.keras"
    model.save(path)
    _same(model, keras.saving.load_model(path), x, atol=1e-6)


def _randomize(model, rng):
    for w in model.weights:
        if w.path.endswith(("bias", "beta", "gamma", "alpha")):
            w.assign(rng.uniform(0.2, 1.0, w.shape).astype("float32"))
    randomize_bn_stats(model, rng)


def test_sequential_conv_bn_flatten_dense(rng, tmp_path):
    model = keras.Sequential(
        [
            keras.Input((6, 6, 3)),
            L.Conv2D(5, 3, padding="same", name="c1"),
            L.BatchNormalization(name="bn"),
            L.PReLU(name="prelu"),
            L.MaxPooling2D(name="pool"),
            L.Flatten(name="flat"),
            L.Dense(4, name="fc1"),
            L.Dense(3, name="fc2"),
        ]
    )
    _randomize(model, rng)
    x = rng.uniform(-1, 1, (2, 6, 6, 3)).astype("float32")
    before = _weights(model)
    new = surgery.delete_channels(model, "c1", [1, 3])
    assert new.get_layer("c1").filters == 3
    assert tuple(new.get_layer("bn").gamma.shape) == (3,)
    assert tuple(new.get_layer("prelu").alpha.shape) == (6, 6, 3)
    # Flatten of 3x3x5: the deleted channels are every 5th row, from 1 and 3.
    assert tuple(new.get_layer("fc1").kernel.shape) == (27, 4)
    rows = [i for i in range(45) if i % 5 in (1, 3)]
    _same(new, _zeroed(model, {"fc1": rows}), x)
    for a, w in zip(before, model.weights):
        np.testing.assert_array_equal(a, np_(w))  # the original is untouched
    assert model.get_layer("c1").filters == 5
    _roundtrip(new, tmp_path, x)
    # Units of a hidden Dense layer; the last layer's units change the output.
    hidden = surgery.delete_channels(model, "fc1", [0])
    _same(hidden, _zeroed(model, {"fc2": [0]}), x)
    assert surgery.delete_channels(model, "fc2", [2]).output_shape == (None, 2)


def _residual(rng):
    inp = keras.Input((8, 8, 3), name="x")
    a = L.ReLU(name="a_relu")(
        L.BatchNormalization(name="a_bn")(L.Conv2D(6, 3, padding="same", name="a")(inp))
    )
    b = L.Conv2D(6, 3, padding="same", name="b")(a)
    added = L.Add(name="add")([a, L.BatchNormalization(name="b_bn")(b)])
    y = L.ReLU(name="out_relu")(added)
    c = L.SeparableConv2D(4, 3, padding="same", depth_multiplier=2, name="sep")(y)
    d = L.DepthwiseConv2D(3, padding="same", depth_multiplier=2, name="dw")(y)
    e = L.Conv2D(3, 1, name="e")(d)
    cat = L.Concatenate(name="cat")([c, L.Conv2D(5, 1, name="f")(y), e])
    g = L.Conv2D(4, 1, name="g")(cat)
    t = L.Conv2DTranspose(3, 2, strides=2, name="t")(g)
    h = L.Conv2D(2, 1, name="h")(t)
    out = L.Dense(3, name="fc")(L.GlobalAveragePooling2D(name="gap")(h))
    model = keras.Model(inp, out, name="branchy")
    _randomize(model, rng)
    return model


def test_residual_concat_depthwise_separable_transposed(rng, tmp_path):
    model = _residual(rng)
    x = rng.uniform(-1, 1, (2, 8, 8, 3)).astype("float32")
    # "b" feeds an Add with "a": both lose channels 0 and 4 (one channel index).
    new = surgery.delete_channels(model, "b", [0, 4])
    assert new.get_layer("a").filters == 4 and new.get_layer("b").filters == 4
    assert _consumers(model, new) == ["b", "dw", "e", "f", "sep"]
    # The depthwise layer makes 2 outputs per input channel: e loses rows 0, 1, 8, 9.
    assert new.get_layer("e").kernel.shape[-2] == 8
    ref = _zeroed(model, {"b": [0, 4], "sep": [0, 4], "f": [0, 4], "e": [0, 1, 8, 9]})
    _same(new, ref, x)
    _roundtrip(new, tmp_path, x)
    # A branch of the Concatenate: the next layer loses the rows at its offset (4 + 1).
    cat = surgery.delete_channels(model, "f", [1])
    assert _consumers(model, cat) == ["g"]
    _same(cat, _zeroed(model, {"g": [5]}), x)
    # Transposed convolutions as producer and as consumer.
    tr = surgery.delete_channels(model, {"g": [2], "t": [0]})
    assert tuple(tr.get_layer("t").kernel.shape) == (2, 2, 2, 3)
    _same(tr, _zeroed(model, {"t": [2], "h": [0]}), x)


def test_sequences_embedding_rnn(rng):
    inp = keras.Input((5,), dtype="int32", name="tokens")
    x = L.Embedding(12, 6, mask_zero=True, name="emb")(inp)
    x = L.LSTM(5, return_sequences=True, name="lstm")(x)
    x = L.GRU(4, return_sequences=True, name="gru")(x)
    x = L.SimpleRNN(3, return_sequences=True, name="rnn")(x)
    x = L.TimeDistributed(L.Dense(3), name="td")(x)
    x = L.Bidirectional(L.LSTM(2), name="bi")(x)
    model = keras.Model(inp, L.Dense(2, name="fc")(x))
    tokens = np.array([[3, 5, 1, 0, 0], [7, 2, 9, 4, 11]], "int32")
    new = surgery.delete_channels(model, {"emb": [1], "lstm": [0, 2], "gru": [3], "rnn": [1]})
    assert [new.get_layer(n).units for n in ("lstm", "gru", "rnn")] == [3, 3, 2]
    assert new.get_layer("emb").output_dim == 5
    # The reference keeps Embedding's mask: equal outputs show it still reaches the RNNs.
    rows = {"lstm": [1], "gru": [0, 2], "rnn": [3], "td": [1]}
    _same(new, _zeroed(model, rows, recurrent={"lstm": [0, 2], "gru": [3], "rnn": [1]}), tokens)
    one = surgery.delete_channels(model, "gru", [1])  # one producer alone
    _same(one, _zeroed(model, {"rnn": [1]}, recurrent={"gru": [1]}), tokens)
    with pytest.raises(surgery.SurgeryError, match="Dense layer outside it"):
        surgery.delete_channels(model, "td", [0])
    # Deleting the recurrent units of an LSTM also drops its recurrent rows and gate columns.
    lstm = surgery.delete_channels(model, "lstm", [0]).get_layer("lstm")
    assert [tuple(w.shape) for w in lstm.weights] == [(6, 16), (4, 16), (16,)]


def test_errors_say_what_to_do(rng):
    model = _residual(rng)
    with pytest.raises(surgery.SurgeryError, match="no channels"):
        surgery.delete_channels(model, "b", range(6))
    with pytest.raises(surgery.SurgeryError, match=r"indices 0\.\.5\). Received: channels=\[6\]"):
        surgery.delete_channels(model, "b", [6])
    with pytest.raises(surgery.SurgeryError, match="no filters or units of its own"):
        surgery.delete_channels(model, "a_bn", [0])
    with pytest.raises(surgery.SurgeryError, match="No channels given"):
        surgery.delete_channels(model, "b", [])
    inp = keras.Input((4, 4, 3))
    y = L.Conv2D(3, 1, name="c")(inp)
    skip = keras.Model(inp, L.Add()([inp, y]))
    with pytest.raises(surgery.SurgeryError, match="model input"):
        surgery.delete_channels(skip, "c", [0])
    z = L.Conv2D(4, 1, name="c")(inp)
    norm = keras.Model(inp, L.Conv2D(2, 1)(L.LayerNormalization(name="ln")(z)))
    with pytest.raises(surgery.SurgeryError, match="'ln' mixes the channels"):
        surgery.delete_channels(norm, "c", [0])
    # A Dense shared by two branches: deleting from one branch alone is refused before anything is built.
    x = keras.Input((3,))
    shared = L.Dense(2, name="dense_3")
    two = keras.Model(
        x, L.Concatenate()([shared(L.Dense(3, name="dense_1")(x)), shared(L.Dense(3, name="dense_2")(x))])
    )
    for one_layer in ({"dense_1": [0]}, {"dense_1": [0], "dense_2": [1]}):
        with pytest.raises(surgery.SurgeryError, match="'dense_3' is shared .* same channels on every call"):
            surgery.delete_channels(two, one_layer)
    with pytest.raises(surgery.SurgeryError, match="'dense_3' is shared"):
        surgery.delete_channels(two, "dense_1", [0])
    both = surgery.delete_channels(two, {"dense_1": [0], "dense_2": [0]})
    assert both.get_layer("dense_3").kernel.shape == (2, 2)
    with pytest.raises(surgery.SurgeryError, match=r"amount.*\(0, 1\)"):
        surgery.prune(model, 1.5)
    with pytest.raises(surgery.SurgeryError, match="pass images with `data=`"):
        surgery.prune(model, 0.5, criterion="apoz")


@pytest.mark.one_backend  # the weight arithmetic is numpy; the small models above run on every backend
@pytest.mark.parametrize(
    "name, layer, consumers",
    [
        (
            "resnet18",
            "conv2_block1_2_conv",
            ["conv2_block1_1_conv", "conv2_block2_1_conv", "conv3_block1_0_conv", "conv3_block1_1_conv"],
        ),
        ("vgg11_bn", "block2_conv1", ["block3_conv1"]),
        (
            "googlenet",
            "inception3a_1x1_conv",
            [f"inception3b_{b}_conv" for b in ("1x1", "3x3_reduce", "5x5_reduce", "pool_proj")],
        ),
    ],
)
def test_zoo_models_delete_and_prune(name, layer, consumers, rng, tmp_path):
    model = zoo.build(name, input_shape=(32, 32, 3), num_classes=3)
    _randomize(model, rng)
    x = rng.uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    new = surgery.delete_channels(model, layer, [1, 2, 7])
    assert _consumers(model, new) == sorted(consumers)
    _same(new, _zeroed(model, dict.fromkeys(consumers, [1, 2, 7])), x, atol=1e-3)
    pruned = surgery.prune(model, 0.5)
    report = surgery.size_report(model, pruned)
    assert report.macs_after < 0.45 * report.macs_before
    assert report.params_after < 0.5 * report.params_before
    assert pruned.output_shape == model.output_shape
    _roundtrip(pruned, tmp_path, x)


@pytest.mark.one_backend
def test_prune_residual_paths_once_and_by_apoz(rng):
    model = zoo.build("resnet18", input_shape=(32, 32, 3), num_classes=3)
    groups = surgery.channel_groups(model)
    stream = next(g for g in groups if "conv2_block1_2_conv" in g.layers)
    assert stream.layers == ("conv1_conv", "conv2_block1_2_conv", "conv2_block2_2_conv")
    assert set(stream.activations) >= {"conv1_relu", "conv2_block1_out", "conv2_block2_out"}
    # Every producer of a residual stream keeps the same channels.
    kernel = np_(model.get_layer("conv2_block2_2_conv").kernel)
    kernel[..., 5] = 0  # an all-zero filter is the first to go by L1
    model.get_layer("conv2_block2_2_conv").kernel.assign(kernel)
    only = surgery.prune(model, 0.25, layers="conv2_block1_2_conv")
    assert [only.get_layer(n).filters for n in stream.layers] == [48, 48, 48]
    assert only.get_layer("conv2_block1_1_conv").filters == 64  # other groups untouched
    x = rng.uniform(0, 255, (4, 32, 32, 3)).astype("float32")
    by_zeros = surgery.prune(model, 0.25, criterion="apoz", data=x, layers="conv3_block*")
    assert by_zeros.get_layer("conv3_block1_1_conv").filters == 96
    assert by_zeros.get_layer("conv2_block1_1_conv").filters == 64
