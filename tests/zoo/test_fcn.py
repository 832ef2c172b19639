"""FCN: exact size, any input size, bilinear upsampling, convolutionalize, weights."""

import warnings

import keras
import numpy as np
import pytest

import zoo
from zoo._sizes import SIZES
from zoo.tasks import fcn as blocks


def _np(x):
    return keras.ops.convert_to_numpy(x)


@pytest.mark.one_backend
def test_fcn8s_vgg16_parameter_count():
    assert zoo.build("fcn8s", num_classes=21).count_params() == 134_489_759


# Each variant on every backend, the rest of the matrix (GoogLeNet, 34 s on JAX, too) on one.
SIZE_MATRIX = [
    (v, b)
    if (v, b) in {("fcn32s", "resnet18"), ("fcn16s", "resnet18"), ("fcn8s", "vgg11")}
    else pytest.param(v, b, marks=pytest.mark.one_backend)
    for v in ("fcn32s", "fcn16s", "fcn8s")
    for b in ("vgg11", "resnet18", "googlenet")
]


@pytest.mark.parametrize("variant,backbone", SIZE_MATRIX)
def test_output_size_equals_input_size(variant, backbone):
    model = zoo.build(variant, backbone=backbone, num_classes=3)
    for h, w in ((75, 100), (33, 47)):  # odd sizes: padding and crops must line up
        x = np.zeros((1, h, w, 3), "float32")
        assert tuple(_np(model(x)).shape) == (1, h, w, 3), (h, w)


def _one_per_family():
    """The smallest classification model of each family and layout (a family shares its body code)."""
    picked = {}
    for name in zoo.list_models(task="classification"):
        spec = zoo.get_spec(name)
        layout = name.rsplit("_", 1)[-1] if name.endswith(("_tv", "_paper", "_bn")) else ""
        size = SIZES[name][0]
        if (spec.family, layout) not in picked or size < picked[spec.family, layout][0]:
            picked[spec.family, layout] = (size, name)
    return sorted(name for _, name in picked.values())


@pytest.mark.one_backend  # structure: the same graph on every backend
@pytest.mark.parametrize("backbone", _one_per_family())
def test_fcn8s_builds_on_every_backbone_family(backbone):
    spec = zoo.get_spec(backbone)
    side = max(64, -(-spec.min_size // 32) * 32)
    # An odd size (padding and crops must line up); NASNet needs a fixed one.
    h, w = (side, side) if spec.hooks.static_input else (side - 5, side + 27)
    model = zoo.build(
        "fcn8s", backbone=backbone, num_classes=3, input_shape=(h, w, 3) if spec.hooks.static_input else None
    )
    assert tuple(_np(model(np.zeros((1, h, w, 3), "float32"))).shape) == (1, h, w, 3)
    assert zoo.stages_of(model) == list(spec.stages)  # the backbone's stamp and stages survive
    valid_padding = spec.family in ("inception", "inception_resnet")
    assert isinstance(model.get_layer("score"), blocks.FitLike if valid_padding else blocks.CropLike)


def test_fcn_refuses_a_static_backbone_without_a_size():
    with pytest.raises(ValueError, match="needs a fixed input size"):
        zoo.build("fcn8s", backbone="nasnetmobile", num_classes=3, input_shape=(None, None, 3))


def test_fit_like_centres_and_extends_edges():
    x = np.arange(12.0, dtype="float32").reshape(1, 3, 4, 1)
    grow = _np(blocks.FitLike()([x, np.zeros((1, 5, 2, 1), "float32")]))[0, :, :, 0]
    # Rows: one repeated above, one below; columns: the centre two of four.
    np.testing.assert_array_equal(grow, [[1, 2], [1, 2], [5, 6], [9, 10], [9, 10]])


def test_skips_align_and_start_at_zero():
    model = zoo.build("fcn8s", backbone="vgg11", num_classes=4, classifier_activation=None)
    for name in ("score_pool4", "score_pool3"):
        assert not np.any(_np(model.get_layer(name).kernel))
    # A 375x500 image (PASCAL size) keeps its size; pool3/pool4 scores and the
    # cropped upsampled maps have equal shapes (Add would fail otherwise).
    assert model.compute_output_shape((1, 375, 500, 3)) == (1, 375, 500, 4)
    for fuse in ("fuse_pool4", "fuse_pool3"):
        a, b = model.get_layer(fuse).input
        assert a.shape[1:] == b.shape[1:]


@pytest.mark.parametrize("factor", [2, 8])
def test_bilinear_deconvolution_is_bilinear_upsampling_inside(factor):
    rng = np.random.default_rng(factor)
    x = rng.standard_normal((1, 9, 7, 2)).astype("float32")
    inputs = keras.Input((9, 7, 2))
    up = blocks.bilinear_upsample(inputs, factor, name="up")
    ref = keras.Input((9 * factor, 7 * factor, 2))
    out = blocks.CropLike(factor // 2)([up, ref])
    y = _np(keras.Model([inputs, ref], out)([x, np.zeros((1, 9 * factor, 7 * factor, 2), "float32")]))
    expected = _np(
        keras.ops.image.resize(x, (9 * factor, 7 * factor), interpolation="bilinear", antialias=False)
    )
    f = factor
    np.testing.assert_allclose(y[:, f:-f, f:-f], expected[:, f:-f, f:-f], atol=1e-5)
    assert not np.allclose(y[:, :1], expected[:, :1])  # borders differ (zero padding)


@pytest.mark.one_backend  # a graph rewrite and a kernel reshape: the same on every backend
def test_convolutionalize_vgg16_equals_dense_head_and_gives_score_maps():
    vgg = zoo.build("vgg16", num_classes=10, input_shape=(224, 224, 3))
    conv = zoo.convolutionalize(vgg)
    assert not any(isinstance(l, keras.layers.Dense) for l in conv.layers)
    x = np.random.default_rng(0).uniform(0, 255, (1, 224, 224, 3)).astype("float32")
    dense_out = _np(vgg(x))
    conv_out = _np(conv(x))
    assert conv_out.shape == (1, 1, 1, 10)
    np.testing.assert_allclose(conv_out[:, 0, 0], dense_out, atol=1e-5)
    assert conv.compute_output_shape((1, 384, 384, 3)) == (1, 6, 6, 10)
    # The FCN built from this classifier gets fc1/fc2 as fc6/fc7.
    fcn = zoo.build("fcn32s", num_classes=5, weights=vgg)
    np.testing.assert_array_equal(
        _np(fcn.get_layer("fc6").kernel), _np(vgg.get_layer("fc1").kernel).reshape(7, 7, 512, 4096)
    )
    np.testing.assert_array_equal(_np(fcn.get_layer("fc7").kernel)[0, 0], _np(vgg.get_layer("fc2").kernel))
    np.testing.assert_array_equal(
        _np(fcn.get_layer("block3_conv2").kernel), _np(vgg.get_layer("block3_conv2").kernel)
    )


def test_convolutionalize_refuses_what_it_cannot_do():
    m = zoo.build("resnet18", num_classes=3, input_shape=(32, 32, 3))
    with pytest.raises(ValueError, match="not a Flatten"):
        zoo.convolutionalize(m)
    conv_only = zoo.build("vgg11", include_top=False, input_shape=(32, 32, 3))
    with pytest.raises(ValueError, match="no Dense layer"):
        zoo.convolutionalize(conv_only)


def test_backbone_weights_flow_into_fcn_and_fcn_weights_round_trip(tmp_path):
    backbone = zoo.build("resnet18", include_top=False, input_shape=(64, 64, 3))
    path = str(tmp_path / "r18.weights.h5")
    backbone.save_weights(path)
    fcn = zoo.build("fcn16s", backbone="resnet18", num_classes=3, weights=path)
    np.testing.assert_array_equal(
        _np(fcn.get_layer("conv4_block2_2_conv").kernel),
        _np(backbone.get_layer("conv4_block2_2_conv").kernel),
    )
    full = str(tmp_path / "fcn.weights.h5")
    fcn.save_weights(full)
    again = zoo.build("fcn16s", backbone="resnet18", num_classes=3, weights=full)
    x = np.random.default_rng(0).uniform(0, 1, (1, 40, 56, 3)).astype("float32")
    np.testing.assert_array_equal(_np(again(x)), _np(fcn(x)))
    with pytest.raises(zoo.weights.WeightFileError, match="do not fit"):
        zoo.build("fcn16s", backbone="vgg11", num_classes=3, weights=full)


@pytest.mark.one_backend  # the weight reader's name matching, the same on every backend
def test_keras_applications_backbone_weights_flow_into_fcn(tmp_path):
    backbone = zoo.build("mobilenetv2", include_top=False, input_shape=(64, 64, 3))
    backbone.get_layer("block_16_project").kernel.assign(
        np.random.default_rng(0).normal(size=backbone.get_layer("block_16_project").kernel.shape)
    )
    path = str(tmp_path / "mobilenetv2.weights.h5")
    backbone.save_weights(path)
    fcn = zoo.build("fcn8s", backbone="mobilenetv2", num_classes=3, weights=path)
    np.testing.assert_array_equal(
        _np(fcn.get_layer("block_16_project").kernel), _np(backbone.get_layer("block_16_project").kernel)
    )


def test_segmentation_metrics_and_training_step():
    # Logits + from_logits: Keras 3.15's torch backend fails in backward for
    # probabilities on 4D outputs (nll_loss on a moved axis). A keras.applications
    # backbone; MobileNet (v1): TensorFlow traces its step in 9 s, MobileNetV2's in 17 s.
    model = zoo.build("fcn8s", backbone="mobilenet", num_classes=3, classifier_activation=None)
    model.compile(
        "adam",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=zoo.tasks.fcn.segmentation_metrics(3),
    )
    x = np.random.default_rng(0).uniform(0, 1, (2, 64, 64, 3)).astype("float32")
    y = np.random.default_rng(1).integers(0, 3, (2, 64, 64)).astype("int32")  # JAX has no int64 by default
    logs = model.fit(x, y, epochs=1, verbose=0).history
    assert 0.0 <= logs["mean_iou"][0] <= 1.0 and 0.0 <= logs["pixel_accuracy"][0] <= 1.0


def test_mean_iou_equals_keras_and_does_not_warn():
    # zoo.tasks.fcn.MeanIoU counts the confusion matrix in int32 (Keras' int64
    # indices warn on JAX every step): the same result as Keras' own, with
    # out-of-range labels, an ignored class and sample weights.
    rng = np.random.default_rng(0)
    y_true = rng.integers(-1, 5, (2, 8, 8)).astype("int32")  # -1 and 4: out of range for 4 classes
    scores = rng.uniform(0, 1, (2, 8, 8, 4)).astype("float32")
    weights = rng.uniform(0, 2, (2, 8, 8)).astype("float32")
    for kwargs, sw in (({}, None), ({"ignore_class": 2}, weights)):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            ours = zoo.tasks.fcn.MeanIoU(4, sparse_y_pred=False, **kwargs)
            ours.update_state(y_true, scores, sample_weight=sw)
        with warnings.catch_warnings():  # Keras' own warns on JAX (int64) and for float weights
            warnings.simplefilter("ignore")
            theirs = keras.metrics.MeanIoU(4, sparse_y_pred=False, **kwargs)
            theirs.update_state(y_true, scores, sample_weight=sw)
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(ours.total_cm), keras.ops.convert_to_numpy(theirs.total_cm), rtol=1e-5
        )
        assert abs(float(ours.result()) - float(theirs.result())) < 1e-6


def test_fcn_card_and_errors():
    card = zoo.info("fcn8s")
    assert card.params == 134_489_759 and card.num_classes == 21
    with pytest.raises(ValueError, match="Did you mean"):
        zoo.build("fcn8s", backbone="resnet5")
    with pytest.raises(ValueError, match="does not take `aux_logits`"):
        zoo.build("fcn8s", aux_logits=True)
