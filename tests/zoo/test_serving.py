"""zoo.export: uint8 serving artifacts that answer like the Keras model."""

import json
import os
import warnings

import keras
import numpy as np
import pytest

import zoo


@pytest.fixture
def model():
    return zoo.build("resnet18", num_classes=3, input_shape=(32, 32, 3), include_preprocessing=True)


def _batch():
    return np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3)).astype("uint8")


@pytest.mark.tf_only  # SavedModel and LiteRT are TensorFlow formats
def test_saved_model_and_litert_take_uint8_and_answer_like_keras(model, tmp_path):
    import tensorflow as tf

    x = _batch()
    want = keras.ops.convert_to_numpy(model(x.astype("float32")))
    path = zoo.export(model, str(tmp_path / "sm"), class_names=["a", "b", "c"])
    signature = tf.saved_model.load(path).signatures["serving_default"]
    assert signature.structured_input_signature[1]["images"].dtype == tf.uint8
    got = next(iter(signature(images=tf.constant(x)).values())).numpy()
    np.testing.assert_allclose(got, want, atol=1e-5)
    layer = keras.layers.TFSMLayer(path, call_endpoint="serving_default")
    np.testing.assert_allclose(next(iter(layer(tf.constant(x)).values())).numpy(), want, atol=1e-5)
    with open(os.path.join(path, "classes.json")) as f:
        assert json.load(f) == ["a", "b", "c"]

    lite = zoo.export(model, str(tmp_path / "m.tflite"), format="litert")
    with warnings.catch_warnings():  # TF's note that its interpreter moves to ai_edge_litert
        warnings.simplefilter("ignore", UserWarning)
        interpreter = tf.lite.Interpreter(model_path=lite)
    inp = interpreter.get_input_details()[0]
    assert inp["dtype"] == np.uint8
    interpreter.resize_tensor_input(inp["index"], x.shape)
    interpreter.allocate_tensors()
    interpreter.set_tensor(inp["index"], x)
    interpreter.invoke()
    out = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    np.testing.assert_allclose(out, want, atol=1e-5)


def test_onnx_takes_uint8_and_answers_like_keras(model, tmp_path):
    try:
        import onnx  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="pip install onnx"):
            zoo.export(model, str(tmp_path / "m.onnx"), format="onnx")
        return
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime runs the exported graph")
    x = _batch()
    want = keras.ops.convert_to_numpy(model(x.astype("float32")))
    try:
        path = zoo.export(model, str(tmp_path / "m.onnx"), format="onnx")
    except ImportError as e:  # the backend's converter (tf2onnx, jax2onnx, onnxscript)
        pytest.skip(f"ONNX export on {keras.backend.backend()} needs a converter: {e}")
    session = ort.InferenceSession(path)
    inp = session.get_inputs()[0]
    assert inp.type == "tensor(uint8)"
    np.testing.assert_allclose(session.run(None, {inp.name: x})[0], want, atol=1e-5)


def _small(include_preprocessing):
    """A 3-class classifier of 32x32 images, with zoo's normalisation inside or not (no zoo build:
    these checks are about arguments, and a resnet18 build costs 4 s on JAX)."""
    inputs = keras.Input((32, 32, 3))
    h = zoo.layers.ImageNormalization("torch")(inputs) if include_preprocessing else inputs
    h = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3)(h))
    return keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(h))


def test_bad_exports_are_refused_before_writing(tmp_path):
    plain = _small(include_preprocessing=False)
    with pytest.raises(ValueError, match="include_preprocessing=True"):
        zoo.export(plain, str(tmp_path / "a"))
    with pytest.raises(ValueError, match="`format` must be one of"):
        zoo.export(plain, str(tmp_path / "a"), format="tflite", input_dtype="float32")
    ok = _small(include_preprocessing=True)
    with pytest.raises(ValueError, match="predicts 3 classes"):
        zoo.export(ok, str(tmp_path / "a"), class_names=["a"])
    # Quantization: LiteRT only, a known kind, int8 calibrated on images.
    with pytest.raises(ValueError, match="applies to format='litert'"):
        zoo.export(ok, str(tmp_path / "a"), quantize="int8", representative_data=_batch())
    with pytest.raises(ValueError, match="`quantize` must be one of"):
        zoo.export(ok, str(tmp_path / "a.tflite"), format="litert", quantize="int4")
    with pytest.raises(ValueError, match="pass `representative_data`"):
        zoo.export(ok, str(tmp_path / "a.tflite"), format="litert", quantize="int8")
    if keras.backend.backend() != "tensorflow":
        with pytest.raises(RuntimeError, match="needs the TensorFlow backend"):
            zoo.export(ok, str(tmp_path / "a"))
    assert not os.listdir(tmp_path)


@pytest.mark.one_backend  # a property of the model's spec (the ImageNormalization cases: the doctest)
def test_zoo_models_with_normalisation_in_their_weights_take_raw_images():
    assert zoo._serving.takes_raw_images(zoo.build("mobilenetv3small", input_shape=(32, 32, 3)))


@pytest.mark.tf_only  # LiteRT's converter and interpreter
def test_int8_litert_takes_uint8_computes_in_integers_and_agrees_with_the_float_model(tmp_path):
    x, y, _ = zoo.datasets.shapes(16, size=32, split="train")
    keras.utils.set_random_seed(0)
    inputs = keras.Input((32, 32, 3))
    h = zoo.layers.ImageNormalization("torch")(inputs)
    for i, width in enumerate((16, 32)):
        h = keras.layers.Conv2D(width, 3, strides=2, padding="same", use_bias=False, name=f"conv{i}")(h)
        h = keras.layers.ReLU()(keras.layers.BatchNormalization(name=f"bn{i}")(h))
    h = keras.layers.GlobalAveragePooling2D()(h)
    model = keras.Model(inputs, keras.layers.Dense(6, activation="softmax")(h), name="tiny")
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy")
    model.fit(x, y, epochs=6, batch_size=16, verbose=0)
    path = zoo.export(
        model, str(tmp_path / "q.tflite"), format="litert", quantize="int8", representative_data=x[:48]
    )
    ops = [(op, types[:1] if op == "CAST" else types) for op, types, _ in zoo.litert_ops(path)]
    assert ops[0] == ("CAST", ["UINT8"]) and ops[1][0] == "QUANTIZE"  # raw pixels in
    for op, types in ops[2:]:
        if op != "DEQUANTIZE":  # the scores leave as float32
            assert set(types) <= {"INT8", "INT32"}, (op, types)
    assert any(op == "CONV_2D" for op, _ in ops)
    want = keras.ops.convert_to_numpy(model(x.astype("float32"))).argmax(-1)
    got = zoo.litert_predict(path, x)
    assert got.shape == (len(x), 6) and got.dtype == np.float32
    # Tolerance: int8 may flip a few borderline images of a barely trained model.
    assert (got.argmax(-1) == want).mean() >= 0.9
    for kind in ("float16", "dynamic"):
        other = zoo.export(model, str(tmp_path / f"{kind}.tflite"), format="litert", quantize=kind)
        assert (zoo.litert_predict(other, x).argmax(-1) == want).mean() >= 0.95


@keras.saving.register_keras_serializable(package="test_serving")
class _Elementwise(keras.layers.Layer):
    """One element-wise op: `round` has a float LiteRT kernel only, `erf` no LiteRT kernel at all."""

    def __init__(self, op, **kwargs):
        super().__init__(**kwargs)
        self.op = op

    def call(self, x):
        return getattr(keras.ops, self.op)(x)

    def get_config(self):
        return {**super().get_config(), "op": self.op}


@pytest.mark.tf_only  # LiteRT's converter
def test_int8_names_the_layers_it_cannot_quantize_and_writes_nothing(tmp_path):
    def toy(op):
        inputs = keras.Input((16, 16, 3))
        h = keras.layers.Conv2D(4, 3, name="conv")(inputs)
        h = keras.layers.GlobalAveragePooling2D()(_Elementwise(op, name=f"my_{op}")(h))
        return keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(h), name="toy")

    images = np.random.default_rng(0).uniform(0, 1, (8, 16, 16, 3)).astype("float32")
    path = str(tmp_path / "q.tflite")
    kwargs = dict(format="litert", quantize="int8", representative_data=images, input_dtype="float32")
    # The converter would keep ROUND in float32 without a word: refused, the layer named.
    with pytest.raises(zoo.QuantizationError, match=r"'my_round' \(ROUND\).*quantize='float16'") as caught:
        zoo.export(toy("round"), path, **kwargs)
    assert caught.value.layers == {"my_round": "ROUND"} and not os.listdir(tmp_path)
    # float16 keeps it as it is (a float file by design).
    assert zoo.export(toy("round"), path, format="litert", quantize="float16", input_dtype="float32") == path
    os.remove(path)
    # Erf has no LiteRT kernel in any precision: said so, with the layer, not "try float16".
    with pytest.raises(
        ValueError, match=r"no built-in op for Erf \(layer 'my_erf' of 'toy'\), in any precision"
    ):
        zoo.export(toy("erf"), path, **kwargs)
    assert not os.listdir(tmp_path)
