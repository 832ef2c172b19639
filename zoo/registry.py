"""The model registry: one decorator, one dict, shell-wildcard listing.

A model is described by a `ModelSpec`, pure data that needs no Keras: its
family, paper, stages (`Stage`: layer, stride, channels), default and
minimum input size, classifier head, weight sources and, for task models
(FCN), the arguments they accept. Backbones register a *body* function
`x -> Body`; `zoo.build` adds everything around it (input validation,
preprocessing, classifier head or pooling, feature extraction, weights).
Task models register a *builder* that assembles the whole model
(`register_task`). Reading a spec builds nothing: `zoo.get_spec(name).stages`
is a tuple declared from the family's own table, as timm's `feature_info`
and kimm's `available_feature_keys` are.
"""

from __future__ import annotations

import dataclasses
import difflib
import fnmatch
import functools
import inspect
import re
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from zoo._keras import producing_layer
from zoo.layers import PREPROCESSING_MODES, apply, classifier_head, output_dtype  # noqa: F401  (names kept here)
from zoo.weights import WeightSource

if TYPE_CHECKING:  # annotations only: importing keras here is not needed at run time
    import keras


@dataclasses.dataclass(frozen=True)
class Stage:
    """One stage of a backbone: the layer that ends it, its stride, its width.

    Args:
        name: str. Stage name, e.g. `"conv4"`.
        layer: str. Name of the layer whose output ends the stage
            (e.g. `"conv4_block6_out"`); `surgery.cut`, FCN skips and
            `features_only` use it.
        reduction: int. Total stride of that output relative to the input.
        channels: int. Channels of that output.

    Example:

        >>> import zoo
        >>> zoo.get_spec("resnet50").stages[3]
        Stage(name='conv4', layer='conv4_block6_out', reduction=16, channels=1024)
    """

    name: str
    layer: str
    reduction: int
    channels: int


@dataclasses.dataclass(frozen=True)
class Body:
    """What a registered body function returns.

    Args:
        output: KerasTensor. The last feature map (before any head).
        aux: tuple of KerasTensor. Feature maps that feed auxiliary
            classifiers (GoogLeNet's 4a and 4d), when asked for. Defaults
            to `()`.
    """

    output: object
    aux: tuple = ()


def check_stage(x, stage: Stage):
    """Return `x` after checking that it is `stage`'s declared output.

    Family bodies call it where a stage ends, so the static declaration and
    the graph cannot drift apart (a renamed layer or a changed width fails
    at the first build, in every test that builds the model).

    Example:

        >>> import keras, zoo
        >>> x = keras.layers.Conv2D(4, 3, strides=2, name="s1")(keras.Input((8, 8, 3)))
        >>> zoo.registry.check_stage(x, zoo.Stage("stage1", "s1", 2, 4)).shape
        (None, 3, 3, 4)
    """
    layer = producing_layer(x)
    if layer.name != stage.layer or x.shape[-1] != stage.channels:
        raise AssertionError(
            f"Stage {stage.name!r} is declared to end at {stage.layer!r} with "
            f"{stage.channels} channels, but the body produced {layer.name!r} "
            f"with {x.shape[-1]}. Fix the family's stage table."
        )
    return x


def global_pool_top(
    x: keras.KerasTensor, *, num_classes: int, classifier_activation: str | None
) -> keras.KerasTensor:
    """The default classifier: global average pooling and one Dense layer.

    Example:

        >>> import keras, zoo
        >>> x = keras.Input((7, 7, 512))
        >>> zoo.registry.global_pool_top(x, num_classes=10,
        ...                              classifier_activation="softmax").shape
        (None, 10)
    """
    return apply(classifier_head(num_classes, pooling="avg", activation=classifier_activation), x)


@dataclasses.dataclass(frozen=True)
class Hooks:
    """A family's quirks, handed to the one builder (`zoo.build`).

    As timm's families pass `feature_cfg=` and `pretrained_filter_fn=` to its
    one `build_model_with_cfg`, a family passes what only it needs here and
    `ModelSpec` keeps what every model has. Every field has a default that
    means "no quirk".

    Args:
        top: callable. `top(x, *, num_classes, classifier_activation)`
            builds the classifier head. Defaults to `global_pool_top`.
        fixed_size_top: bool. The head needs a fixed input size (a Flatten
            before Dense, as in VGG).
        aux_top: callable. `aux_top(x, *, num_classes, classifier_activation,
            name)` builds an auxiliary classifier on each `Body.aux` map
            (GoogLeNet); a model without one refuses `aux_logits=True`.
        aux_needs_fixed_size: bool. The auxiliary heads flatten a map whose
            size depends on the input (GoogLeNet's paper layout).
        builds_head: bool. The body builds the classifier head or pooling
            itself (`body(x, include_top=, pooling=, num_classes=,
            classifier_activation=)`): keras.applications models, whose
            heads (MobileNetV3's 1x1 convolutions, ConvNeXt's layer norm)
            and pretrained files are Keras'.
        static_input: bool. The body needs a fixed input size even without
            the head (NASNet compares the sizes of its cell inputs).
        load_fixup: callable. `load_fixup(model, source)` runs after a known
            weight file (`WeightSource`) was loaded, for a file's documented
            quirk (keras.applications' EfficientNet files).
        state_dict_converter: callable. Turns a PyTorch state dict
            (name -> array) into zoo weights (`"<layer>/<i>" -> array`).
        conv_head: callable. `conv_head(x) -> x`: the classifier's hidden
            dense layers as convolutions, for dense prediction (VGG's
            fc6/fc7 in FCN).
        conv_head_names: mapping. Classifier layer name -> `conv_head` layer
            name (`{"fc1": "fc6", "fc2": "fc7"}`), to carry weights over.

    Example:

        >>> import zoo
        >>> hooks = zoo.get_spec("vgg16").hooks
        >>> hooks.fixed_size_top, dict(hooks.conv_head_names)
        (True, {'fc1': 'fc6', 'fc2': 'fc7'})
        >>> zoo.get_spec("resnet50").hooks == zoo.Hooks()  # no quirk
        True
    """

    top: Callable = global_pool_top
    fixed_size_top: bool = False
    aux_top: Callable | None = None
    aux_needs_fixed_size: bool = False
    builds_head: bool = False
    static_input: bool = False
    load_fixup: Callable | None = None
    state_dict_converter: Callable | None = None
    conv_head: Callable | None = None
    conv_head_names: Mapping[str, str] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """Everything the zoo knows about one registered model (pure data).

    What every model has; a family's quirks are its `hooks`.

    Args:
        name: str. Lower-case registry name.
        family: str. Family name, e.g. `"resnet"`.
        body: callable. `body(x, **options) -> Body`, builds the layers after
            the input (and after preprocessing, when that is included).
            `None` for task models.
        builder: callable. For task models: `builder(**arguments) ->
            keras.Model` replaces `zoo.build`'s own assembly. Its keyword
            parameters are the `zoo.build` arguments the task takes, and
            their defaults are the task's (`backbone`, `num_classes`).
        task: str. `"classification"` for backbones, else the task
            (`"segmentation"`).
        stages: tuple of `Stage`. The stages with the default options,
            shallow to deep (empty for tasks: theirs are the backbone's).
        stage_fn: callable. `stage_fn(**options) -> tuple of Stage` for
            options that rename stage layers (`activation="mish"`).
        paper: str. Reference (title and link).
        description: str. One line for listings.
        default_size: int. Default square input resolution.
        min_size: int. Smallest input side the model accepts.
        preprocessing: str. Input normalisation of the default weights (or
            of the family, without weights): `"caffe"`, `"torch"`, `"tf"`.
        weights: mapping of tag to `WeightSource`; each source carries its
            own preprocessing, input size and reported accuracy.
        hooks: `Hooks`. The family's quirks for the builder.
    """

    name: str
    family: str
    body: Callable | None = None
    builder: Callable | None = None
    task: str = "classification"
    stages: tuple = ()
    stage_fn: Callable | None = None
    paper: str = ""
    description: str = ""
    default_size: int = 224
    min_size: int = 32
    preprocessing: str = "caffe"
    weights: Mapping[str, WeightSource] = dataclasses.field(default_factory=dict)
    hooks: Hooks = dataclasses.field(default_factory=Hooks)

    @property
    def builtin(self) -> bool:
        """Whether this is one of the zoo's own models (registered by `import zoo`).

        Example:

            >>> import zoo
            >>> zoo.get_spec("resnet18").builtin, zoo.get_spec("efficientnetb0").builtin
            (True, True)
        """
        return _BUILTIN.get(self.name) is self

    @property
    def is_task(self) -> bool:
        """Whether this is a task model (assembled by its own builder)."""
        return self.builder is not None

    @property
    def arguments(self) -> frozenset:
        """A task model's `zoo.build` arguments: its builder's keyword parameters.

        Backbones take `zoo.build`'s own (`zoo.build` checks them); this is
        empty for them.

        Example:

            >>> import zoo
            >>> sorted(zoo.get_spec("fcn8s").arguments)[:3]
            ['backbone', 'classifier_activation', 'dtype']
        """
        if self.builder is None:
            return frozenset()
        bound = self.builder.keywords if isinstance(self.builder, functools.partial) else {}
        return frozenset(
            p
            for p, v in inspect.signature(self.builder).parameters.items()
            if v.kind in (v.KEYWORD_ONLY, v.POSITIONAL_OR_KEYWORD) and p not in bound
        )

    def _task_default(self, argument: str, backbone_value):
        if self.builder is None:
            return backbone_value
        parameter = inspect.signature(self.builder).parameters.get(argument)
        return None if parameter is None or parameter.default is parameter.empty else parameter.default

    @property
    def default_classes(self) -> int | None:
        """`num_classes` when the user gives none: 1000 (ImageNet) for backbones, the builder's default for tasks.

        Example:

            >>> import zoo
            >>> zoo.get_spec("resnet18").default_classes, zoo.get_spec("fcn8s").default_classes
            (1000, 21)
        """
        return self._task_default("num_classes", 1000)

    @property
    def default_backbone(self) -> str | None:
        """A task model's default backbone (its builder's `backbone` default); `None` for backbones.

        Example:

            >>> import zoo
            >>> zoo.get_spec("fcn8s").default_backbone
            'vgg16'
        """
        return self._task_default("backbone", None)

    def stages_for(self, **options: Any) -> tuple:
        """The stages of a model built with `options` (e.g. `activation`).

        Example:

            >>> import zoo
            >>> zoo.get_spec("resnet18").stages_for(activation="mish")[0].layer
            'conv1_mish'
        """
        options = {k: v for k, v in options.items() if v is not None}
        if not options or self.stage_fn is None:
            return self.stages
        return tuple(self.stage_fn(**options))

    def source(self, tag: str, *, include_top: bool = True) -> WeightSource:
        """The weight source `tag` (`"imagenet"` picks the default one).

        Without the top, `"imagenet"` is the `"imagenet_notop"` file where
        the model has one.

        Example:

            >>> import zoo
            >>> zoo.get_spec("resnet50").source("imagenet").preprocessing
            'caffe'
            >>> zoo.get_spec("vgg16").source("imagenet", include_top=False).file_name
            'vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5'
        """
        if tag == "imagenet" and not include_top and "imagenet_notop" in self.weights:
            tag = "imagenet_notop"
        if tag in self.weights:
            return self.weights[tag]
        raise ValueError(
            f"{self.name!r} has no {tag!r} weights. "
            + (
                f"Known sources: {sorted(self.weights)}."
                if self.weights
                else f"It has no pretrained source; models with one: {models_with_weights()}."
            )
            + " Pass a path to a weight file, or `weights=None`."
        )


_REGISTRY: dict[str, ModelSpec] = {}
# The specs `import zoo` registered (filled by `_mark_builtin` at the end of
# the package's import): what the weights table (docs/models.md) and zoo/_sizes.py cover.
_BUILTIN: dict[str, ModelSpec] = {}


def _mark_builtin() -> None:
    """Record the specs registered so far as the zoo's own (called once by `zoo`)."""
    _BUILTIN.update(_REGISTRY)


def _check_preprocessing(preprocessing):
    if preprocessing not in PREPROCESSING_MODES:
        raise ValueError(
            f"`preprocessing` must be one of {PREPROCESSING_MODES}. Received: preprocessing={preprocessing!r}"
        )


def _add(spec: ModelSpec, overwrite: bool):
    if spec.name in _REGISTRY and not overwrite:
        raise ValueError(
            f"A model named {spec.name!r} is already registered. Pick another "
            "name, or pass `overwrite=True` to replace it."
        )
    _REGISTRY[spec.name] = spec


def register(
    name: str | None = None,
    *,
    family: str,
    stages: Sequence[Stage] = (),
    stage_fn: Callable | None = None,
    paper: str = "",
    description: str = "",
    default_size: int = 224,
    min_size: int = 32,
    preprocessing: str | None = None,
    weights: Mapping[str, WeightSource] | None = None,
    hooks: Hooks | None = None,
    overwrite: bool = False,
) -> Callable[[Callable], Callable]:
    """Register a backbone body so `zoo.build`, `list_models` and `info` know it.

    Used as a decorator on a function `x -> zoo.Body`.

    Args:
        name: str. Registry name (case-insensitive). Defaults to the
            function's name.
        family: str. Family the model belongs to.
        stages: tuple of `zoo.Stage`. The stages, shallow to deep: what
            `features_only`, `surgery.freeze_stages` and FCN read. Defaults
            to `()` (then inferred from the graph when needed).
        preprocessing: str. The input normalisation without pretrained
            weights. Defaults to the `"imagenet"` source's, else `"caffe"`.
        hooks: `zoo.Hooks`. The family's quirks (its own head, auxiliary
            heads, a PyTorch converter, ...). Defaults to none.
        others: `stage_fn`, `paper`, `description`, `default_size`,
            `min_size`, `weights` are the `ModelSpec` fields of the same
            names, documented there.
        overwrite: bool. Allow replacing an existing entry. Defaults to
            `False`.

    Example:

        >>> import keras, zoo
        >>> @zoo.register(family="tiny", default_size=32, min_size=8,
        ...               stages=(zoo.Stage("stage1", "s1_conv", 2, 8),
        ...                       zoo.Stage("stage2", "s2_conv", 4, 16)),
        ...               overwrite=True)
        ... def tinynet(x):
        ...     x = keras.layers.Conv2D(8, 3, strides=2, name="s1_conv")(x)
        ...     x = keras.layers.Conv2D(16, 3, strides=2, name="s2_conv")(x)
        ...     return zoo.Body(x)
        >>> zoo.build("tinynet", num_classes=3).output_shape
        (None, 3)
    """
    weights = dict(weights or {})
    if preprocessing is None:
        preprocessing = weights["imagenet"].preprocessing if "imagenet" in weights else "caffe"
    _check_preprocessing(preprocessing)
    stages = tuple(stages)
    for s in stages:
        if not isinstance(s, Stage):
            raise TypeError(f"`stages` must hold zoo.Stage objects. Received: {s!r}")
    if hooks is not None and not isinstance(hooks, Hooks):
        raise TypeError(f"`hooks` must be a zoo.Hooks. Received: {hooks!r}")

    def decorator(body: Callable) -> Callable:
        key = (name or body.__name__).lower()
        _add(
            ModelSpec(
                name=key,
                family=family,
                body=body,
                stages=stages,
                stage_fn=stage_fn,
                paper=paper,
                description=description,
                default_size=default_size,
                min_size=min_size,
                preprocessing=preprocessing,
                weights=weights,
                hooks=hooks or Hooks(),
            ),
            overwrite,
        )
        return body

    return decorator


def register_task(
    name: str,
    *,
    family: str,
    builder: Callable,
    task: str,
    paper: str = "",
    description: str = "",
    overwrite: bool = False,
) -> ModelSpec:
    """Register a task model (segmentation, detection, ...) built by `builder`.

    `builder`'s keyword parameters are the `zoo.build` arguments the task
    accepts (`zoo.build` refuses any other one with a clear error instead of
    dropping it), and their defaults are the task's: `backbone` (the
    registered backbone used by default) and `num_classes`.

    Args:
        name: str. Registry name.
        family: str. Family name (`"fcn"`).
        builder: callable. `builder(**arguments) -> keras.Model`, with a
            `backbone` parameter whose default is a registered backbone.
        task: str. What the model does, e.g. `"segmentation"`.
        paper, description: str. For the model card.
        overwrite: bool. Allow replacing an existing entry.

    Example:

        >>> import zoo
        >>> spec = zoo.get_spec("fcn8s")
        >>> spec.task, spec.default_backbone, "pooling" in spec.arguments
        ('segmentation', 'vgg16', False)
    """
    spec = ModelSpec(name=name.lower(), family=family, builder=builder, task=task)
    if spec.default_backbone is None:
        raise ValueError(
            f"The builder of task {name!r} needs a `backbone` parameter whose default is a "
            "registered backbone (e.g. `backbone='vgg16'`)."
        )
    backbone = get_spec(spec.default_backbone)
    spec = dataclasses.replace(
        spec,
        paper=paper,
        description=description,
        default_size=backbone.default_size,
        min_size=backbone.min_size,
        preprocessing=backbone.preprocessing,
    )
    _add(spec, overwrite)
    return spec


def list_models(pattern: str = "*", *, task: str | None = None, pretrained: bool = False) -> list[str]:
    """Names of registered models matching a shell wildcard, in natural order.

    Natural order compares the numbers in names by value: `resnet18`,
    `resnet34`, `resnet50`, `resnet101`; `fcn8s` before `fcn16s`.

    Args:
        pattern: str. `fnmatch` pattern, case-insensitive. Defaults to `"*"`.
        task: str. Only models of this task (`"classification"`,
            `"segmentation"`). Defaults to all.
        pretrained: bool. Only models with at least one weight source.

    Example:

        >>> import zoo
        >>> zoo.list_models("resnet5*")
        ['resnet50', 'resnet50_tv', 'resnet50v2']
        >>> zoo.list_models(task="segmentation")
        ['fcn8s', 'fcn16s', 'fcn32s']
        >>> zoo.list_models("resnet*v2")
        ['resnet50v2', 'resnet101v2', 'resnet152v2']
    """
    pattern = pattern.lower()
    return sorted(
        (
            n
            for n, s in _REGISTRY.items()
            if fnmatch.fnmatchcase(n, pattern)
            and (task is None or s.task == task)
            and (not pretrained or s.weights)
        ),
        key=natural_key,
    )


def natural_key(name: str) -> tuple:
    """A sort key that orders the numbers inside names by value ("resnet18" before "resnet101").

    Example:

        >>> from zoo.registry import natural_key
        >>> sorted(["vgg19", "vgg11_bn", "vgg11", "vgg16"], key=natural_key)
        ['vgg11', 'vgg11_bn', 'vgg16', 'vgg19']
    """
    return tuple(
        (0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"(\d+)", name) if part
    )


def models_with_weights() -> list[str]:
    """Names of the backbones that have a pretrained source.

    Example:

        >>> import zoo
        >>> "resnet50" in zoo.registry.models_with_weights()
        True
    """
    return list_models(pretrained=True)


def get_spec(name: str) -> ModelSpec:
    """The `ModelSpec` of a registered model; unknown names suggest others.

    Example:

        >>> import zoo
        >>> zoo.get_spec("ResNet50").family
        'resnet'
    """
    if not isinstance(name, str):
        raise TypeError(f"A model name must be a string. Received: {name!r}")
    key = name.lower()
    if key in _REGISTRY:
        return _REGISTRY[key]
    close = difflib.get_close_matches(key, list(_REGISTRY), n=3, cutoff=0.5)
    hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    raise ValueError(
        f"Unknown model name {name!r}.{hint} `zoo.list_models()` lists the "
        f"{len(_REGISTRY)} registered models."
    )


def specs() -> list[ModelSpec]:
    """Every registered spec, sorted by name (for cards, tables, lookups).

    Example:

        >>> import zoo
        >>> len(zoo.registry.specs()) == len(zoo.list_models())
        True
    """
    return [_REGISTRY[n] for n in sorted(_REGISTRY)]
