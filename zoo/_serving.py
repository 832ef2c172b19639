"""`zoo.export`: a serving artifact that takes raw uint8 images.

In-model preprocessing (`include_preprocessing=True`) exists so that a client
sends image bytes and nothing else; Keras' own `model.export` keeps the
float32 input of the model. `zoo.export` puts a uint8 input in front (cast
inside the graph), writes the artifact through Keras' exporters and stores
the class names beside it.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Sequence
from typing import Any

import keras

from zoo._features import spec_of
from zoo.layers import ImageNormalization, leaf_layers

FORMATS = {"saved_model": "tf_saved_model", "litert": "litert", "onnx": "onnx"}
INPUT_DTYPES = ("uint8", "float32")
# LiteRT post-training quantization: int8 weights with float compute
# ("dynamic"), float16 weights ("float16"), or int8 weights and activations
# calibrated on representative images ("int8").
QUANTIZATIONS = ("dynamic", "float16", "int8")


class QuantizationError(ValueError):
    """An int8 LiteRT export that would leave layers in float; `layers` maps each to its op."""

    def __init__(self, message: str, layers: dict[str, str]):
        super().__init__(message)
        self.layers = layers


def takes_raw_images(model: keras.Model) -> bool:
    """Whether `model` takes RGB 0-255 images (its normalisation is inside).

    True when it has zoo's `ImageNormalization` layer (built with
    `include_preprocessing=True`) or is a zoo model whose weights expect raw
    pixels (preprocessing `"none"`: keras.applications' EfficientNet,
    MobileNetV3, ConvNeXt).

    Example:

        >>> import zoo
        >>> zoo._serving.takes_raw_images(zoo.build("resnet18", input_shape=(32, 32, 3),
        ...                                       include_preprocessing=True))
        True
        >>> zoo._serving.takes_raw_images(zoo.build("resnet18", input_shape=(32, 32, 3)))
        False
    """

    if any(isinstance(layer, ImageNormalization) for layer in leaf_layers(model)):
        return True
    spec = spec_of(model)
    return spec is not None and spec.preprocessing == "none"


def _class_names_path(path: str) -> str:
    return os.path.join(path, "classes.json") if os.path.isdir(path) else path + ".classes.json"


def export(
    model: keras.Model,
    path: str | os.PathLike,
    *,
    format: str = "saved_model",
    input_dtype: str = "uint8",
    class_names: Sequence[str] | None = None,
    quantize: str | None = None,
    representative_data: Any = None,
    verbose: bool = False,
) -> str:
    """Export a model for serving, with a uint8 image input.

    Args:
        model: keras.Model. One image input `(height, width, 3)`.
        path: str. Where to write: a folder for `"saved_model"`, a file for
            `"litert"` (`.tflite`) and `"onnx"` (`.onnx`).
        format: str. `"saved_model"` (TensorFlow SavedModel with a
            `serving_default` signature; reload with `tf.saved_model.load`
            or `keras.layers.TFSMLayer`), `"litert"` (TensorFlow Lite) or
            `"onnx"` (needs the `onnx` package). Defaults to
            `"saved_model"`.
        input_dtype: str. `"uint8"`: the artifact takes raw 0-255 images and
            casts them inside (the model must normalise inside, see
            `takes_raw_images`); `"float32"`: the model's own input.
            Defaults to `"uint8"`.
        class_names: sequence of str. Written as JSON beside the artifact
            (`<folder>/classes.json`, or `<file>.classes.json`), the order of
            the model's scores (or the values of a class map). Defaults to
            None (nothing written).
        quantize: str. LiteRT post-training quantization (`format="litert"`
            only): `"int8"` (weights and activations int8, calibrated on
            `representative_data`; the uint8 input is cast and quantized
            inside, the scores come out as float32), `"float16"` (float16
            weights) or `"dynamic"` (int8 weights, float activations).
            Defaults to None (float32).
        representative_data: images to calibrate `"int8"` on: an array
            `(n, height, width, 3)` in the artifact's input range (0-255 for
            uint8), or an iterable of such batches or of `(images, labels)`.
            A few hundred training images are enough. Defaults to None.
        verbose: bool. Keras' export messages. Defaults to False.

    Returns:
        The path written.

    Example:

        >>> import os, tempfile, zoo
        >>> model = zoo.build("resnet18", num_classes=3, input_shape=(32, 32, 3),
        ...                   include_preprocessing=True)
        >>> out = zoo.export(model, os.path.join(tempfile.mkdtemp(), "served"),
        ...                  class_names=["a", "b", "c"])  # doctest: +SKIP
    """
    if format not in FORMATS:
        raise ValueError(f"`format` must be one of {sorted(FORMATS)}. Received: format={format!r}")
    if input_dtype not in INPUT_DTYPES:
        raise ValueError(
            f"`input_dtype` must be one of {INPUT_DTYPES}. Received: input_dtype={input_dtype!r}"
        )
    if len(model.inputs) != 1 or len(model.inputs[0].shape) != 4:
        raise ValueError(
            "zoo.export serves one image input (batch, height, width, channels). Received a "
            f"model with inputs {[tuple(i.shape) for i in model.inputs]}."
        )
    if input_dtype == "uint8" and not takes_raw_images(model):
        raise ValueError(
            f"Model {model.name!r} expects normalised float input, so raw uint8 pixels would be "
            "fed to it unnormalised. Build it with `include_preprocessing=True`, or export "
            "with input_dtype='float32'."
        )
    if class_names is not None and len(model.outputs[0].shape) in (2, 4):  # scores (per image or pixel)
        n = model.outputs[0].shape[-1]
        if len(class_names) != n:
            raise ValueError(f"`class_names` has {len(class_names)} names; the model predicts {n} classes.")
    if format == "litert" and not os.fspath(path).endswith(".tflite"):
        raise ValueError(f"format='litert' writes a `.tflite` file. Received: path={os.fspath(path)!r}")
    if quantize is not None:
        if quantize not in QUANTIZATIONS:
            raise ValueError(
                f"`quantize` must be one of {QUANTIZATIONS} or None. Received: quantize={quantize!r}"
            )
        if format != "litert":
            raise ValueError(
                f"`quantize` applies to format='litert'. Received: format={format!r}, quantize={quantize!r}"
            )
        if quantize == "int8" and representative_data is None:
            raise ValueError(
                "quantize='int8' calibrates on images: pass `representative_data` (a few hundred "
                "training images, an array (n, height, width, 3) or batches of them)."
            )
    if format in ("saved_model", "litert") and keras.backend.backend() != "tensorflow":
        raise RuntimeError(
            f"format={format!r} needs the TensorFlow backend (KERAS_BACKEND=tensorflow); this "
            f"process runs {keras.backend.backend()!r}. Export from a TensorFlow process (a "
            "`.keras` file loads on any backend)."
        )
    if format == "onnx":
        try:
            import onnx  # noqa: F401
        except ImportError:
            raise ImportError("format='onnx' needs the `onnx` package: pip install onnx") from None
    path = os.fspath(path)
    images = keras.Input(model.inputs[0].shape[1:], dtype=input_dtype, name="images")
    x = images
    if input_dtype == "uint8":
        # The cast lives in the graph: clients send bytes, the model's own
        # normalisation (or Keras' inside) does the rest.
        x = ImageNormalization("none", name="to_float")(x)
    # training=False fixed in the graph: Keras' augmentation layers default
    # to training=True when called without it, and a traced export calls
    # without it (a tuned model's RandomFlip/RandomRotation would otherwise
    # transform every served image).
    served = keras.Model(images, model(x, training=False), name=f"{model.name}_served")
    options = {}
    if format == "onnx":
        # Keras' ONNX export reads the signature off a model that has been
        # called; `served` never has, so it is given explicitly.
        spec = keras.InputSpec(shape=tuple(images.shape), dtype=input_dtype, name="images")
        options["input_signature"] = [spec]
    if quantize is not None:
        options.update(_quantization_options(quantize, representative_data, images.shape[1:], input_dtype))
    try:
        served.export(path, format=FORMATS[format], verbose=verbose, **options)
    except Exception as e:
        missing = _missing_op(str(e), model)
        if missing is not None:  # no LiteRT kernel at all: no quantization helps
            raise ValueError(
                f"LiteRT has no built-in op for {missing}, in any precision: replace that layer, or "
                "export format='saved_model' or 'onnx'."
            ) from e
        if quantize is None:
            raise
        first = next((line.strip() for line in str(e).splitlines() if line.strip()), type(e).__name__)
        raise ValueError(
            f"LiteRT could not quantize {model.name!r} as {quantize!r}: {first} "
            "Try quantize='float16' or 'dynamic', or export float32 (quantize=None)."
        ) from e
    if quantize == "int8":
        # The converter leaves an op it has no int8 kernel for in float32,
        # between DEQUANTIZE and QUANTIZE, without a word: such a file is not
        # the integer model that was asked for (an int8-only accelerator
        # refuses it), so it is removed and the layers are named.
        floats = float_layers(path, model)
        if floats:
            os.remove(path)
            named = ", ".join(f"{layer!r} ({op})" for layer, op in list(floats.items())[:5])
            raise QuantizationError(
                f"LiteRT cannot quantize {len(floats)} layer(s) of {model.name!r} to int8; they would run in "
                f"float32: {named}. Replace them, or export with quantize='float16' or 'dynamic'.",
                floats,
            )
    if class_names is not None:
        with open(_class_names_path(path), "w") as f:
            json.dump(list(class_names), f)
    return path


def litert_ops(path: str | os.PathLike) -> list[tuple[str, list[str], list[str]]]:
    """`[(op, tensor types, output names)]` of a LiteRT file, in execution order, read off LiteRT's analyzer.

    `tensor types` are those of the op's inputs then outputs ("INT8",
    "FLOAT32", ...); `output names` the names of its output tensors (their
    path names the Keras layer the op came from).

    Example:

        >>> import os, tempfile, numpy as np, zoo
        >>> m = zoo.build("resnet18", num_classes=3, input_shape=(32, 32, 3),
        ...               include_preprocessing=True)
        >>> path = zoo.export(m, os.path.join(tempfile.mkdtemp(), "m.tflite"), format="litert")
        >>> zoo.litert_ops(path)[0][:2]
        ('CAST', ['UINT8', 'FLOAT32'])
    """
    import contextlib
    import io

    import tensorflow as tf  # LiteRT's analyzer (documented, TF-only like the converter)

    text = io.StringIO()
    with contextlib.redirect_stdout(text):
        tf.lite.experimental.Analyzer.analyze(model_path=os.fspath(path))
    tensors = {i: (name, kind) for i, name, kind in _TENSOR.findall(text.getvalue())}
    ops = []
    for op, inputs, outputs in _OP.findall(text.getvalue()):
        ins, outs = re.findall(r"T#(\d+)", inputs), re.findall(r"T#(\d+)", outputs)
        ops.append((op, [tensors[t][1] for t in ins + outs], [tensors[t][0] for t in outs]))
    return ops


def float_layers(path: str | os.PathLike, model: keras.Model) -> dict[str, str]:
    """`{layer name: LiteRT op}` for the ops of an int8 LiteRT file of `model` that compute in float.

    The input's QUANTIZE (and CAST) and the scores' DEQUANTIZE are the
    file's boundary, not float compute; everything else of a full-integer
    export is integer.
    """
    names = {layer.name for layer in leaf_layers(model)}
    found = {}
    for op, types, outputs in litert_ops(path):
        if op in ("QUANTIZE", "DEQUANTIZE", "CAST") or not {"FLOAT32", "FLOAT16"} & set(types):
            continue
        found.setdefault(_layer_named(outputs[0] if outputs else "", names) or outputs[0], op)
    return found


def _layer_named(tensor_name: str, names) -> str | None:
    """The deepest Keras layer in a converted tensor's name (`served_1/model_1/my_layer_1/Round`)."""
    parts = [p for chunk in tensor_name.split(";") for p in chunk.split("/")]
    for part in reversed(parts):
        for candidate in (part, re.sub(r"_\d+$", "", part)):
            if candidate in names:
                return candidate
    return None


def _missing_op(message: str, model: keras.Model) -> str | None:
    """`"Erf (layer 'my_erf')"` when the converter found an op LiteRT has no kernel for, else None."""
    op = re.search(r"'tf\.(\w+)' op is neither a custom op nor a flex op", message)
    if op is None:
        return None
    where = re.search(r'fused\["' + op.group(1) + r':", "([^"@]+)', message)
    layer = _layer_named(where.group(1), {l.name for l in leaf_layers(model)}) if where else None
    return f"{op.group(1)}" + (f" (layer {layer!r} of {model.name!r})" if layer else f" (in {model.name!r})")


_TENSOR = re.compile(r"^\s*T#(\d+)\((.*?)\) shape.*?type:(\w+)", re.M)
_OP = re.compile(r"^\s*Op#\d+ (\w+)\(([^)]*)\) -> \[([^\]]*)\]", re.M)


def _quantization_options(quantize, data, shape, input_dtype):
    """Keras' LiteRT converter settings (`model.export(format="litert", **options)`) for `quantize`."""
    import numpy as np
    import tensorflow as tf  # the LiteRT converter's own constants

    options = {"optimizations": [tf.lite.Optimize.DEFAULT]}
    if quantize == "float16":
        options["target_spec"] = {"supported_types": [tf.float16]}
    if quantize != "int8":
        return options
    batches = [data] if hasattr(data, "shape") else data
    images = []
    for batch in batches:
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        images.extend(np.asarray(keras.ops.convert_to_numpy(x)))
    if not images or tuple(images[0].shape) != tuple(shape):
        got = tuple(images[0].shape) if images else "no images"
        raise ValueError(
            f"`representative_data` must hold images of shape {tuple(shape)} (the model's input). "
            f"Received: {got}."
        )

    def calibration():
        for image in images:
            yield [np.asarray(image, input_dtype)[None]]

    options["representative_dataset"] = calibration
    # Every op int8; the uint8 input is cast and quantized inside the graph.
    options["target_spec"] = {"supported_ops": [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]}
    return options


def litert_predict(
    path: str | os.PathLike, images: Any, *, threads: int | None = None, return_latency: bool = False
) -> Any:
    """The outputs of a LiteRT file (`zoo.export(format="litert")`) for `images`, one image at a time.

    Runs the LiteRT interpreter (`ai_edge_litert` where installed, else
    TensorFlow's) at batch 1, as a phone would; quantized inputs are
    quantized and outputs dequantized with the file's own parameters.

    Args:
        path: str. A `.tflite` file.
        images: array `(n, height, width, 3)` in the file's input range.
        threads: int. Interpreter threads. Defaults to None (its default).
        return_latency: bool. Also return the median seconds of one
            image's `invoke` (batch 1, this machine). Defaults to False.

    Returns:
        A float32 array `(n, ...)`: the first output for each image; with
        `return_latency`, `(outputs, seconds)`.

    Example:

        >>> import os, tempfile, numpy as np, zoo
        >>> m = zoo.build("resnet18", num_classes=3, input_shape=(32, 32, 3),
        ...               include_preprocessing=True)
        >>> path = zoo.export(m, os.path.join(tempfile.mkdtemp(), "m.tflite"), format="litert")
        >>> zoo.litert_predict(path, np.zeros((2, 32, 32, 3), "uint8")).shape
        (2, 3)
    """
    import numpy as np

    interpreter = _interpreter(os.fspath(path), threads)
    inp = interpreter.get_input_details()[0]
    out = interpreter.get_output_details()[0]
    scale, zero = inp["quantization"]
    results, seconds = [], []
    for image in np.asarray(images):
        x = image[None]
        if scale:  # a quantized input: real = scale * (q - zero)
            x = np.round(x / scale + zero)
        interpreter.set_tensor(inp["index"], x.astype(inp["dtype"]))
        start = time.perf_counter()
        interpreter.invoke()
        seconds.append(time.perf_counter() - start)
        y = interpreter.get_tensor(out["index"])[0]
        o_scale, o_zero = out["quantization"]
        results.append((y.astype("float32") - o_zero) * o_scale if o_scale else y.astype("float32"))
    outputs = np.stack(results)
    return (outputs, float(np.median(seconds))) if return_latency else outputs


def _interpreter(path, threads):
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        import warnings

        import tensorflow as tf

        with warnings.catch_warnings():  # TF's note that its interpreter moves to ai_edge_litert
            warnings.simplefilter("ignore", UserWarning)
            Interpreter = tf.lite.Interpreter
            interpreter = Interpreter(model_path=path, num_threads=threads)
    else:
        interpreter = Interpreter(model_path=path, num_threads=threads)
    interpreter.allocate_tensors()
    return interpreter
