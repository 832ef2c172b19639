"""Every edit on the ordinary Keras 3 layer types (small shapes, every backend).

For each layer: insert an Identity before and after it (outputs unchanged),
remove it where it keeps its shape (the consumers rewired), copy the model;
the original is untouched, the copy keeps the input structure (no Keras
structure warning) and survives a `.keras` round trip.
"""

import warnings

import keras
import numpy as np
import pytest

import surgery

L = keras.layers

# name -> (input shape, input dtype, layer factory, shape-preserving)
CASES = {
    "dense": ((6,), "float32", lambda: L.Dense(6), True),
    "conv1d": ((8, 3), "float32", lambda: L.Conv1D(3, 3, padding="same"), True),
    "conv2d": ((8, 8, 3), "float32", lambda: L.Conv2D(3, 3, padding="same"), True),
    "conv3d": ((4, 4, 4, 2), "float32", lambda: L.Conv3D(2, 3, padding="same"), True),
    "conv2d_transpose": ((4, 4, 3), "float32", lambda: L.Conv2DTranspose(3, 2, strides=2), False),
    "depthwise": ((8, 8, 3), "float32", lambda: L.DepthwiseConv2D(3, padding="same"), True),
    "separable": ((8, 8, 3), "float32", lambda: L.SeparableConv2D(4, 3), False),
    "maxpool2d": ((8, 8, 3), "float32", lambda: L.MaxPooling2D(2), False),
    "avgpool1d": ((8, 3), "float32", lambda: L.AveragePooling1D(2), False),
    "gap1d": ((8, 3), "float32", lambda: L.GlobalAveragePooling1D(), False),
    "gmp2d": ((8, 8, 3), "float32", lambda: L.GlobalMaxPooling2D(), False),
    "cropping2d": ((8, 8, 3), "float32", lambda: L.Cropping2D(1), False),
    "zeropad2d": ((8, 8, 3), "float32", lambda: L.ZeroPadding2D(1), False),
    "upsampling2d": ((4, 4, 3), "float32", lambda: L.UpSampling2D(), False),
    "flatten": ((4, 4, 3), "float32", lambda: L.Flatten(), False),
    "reshape": ((4, 6), "float32", lambda: L.Reshape((6, 4)), False),
    "relu": ((6,), "float32", lambda: L.ReLU(), True),
    "softmax": ((6,), "float32", lambda: L.Softmax(), True),
    "dropout": ((6,), "float32", lambda: L.Dropout(0.3), True),
    "spatial_dropout": ((8, 3), "float32", lambda: L.SpatialDropout1D(0.3), True),
    "gaussian_noise": ((6,), "float32", lambda: L.GaussianNoise(0.1), True),
    "gaussian_dropout": ((6,), "float32", lambda: L.GaussianDropout(0.1), True),
    "alpha_dropout": ((6,), "float32", lambda: L.AlphaDropout(0.1), True),
    "batchnorm": ((6,), "float32", lambda: L.BatchNormalization(), True),
    "layernorm": ((6,), "float32", lambda: L.LayerNormalization(), True),
    "simple_rnn_seq": ((5, 3), "float32", lambda: L.SimpleRNN(3, return_sequences=True), True),
    "gru": ((5, 3), "float32", lambda: L.GRU(4), False),
    "lstm_seq": ((5, 3), "float32", lambda: L.LSTM(3, return_sequences=True), True),
    "bidirectional": ((5, 3), "float32", lambda: L.Bidirectional(L.LSTM(2)), False),
    "time_distributed": ((5, 3), "float32", lambda: L.TimeDistributed(L.Dense(3)), True),
}


def _structure_warnings_fail():
    """Keras' input-structure warning on a model the engine produced is a bug."""
    warnings.filterwarnings("error", message=r"[\s\S]*structure of `inputs`", category=UserWarning)


def _model(case, functional=True):
    shape, dtype, factory, _ = CASES[case]
    if not functional:
        return keras.Sequential([keras.Input(shape, dtype=dtype), factory(), L.Flatten(name="out_flat")])
    inp = keras.Input(shape, dtype=dtype, name="x")
    y = factory()(inp)
    return keras.Model(inp, L.Flatten(name="out_flat")(y) if len(y.shape) > 2 else y, name="m")


def _data(model):
    shape = tuple(model.inputs[0].shape[1:])
    return np.random.default_rng(0).uniform(-1, 1, (2,) + shape).astype("float32")


def _out(model, x):
    return keras.ops.convert_to_numpy(model(x, training=False))


@pytest.mark.parametrize("case", sorted(CASES))
def test_insert_remove_copy_on_every_layer_type(case, tmp_path):
    model = _model(case)
    x = _data(model)
    ref = _out(model, x)
    target = [l for l in model.layers if not isinstance(l, L.InputLayer)][0]
    with warnings.catch_warnings():
        _structure_warnings_fail()
        same = [
            surgery.copy(model),
            surgery.insert(model, L.Identity(name="before"), before=target.name),
            surgery.insert(model, L.Identity(name="after"), after=target.name),
        ]
        for new in same:
            assert new.inputs[0].name == "x" and not isinstance(new.input, list)
            np.testing.assert_allclose(_out(new, x), ref, atol=1e-5)
        if CASES[case][3]:  # shape-preserving: its consumer takes its input instead
            removed = surgery.remove(model, target.name)
            assert target.name not in {l.name for l in removed.layers}
            assert _out(removed, x).shape == ref.shape
    np.testing.assert_array_equal(_out(model, x), ref)  # original untouched
    path = tmp_path / "m.keras"
    same[1].save(path)
    np.testing.assert_allclose(_out(keras.saving.load_model(path), x), ref, atol=1e-5)


@pytest.mark.parametrize("case", ["batchnorm", "dropout", "lstm_seq", "gap1d"])
def test_sequential_models_edit_too(case):
    model = _model(case, functional=False)
    x = _data(model)
    new = surgery.insert(model, L.Identity(name="id"), before=model.layers[0].name)
    np.testing.assert_allclose(_out(new, x), _out(model, x), atol=1e-5)


@pytest.mark.parametrize(
    "old, new",
    [
        ("batchnorm", lambda: L.LayerNormalization(name="new")),
        ("batchnorm", lambda: L.Identity(name="new")),
        ("softmax", lambda: L.Activation("softmax", name="new")),
        ("gap1d", lambda: L.GlobalMaxPooling1D(name="new")),
        ("lstm_seq", lambda: L.Conv1D(3, 1, name="new")),
    ],
)
def test_replace_passes_only_the_keywords_the_new_layer_takes(old, new):
    model = _model(old)
    target = [l for l in model.layers if not isinstance(l, L.InputLayer)][0]
    edited = surgery.replace(model, target.name, new())
    assert _out(edited, _data(model)).shape == _out(model, _data(model)).shape


def _embedding_lstm(mask_zero):
    inp = keras.Input((5,), dtype="int32", name="tokens")
    x = L.Embedding(10, 4, mask_zero=mask_zero, name="emb")(inp)
    x = L.LSTM(3, name="lstm")(x)
    return keras.Model(inp, L.Dense(2, name="out")(x))


def test_masks_survive_copy_and_edits():
    model = _embedding_lstm(True)
    tokens = np.array([[1, 2, 0, 0, 0], [3, 4, 5, 0, 0]])
    ref = _out(model, tokens)
    unmasked = _embedding_lstm(False)
    unmasked.set_weights(model.get_weights())
    assert not np.allclose(_out(unmasked, tokens), ref)  # the mask matters here
    with warnings.catch_warnings():
        _structure_warnings_fail()
        for new in (
            surgery.copy(model),
            surgery.insert(model, L.Identity(name="id"), after="emb"),
            surgery.insert(model, L.Identity(name="id"), before="lstm"),
        ):
            np.testing.assert_allclose(_out(new, tokens), ref, atol=1e-5)  # so it reached the LSTM
        assert _out(surgery.replace(model, "out", L.Dense(2, name="out2")), tokens).shape == ref.shape
    inp = keras.Input((5, 3), name="seq")
    masked = keras.Model(inp, L.GRU(2, name="gru")(L.Masking(0.0, name="masking")(inp)))
    seq = np.random.default_rng(0).uniform(size=(2, 5, 3)).astype("float32")
    seq[:, 3:] = 0
    np.testing.assert_allclose(_out(surgery.copy(masked), seq), _out(masked, seq), atol=1e-6)


def test_dict_and_list_inputs_keep_their_structure():
    a, b = keras.Input((3,), name="a"), keras.Input((3,), name="b")
    out = L.Dense(2, name="d")(L.Concatenate(name="cat")([a, b]))
    as_dict = keras.Model({"a": a, "b": b}, out)
    as_list = keras.Model([a, b], out)
    xa, xb = np.ones((1, 3), "float32"), np.zeros((1, 3), "float32")
    with warnings.catch_warnings():
        _structure_warnings_fail()
        new = surgery.insert(as_dict, L.Identity(name="id"), after="cat")
        np.testing.assert_allclose(_out(new, {"a": xa, "b": xb}), _out(as_dict, {"a": xa, "b": xb}))
        new = surgery.copy(as_list)
        np.testing.assert_allclose(_out(new, [xa, xb]), _out(as_list, [xa, xb]))


def test_merges_and_changed_weights_get_surgery_errors():
    a = keras.Input((4,), name="a")
    s = L.Add(name="add")([L.Dense(4, name="b1")(a), L.Dense(4, name="b2")(a)])
    with pytest.raises(surgery.SurgeryError, match="merges 2 inputs.*after="):
        surgery.insert(keras.Model(a, s), L.Dropout(0.1), before="add")
    f = keras.Input((4, 4, 2))
    m = keras.Model(f, L.Dense(3, name="dd")(L.Flatten(name="fl")(f)))
    with pytest.raises(surgery.SurgeryError, match=r"'dd' can no longer take its weights.*strict=False"):
        surgery.replace(m, "fl", L.GlobalAveragePooling2D(name="gap"))
