"""The one graph-rewriting engine every `surgery` edit uses.

`rewrite` replays a functional model's graph on fresh inputs, tensor by
tensor, from the outputs it is asked for back to the inputs (so a cut does not
even copy what lies after it). Every layer it meets is *cloned* (config and
weights), so the new model never shares state with the original; an `edits`
mapping lets a caller change what happens at chosen layers (skip, replace,
wrap), and `outputs` picks which layer outputs the new model returns.

Nested models (a keras.applications base inside a classifier, a Sequential
inside a functional model) are kept as one cloned unit unless an edit or an
output reaches inside them; then they are inlined: their layers join the
outer graph. Sequential models are edited through their functional graph.

This is `surgery`'s one module that reads Keras internals: a functional
graph's call sites (`KerasTensor._keras_history`, `Layer._inbound_nodes`)
and a model's input structure (`Functional._inputs_struct`), which Keras 3
exposes through no public API; the other modules use `keras` only.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import sys
import warnings
from collections.abc import Callable, Sequence

import keras
from keras import tree

from zoo.layers import leaf_layers

# A layer named by a str (name or glob), a Layer object, an int index, or a list of these.
LayerSpec = str | int | keras.layers.Layer | Sequence["LayerSpec"]


class SurgeryError(ValueError):
    """An edit that cannot be made; the message says why and what to do."""


def graph_of(model: keras.Model) -> keras.Model:
    """The functional graph behind a Functional or Sequential model.

    Raises `SurgeryError` for subclassed models, whose graph Keras cannot see.

    Example:

        >>> import keras, surgery
        >>> seq = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
        >>> type(surgery.engine.graph_of(seq)).__name__
        'Functional'
    """
    if isinstance(model, keras.Sequential):
        functional = getattr(model, "_functional", None)
        if functional is None:
            raise SurgeryError(
                f"Sequential model {model.name!r} has no known input shape, so it "
                "has no graph yet. Start it with `keras.Input(shape)` or call "
                "`model.build((None, ...))` first."
            )
        return functional
    if isinstance(model, keras.Model) and hasattr(model, "_nodes_by_depth") and model.inputs is not None:
        return model
    raise SurgeryError(
        f"surgery edits functional and Sequential Keras models; {model.name!r} "
        f"is a subclassed model ({type(model).__name__}) whose layer graph Keras "
        "cannot see. Rebuild it with the functional API (keras.Model(inputs, "
        "outputs)) or edit its layers by hand."
    )


def resolve(model: keras.Model, spec: LayerSpec, *, many: bool = False) -> list[keras.layers.Layer]:
    """Find layers by name, glob pattern, layer object or index.

    Names and patterns search nested models too (their leaf layers); an
    index counts `model.layers` (top level, negative allowed), as
    `model.layers[i]` does.

    Args:
        model: keras.Model.
        spec: str (name or glob such as `"conv4_*"`), a `keras.layers.Layer`,
            an int, or a list of these.
        many: bool. Allow a spec to match several layers. Defaults to False.

    Example:

        >>> import zoo, surgery
        >>> m = zoo.build("vgg11", input_shape=(32, 32, 3), include_top=False)
        >>> [l.name for l in surgery.engine.resolve(m, "block5_*", many=True)]
        ['block5_conv1', 'block5_conv2', 'block5_pool']
    """
    if isinstance(spec, (list, tuple)):
        out = []
        for s in spec:
            out.extend(resolve(model, s, many=True))
        return out
    top = list(model.layers)
    everything = top + [l for l in leaf_layers(model) if l not in top]
    if isinstance(spec, keras.layers.Layer):
        if not any(l is spec for l in everything):
            raise SurgeryError(f"Layer {spec.name!r} is not part of model {model.name!r}.")
        return [spec]
    if isinstance(spec, int) and not isinstance(spec, bool):
        if not -len(top) <= spec < len(top):
            raise SurgeryError(
                f"Model {model.name!r} has {len(top)} layers (indices "
                f"{-len(top)}..{len(top) - 1}). Received index: {spec}"
            )
        return [top[spec]]
    if not isinstance(spec, str):
        raise TypeError(f"A layer is named by a str, a Layer or an int. Received: {spec!r}")
    if any(c in spec for c in "*?["):
        found = [l for l in everything if fnmatch.fnmatchcase(l.name, spec)]
    else:
        found = [l for l in everything if l.name == spec]
    if not found:
        import difflib

        close = difflib.get_close_matches(spec, [l.name for l in everything], n=3)
        hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
        raise SurgeryError(f"No layer {spec!r} in model {model.name!r}.{hint}")
    if len(found) > 1 and not many:
        raise SurgeryError(
            f"{spec!r} matches {len(found)} layers ({', '.join(l.name for l in found[:5])}…); "
            "this edit takes one layer. Give an exact name."
        )
    return found


# An edit: `edit(layer, args, kwargs, call) -> outputs`. `call(*args,
# **kwargs)` runs the (cloned) original layer; an edit may call it, skip it,
# or call other layers around it.
Edit = Callable


@dataclasses.dataclass
class _State:
    edits: dict
    copy: bool
    inline: set
    memo: dict = dataclasses.field(default_factory=dict)
    clones: dict = dataclasses.field(default_factory=dict)
    aliases: dict = dataclasses.field(default_factory=dict)
    weights_to_copy: list = dataclasses.field(default_factory=list)
    graphs: list = dataclasses.field(default_factory=list)
    cut_off: dict = dataclasses.field(default_factory=dict)


def _containers(model):
    """Every nested model (Functional or Sequential) inside `model`."""
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield layer
            yield from _containers(layer)


def rewrite(
    model: keras.Model,
    *,
    edits: dict | None = None,
    outputs: Sequence | None = None,
    inputs: Sequence | None = None,
    copy: bool = True,
    name: str | None = None,
) -> keras.Model:
    """Rebuild `model` with `edits` applied; the original is left untouched.

    Args:
        model: a functional or Sequential `keras.Model`.
        edits: dict mapping a layer (object) to an `Edit` callable
            `edit(layer, args, kwargs, call) -> outputs`.
        outputs: what the new model returns, or `None` for the model's own
            outputs. A list whose items are layers (their output), tensors
            of the old graph, or `(item, fn)` pairs: `fn` applied to the new
            tensor of `item` (how heads are attached).
        inputs: layers (their output) or tensors of the old graph that
            become the new model's inputs, or `None` for the model's own
            inputs: the part of the model after them (`surgery.tail`).
        copy: bool. Clone every kept layer with its weights (the new model
            shares nothing with the original). `False` reuses the layer
            objects (shared weights). Defaults to True.
        name: str. Name of the new model. Defaults to the original's.

    Returns:
        A new functional `keras.Model`.

    Example:

        >>> import keras, zoo, surgery
        >>> m = zoo.build("resnet18", input_shape=(32, 32, 3))
        >>> relu = m.get_layer("conv1_relu")
        >>> gelu = lambda layer, args, kwargs, call: keras.layers.Activation(
        ...     "gelu", name="conv1_gelu")(*args)
        >>> new = surgery.engine.rewrite(m, edits={relu: gelu})
        >>> new.get_layer("conv1_gelu").activation.__name__
        'gelu'
    """
    graph = graph_of(model)
    edits = dict(edits or {})
    edit_ids = {id(l): e for l, e in edits.items()}
    targets = set(edit_ids)
    output_layers = [o[0] if isinstance(o, tuple) else o for o in (outputs or [])]
    targets |= {id(l) for l in output_layers if isinstance(l, keras.layers.Layer)}
    inline = set()
    for container in _containers(graph):
        if any(id(l) in targets for l in leaf_layers(container)):
            inline.add(id(container))
    state = _State(edits=edit_ids, copy=copy, inline=inline)
    state.graphs = [graph] + [graph_of(c) for c in _containers(graph) if id(c) in inline]

    new_inputs = []
    if inputs is None:

        def new_input(t):
            layer = t._keras_history[0]
            fresh = keras.Input(batch_shape=t.shape, dtype=t.dtype, name=layer.name)
            new = fresh
            if id(layer) in edit_ids:  # an input is never "called": its edit sees the identity
                new = edit_ids[id(layer)](layer, (new,), {}, lambda x: x)
            state.memo[id(t)] = new
            return fresh

        # The original's input structure (a single tensor, a list, a dict with
        # the same keys), so callers use the copy exactly as the original.
        # `_inputs_struct` is the only place Keras keeps it.
        new_inputs = tree.map_structure(new_input, graph._inputs_struct)
    else:
        for item in inputs:
            t = _cut_point(item)
            layer = t._keras_history[0]
            new = keras.Input(batch_shape=t.shape, dtype=t.dtype, name=f"{layer.name}_input")
            new_inputs.append(new)
            state.memo[id(t)] = new
        if len(new_inputs) == 1:
            new_inputs = new_inputs[0]
        # Reaching the old inputs means a connection bypasses the new ones.
        state.cut_off = {id(t): t._keras_history[0].name for t in graph.inputs}
    _alias_nested_inputs(graph, state)

    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 20000))
    try:
        if outputs is None:
            new_outputs = tree.map_structure(lambda t: _tensor(t, state), graph._outputs_struct)
        else:
            new_outputs = [_output(o, state) for o in outputs]
            if len(new_outputs) == 1:
                new_outputs = new_outputs[0]
    finally:
        sys.setrecursionlimit(limit)
    try:
        new_model = keras.Model(new_inputs, new_outputs, name=name or model.name)
    except ValueError as e:
        if "names should be unique" not in str(e):
            raise
        raise SurgeryError(
            f"The edited model would have duplicate layer names ({e}). Give the new layers unique `name=`s."
        ) from None
    for clone, values in state.weights_to_copy:
        try:
            clone.set_weights(values)
        except ValueError as e:
            old = [tuple(v.shape) for v in values]
            new = [tuple(w.shape) for w in clone.weights]
            raise SurgeryError(
                f"Layer {clone.name!r} can no longer take its weights: the edit changed its "
                f"input, so it needs weights of shapes {new}, and it had {old}. Replace it too "
                "with a fresh layer (`surgery.replace(model, name, new_layer)`), or rebuild the "
                "edit and load what still fits with `surgery.restore(new, old, strict=False)`."
            ) from e
    _check_unique_names(new_model)
    return new_model


def _cut_point(item):
    """The one tensor a layer (called once) or a tensor stands for."""
    if isinstance(item, keras.layers.Layer):
        if len(item._inbound_nodes) != 1:
            raise SurgeryError(
                f"Layer {item.name!r} is called {len(item._inbound_nodes)} times; "
                "start at a layer that is called once."
            )
        outs = item._inbound_nodes[0].outputs
        if len(outs) != 1:
            raise SurgeryError(f"Layer {item.name!r} has {len(outs)} outputs; pass the tensor.")
        return outs[0]
    if isinstance(item, keras.KerasTensor):
        return item
    raise TypeError(f"An input is a layer or a tensor of the model. Received: {item!r}")


def _output(item, state):
    if isinstance(item, tuple):
        source, fn = item
        return fn(_output(source, state))
    if isinstance(item, keras.layers.Layer):
        return _layer_output(item, state)
    if isinstance(item, keras.KerasTensor):
        return _tensor(item, state)
    raise TypeError(f"An output is a layer, a tensor or a (source, fn) pair. Received: {item!r}")


def _layer_output(layer, state):
    nodes = [n for n in layer._inbound_nodes if _known(n, state)]
    if not nodes:
        raise SurgeryError(f"Layer {layer.name!r} is not connected to the model's inputs.")
    if len(nodes) > 1:
        raise SurgeryError(
            f"Layer {layer.name!r} is called {len(nodes)} times (a shared layer); "
            "name a layer that is called once."
        )
    outs = [_tensor(t, state) for t in nodes[0].outputs]
    return outs[0] if len(outs) == 1 else outs


def _known(node, state):
    """Whether a node belongs to the graph being rewritten (or an inlined one)."""
    return any(_in_graph(node, g) for g in state.graphs)


def _alias_nested_inputs(graph, state):
    """Map inputs of inlined nested models to the tensors they are called on."""
    for node_list in graph._nodes_by_depth.values():
        for node in node_list:
            op = node.operation
            if not isinstance(op, keras.Model) or id(op) not in state.inline:
                continue
            inner = graph_of(op)
            if len([n for n in op._inbound_nodes if _in_graph(n, graph)]) > 1:
                raise SurgeryError(
                    f"Nested model {op.name!r} is called more than once; edits "
                    "inside a shared nested model are not supported. Edit the "
                    "nested model itself, then rebuild the outer one."
                )
            args = tree.flatten((node.arguments.args, node.arguments.kwargs))
            args = [a for a in args if isinstance(a, keras.KerasTensor)]
            for inner_in, outer_arg in zip(inner.inputs, args):
                state.aliases[id(inner_in)] = outer_arg
            _alias_nested_inputs(inner, state)


def _in_graph(node, graph):
    return any(node in nodes for nodes in graph._nodes_by_depth.values())


def _tensor(old, state):
    """The new tensor standing for `old` (a KerasTensor of the old graph)."""
    key = id(old)
    if key in state.memo:
        return state.memo[key]
    if key in state.cut_off:
        raise SurgeryError(
            f"Part of the model after the new inputs still depends on {state.cut_off[key]!r} "
            "(a connection, e.g. a residual shortcut, bypasses them). Start at a layer that "
            "everything later depends on, such as a block or stage output."
        )
    if key in state.aliases:
        new = _tensor(state.aliases[key], state)
        state.memo[key] = new
        return new
    op, node_index, _ = old._keras_history
    node = op._inbound_nodes[node_index]
    if isinstance(op, keras.Model) and id(op) in state.inline:
        inner = graph_of(op)
        flat = [_tensor(t, state) for t in inner.outputs]
    else:
        flat = tree.flatten(_apply(op, node, state))
    for t_old, t_new in zip(node.outputs, flat):
        state.memo[id(t_old)] = t_new
    if key not in state.memo:
        raise SurgeryError(f"Could not rebuild the output of {op.name!r}.")
    return state.memo[key]


def _apply(op, node, state):
    def convert(x):
        return _tensor(x, state) if isinstance(x, keras.KerasTensor) else x

    # A recorded `mask=` tensor is Keras' own mask propagation (computed by
    # an Embedding or Masking layer, sometimes by a bare operation that has
    # no config to clone): the new tensors carry their masks again, and Keras
    # passes them on to every layer that supports masking.
    kwargs = {
        k: v
        for k, v in node.arguments.kwargs.items()
        if not (k == "mask" and any(isinstance(t, keras.KerasTensor) for t in tree.flatten(v)))
    }
    args = tree.map_structure(convert, node.arguments.args)
    kwargs = tree.map_structure(convert, kwargs)
    call = _caller(op, state)
    edit = state.edits.get(id(op))
    if edit is None:
        return call(*args, **kwargs)
    return edit(op, args, kwargs, call)


def _caller(op, state):
    def call(*args, **kwargs):
        return _clone(op, state)(*args, **kwargs)

    return call


def _clone(layer, state):
    if not state.copy:
        return layer
    if id(layer) in state.clones:
        return state.clones[id(layer)]
    if not isinstance(layer, keras.layers.Layer):
        # A bare `keras.ops` operation in the graph (`x + y` on KerasTensors,
        # as in keras.applications' ConvNeXt): stateless, reused as it is.
        state.clones[id(layer)] = layer
        return layer
    if isinstance(layer, keras.Model):
        clone = keras.models.clone_model(layer)
    else:
        config = layer.get_config()
        try:
            clone = type(layer).from_config(config)
        except Exception as e:  # any user layer without a working from_config
            warnings.warn(
                f"Layer {layer.name!r} ({type(layer).__name__}) could not be "
                f"cloned from its config ({e}); the new model shares it with the "
                "original. Implement get_config/from_config to get a copy.",
                stacklevel=3,
            )
            clone = layer
    clone.trainable = layer.trainable
    if clone is not layer and layer.weights:
        state.weights_to_copy.append((clone, layer.get_weights()))
    state.clones[id(layer)] = clone
    return clone


def _check_unique_names(model):
    seen, dupes = set(), set()
    # Keras needs unique names among a model's own layers (nested models are
    # their own namespaces); inlined layers land here, so they are checked.
    for layer in model.layers:
        (dupes if layer.name in seen else seen).add(layer.name)
    if dupes:
        raise SurgeryError(
            f"The edited model would have duplicate layer names: {sorted(dupes)}. "
            "Give the new layers unique `name=`s."
        )


def fresh_layer(
    layer_or_factory: keras.layers.Layer | Callable[[], keras.layers.Layer], index: int, count: int
) -> keras.layers.Layer:
    """The layer to use at the `index`-th of `count` edit points.

    A factory (callable returning a layer) is called each time; a layer is
    used as is at a single point and cloned (name suffixed) at several.

    Example:

        >>> import keras, surgery
        >>> drop = keras.layers.Dropout(0.1, name="drop")
        >>> surgery.engine.fresh_layer(drop, 1, 3).name
        'drop_2'
    """
    if isinstance(layer_or_factory, keras.layers.Layer):
        if count == 1:
            return layer_or_factory
        config = layer_or_factory.get_config()
        config["name"] = f"{layer_or_factory.name}_{index + 1}"
        return type(layer_or_factory).from_config(config)
    if callable(layer_or_factory):
        return layer_or_factory()
    raise TypeError(f"Expected a keras Layer or a function returning one. Received: {layer_or_factory!r}")


# --- Keras internals the rest of `surgery` needs, fenced here with the reason for each.


def _graph_nodes(model: keras.Model) -> list:
    """The call sites (`Node`s) of a functional graph, inputs first.

    Keras keeps them only in `Functional._nodes_by_depth` (outputs at depth
    0); channel deletion follows channels through the graph in call order.
    """
    graph = graph_of(model)
    return [
        node for depth in sorted(graph._nodes_by_depth, reverse=True) for node in graph._nodes_by_depth[depth]
    ]


def _mark_container_trainable(model: keras.Model, trainable: bool) -> None:
    """Set a nested model's own `trainable` flag without touching its layers.

    The public setter also sets every child's flag, which would undo a
    per-layer freeze; Keras reads the container's flag (`_trainable`) for
    `model.trainable`.
    """
    model._trainable = trainable


def _in_safe_mode() -> bool:
    """Whether `keras.saving.load_model(..., safe_mode=True)` is running.

    Keras exposes the flag only in `keras.src.saving.serialization_lib`
    (TFSMLayer reads it the same way); a Keras that moved it keeps refusing.
    """
    try:
        from keras.src.saving import serialization_lib
    except ImportError:
        return True
    return serialization_lib.in_safe_mode() is True


def _declare_input_shape(layer: keras.layers.Layer, input_shape: tuple) -> None:
    """Let a `Sequential` start with `layer` (what `input_shape=` on a Keras layer records).

    Sequential reads `_input_shape_arg`/`_batch_input_shape` to create its
    Input; a custom layer has no public way to declare them.
    """
    layer._input_shape_arg = tuple(input_shape)
    layer._batch_input_shape = (None,) + tuple(input_shape)


def _all_sublayers(model: keras.Model) -> list:
    """Every layer inside `model`, wrappers' inner layers included (`_flatten_layers`)."""
    return list(model._flatten_layers(include_self=False))
