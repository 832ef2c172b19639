import keras
import numpy as np
import pytest

import surgery
import zoo
from tests.conftest import randomize_bn_stats

np_ = keras.ops.convert_to_numpy
SHAPE = (32, 32, 3)


@pytest.fixture
def resnet(rng):
    m = zoo.build("resnet18", num_classes=4, input_shape=SHAPE)
    randomize_bn_stats(m, rng)
    return m


@pytest.fixture
def x(rng):
    return rng.uniform(0, 255, (2,) + SHAPE).astype("float32")


def _roundtrip(model, tmp_path, x):
    path = tmp_path / f"{model.name}.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    outs_a, outs_b = keras.tree.flatten(model(x)), keras.tree.flatten(loaded(x))
    for a, b in zip(outs_a, outs_b):
        np.testing.assert_allclose(np_(a), np_(b), atol=1e-6)


def _names_unique(model):
    names = [l.name for l in zoo.layers.leaf_layers(model)]
    assert len(names) == len(set(names))


def test_copy_is_deep_and_equal(resnet, x, tmp_path):
    new = surgery.copy(resnet)
    np.testing.assert_array_equal(np_(new(x)), np_(resnet(x)))
    assert not any(a is b for a, b in zip(new.layers, resnet.layers))
    before = [np_(w) for w in resnet.weights]
    new.compile(optimizer=keras.optimizers.SGD(0.1), loss="sparse_categorical_crossentropy")
    new.fit(x, np.array([0, 1]), epochs=1, verbose=0)
    for a, w in zip(before, resnet.weights):
        np.testing.assert_array_equal(a, np_(w))  # the original keeps its weights
    _roundtrip(new, tmp_path, x)


def test_cut_at_layer_stage_and_several(resnet, x, tmp_path):
    ref = keras.Model(resnet.inputs[0], resnet.get_layer("conv4_block2_out").output)
    cut = surgery.cut(resnet, "conv4_block2_out")
    np.testing.assert_array_equal(np_(cut(x)), np_(ref(x)))
    assert "conv5_block1_1_conv" not in [l.name for l in cut.layers]
    assert surgery.cut(resnet, "conv4").output_shape == cut.output_shape  # stage name
    multi = surgery.cut(resnet, ["conv2", "conv3_block2_out", -3])
    assert [tuple(o.shape) for o in multi.outputs] == [(None, 8, 8, 64), (None, 4, 4, 128), (None, 1, 1, 512)]
    _roundtrip(multi, tmp_path, x)


def test_tail_is_the_rest_of_cut(resnet, x, tmp_path):
    for at in ("conv4_block2_out", "conv3", "avg_pool"):
        tail = surgery.tail(resnet, at)
        np.testing.assert_allclose(
            np_(tail(surgery.cut(resnet, at)(x))), np_(resnet(x)), rtol=1e-5, atol=1e-6
        )
    tail = surgery.tail(resnet, "conv4")
    assert tail.input_shape == resnet.get_layer("conv4_block2_out").output.shape
    assert "conv3_block1_1_conv" not in [l.name for l in tail.layers]
    assert tail.get_layer("conv5_block1_1_conv") is not resnet.get_layer("conv5_block1_1_conv")
    _roundtrip(tail, tmp_path, np_(surgery.cut(resnet, "conv4")(x)))
    # Inside a residual block the shortcut bypasses the cut: refused, with the way out.
    with pytest.raises(surgery.SurgeryError, match="bypasses them"):
        surgery.tail(resnet, "conv4_block1_1_relu")


def test_remove_rewires_and_refuses_shape_changes(x, tmp_path):
    inp = keras.Input(SHAPE, name="img")
    a = keras.layers.Conv2D(8, 3, padding="same", name="a")(inp)
    b = keras.layers.Conv2D(8, 3, padding="same", name="b")(inp)
    s = keras.layers.Add(name="add")([a, b])
    s = keras.layers.Dropout(0.3, name="drop")(s)
    s = keras.layers.BatchNormalization(name="bn")(s)
    out = keras.layers.Dense(2, name="out")(keras.layers.GlobalAveragePooling2D(name="gap")(s))
    model = keras.Model(inp, out)
    new = surgery.remove(model, "drop")  # inference: dropout is the identity
    np.testing.assert_allclose(np_(new(x)), np_(model(x)), atol=1e-6)
    assert "drop" not in [l.name for l in new.layers]
    no_bn = surgery.remove(model, ["drop", "bn"])
    assert [l.name for l in no_bn.layers if l.name in ("drop", "bn")] == []
    with pytest.raises(surgery.SurgeryError, match="input shape .* differs from its output shape"):
        surgery.remove(model, "gap")
    with pytest.raises(surgery.SurgeryError, match="takes 2 inputs"):
        surgery.remove(model, "add")
    _roundtrip(no_bn, tmp_path, x)


@pytest.mark.parametrize("kind", ["list", "sequential", "functional", "function"])
def test_graft_heads(kind, resnet, x, tmp_path):
    base = surgery.cut(resnet, "conv5")
    if kind == "list":
        head = [keras.layers.GlobalAveragePooling2D(name="g"), keras.layers.Dense(3, name="h")]
    elif kind == "sequential":
        head = keras.Sequential([keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(3)], name="head")
    elif kind == "functional":
        i = keras.Input((1, 1, 512))
        head = keras.Model(i, keras.layers.Dense(3)(keras.layers.Flatten()(i)), name="head")
    else:

        def head(t):
            return keras.layers.Dense(3, name="h")(keras.layers.GlobalMaxPooling2D(name="g")(t))

    new = surgery.graft(base, head)
    assert new.output_shape == (None, 3)
    feats = keras.Model(new.inputs[0], new.get_layer("conv5_block2_out").output)
    np.testing.assert_array_equal(np_(feats(x)), np_(base(x)))  # untouched path identical
    _roundtrip(new, tmp_path, x)


def test_graft_at_layer_keep_outputs(resnet, x):
    head = [keras.layers.GlobalAveragePooling2D(name="aux_gap"), keras.layers.Dense(2, name="aux")]
    new = surgery.graft(resnet, head, at="conv3", keep_outputs=True)
    assert [tuple(o.shape) for o in new.outputs] == [(None, 4), (None, 2)]
    np.testing.assert_allclose(np_(new(x)[0]), np_(resnet(x)), atol=1e-6)
    only = surgery.graft(resnet, head, at="conv3_block2_out")
    assert only.output_shape == (None, 2)


def test_insert_and_replace(resnet, x, tmp_path):
    new = surgery.insert(resnet, lambda: keras.layers.Dropout(0.2), after="conv*_block2_out")
    assert sum(isinstance(l, keras.layers.Dropout) for l in new.layers) == 4
    np.testing.assert_allclose(np_(new(x)), np_(resnet(x)), atol=1e-6)
    before = surgery.insert(resnet, keras.layers.Identity(name="pre"), before="conv1_conv")
    assert before.layers[[l.name for l in before.layers].index("conv1_conv") - 1].name == "pre"
    rep = surgery.replace(resnet, "*_relu", lambda old: keras.layers.Activation("gelu", name=old.name))
    assert rep.get_layer("conv1_relu").activation.__name__ == "gelu"
    assert rep.count_params() == resnet.count_params()
    _names_unique(rep)
    _roundtrip(new, tmp_path, x)
    with pytest.raises(surgery.SurgeryError, match="duplicate layer names.*conv1_bn"):
        surgery.insert(resnet, keras.layers.Identity(name="conv1_bn"), after="conv1_conv")


def test_insert_after_the_input_layer(resnet, x):
    # The input layer is never called in the graph; inserting after it must
    # still put the layer first (augmentation goes there).
    scale = keras.layers.Rescaling(0.5, name="half")
    new = surgery.insert(resnet, scale, after=resnet.layers[0].name)
    assert new.layers[1].name == "half"
    np.testing.assert_allclose(np_(new(x)), np_(resnet(x * 0.5)), atol=1e-5)
    by_index = surgery.insert(resnet, keras.layers.Rescaling(0.5, name="half"), after=0)
    assert by_index.layers[1].name == "half"


def test_sequential_and_index_specs(x):
    seq = keras.Sequential(
        [
            keras.Input(SHAPE),
            keras.layers.Conv2D(4, 3, name="c1"),
            keras.layers.Flatten(name="f"),
            keras.layers.Dense(3, name="d"),
        ],
        name="seq",
    )
    new = surgery.insert(seq, keras.layers.Dropout(0.1, name="drop"), after=-1)
    assert isinstance(new, keras.Model) and new.layers[-1].name == "drop"
    np.testing.assert_allclose(np_(new(x)), np_(seq(x)), atol=1e-6)
    with pytest.raises(surgery.SurgeryError, match="has no known input shape"):
        surgery.copy(keras.Sequential([keras.layers.Dense(2)]))


def test_multi_input_multi_output(tmp_path, rng):
    a, b = keras.Input((4,), name="a"), keras.Input((6,), name="b")
    h = keras.layers.Concatenate(name="cat")(
        [keras.layers.Dense(5, name="da")(a), keras.layers.Dense(5, name="db")(b)]
    )
    model = keras.Model([a, b], [keras.layers.Dense(1, name="o1")(h), keras.layers.Dense(2, name="o2")(h)])
    xa, xb = rng.normal(size=(3, 4)).astype("float32"), rng.normal(size=(3, 6)).astype("float32")
    new = surgery.insert(model, keras.layers.Dense(10, name="mix"), after="cat")
    assert [tuple(o.shape) for o in new.outputs] == [(None, 1), (None, 2)]
    out = surgery.replace(model, "o2", keras.layers.Dense(7, name="o2_new"))
    assert out.outputs[1].shape == (None, 7)
    np.testing.assert_allclose(np_(out([xa, xb])[0]), np_(model([xa, xb])[0]), atol=1e-6)
    path = tmp_path / "mimo.keras"
    new.save(path)
    for p, q in zip(keras.saving.load_model(path)([xa, xb]), new([xa, xb])):
        np.testing.assert_allclose(np_(p), np_(q), atol=1e-6)


def test_nested_keras_applications_base(rng, tmp_path):
    base = keras.applications.ResNet50(weights=None, include_top=False, input_shape=SHAPE)
    inp = keras.Input(SHAPE, name="img")
    out = keras.layers.Dense(3, name="cls")(keras.layers.GlobalAveragePooling2D(name="gap")(base(inp)))
    clf = keras.Model(inp, out, name="clf")
    x = rng.uniform(0, 255, (2,) + SHAPE).astype("float32")
    # An edit outside the base keeps it nested (cloned whole)
    new = surgery.insert(clf, keras.layers.Dropout(0.5, name="drop"), after="gap")
    assert isinstance(new.get_layer("resnet50"), keras.Model)
    np.testing.assert_allclose(np_(new(x)), np_(clf(x)), atol=1e-5)
    # A cut inside inlines it
    cut = surgery.cut(clf, "conv4_block6_out")
    ref = keras.Model(base.inputs[0], base.get_layer("conv4_block6_out").output)
    np.testing.assert_allclose(np_(cut(x)), np_(ref(x)), atol=1e-5)
    _roundtrip(new, tmp_path, x)


def test_subclassed_model_is_refused():
    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.d = keras.layers.Dense(2)

        def call(self, x):
            return self.d(x)

    with pytest.raises(surgery.SurgeryError, match="subclassed model .* Rebuild it with the functional API"):
        surgery.cut(Net(), 0)


def test_resolve_errors(resnet):
    with pytest.raises(surgery.SurgeryError, match="Did you mean 'conv1_conv'"):
        surgery.cut(resnet, "conv1_cnv")
    with pytest.raises(surgery.SurgeryError, match="indices"):
        surgery.cut(resnet, 1000)
    with pytest.raises(surgery.SurgeryError, match="exactly one"):
        surgery.insert(resnet, keras.layers.Identity())


def test_bare_keras_ops_in_the_graph_are_kept(tmp_path):
    """`x + y` on KerasTensors is an operation, not a layer (keras.applications' ConvNeXt)."""
    inputs = keras.Input((4, 4, 3))
    a = keras.layers.Conv2D(3, 1, name="a")(inputs)
    out = keras.layers.GlobalAveragePooling2D(name="gap")(inputs + a)
    model = keras.Model(inputs, out)
    for edited in (
        surgery.copy(model),
        surgery.insert(model, keras.layers.Identity(name="id"), after="a"),
        surgery.graft(model, keras.layers.Dense(2, name="head")),
    ):
        assert edited(np.ones((1, 4, 4, 3), "float32")).shape[0] == 1
    x = np.random.default_rng(0).normal(size=(2, 4, 4, 3)).astype("float32")
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(surgery.copy(model)(x)), keras.ops.convert_to_numpy(model(x)), atol=1e-6
    )
