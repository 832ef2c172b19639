"""FCN: "Fully Convolutional Networks for Semantic Segmentation", Long,
Shelhamer & Darrell 2015, https://arxiv.org/abs/1411.4038.

`fcn32s`, `fcn16s`, `fcn8s` on any zoo backbone with stage metadata
(`vgg16` by default). Scores from the stride-32 map are upsampled by
bias-free transposed convolutions initialised to bilinear upsampling; FCN-16s
and FCN-8s add skips from the stride-16 and stride-8 stages, scored by 1x1
convolutions that start at zero (so training begins from the coarser net).

Any input size works: the input is zero-padded at the bottom/right to a
multiple of 32, so every skip divides exactly and the upsampled scores cover
the image; each upsampled map is cropped by `factor // 2` (the bilinear
kernel's centre) to align with the next, and the output is cropped back to
the input size: `(H, W, 3)` in, `(H, W, num_classes)` out.

Backbones whose spec's hooks have a `conv_head` keep their classifier as
convolutions (VGG: fc6 7x7x4096, fc7 1x1x4096), so ImageNet VGG weights flow
into fc6/fc7 through the hooks' `conv_head_names`.

FCN-32s/16s/8s are registered as *task* models (`zoo.registry.register_task`):
`zoo.build("fcn8s", ...)` takes exactly the arguments of `fcn` below and
refuses the others (`pooling`, `include_top`, `features_only`, ...).
"""

from __future__ import annotations

import functools
import os
from typing import Any

import keras
import numpy as np
from keras import layers, ops

from zoo import weights as zoo_weights
from zoo._builder import build, dtype_policy_scope, input_stamp, resolve_input_shape
from zoo._keras import inbound_nodes
from zoo.layers import ImageNormalization
from zoo.registry import get_spec, register_task

PAPER = "Long, Shelhamer & Darrell 2015, Fully Convolutional Networks for Semantic Segmentation, https://arxiv.org/abs/1411.4038"
VARIANTS = {"fcn32s": 32, "fcn16s": 16, "fcn8s": 8}
# Layers that pass a Dense input through unchanged in shape semantics.
_PASSTHROUGH = (layers.Dropout, layers.Activation, layers.ReLU, layers.BatchNormalization)


# --------------------------------------------------------------------------
# Blocks: bilinear upsampling, cropping, padding
# --------------------------------------------------------------------------


def bilinear_kernel(factor: int, channels: int) -> np.ndarray:
    """The `(2f, 2f, C, C)` transposed-convolution kernel of bilinear upsampling.

    Caffe's `upsample_filt` on the channel diagonal (Long et al. 2015):
    channels do not mix. Cropping `factor // 2` pixels from the top-left of
    the stride-`factor` transposed convolution then equals half-pixel
    bilinear resizing away from the border.

    Example:

        >>> import zoo
        >>> zoo.tasks.fcn.bilinear_kernel(2, 1)[:, 0, 0, 0].tolist()
        [0.0625, 0.1875, 0.1875, 0.0625]
    """
    size = 2 * factor
    center = factor - 0.5
    og = np.arange(size)
    filt1d = 1 - np.abs(og - center) / factor
    filt = np.outer(filt1d, filt1d)
    kernel = np.zeros((size, size, channels, channels), dtype="float32")
    for c in range(channels):
        kernel[:, :, c, c] = filt
    return kernel


@keras.saving.register_keras_serializable(package="zoo")
class BilinearUpsamplingInitializer(keras.initializers.Initializer):
    """Initialises a `Conv2DTranspose` kernel to bilinear upsampling.

    Args:
        factor: int. The transposed convolution's stride.

    Example:

        >>> import keras, zoo
        >>> init = zoo.tasks.fcn.BilinearUpsamplingInitializer(2)
        >>> tuple(init((4, 4, 3, 3)).shape)
        (4, 4, 3, 3)
    """

    def __init__(self, factor: int):
        self.factor = factor

    def __call__(self, shape, dtype=None):
        kh, kw, out_c, in_c = shape
        if (kh, kw) != (2 * self.factor, 2 * self.factor) or out_c != in_c:
            raise ValueError(
                f"A bilinear kernel for factor {self.factor} has shape "
                f"({2 * self.factor}, {2 * self.factor}, C, C). Received: shape={shape}"
            )
        return ops.convert_to_tensor(bilinear_kernel(self.factor, in_c), dtype=dtype)

    def get_config(self):
        return {"factor": self.factor}


def bilinear_upsample(x: keras.KerasTensor, factor: int, *, name: str) -> keras.KerasTensor:
    """A learnable, bias-free transposed convolution initialised to bilinear.

    Output side is `(n + 1) * factor`; `CropLike(offset=factor // 2)` aligns it
    with a reference map (FCN's skips and final output).

    Example:

        >>> import keras, zoo
        >>> x = keras.Input((7, 7, 21))
        >>> zoo.tasks.fcn.bilinear_upsample(x, 2, name="upscore2").shape
        (None, 16, 16, 21)
    """
    return layers.Conv2DTranspose(
        x.shape[-1],
        2 * factor,
        strides=factor,
        padding="valid",
        use_bias=False,
        kernel_initializer=BilinearUpsamplingInitializer(factor),
        name=name,
    )(x)


@keras.saving.register_keras_serializable(package="zoo")
class CropLike(layers.Layer):
    """Crops `x` to the spatial size of `reference`, starting at `offset`.

    Called as `CropLike(offset)([x, reference])`; works with unknown
    (None) sizes on every backend.

    Example:

        >>> import numpy as np, zoo
        >>> y = zoo.tasks.fcn.CropLike(offset=1)([np.zeros((1, 9, 9, 2)), np.zeros((1, 5, 6, 3))])
        >>> tuple(y.shape)
        (1, 5, 6, 2)
    """

    def __init__(self, offset: int = 0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.offset = offset

    def call(self, inputs):
        x, reference = inputs
        ref_shape = ops.shape(reference)
        h, w = ref_shape[1], ref_shape[2]
        o = self.offset
        return x[:, o : o + h, o : o + w, :]

    def compute_output_shape(self, input_shapes):
        x_shape, ref_shape = input_shapes
        return (x_shape[0], ref_shape[1], ref_shape[2], x_shape[3])

    def get_config(self):
        return {**super().get_config(), "offset": self.offset}


@keras.saving.register_keras_serializable(package="zoo")
class FitLike(layers.Layer):
    """Centre-crops `x`, or extends its edges, to the spatial size of `reference`.

    Called as `FitLike()([x, reference])`. FCN aligns its scores with it on
    backbones whose maps do not divide the input exactly (valid padding:
    InceptionV3, Inception-ResNet-v2 lose a border at every reduction, so a
    stride-8 map of a 96 px input is 9 wide, not 12). Such a map covers the
    centre of the image, so the upsampled scores are centred on the
    reference, and a side that falls short repeats its outermost row or
    column. Works with unknown (None) sizes on every backend.

    Example:

        >>> import numpy as np, zoo
        >>> x = np.arange(4.0).reshape(1, 2, 2, 1)
        >>> y = zoo.tasks.fcn.FitLike()([x, np.zeros((1, 4, 1, 1))])
        >>> np.asarray(y)[0, :, :, 0].tolist()
        [[0.0], [0.0], [2.0], [2.0]]
    """

    def call(self, inputs):
        x, reference = inputs
        for axis in (1, 2):
            x = _fit_axis(x, ops.shape(reference)[axis], axis)
        return x

    def compute_output_shape(self, input_shapes):
        x_shape, ref_shape = input_shapes
        return (x_shape[0], ref_shape[1], ref_shape[2], x_shape[3])


def _fit_axis(x, size, axis):
    """`x` along `axis` (1 or 2) edge-extended, then centre-cropped, to `size`."""
    n = ops.shape(x)[axis]
    short = ops.maximum(size - n, 0)
    before = short // 2
    first, last = (x[:, :1], x[:, -1:]) if axis == 1 else (x[:, :, :1], x[:, :, -1:])
    x = ops.concatenate(
        [ops.repeat(first, before, axis=axis), x, ops.repeat(last, short - before, axis=axis)], axis=axis
    )
    start = (ops.shape(x)[axis] - size) // 2
    return x[:, start : start + size] if axis == 1 else x[:, :, start : start + size]


@keras.saving.register_keras_serializable(package="zoo")
class PadToMultiple(layers.Layer):
    """Zero-pads height and width at the bottom/right up to a multiple.

    FCN pads its input to a multiple of the backbone's stride, so every skip
    divides exactly and the upsampled scores cover the whole image; the
    output is cropped back to the input size.

    Args:
        multiple: int. Defaults to 32.

    Example:

        >>> import numpy as np, zoo
        >>> tuple(zoo.tasks.fcn.PadToMultiple(32)(np.zeros((1, 33, 64, 3))).shape)
        (1, 64, 64, 3)
    """

    def __init__(self, multiple: int = 32, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.multiple = multiple

    def call(self, x):
        shape = ops.shape(x)
        m = self.multiple
        pad_h = (m - shape[1] % m) % m
        pad_w = (m - shape[2] % m) % m
        return ops.pad(x, [[0, 0], [0, pad_h], [0, pad_w], [0, 0]])

    def compute_output_shape(self, input_shape):
        def up(n):
            return None if n is None else -(-n // self.multiple) * self.multiple

        return (input_shape[0], up(input_shape[1]), up(input_shape[2]), input_shape[3])

    def get_config(self):
        return {**super().get_config(), "multiple": self.multiple}


def convolutionalize(model: keras.Model, *, input_shape: tuple = (None, None, 3)) -> keras.Model:
    """Turn Dense layers on a Flatten into convolutions ("convolutionalization").

    The first Dense after the Flatten becomes a `(h, w)` convolution over the
    flattened `(h, w, c)` map, with its kernel reshaped (Keras flattens
    row-major, channels last); later Dense layers become 1x1 convolutions.
    Every other layer keeps its weights. At the training resolution the
    output is the original's, as a 1x1 map; larger inputs give a spatial
    score map (VGG16: 224 -> 1x1, 384 -> 6x6).

    Args:
        model: keras.Model. A functional classifier (e.g.
            `zoo.build("vgg16")` or `keras.applications.VGG16`).
        input_shape: tuple. Input shape of the result. Defaults to
            `(None, None, 3)` (any size).

    Returns:
        A new functional `keras.Model` (the original is unchanged).

    Example:

        >>> import zoo
        >>> m = zoo.build("vgg11", num_classes=5, input_shape=(64, 64, 3))
        >>> fcn = zoo.convolutionalize(m)
        >>> fcn.compute_output_shape((1, 96, 96, 3))
        (1, 2, 2, 5)
    """
    if not isinstance(model, keras.Model) or not (
        isinstance(model, keras.Sequential) or hasattr(model, "_nodes_by_depth")
    ):
        raise TypeError(
            f"`model` must be a functional or Sequential keras.Model. Received: {type(model).__name__}"
        )
    kernels = {}  # Dense name -> (kh, kw)
    for layer in model.layers:
        if isinstance(layer, layers.Dense):
            kernels[layer.name] = _dense_window(layer)
    if not kernels:
        raise ValueError(
            f"Model {model.name!r} has no Dense layer to convolutionalize; it is already fully convolutional."
        )

    def clone(layer):
        if isinstance(layer, layers.Flatten):
            return layers.Identity(name=layer.name)
        if isinstance(layer, layers.Dense):
            return layers.Conv2D(
                layer.units,
                kernels[layer.name],
                activation=layer.activation,
                use_bias=layer.use_bias,
                dtype=layer.dtype_policy,
                name=layer.name,
            )
        return layer.__class__.from_config(layer.get_config())

    new = keras.models.clone_model(
        model,
        input_tensors=keras.Input(input_shape, name=model.inputs[0].name),
        clone_function=clone,
    )
    for layer in model.layers:
        if not layer.weights:
            continue
        values = [keras.ops.convert_to_numpy(w) for w in layer.weights]
        target = new.get_layer(layer.name)
        if isinstance(layer, layers.Dense):
            kh, kw = kernels[layer.name]
            values[0] = values[0].reshape(kh, kw, -1, layer.units)
        target.set_weights(values)
    return new


def _dense_window(dense):
    """(kh, kw) of the convolution replacing `dense`: the map it flattens."""
    node = inbound_nodes(dense)[0]
    upstream = node.parent_nodes[0].operation if node.parent_nodes else None
    while isinstance(upstream, _PASSTHROUGH):
        parents = inbound_nodes(upstream)[0].parent_nodes
        upstream = parents[0].operation if parents else None
    if isinstance(upstream, layers.Flatten):
        shape = upstream.input.shape
        if len(shape) != 4 or None in shape[1:3]:
            raise ValueError(
                f"Dense layer {dense.name!r} follows a Flatten of shape {shape}; "
                "convolutionalize needs a flattened (batch, h, w, c) map of known size."
            )
        return (shape[1], shape[2])
    if isinstance(upstream, layers.Dense):
        return (1, 1)
    raise ValueError(
        f"Dense layer {dense.name!r} is fed by {type(upstream).__name__}, not a "
        "Flatten or another Dense: convolutionalize handles classifier heads "
        "of the form Flatten -> Dense -> ... -> Dense."
    )


def fcn(
    *,
    stride: int,
    backbone: str = "vgg16",
    num_classes: int = 21,
    input_shape=None,
    weights=None,
    include_preprocessing: bool = False,
    dtype: str | None = None,
    classifier_activation: str | None = "softmax",
    name: str | None = None,
) -> keras.Model:
    """Build FCN-32s/16s/8s (`stride` 32, 16 or 8) on a zoo backbone.

    Use through `zoo.build("fcn8s", backbone=..., num_classes=...)`.

    Args:
        stride: int. Output stride of the finest skip: 32, 16 or 8.
        backbone: str. A zoo model with stages at strides 8, 16 and 32.
            Defaults to `"vgg16"`.
        num_classes: int. Classes per pixel. Defaults to 21 (PASCAL VOC).
        input_shape: tuple. Defaults to `(None, None, 3)` (any size).
        weights: `None`, a backbone source tag (`"imagenet"`), a path to
            weights of this FCN or of the backbone classifier (VGG16 with
            top: fc1/fc2 become fc6/fc7), or a Keras model to take them from.
        include_preprocessing: bool. Take raw 0-255 RGB images.
        dtype: str. A dtype policy, e.g. `"mixed_bfloat16"`.
        classifier_activation: str or None. Per-pixel activation; `None`
            gives logits, to train with `from_logits=True` (recommended; on
            Keras 3.15's torch backend probabilities on 4D outputs fail in
            backward). Defaults to `"softmax"`.
        name: str. Model name. Defaults to `"<variant>_<backbone>"`.

    Example:

        >>> import zoo
        >>> m = zoo.build("fcn8s", backbone="vgg11", num_classes=3,
        ...               input_shape=(75, 100, 3))
        >>> m.output_shape
        (None, 75, 100, 3)
    """

    variant = {v: k for k, v in VARIANTS.items()}[stride]
    spec = get_spec(backbone)
    if spec.is_task:
        raise ValueError(
            f"FCN needs a backbone, and {spec.name!r} is a {spec.task} model. "
            f"Received: backbone={backbone!r}. Pick one of `zoo.list_models(task='classification')`."
        )
    shape = resolve_input_shape(spec, input_shape, include_top=False, weights=None)
    preprocessing = _preprocessing(spec, weights)
    with dtype_policy_scope(dtype):
        # The input carries the backbone's stamp: `zoo.stages_of` reads it.
        inputs = keras.Input(shape, name=input_stamp(spec))
        x = inputs
        if include_preprocessing:
            x = ImageNormalization(preprocessing, name="preprocessing")(x)
        x = PadToMultiple(32, name="pad_to_32")(x)
        # The backbone through `features_only`, the one path every zoo and
        # keras.applications body is built by (so their keywords, names and
        # stage checks apply here as well).
        features = build(spec.name, features_only=True, input_tensor=x, weights=None)
        stage_out = _stage_outputs(features.outputs, spec.stages, spec.name)
        exact = _divides_exactly(features, spec)
        x = stage_out[32]
        if spec.hooks.conv_head is not None:
            # The classifier's hidden layers as convolutions (Long et al. 3.1).
            x = spec.hooks.conv_head(x)
        score = layers.Conv2D(num_classes, 1, name="score_fr")(x)
        # Skips (Long et al. Figure 3): 2x upsample, crop, add the scored stage.
        for skip, pool, up_name in ((16, "pool4", "upscore_2"), (8, "pool3", "upscore_pool4")):
            if stride > skip:
                break
            up = bilinear_upsample(score, 2, name=up_name)
            skip_score = layers.Conv2D(num_classes, 1, kernel_initializer="zeros", name=f"score_{pool}")(
                stage_out[skip]
            )
            align = CropLike(1, name=f"{up_name}_crop") if exact else FitLike(name=f"{up_name}_crop")
            up = align([up, skip_score])
            score = layers.Add(name=f"fuse_{pool}")([up, skip_score])
        up = bilinear_upsample(score, stride, name=f"upscore{stride}")
        align = CropLike(stride // 2, name="score") if exact else FitLike(name="score")
        score = align([up, inputs])
        outputs = layers.Activation(classifier_activation or "linear", dtype="float32", name="predictions")(
            score
        )
        model = keras.Model(inputs, outputs, name=name or f"{variant}_{spec.name}")
    if weights is not None:
        _load(model, weights, spec)
    return model


def _preprocessing(spec, weights):
    """The normalisation of the backbone source `weights` names, else the default."""
    if isinstance(weights, str) and weights in spec.weights:
        return spec.weights[weights].preprocessing
    return spec.preprocessing


def segmentation_metrics(num_classes: int) -> list:
    """Mean IoU and pixel accuracy, Keras' own metrics, for `compile`.

    Both take integer masks `(batch, H, W)` and per-pixel class scores
    `(batch, H, W, num_classes)`.

    Example:

        >>> import numpy as np, zoo
        >>> miou, acc = zoo.tasks.fcn.segmentation_metrics(2)
        >>> scores = np.eye(2)[np.array([[[0, 1], [1, 1]]])]
        >>> _ = miou.update_state(np.array([[[0, 1], [0, 1]]]), scores)
        >>> round(float(miou.result()), 4)
        0.5833
    """
    return [
        MeanIoU(num_classes, sparse_y_pred=False, name="mean_iou"),
        keras.metrics.SparseCategoricalAccuracy(name="pixel_accuracy"),
    ]


@keras.saving.register_keras_serializable(package="zoo")
class MeanIoU(keras.metrics.MeanIoU):
    """`keras.metrics.MeanIoU` with its confusion matrix counted in int32.

    Keras 3.15 builds the matrix by scattering at `int64` indices, which JAX
    (without `jax_enable_x64`) truncates with a warning on every training
    step. This sums the weights of each `label * num_classes + prediction`
    cell with `keras.ops.segment_sum` instead: the same matrix (out-of-range labels and
    predictions, `ignore_class` and sample weights are left out as Keras
    does), no warning on any backend.

    Example:

        >>> import numpy as np, zoo
        >>> m = zoo.tasks.fcn.MeanIoU(2)
        >>> _ = m.update_state(np.array([0, 1, 0, 1]), np.array([0, 1, 1, 1]))
        >>> round(float(m.result()), 4)
        0.5833
    """

    def update_state(self, y_true, y_pred, sample_weight=None):
        ops = keras.ops
        if not self.sparse_y_true:
            y_true = ops.argmax(y_true, axis=self.axis)
        if not self.sparse_y_pred:
            y_pred = ops.argmax(y_pred, axis=self.axis)
        y_true = ops.reshape(ops.cast(y_true, "int32"), [-1])
        y_pred = ops.reshape(ops.cast(y_pred, "int32"), [-1])
        n = self.num_classes
        valid = ops.logical_and(
            ops.logical_and(ops.greater_equal(y_true, 0), ops.less(y_true, n)),
            ops.logical_and(ops.greater_equal(y_pred, 0), ops.less(y_pred, n)),
        )
        if self.ignore_class is not None:
            valid = ops.logical_and(valid, ops.not_equal(y_true, self.ignore_class))
        dtype = self.total_cm.dtype  # int64; int32 on JAX without x64 (what Keras gets there too)
        weights = ops.ones_like(y_true, dtype) if sample_weight is None else sample_weight
        weights = ops.broadcast_to(ops.reshape(ops.cast(weights, dtype), [-1]), ops.shape(y_true))
        weights = ops.where(valid, weights, ops.zeros_like(weights))
        cells = ops.where(valid, y_true * n + y_pred, ops.zeros_like(y_true))
        counts = ops.segment_sum(weights, cells, num_segments=n * n)
        return self.total_cm.assign(self.total_cm + ops.reshape(counts, (n, n)))


def _divides_exactly(features, spec) -> bool:
    """Whether the stride-8/16/32 maps are exactly the padded input over the stride.

    True for backbones with "same" padding (VGG, ResNet, MobileNet, ...): the
    skips then align by Long et al.'s crops. Valid-padding backbones
    (InceptionV3, Inception-ResNet-v2) lose a border at each reduction; their
    scores are centred on the next map instead (`zoo.tasks.fcn.FitLike`).
    """
    h, w = features.inputs[0].shape[1:3]
    size = (-(-h // 32) * 32, -(-w // 32) * 32) if h and w else (128, 160)
    shapes = features.outputs if h and w else features.compute_output_shape((1, *size, 3))
    shapes = [tuple(getattr(t, "shape", t)) for t in shapes]
    return all(
        s.reduction not in (8, 16, 32) or shape[1:3] == (size[0] // s.reduction, size[1] // s.reduction)
        for s, shape in zip(spec.stages, shapes)
    )


def _stage_outputs(outputs, stages, backbone):
    out = {}
    for s, tensor in zip(stages, outputs):
        out[s.reduction] = tensor  # deepest stage per stride wins
    missing = [r for r in (8, 16, 32) if r not in out]
    if missing:
        raise ValueError(
            f"FCN needs backbone stages at strides 8, 16 and 32; {backbone!r} has "
            f"{sorted(out)}. Pick a backbone from `zoo.list_models()` with a "
            "stride-32 stage list (VGG, ResNet, GoogLeNet)."
        )
    return out


def _load(model, weights, spec):
    """Load FCN weights, or backbone (classifier) weights into the FCN."""
    if isinstance(weights, keras.Model):
        source_model = weights
    elif (
        isinstance(weights, (str, os.PathLike))
        and os.fspath(weights) not in spec.weights
        and weights != "imagenet"
    ):
        path = os.fspath(weights)
        if not os.path.exists(path):
            raise FileNotFoundError(f"No weight file at {path!r}.")
        plan = zoo_weights.plan_assignment(model, zoo_weights.read_weights(path))
        if plan.ok:
            plan.apply()
            return
        source_model = _backbone_classifier(spec, path)
    else:
        source_model = _backbone_classifier(spec, weights)
    if any(isinstance(l, layers.Flatten) for l in source_model.layers):
        source_model = convolutionalize(source_model)
    entries = zoo_weights.read_weights(source_model)
    for e in entries:
        e.name = spec.hooks.conv_head_names.get(e.name, e.name)
    plan = zoo_weights.plan_assignment(model, entries, match="name")
    # The FCN's own layers (scores, deconvolutions) have no counterpart in a backbone.
    head = {l.name for l in model.layers if l.name.startswith(("score_", "upscore"))}
    problems = [n for n in plan.missing if n not in head] + [m[0] for m in plan.mismatched]
    if problems:
        raise zoo_weights.WeightFileError(
            f"The weights do not fit the {spec.name!r} backbone of {model.name!r}; "
            f"nothing was loaded.\n{plan.describe()}"
        )
    plan.apply()


def _backbone_classifier(spec, weights):

    include_top = spec.hooks.conv_head is not None  # e.g. VGG's fc6/fc7 come from its classifier
    kwargs = {"input_shape": (spec.default_size, spec.default_size, 3)} if include_top else {}
    return build(spec.name, include_top=include_top, weights=weights, **kwargs)


for _name, _stride in VARIANTS.items():
    register_task(
        _name,
        family="fcn",
        task="segmentation",
        paper=PAPER,
        builder=functools.partial(fcn, stride=_stride),
        description=f"FCN-{_stride}s semantic segmentation (default backbone VGG16)",
    )
