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
from collections.abc import Sequence

import keras

from zoo._features import spec_of
from zoo.layers import ImageNormalization, leaf_layers

FORMATS = {"saved_model": "tf_saved_model", "litert": "litert", "onnx": "onnx"}
INPUT_DTYPES = ("uint8", "float32")


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
    served.export(path, format=FORMATS[format], verbose=verbose, **options)
    if class_names is not None:
        with open(_class_names_path(path), "w") as f:
            json.dump(list(class_names), f)
    return path
