"""Model edits: remove, cut, graft, insert, replace. Each describes a rewrite
and hands it to `surgery.engine.rewrite`; none walks the graph itself."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import keras

from surgery.engine import LayerSpec, SurgeryError, fresh_layer, graph_of, resolve, rewrite
from zoo import stages_of


def _shape(t):
    return tuple(t.shape)


def remove(model: keras.Model, layer: LayerSpec, *, name: str | None = None) -> keras.Model:
    """Drop layers whose input and output shapes agree; rewire their consumers.

    Args:
        model: functional or Sequential `keras.Model`.
        layer: name, glob pattern, layer object, index, or a list of them.
        name: str. Name of the new model. Defaults to the original's.

    Example:

        >>> import keras, surgery
        >>> inp = keras.Input((8,), name="features")
        >>> x = keras.layers.Dense(8, name="d1")(inp)
        >>> x = keras.layers.Dropout(0.5, name="drop")(x)
        >>> m = keras.Model(inp, keras.layers.Dense(2, name="out")(x))
        >>> [l.name for l in surgery.remove(m, "drop").layers]
        ['features', 'd1', 'out']
    """
    layers = resolve(model, layer, many=True)

    def skip(op, args, kwargs, call):
        tensors = [a for a in keras.tree.flatten((args, kwargs)) if isinstance(a, keras.KerasTensor)]
        if len(tensors) != 1:
            raise SurgeryError(
                f"Cannot remove {op.name!r}: it takes {len(tensors)} inputs, so there "
                "is no single tensor to pass on. Use `surgery.replace` instead."
            )
        expected = call(*args, **kwargs)
        if isinstance(expected, (list, tuple)) or _shape(expected) != _shape(tensors[0]):
            raise SurgeryError(
                f"Cannot remove {op.name!r}: its input shape {_shape(tensors[0])} differs "
                f"from its output shape {_shape(keras.tree.flatten(expected)[0])}, so its "
                "consumers would break. Use `surgery.replace` with a layer that "
                "produces the same shape, or `surgery.cut` before it."
            )
        return tensors[0]

    for l in layers:
        if isinstance(l, keras.layers.InputLayer):
            raise SurgeryError(f"Cannot remove the input layer {l.name!r}.")
    return rewrite(model, edits={l: skip for l in layers}, name=name)


def cut(model: keras.Model, at: LayerSpec, *, name: str | None = None) -> keras.Model:
    """The model up to one or several layers or stages (their outputs become outputs).

    Like `include_top=False` at any point; several cut points give a
    multi-output model. Stage names (`"conv4"`, `"stage3"`) of zoo models
    (and inferred stages of other models) are accepted besides layer names.

    Args:
        model: functional or Sequential `keras.Model`.
        at: a layer spec (name, glob, object, index), a stage name, or a list.
        name: str. Name of the new model. Defaults to `"<name>_cut"`.

    Example:

        >>> import zoo, surgery
        >>> m = zoo.build("resnet18", input_shape=(64, 64, 3))
        >>> surgery.cut(m, "conv4_block2_out").output_shape
        (None, 4, 4, 256)
        >>> [o.shape[1] for o in surgery.cut(m, ["conv2", "conv3"]).outputs]
        [16, 8]
    """
    specs = at if isinstance(at, (list, tuple)) else [at]
    layers = []
    for spec in specs:
        if isinstance(spec, str) and any(c in spec for c in "*?["):
            layers.extend(resolve(model, spec, many=True))
        else:
            layers.append(_resolve_at(model, spec))
    return rewrite(model, outputs=layers, name=name or f"{model.name}_cut")


def tail(model: keras.Model, after: LayerSpec, *, name: str | None = None) -> keras.Model:
    """The model after one layer or stage: that layer's output becomes the input.

    The counterpart of `cut`: `tail(m, at)(cut(m, at)(x))` equals `m(x)`.
    For heads run on cached features, Grad-CAM (gradients of the scores
    with respect to a feature map), or serving a model in two parts. A
    connection that bypasses `after` (cutting inside a residual block)
    raises `SurgeryError`.

    Args:
        model: functional or Sequential `keras.Model`.
        after: a layer spec (name, object, index) or a stage name.
        name: str. Name of the new model. Defaults to `"<name>_tail"`.

    Example:

        >>> import zoo, surgery
        >>> m = zoo.build("resnet18", num_classes=4, input_shape=(64, 64, 3))
        >>> t = surgery.tail(m, "conv4")
        >>> t.input_shape, t.output_shape
        ((None, 4, 4, 256), (None, 4))
    """
    return rewrite(model, inputs=[_resolve_at(model, after)], name=name or f"{model.name}_tail")


def _has_layer(model, name):
    try:
        resolve(model, name)
        return True
    except SurgeryError:
        return False


def _as_callable(head) -> Callable:
    if isinstance(head, keras.layers.Layer):
        return head
    if isinstance(head, (list, tuple)):

        def chain(x):
            for h in head:
                x = _as_callable(h)(x)
            return x

        return chain
    if callable(head):
        return head
    raise TypeError(
        "`head` must be a Layer, a Sequential or functional model, a list of "
        f"layers, or a function tensor -> tensor. Received: {head!r}"
    )


def graft(
    model: keras.Model,
    head: keras.layers.Layer | Sequence[keras.layers.Layer] | Callable,
    *,
    at: LayerSpec | None = None,
    keep_outputs: bool = False,
    name: str | None = None,
) -> keras.Model:
    """Attach a head at the output, or at any layer, of a model.

    Args:
        model: functional or Sequential `keras.Model`.
        head: a Layer, a Sequential or functional model, a list of layers, or
            a function `tensor -> tensor` (which may create layers).
        at: layer spec or stage where the head attaches. Defaults to the
            model's (single) output.
        keep_outputs: bool. Keep the model's original outputs next to the
            head's (a multi-output model). Defaults to False: what lay after
            `at` is dropped.
        name: str. Name of the new model. Defaults to the original's.

    Example:

        >>> import keras, zoo, surgery
        >>> base = zoo.build("resnet18", include_top=False, input_shape=(32, 32, 3))
        >>> clf = surgery.graft(base, [keras.layers.GlobalAveragePooling2D(),
        ...                            keras.layers.Dense(5, name="logits")])
        >>> clf.output_shape
        (None, 5)
    """
    fn = _as_callable(head)
    graph = graph_of(model)
    if at is None:
        if len(graph.outputs) != 1:
            raise SurgeryError(
                f"Model {model.name!r} has {len(graph.outputs)} outputs; say where the head goes with `at=`."
            )
        anchor = graph.outputs[0]
    else:
        anchor = _resolve_at(model, at)
    outputs = [(anchor, fn)]
    if keep_outputs:
        outputs = list(graph.outputs) + outputs
    return rewrite(model, outputs=outputs, name=name)


def _resolve_at(model, at):
    if isinstance(at, str) and not _has_layer(model, at):
        stages = {s.name: s.layer for s in stages_of(model)}
        if at in stages:
            at = stages[at]
    return resolve(model, at)[0]


def insert(
    model: keras.Model,
    layer: keras.layers.Layer | Callable[[], keras.layers.Layer],
    *,
    after: LayerSpec | None = None,
    before: LayerSpec | None = None,
    name: str | None = None,
) -> keras.Model:
    """Insert a layer after or before existing layers.

    Args:
        model: functional or Sequential `keras.Model`.
        layer: a Layer (cloned with a suffixed name when several points
            match) or a function returning a fresh layer.
        after, before: layer spec (name, glob, object, index); exactly one.
        name: str. Name of the new model.

    Example:

        >>> import keras, zoo, surgery
        >>> m = zoo.build("vgg11", input_shape=(32, 32, 3), include_top=False)
        >>> new = surgery.insert(m, lambda: keras.layers.Dropout(0.1),
        ...                      after="block*_pool")
        >>> sum(isinstance(l, keras.layers.Dropout) for l in new.layers)
        5
    """
    if (after is None) == (before is None):
        raise SurgeryError("Give exactly one of `after=` or `before=`.")
    targets = resolve(model, after if after is not None else before, many=True)
    fresh = {id(t): fresh_layer(layer, i, len(targets)) for i, t in enumerate(targets)}

    def edit(op, args, kwargs, call):
        new_layer = fresh[id(op)]
        if after is not None:
            return new_layer(call(*args, **kwargs))
        first = args[0] if args else None
        if isinstance(first, (list, tuple, dict)):
            raise SurgeryError(
                f"Cannot insert before {op.name!r}: it merges {len(first)} inputs, and one new "
                "layer cannot sit on several branches. Insert after the layer ending each "
                "branch instead (`surgery.insert(model, factory, after=[...])`)."
            )
        tensors = [a for a in keras.tree.flatten(args) if isinstance(a, keras.KerasTensor)]
        if not isinstance(first, keras.KerasTensor) or len(tensors) != 1:
            raise SurgeryError(
                f"Cannot insert before {op.name!r}: it takes {len(tensors)} input tensors. "
                "Insert after the layer that produces the input you mean instead."
            )
        # Keyword arguments Keras recorded for the call (training=, mask=) stay as they were.
        return call(new_layer(first), *args[1:], **kwargs)

    return rewrite(model, edits={t: edit for t in targets}, name=name)


def replace(
    model: keras.Model,
    old: LayerSpec,
    new: keras.layers.Layer | Callable[[keras.layers.Layer], keras.layers.Layer],
    *,
    name: str | None = None,
) -> keras.Model:
    """Replace layers by new ones called on the same inputs.

    Args:
        model: functional or Sequential `keras.Model`.
        old: layer spec (name, glob, object, index, list).
        new: a Layer, or a function `old_layer -> new layer` (needed when
            several layers match, e.g. to keep their units).
        name: str. Name of the new model.

    Example:

        >>> import keras, zoo, surgery
        >>> m = zoo.build("resnet18", input_shape=(32, 32, 3))
        >>> new = surgery.replace(m, "*_relu",
        ...     lambda old: keras.layers.Activation("gelu", name=old.name))
        >>> new.get_layer("conv1_relu").activation.__name__
        'gelu'
    """
    targets = resolve(model, old, many=True)
    if isinstance(new, keras.layers.Layer):
        fresh = {id(t): fresh_layer(new, i, len(targets)) for i, t in enumerate(targets)}
    elif callable(new):
        fresh = {id(t): new(t) for t in targets}
    else:
        raise TypeError(f"`new` must be a Layer or a function old_layer -> Layer. Received: {new!r}")

    def edit(op, args, kwargs, call):
        layer = fresh[id(op)]
        return layer(*args, **_accepted(layer, kwargs))

    return rewrite(model, edits={t: edit for t in targets}, name=name)


def _accepted(layer, kwargs):
    """The call keywords (`mask=`, `training=`) that `layer.call` takes.

    The old layer's recorded keywords go to its replacement only where the
    replacement accepts them: a LayerNormalization has no `mask`, an
    Activation no `training`. Keras itself passes `training` to layers that
    take it.
    """
    import inspect

    params = inspect.signature(layer.call).parameters
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return kwargs
    return {k: v for k, v in kwargs.items() if k in params}


def copy(model: keras.Model, *, name: str | None = None) -> keras.Model:
    """A deep copy (layers and weights) of a functional or Sequential model.

    Example:

        >>> import zoo, surgery
        >>> m = zoo.build("resnet18", input_shape=(32, 32, 3))
        >>> surgery.copy(m).get_layer("conv1_conv") is m.get_layer("conv1_conv")
        False
    """
    return rewrite(model, name=name)
