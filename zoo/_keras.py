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


def _snake(name: str) -> str:
    # Keras' own rule for default layer names (`ReLU` -> `re_lu`).
    import re

    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


def stable_default_names(layers, taken) -> None:
    """Rename Keras' default-named layers to the names a fresh session gives.

    keras.applications leaves many layers unnamed (InceptionV3's
    `activation_4`, MobileNetV3's `re_lu_5`); Keras numbers them with a
    counter that lives as long as the Python session, so the second model
    built gets `activation_98`. Stage tables, `surgery.cut(model, name)` and
    name-matched weight files need names that do not depend on what was
    built before. Layers are renumbered per type in creation order (their
    current counter), exactly as in a fresh session. Keras has no public
    rename; `name` is a plain attribute read by `get_layer` and configs.
    (Variable paths keep the old name: they are labels, nothing looks
    layers up by them.)

    Args:
        layers: the new layers, in any order.
        taken: names already used by other layers of the same graph.
    """
    import re

    groups: dict[str, list] = {}
    for layer in layers:
        stem = _snake(type(layer).__name__)
        match = re.fullmatch(re.escape(stem) + r"(?:_(\d+))?", layer.name)
        if match:
            groups.setdefault(stem, []).append((int(match.group(1) or 0), layer))
    for stem, members in groups.items():
        for i, (_, layer) in enumerate(sorted(members, key=lambda m: m[0])):
            new = stem if i == 0 else f"{stem}_{i}"
            if new in taken:
                raise ValueError(
                    f"The graph before this model already has a layer named {new!r}, the "
                    "name Keras gives this model's own layer. Name the layers of your "
                    "`input_tensor` graph explicitly (`name=...`)."
                )
            layer.name = new
