"""The zoo's only uses of Keras internals, fenced here with the reason for each.

Keras 3 has no public API for these; everything else in `zoo` uses `keras`
and `keras.ops` only.
"""

from __future__ import annotations

import os


def producing_layer(tensor):
    """The layer whose call produced a symbolic `KerasTensor`.

    No public accessor exists: `KerasTensor._keras_history` is what
    `keras.Model` itself reads to trace a graph.
    """
    return tensor._keras_history[0]


def inbound_nodes(layer) -> list:
    """The call sites (`Node`s) of a layer in functional graphs.

    Needed to read the input/output shapes of every call (MAC counting) and
    a Dense layer's producer (convolutionalize); Keras exposes only the
    first call's `layer.input`/`layer.output` publicly.
    """
    return list(layer._inbound_nodes)


def keras_home() -> str:
    """Keras' cache root (`KERAS_HOME`, else `~/.keras`), read at call time.

    `keras.utils.get_file` stores downloads under it but has no public
    getter; reading `KERAS_HOME` first keeps per-process overrides working.
    """
    home = os.environ.get("KERAS_HOME")
    if home:
        return os.path.expanduser(home)
    import keras

    return os.path.expanduser(keras.src.backend.config.keras_home())


def inputs_struct(model):
    """A functional model's input structure (one tensor, a list or a dict).

    `model.inputs` is always a flat list; a model rebuilt on it takes a list
    even where the original took one tensor, and Keras warns at every call.
    """
    return model._inputs_struct


def outputs_struct(model):
    """A functional model's output structure (dict, list or tensor).

    `model.output` flattens a dict of outputs to a list on some Keras
    versions; the structure itself lives in `_outputs_struct`.
    """
    return model._outputs_struct
