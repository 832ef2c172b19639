"""Test-time augmentation: a model that averages its predictions over views of each image.

`tta_model(model, ("flip",))` wraps a trained classifier in a functional
model: the class scores of the image itself and of each view, averaged
(for a segmentation model, each view's score map is mirrored back first).
It is an ordinary Keras model, so the same object is evaluated in the
report and exported by `zoo.export` (uint8 in, the same output): the served
graph computes exactly what the report measured.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras

VIEWS = ("flip",)


@keras.saving.register_keras_serializable(package="tuning")
class HorizontalFlip(keras.layers.Layer):
    """Mirrors images left to right (channels-last), in training and inference alike.

    Example:

        >>> import numpy as np, tuning.tta
        >>> x = np.arange(6, dtype="float32").reshape(1, 1, 3, 2)
        >>> import keras
        >>> keras.ops.convert_to_numpy(tuning.tta.HorizontalFlip()(x))[0, 0, :, 0].tolist()
        [4.0, 2.0, 0.0]
    """

    def call(self, inputs):
        return keras.ops.flip(inputs, axis=2)

    def compute_output_shape(self, input_shape):
        return input_shape


_MAKE = {"flip": lambda: HorizontalFlip(name="tta_flip")}


def tta_model(model: keras.Model, views: Sequence[str] = VIEWS) -> keras.Model:
    """`model` with its class scores averaged over the image and each of `views`.

    Args:
        model: keras.Model. One image input (batch, height, width, channels).
        views: tuple of str. From `VIEWS`. Defaults to ("flip",).

    Example:

        >>> import numpy as np, keras, tuning.tta
        >>> base = keras.Sequential([keras.Input((4, 4, 3)), keras.layers.Flatten(),
        ...                          keras.layers.Dense(2, activation="softmax")])
        >>> tta = tuning.tta.tta_model(base)
        >>> x = np.random.default_rng(0).random((2, 4, 4, 3)).astype("float32")
        >>> want = (base.predict(x, verbose=0) + base.predict(x[:, :, ::-1], verbose=0)) / 2
        >>> bool(np.allclose(tta.predict(x, verbose=0), want, atol=1e-6))
        True
    """
    views = tuple(views)
    unknown = [v for v in views if v not in VIEWS]
    if unknown or not views:
        raise ValueError(f"`views` must be a non-empty subset of {VIEWS}. Received: views={views!r}")
    if len(model.inputs) != 1 or len(model.inputs[0].shape) != 4:
        raise ValueError(
            "Test-time augmentation needs one image input (batch, height, width, channels). "
            f"Received a model with inputs {[tuple(i.shape) for i in model.inputs]}."
        )
    images = keras.Input(model.inputs[0].shape[1:], dtype=model.inputs[0].dtype, name="images")
    outputs = [model(images, training=False)]
    # Per-pixel scores (segmentation) are mirrored back onto the image's pixels.
    spatial = len(model.outputs[0].shape) == 4
    for v in views:
        scores = model(_MAKE[v]()(images), training=False)
        outputs.append(HorizontalFlip(name=f"tta_{v}_back")(scores) if spatial else scores)
    averaged = keras.layers.Average(name="tta_average")(outputs)
    return keras.Model(images, averaged, name=f"{model.name}_tta")
