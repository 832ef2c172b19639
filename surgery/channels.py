"""Channel pruning: delete filters or units and mend every weight after them.

`delete_channels` plans on the model's graph which tensors share one channel
index (a convolution's output, the BatchNormalization and ReLU after it, and
everything an `Add` ties to it: a whole residual path), deletes the chosen
channels from every layer producing that index, and slices the input side of
every layer consuming it (the next convolution or dense layer, the right
rows after a `Flatten`, the offsets of a `Concatenate`). The plan becomes one
call of `surgery.engine.rewrite`, so the original model is untouched.

`prune` chooses the channels (L1 norm of the filters, or the average
percentage of zeros after the activation on data) for many channel groups
and deletes them in one rewrite.

Channels are the last axis (`channels_last`), as in every zoo model.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import keras
import numpy as np
from keras import tree

from surgery.engine import LayerSpec, SurgeryError, _graph_nodes, graph_of, resolve, rewrite
from zoo._keras import producing_layer as _producer  # zoo's fence: `_keras_history` has no public accessor
from zoo.layers import leaf_layers

L = keras.layers

# Layers whose output channel c is computed from their input channel c alone:
# the input and output tensors share one channel index.
_ELEMENTWISE = (
    L.ReLU,
    L.LeakyReLU,
    L.ELU,
    L.PReLU,
    L.Dropout,
    L.SpatialDropout1D,
    L.SpatialDropout2D,
    L.SpatialDropout3D,
    L.GaussianNoise,
    L.GaussianDropout,
    L.AlphaDropout,
    L.ActivityRegularization,
    L.Identity,
    L.BatchNormalization,
    L.MaxPooling1D,
    L.MaxPooling2D,
    L.MaxPooling3D,
    L.AveragePooling1D,
    L.AveragePooling2D,
    L.AveragePooling3D,
    L.GlobalAveragePooling1D,
    L.GlobalAveragePooling2D,
    L.GlobalAveragePooling3D,
    L.GlobalMaxPooling1D,
    L.GlobalMaxPooling2D,
    L.GlobalMaxPooling3D,
    L.ZeroPadding1D,
    L.ZeroPadding2D,
    L.ZeroPadding3D,
    L.Cropping1D,
    L.Cropping2D,
    L.Cropping3D,
    L.UpSampling1D,
    L.UpSampling2D,
    L.UpSampling3D,
)
_MERGES = (L.Add, L.Subtract, L.Multiply, L.Average, L.Maximum, L.Minimum)
# Bare `keras.ops` operations recorded in a graph (`x + y` on KerasTensors).
_BARE_MERGES = ("Add", "Subtract", "Multiply", "Maximum", "Minimum")
# Layers whose output on one channel depends on the other channels.
_MIXING = (L.LayerNormalization, L.GroupNormalization, L.UnitNormalization, L.Masking)
_CONVS = (L.Conv1D, L.Conv2D, L.Conv3D)
_TRANSPOSED = (L.Conv1DTranspose, L.Conv2DTranspose, L.Conv3DTranspose)
_SEPARABLE = (L.SeparableConv1D, L.SeparableConv2D)
_DEPTHWISE = (L.DepthwiseConv1D, L.DepthwiseConv2D)
_RNNS = {L.SimpleRNN: 1, L.GRU: 3, L.LSTM: 4}  # gates per unit
# Layers whose weights own their output channels (what can be pruned).
_PRODUCERS = (L.Dense, L.Embedding) + _CONVS + _TRANSPOSED + _SEPARABLE + tuple(_RNNS)


def _rnn_gates(layer):
    return next((g for cls, g in _RNNS.items() if isinstance(layer, cls)), None)


@dataclasses.dataclass(eq=False)  # nodes are keys by identity
class _Node:
    op: Any
    inputs: list  # positional input tensors (mask tensors left out)
    outputs: list
    kind: str  # "same", "concat", "flatten", "repeat", "produce", "consume", "opaque"
    why: str = ""


def _why_not(layer, reason):
    return f"{type(layer).__name__} {getattr(layer, 'name', '')!r} {reason}"


def _classify(op, inputs, outputs) -> tuple[str, str]:
    """How an operation treats the channel axis of its inputs."""
    if not isinstance(op, L.Layer):
        if type(op).__name__ in _BARE_MERGES:
            return "same", ""
        return "opaque", _why_not(op, "is an operation surgery cannot follow channels through")
    fmt = getattr(op, "data_format", "channels_last")
    if fmt not in (None, "channels_last"):
        return "opaque", _why_not(op, f"uses data_format={fmt!r}; channel deletion needs channels_last")
    if isinstance(op, L.BatchNormalization):
        rank = len(inputs[0].shape)
        if op.axis not in (-1, rank - 1):
            return "opaque", _why_not(op, f"normalises axis {op.axis}, not the channel axis")
        return "same", ""
    if isinstance(op, L.Softmax):
        rank = len(inputs[0].shape)
        axes = op.axis if isinstance(op.axis, (list, tuple)) else [op.axis]
        if any(a in (-1, rank - 1) for a in axes):
            return "opaque", _why_not(op, "normalises over the channels, so the kept ones would change")
        return "same", ""
    if isinstance(op, L.Activation):
        name = getattr(op.activation, "__name__", "")
        if name in ("softmax", "log_softmax"):
            return "opaque", _why_not(op, "normalises over the channels, so the kept ones would change")
        return "same", ""
    if isinstance(op, _MIXING):
        return "opaque", _why_not(op, "mixes the channels, so deleting some would change the others")
    if isinstance(op, _ELEMENTWISE) or isinstance(op, _MERGES):
        return "same", ""
    if isinstance(op, L.Rescaling):
        if np.ndim(op.scale) == 0 and np.ndim(op.offset) == 0:
            return "same", ""
        return "opaque", _why_not(op, "has a per-channel scale or offset")
    if isinstance(op, L.Concatenate):
        rank = len(outputs[0].shape)
        return ("concat", "") if op.axis in (-1, rank - 1) else ("same", "")
    if isinstance(op, L.Flatten):
        if None in tuple(inputs[0].shape[1:]):
            return "opaque", _why_not(
                op, "flattens a tensor of unknown size; build the model with a fixed input shape"
            )
        return "flatten", ""
    if isinstance(op, L.Reshape):
        if inputs[0].shape[-1] == outputs[0].shape[-1]:
            return "same", ""
        return "opaque", _why_not(
            op, "changes the channel axis; only reshapes that keep the last axis can follow deleted channels"
        )
    if isinstance(op, _DEPTHWISE):
        return ("same", "") if op.depth_multiplier == 1 else ("repeat", "")
    if isinstance(op, (L.Conv1D, L.Conv2D, L.Conv3D)) and op.groups != 1:
        return "opaque", _why_not(op, f"is a grouped convolution (groups={op.groups})")
    if _rnn_gates(op) is not None:
        if op.return_state:
            return "consume", _why_not(op, "returns its states; delete units of an RNN without return_state")
        return "produce", ""
    if isinstance(op, _PRODUCERS):
        return "produce", ""
    if isinstance(op, L.Bidirectional) and _rnn_gates(op.forward_layer) is not None:
        return "consume", _why_not(op, "is bidirectional; delete units of the RNN layers themselves")
    if isinstance(op, L.TimeDistributed) and isinstance(op.layer, L.Dense):
        return "consume", _why_not(op, "wraps its Dense layer; delete units of a Dense layer outside it")
    return "opaque", _why_not(op, "is a layer surgery does not know how to follow channels through")


class _Graph:
    """A functional graph as nodes in call order, with tensors grouped by channel index."""

    def __init__(self, model):
        graph = graph_of(model)
        self.model = model
        self.nodes: list[_Node] = []
        self.node_of_op: dict[int, list[_Node]] = {}
        self.producer: dict[int, _Node] = {}
        self.consumers: dict[int, list[_Node]] = {}
        self.tensors: dict[int, Any] = {}
        self.outputs = {id(t) for t in graph.outputs}
        self.inputs = {id(t) for t in graph.inputs}
        for node in _graph_nodes(graph):
            if isinstance(node.operation, L.InputLayer):
                continue
            inputs = [t for t in tree.flatten(node.arguments.args) if isinstance(t, keras.KerasTensor)]
            outputs = list(node.outputs)
            kind, why = _classify(node.operation, inputs, outputs)
            n = _Node(node.operation, inputs, outputs, kind, why)
            self.nodes.append(n)
            self.node_of_op.setdefault(id(n.op), []).append(n)
            for t in inputs:
                self.consumers.setdefault(id(t), []).append(n)
                self.tensors[id(t)] = t
            for t in outputs:
                self.producer[id(t)] = n
                self.tensors[id(t)] = t
        self._parent = {}
        for n in self.nodes:
            if n.kind == "same":
                for t in n.inputs + n.outputs:
                    self._union(n.outputs[0], t)

    def _find(self, key):
        parent = self._parent.setdefault(key, key)
        if parent != key:
            parent = self._parent[key] = self._find(parent)
        return parent

    def _union(self, a, b):
        self._parent[self._find(id(b))] = self._find(id(a))

    def group(self, tensor) -> list:
        """Every tensor sharing `tensor`'s channel index."""
        root = self._find(id(tensor))
        return [t for k, t in self.tensors.items() if self._find(k) == root]

    def sources(self, tensor) -> list[_Node]:
        """The nodes that create the channels of `tensor`'s group."""
        found = []
        for t in self.group(tensor):
            if id(t) in self.inputs:
                raise SurgeryError(
                    f"These channels come from the model input {_producer(t).name!r} "
                    "(through a residual connection); they cannot be deleted."
                )
            node = self.producer[id(t)]
            if node.kind == "same":
                continue
            if node.kind != "produce":
                raise SurgeryError(
                    f"These channels are also created by {node.why or _why_not(node.op, 'which has no filters to delete')} "
                    "(it feeds the same merge). Delete channels of layers that do not meet it."
                )
            if node not in found:
                found.append(node)
        return found


def _as_keep(layer, channels, width) -> np.ndarray:
    try:
        idx = np.asarray(list(channels), dtype="int64").reshape(-1)
    except (TypeError, ValueError):
        raise TypeError(f"`channels` must be a list of ints. Received: channels={channels!r}") from None
    if idx.size == 0:
        raise SurgeryError(f"No channels given for layer {layer.name!r}; give at least one index to delete.")
    bad = idx[(idx < -width) | (idx >= width)]
    if bad.size:
        raise SurgeryError(
            f"Layer {layer.name!r} has {width} channels (indices 0..{width - 1}). Received: channels={bad.tolist()}"
        )
    keep = np.ones(width, bool)
    keep[idx % width] = False
    if not keep.any():
        raise SurgeryError(
            f"Deleting channels {sorted(set((idx % width).tolist()))} would leave layer {layer.name!r} "
            f"with no channels (it has {width}). Keep at least one, or remove the branch with `surgery.cut`."
        )
    return keep


@dataclasses.dataclass
class _Change:
    """What happens to one layer: input channels kept, output channels kept, config updates."""

    layer: Any
    keep_in: np.ndarray | None = None
    keep_out: np.ndarray | None = None
    config: dict = dataclasses.field(default_factory=dict)


def _plan(graph: _Graph, deletions: Mapping) -> dict[int, _Change]:
    """Which layers change and how, for `{producer node: keep mask}` deletions."""
    keep_out = {}
    for node, keep in deletions.items():
        for src in graph.sources(node.outputs[0]):
            prev = keep_out.get(id(src.op))
            if prev is not None and not np.array_equal(prev, keep):
                raise SurgeryError(
                    f"Layers {node.op.name!r} and {src.op.name!r} feed the same merge (one channel index), "
                    "so they must lose the same channels; give the same channels for both, or one of them."
                )
            keep_out[id(src.op)] = keep
    masks: dict[int, np.ndarray] = {}
    changes: dict[int, _Change] = {}

    def change(op):
        return changes.setdefault(id(op), _Change(op))

    def record_in(node, keep):
        c = change(node.op)
        if c.keep_in is not None and not np.array_equal(c.keep_in, keep):
            raise SurgeryError(
                f"Layer {node.op.name!r} is shared (called several times) on tensors that would lose "
                "different channels; delete the same channels on every call."
            )
        c.keep_in = keep

    for node in graph.nodes:
        ins = [masks.get(id(t)) for t in node.inputs]
        produced = keep_out.get(id(node.op))
        if produced is None and all(m is None for m in ins):
            continue
        if node.kind == "opaque" or (node.kind == "consume" and produced is not None):
            raise SurgeryError(
                f"Cannot delete these channels: {node.why}. Delete channels of a layer whose "
                "channels end before it (at a Dense or convolution), or `surgery.replace` it first."
            )
        full = [m if m is not None else np.ones(t.shape[-1], bool) for m, t in zip(ins, node.inputs)]
        out = None
        if node.kind == "same":
            if any(not np.array_equal(full[0], m) for m in full[1:]):
                raise SurgeryError(
                    f"{_why_not(node.op, 'merges branches that would keep different channels')}; "
                    "delete the same channels on every branch (`surgery.prune` does this for residual paths)."
                )
            out = full[0] if full else None
            # Only layers with per-channel weights (or a shape) change; a
            # weightless layer takes any width, even when it is shared.
            reshaped = isinstance(node.op, L.Reshape)
            if any(m is not None for m in ins) and (getattr(node.op, "weights", None) or reshaped):
                record_in(node, full[0])
                if reshaped:
                    change(node.op).config["target_shape"] = tuple(node.op.target_shape[:-1]) + (
                        int(out.sum()),
                    )
        elif node.kind == "concat":
            out = np.concatenate(full)
        elif node.kind == "flatten":
            shape = tuple(node.inputs[0].shape[1:])
            out = np.broadcast_to(full[0], shape).reshape(-1)
        elif node.kind == "repeat":
            record_in(node, full[0])
            out = np.repeat(full[0], node.op.depth_multiplier)
        else:  # produce / consume
            if any(m is not None for m in ins):
                record_in(node, full[0])
            if produced is not None:
                change(node.op).keep_out = produced
                out = produced
        if out is not None and not out.all():
            for t in node.outputs:
                masks[id(t)] = out
    # A shared layer must lose the same input channels on every call, also
    # on the calls whose inputs keep all of theirs (those never reach `record_in`).
    for c in changes.values():
        if c.keep_in is None:
            continue
        for node in graph.node_of_op.get(id(c.layer), []):
            got = masks.get(id(node.inputs[0]))
            if not np.array_equal(c.keep_in, np.ones(len(c.keep_in), bool) if got is None else got):
                raise SurgeryError(
                    f"Layer {c.layer.name!r} is shared (called several times) on tensors that would lose "
                    "different channels; delete the same channels on every call."
                )
    return changes


def _compress(array, keep, axis):
    return np.compress(keep, array, axis=axis)


def _gate_cols(keep, gates):
    return np.tile(keep, gates)


def _new_weights(layer, keep_in, keep_out) -> list:
    """`layer`'s weights with the kept input and output channels only."""
    names = [w.path.split("/")[-1] for w in layer.weights]
    values = layer.get_weights()
    out = []
    gates = _rnn_gates(layer)
    for name, v in zip(names, values):
        if gates is not None:
            if name == "kernel":
                v = _compress(v, keep_in, 0) if keep_in is not None else v
                v = _compress(v, _gate_cols(keep_out, gates), 1) if keep_out is not None else v
            elif keep_out is not None and name == "recurrent_kernel":
                v = _compress(_compress(v, keep_out, 0), _gate_cols(keep_out, gates), 1)
            elif keep_out is not None and name == "bias":
                v = _compress(v, _gate_cols(keep_out, gates), -1)
        elif isinstance(layer, L.Bidirectional):
            if name == "kernel" and keep_in is not None:
                v = _compress(v, keep_in, 0)
        elif isinstance(layer, (L.Dense, L.TimeDistributed)):
            if name == "kernel":
                v = _compress(v, keep_in, 0) if keep_in is not None else v
                v = _compress(v, keep_out, 1) if keep_out is not None else v
            elif name == "bias" and keep_out is not None:
                v = _compress(v, keep_out, 0)
        elif isinstance(layer, L.Embedding):
            v = _compress(v, keep_out, 1)
        elif isinstance(layer, _CONVS + _TRANSPOSED):
            axis_in, axis_out = (-1, -2) if isinstance(layer, _TRANSPOSED) else (-2, -1)
            if name == "kernel":
                v = _compress(v, keep_in, axis_in) if keep_in is not None else v
                v = _compress(v, keep_out, axis_out) if keep_out is not None else v
            elif name == "bias" and keep_out is not None:
                v = _compress(v, keep_out, 0)
        elif isinstance(layer, _SEPARABLE):
            m = layer.depth_multiplier
            if name == "depthwise_kernel" and keep_in is not None:
                v = _compress(v, keep_in, -2)
            elif name == "pointwise_kernel":
                v = _compress(v, np.repeat(keep_in, m), -2) if keep_in is not None else v
                v = _compress(v, keep_out, -1) if keep_out is not None else v
            elif name == "bias" and keep_out is not None:
                v = _compress(v, keep_out, 0)
        elif isinstance(layer, _DEPTHWISE):
            if name == "kernel":
                v = _compress(v, keep_in, -2)
            elif name == "bias":
                v = _compress(v, np.repeat(keep_in, layer.depth_multiplier), 0)
        elif keep_in is not None and v.ndim and v.shape[-1] == keep_in.size:
            v = _compress(v, keep_in, -1)  # per-channel weights: BatchNormalization, PReLU
        out.append(v)
    return out


def _unbuilt(config):
    """A config whose wrapped layers (TimeDistributed, Bidirectional) build on their new input."""
    if isinstance(config, dict):
        return {k: _unbuilt(v) for k, v in config.items() if k != "build_config"}
    if isinstance(config, list):
        return [_unbuilt(v) for v in config]
    return config


def _new_config(layer, change: _Change) -> dict:
    config = _unbuilt(layer.get_config())
    config.update(change.config)
    if change.keep_out is not None:
        width = int(change.keep_out.sum())
        key = next(k for k in ("filters", "units", "output_dim") if k in config)
        config[key] = width
    return config


def _edits(changes: dict[int, _Change]) -> dict:
    edits = {}
    for change in changes.values():
        layer = change.layer
        built: dict = {}

        def edit(op, args, kwargs, call, change=change, built=built):
            if "layer" not in built:
                built["layer"] = type(op).from_config(_new_config(op, change))
                built["layer"].trainable = op.trainable
            new = built["layer"]
            y = new(*args, **kwargs)
            if "weights" not in built:
                built["weights"] = _new_weights(op, change.keep_in, change.keep_out)
                new.set_weights(built["weights"])
            return y

        edits[layer] = edit
    return edits


def _flat(model):
    """`model`, with nested models inlined (a copy) where it has any."""
    nested = [l for l in graph_of(model).layers if isinstance(l, keras.Model)]
    if not nested:
        return model
    keep = {}
    for sub in nested:
        first = leaf_layers(sub)[0]
        keep[first] = lambda op, args, kwargs, call: call(*args, **kwargs)
    return rewrite(model, edits=keep)


def delete_channels(
    model: keras.Model,
    layer: LayerSpec | Mapping[LayerSpec, Sequence[int]],
    channels: Sequence[int] | None = None,
    *,
    name: str | None = None,
) -> keras.Model:
    """Delete filters or units of layers and mend every weight after them.

    The channels go from every layer creating the same channel index (the
    other branches of an `Add`, `Multiply`, `Average`, ... and the whole
    residual path they tie together), from the per-channel weights they pass
    (BatchNormalization, PReLU, depthwise convolutions), and from the input
    side of the layers that consume them: the next Dense, convolution or RNN
    kernel, the matching rows after a `Flatten`, the offsets after a
    `Concatenate`. Nested models are inlined. On the kept channels the new
    model computes what the original computes when the deleted channels are
    zeroed where they enter the next weighted layers.

    Args:
        model: functional or Sequential `keras.Model` (channels last).
        layer: the layer whose output channels go (name, object, index): a
            Dense, convolution (also transposed or separable), Embedding,
            SimpleRNN, GRU or LSTM layer. Or a dict `{layer: channels}` to
            delete from several layers in one rewrite.
        channels: list of int. Indices of the output channels to delete.
        name: str. Name of the new model. Defaults to the original's.

    Returns:
        A new `keras.Model`; the original is untouched.

    Example:

        >>> import keras, surgery
        >>> inp = keras.Input((8, 8, 3))
        >>> x = keras.layers.Conv2D(8, 3, name="c1")(inp)
        >>> x = keras.layers.BatchNormalization(name="bn")(x)
        >>> x = keras.layers.Flatten()(keras.layers.ReLU()(x))
        >>> m = keras.Model(inp, keras.layers.Dense(2, name="fc")(x))
        >>> small = surgery.delete_channels(m, "c1", [0, 5])
        >>> small.get_layer("c1").filters, tuple(small.get_layer("fc").kernel.shape)
        (6, (216, 2))
    """
    flat = _flat(model)
    graph = _Graph(flat)
    wanted = dict(layer) if isinstance(layer, Mapping) else {layer: channels}
    deletions = {}
    for spec, chans in wanted.items():
        target = resolve(model, spec)[0]
        target = resolve(flat, target.name)[0] if flat is not model else target
        nodes = graph.node_of_op.get(id(target), [])
        if nodes and nodes[0].kind == "consume" and nodes[0].why:
            raise SurgeryError(f"Cannot delete channels of {nodes[0].why}.")
        if not nodes or nodes[0].kind != "produce":
            raise SurgeryError(
                f"Layer {target.name!r} ({type(target).__name__}) has no filters or units of its own; delete "
                "channels of the Dense, convolution, Embedding or RNN layer that creates them."
            )
        if len(nodes) > 1:
            raise SurgeryError(
                f"Layer {target.name!r} is called {len(nodes)} times (a shared layer), so deleting its "
                "channels would change every call; rebuild the model with one layer per call, or delete "
                "channels of a layer that is called once."
            )
        deletions[nodes[0]] = _as_keep(target, chans, nodes[0].outputs[0].shape[-1])
    changes = _plan(graph, deletions)
    return rewrite(flat, edits=_edits(changes), name=name or model.name)


@dataclasses.dataclass(frozen=True)
class ChannelGroup:
    """Tensors sharing one channel index, and the layers creating it.

    Args:
        layers: tuple of str. The layers whose filters/units create the
            channels (several when an `Add` ties branches together).
        width: int. Number of channels.
        activations: tuple of str. Layers after which the channels pass a
            ReLU (where `criterion="apoz"` measures zeros).
    """

    layers: tuple
    width: int
    activations: tuple = ()


def channel_groups(model: keras.Model, layers: LayerSpec | None = None) -> list[ChannelGroup]:
    """The channel groups of a model that `delete_channels` can shrink.

    A group is one channel index shared by several tensors: a convolution's
    output, the BatchNormalization and ReLU after it, and every branch an
    `Add` ties to it. Groups that reach the model's outputs or inputs, or
    pass a layer channels cannot be followed through, are left out.

    Args:
        model: functional or Sequential `keras.Model`.
        layers: layer spec (name, glob, list) restricting the groups to those
            created by these layers. Defaults to every group.

    Example:

        >>> import zoo, surgery
        >>> m = zoo.build("resnet18", input_shape=(32, 32, 3))
        >>> groups = surgery.channel_groups(m)
        >>> [g.layers for g in groups if "conv2_block1_2_conv" in g.layers][0][:2]
        ('conv1_conv', 'conv2_block1_2_conv')
    """
    graph = _Graph(_flat(model))
    wanted = None if layers is None else {l.name for l in resolve(graph.model, layers, many=True)}
    groups, seen = [], set()
    for node in graph.nodes:
        if node.kind != "produce" or len(graph.node_of_op[id(node.op)]) > 1:
            continue
        root = graph._find(id(node.outputs[0]))
        if root in seen:
            continue
        seen.add(root)
        try:
            sources = graph.sources(node.outputs[0])
            members = graph.group(node.outputs[0])
            if any(id(t) in graph.outputs for t in members):
                continue
            if any(len(graph.node_of_op[id(s.op)]) > 1 for s in sources):
                continue
            width = node.outputs[0].shape[-1]
            if width is None or width < 2:
                continue
            keep = np.ones(width, bool)
            keep[0] = False
            _plan(graph, dict.fromkeys(sources[:1], keep))
        except SurgeryError:
            continue
        names = tuple(s.op.name for s in sources)
        if wanted is not None and not wanted & set(names):
            continue
        acts = tuple(_producer(t).name for t in members if _is_relu_output(t))
        groups.append(ChannelGroup(names, int(width), acts))
    return groups


def _is_relu_output(t) -> bool:
    op = _producer(t)
    if isinstance(op, L.ReLU):
        return True
    act = getattr(op, "activation", None)
    return getattr(act, "__name__", "") in ("relu", "relu6")


def _l1_scores(model, group: ChannelGroup) -> np.ndarray:
    """Per channel: L1 norm of each creating layer's filter, scaled by its mean, summed."""
    total = np.zeros(group.width)
    for name in group.layers:
        layer = model.get_layer(name)
        kernel = keras.ops.convert_to_numpy(
            layer.weights[0] if isinstance(layer, L.Embedding) else _out_kernel(layer)
        )
        gates = _rnn_gates(layer)
        axis = -2 if isinstance(layer, _TRANSPOSED) else -1
        kernel = np.moveaxis(kernel, axis, -1)
        if gates:
            kernel = kernel.reshape(kernel.shape[:-1] + (gates, group.width))
            norms = np.abs(kernel).sum(axis=tuple(range(kernel.ndim - 1)))
        else:
            norms = np.abs(kernel).reshape(-1, group.width).sum(0)
        total += norms / max(norms.mean(), 1e-12)
    return total


def _out_kernel(layer):
    return layer.pointwise_kernel if isinstance(layer, _SEPARABLE) else layer.kernel


def _apoz_scores(model, groups, data) -> list[np.ndarray | None]:
    """Per channel: fraction of values that are zero after the ReLU, averaged over `data`."""
    tensors = [(g, name) for g in groups for name in g.activations]
    if not tensors:
        return [None] * len(groups)
    probe = rewrite(model, outputs=[model.get_layer(n) for _, n in tensors], copy=False)
    zeros = [0.0] * len(tensors)
    counts = [0] * len(tensors)
    for batch in _batches(data):
        outs = probe(batch, training=False)
        outs = outs if isinstance(outs, (list, tuple)) else [outs]
        for i, o in enumerate(outs):
            o = keras.ops.convert_to_numpy(o).reshape(-1, o.shape[-1])
            zeros[i] = zeros[i] + (o == 0).sum(0)
            counts[i] += o.shape[0]
    if not counts[0]:
        raise SurgeryError(
            "`data` gave no batches; pass images (an array or an iterable of batches) for APoZ."
        )
    per_group: dict[int, list] = {}
    for (g, _), z, n in zip(tensors, zeros, counts):
        per_group.setdefault(id(g), []).append(np.asarray(z) / n)
    # A channel that is always zero scores 1; the lowest scores are the most used.
    return [np.mean(per_group[id(g)], axis=0) if id(g) in per_group else None for g in groups]


def _batches(data) -> Iterable:
    if isinstance(data, np.ndarray) or hasattr(data, "shape"):
        array = np.asarray(data)
        for i in range(0, len(array), 32):
            yield array[i : i + 32]
        return
    for item in data:
        yield item[0] if isinstance(item, (tuple, list)) else item


def prune(
    model: keras.Model,
    amount: float,
    *,
    criterion: str = "l1",
    data: np.ndarray | Iterable | None = None,
    layers: LayerSpec | None = None,
    name: str | None = None,
) -> keras.Model:
    """Delete the least useful fraction of channels of every prunable group.

    Each channel group (`surgery.channel_groups`: a layer's output channels,
    or a whole residual path tied by `Add`s, decided once for all its
    layers) loses `floor(amount * width)` channels (at least one is kept),
    all in one rewrite.

    Args:
        model: functional or Sequential `keras.Model`.
        amount: float in (0, 1). Fraction of each group's channels to delete.
        criterion: str. `"l1"`: the channels whose filters have the smallest
            L1 norm (summed over a group's layers, each scaled by its mean).
            `"apoz"`: the channels most often zero after their ReLU on `data`
            (average percentage of zeros); groups without a ReLU fall back
            to L1. Defaults to `"l1"`.
        data: images for `"apoz"`: an array, or an iterable of batches (`x`
            or `(x, y)`), such as a `tf.data.Dataset`.
        layers: layer spec (name, glob, list). Prune only the groups these
            layers create. Defaults to every group that does not reach the
            model's outputs.
        name: str. Name of the new model. Defaults to the original's.

    Returns:
        A new `keras.Model`; the original is untouched.

    Example:

        >>> import zoo, surgery
        >>> m = zoo.build("vgg11", input_shape=(32, 32, 3), num_classes=4)
        >>> small = surgery.prune(m, 0.5, layers="block*_conv*")
        >>> m.get_layer("block1_conv1").filters, small.get_layer("block1_conv1").filters
        (64, 32)
    """
    if not isinstance(amount, (int, float)) or not 0 < amount < 1:
        raise SurgeryError(
            f"`amount` is the fraction of channels to delete, in (0, 1). Received: amount={amount!r}"
        )
    if criterion not in ("l1", "apoz"):
        raise SurgeryError(f'`criterion` must be one of ("l1", "apoz"). Received: criterion={criterion!r}')
    if criterion == "apoz" and data is None:
        raise SurgeryError('criterion="apoz" measures activations on `data`; pass images with `data=`.')
    flat = _flat(model)
    groups = channel_groups(flat, layers)
    if not groups:
        raise SurgeryError(
            f"Model {model.name!r} has no channel group that can be pruned"
            + (f" among layers={layers!r}" if layers is not None else "")
            + "; see `surgery.channel_groups(model)`."
        )
    apoz = _apoz_scores(flat, groups, data) if criterion == "apoz" else [None] * len(groups)
    wanted = {}
    for group, zeros in zip(groups, apoz):
        n = min(math.floor(amount * group.width), group.width - 1)
        if n == 0:
            continue
        # Least useful first: most zeros (APoZ), else smallest L1.
        order = (
            np.argsort(-zeros, kind="stable")
            if zeros is not None
            else np.argsort(_l1_scores(flat, group), kind="stable")
        )
        wanted[group.layers[0]] = sorted(order[:n].tolist())
    if not wanted:
        raise SurgeryError(
            f"amount={amount} deletes no channel from any group (the widest has "
            f"{max(g.width for g in groups)}); raise `amount`."
        )
    return delete_channels(flat, wanted, name=name or model.name)


@dataclasses.dataclass(frozen=True)
class SizeReport:
    """What `surgery.size_report` returns; `print(report)` shows a table.

    Args:
        params_before, params_after: int. Parameters.
        macs_before, macs_after: int or None. Multiply-accumulates per
            image (`zoo.count_macs`), None for a model without a fixed size.
        layers: tuple of `(name, before, after)`: the layers whose width
            (filters/units) changed.
    """

    params_before: int
    params_after: int
    macs_before: int | None
    macs_after: int | None
    layers: tuple = ()

    def __str__(self):
        def ratio(a, b):
            if not a:
                return ""
            return f"{(1 - b / a) * 100:.1f}% fewer" if b <= a else f"{(b / a - 1) * 100:.1f}% more"

        lines = [
            f"params  {self.params_before:>14,} -> {self.params_after:>14,}  ({ratio(self.params_before, self.params_after)})"
        ]
        if self.macs_before is not None:
            lines.append(
                f"GMACs   {self.macs_before / 1e9:>14.3f} -> {self.macs_after / 1e9:>14.3f}  "
                f"({ratio(self.macs_before, self.macs_after)})"
            )
        shown = self.layers[:12]
        for name, a, b in shown:
            lines.append(f"  {name:<30} {a:>6} -> {b:<6}")
        if len(self.layers) > len(shown):
            lines.append(f"  ... and {len(self.layers) - len(shown)} more layers (`.layers` lists them all)")
        return "\n".join(lines)


def _width(layer):
    for key in ("filters", "units", "output_dim"):
        if hasattr(layer, key):
            return getattr(layer, key)
    return None


def size_report(before: keras.Model, after: keras.Model) -> SizeReport:
    """Parameters, MACs and layer widths of a model before and after an edit.

    Example:

        >>> import zoo, surgery
        >>> m = zoo.build("resnet18", input_shape=(32, 32, 3), num_classes=4)
        >>> r = surgery.size_report(m, surgery.prune(m, 0.25))
        >>> r.params_after < r.params_before, r.macs_after < r.macs_before
        (True, True)
    """
    from zoo import count_macs

    def macs(m):
        try:
            return count_macs(m)
        except ValueError:
            return None

    widths = {l.name: _width(l) for l in leaf_layers(before)}
    changed = []
    for layer in leaf_layers(after):
        old, new = widths.get(layer.name), _width(layer)
        if old is not None and new is not None and old != new:
            changed.append((layer.name, old, new))
    return SizeReport(before.count_params(), after.count_params(), macs(before), macs(after), tuple(changed))
