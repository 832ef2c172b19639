"""Regenerate `zoo/models/applications.py`'s table from the installed Keras.

A maintainer tool, run when Keras adds or changes an application:

    KERAS_BACKEND=jax python scripts/keras_applications_table.py > /tmp/table.py

For every keras.applications model that zoo does not implement itself, it
prints one `_App(...)` row: the constructor, default and minimum input size,
the stages (the layer that ends each stride level 2..32, its channels), the
parameter counts with and without the head, and the two ImageNet files with
the hashes Keras checks. The files are found by calling each constructor with
`weights="imagenet"` while Keras' `get_file` is replaced by a recorder (nothing
is downloaded). Stage ends are *cut points* of the graph (every later layer
depends on the input only through them), the last one at each stride before
the next block's 1x1 expansion; DenseNet, ConvNeXt and NASNet, whose stage
ends are not all cut points, follow the rules in `_override`.

`python scripts/keras_applications_table.py MobileNetV2 Xception` prints
only those rows. Layer names are the ones a fresh Keras session gives (zoo renames the
unnamed layers of an application to exactly those, see
`zoo.models.applications._stable_names`).
"""

from __future__ import annotations

import inspect
import math
import os
import re
import sys

os.environ.setdefault("KERAS_BACKEND", "jax")

import keras  # noqa: E402
from keras.src.utils import file_utils  # noqa: E402  (recording get_file needs the module Keras calls)

import zoo  # noqa: E402

SIZES = {"NASNetLarge": 331, "InceptionV3": 299, "InceptionResNetV2": 299, "Xception": 299}
EXPAND = re.compile(r".*_expand(_conv)?$")


class _Recorded(Exception):
    pass


def files(fn):
    """(top file, notop file), each (file name, url, hash), as Keras downloads them."""
    out = []
    real = file_utils.get_file
    for top in (True, False):
        seen = {}

        def record(fname=None, origin=None, _seen=seen, **kwargs):
            _seen.update(fname=fname, origin=origin, file_hash=kwargs.get("file_hash"))
            raise _Recorded

        file_utils.get_file = record
        try:
            fn(include_top=top, weights="imagenet")
        except _Recorded:
            pass
        finally:
            file_utils.get_file = real
            keras.backend.clear_session()
        out.append(
            (seen["fname"] or os.path.basename(seen["origin"]), seen["origin"], seen["file_hash"] or "")
        )
    return out


def cut_points(model):
    layers = model.layers
    index = {id(layer): i for i, layer in enumerate(layers)}
    last_use = list(range(len(layers)))
    for i, layer in enumerate(model.layers):
        for node in layer._inbound_nodes:
            for t in node.input_tensors:
                j = index.get(id(t._keras_history[0]))
                if j is not None:
                    last_use[j] = max(last_use[j], i)
    cuts, reach = [], 0
    for i in range(len(layers)):
        if reach <= i:
            cuts.append(i)
        reach = max(reach, last_use[i])
    return cuts


def stages(name, model, size):
    def level(layer):
        o = layer.output
        if isinstance(o, (list, tuple)) or len(o.shape) != 4 or o.shape[1] is None:
            return None
        return round(math.log2(size / o.shape[1]))

    layers = model.layers
    cuts = set(cut_points(model))
    out = {}
    for lev in range(1, 6):
        at = [i for i, l in enumerate(layers) if level(l) == lev]
        if not at:
            continue
        limit = len(layers)
        expands = [i for i in at if EXPAND.match(layers[i].name)]
        # The next stage's first block starts with a 1x1 expansion at this
        # stride: a plain chain (every layer a cut point) up to the stride.
        if lev < 5 and expands and all(i in cuts for i in at if i >= expands[-1]):
            limit = expands[-1]
        ok = [
            i
            for i in at
            if i in cuts
            and i < limit
            and not isinstance(layers[i], (keras.layers.ZeroPadding2D, keras.layers.Cropping2D))
        ]
        pick = _override(name, lev, layers, at) or (layers[ok[-1]].name if ok else None)
        if pick is None:
            raise SystemExit(f"{name}: no stage end at stride {2**lev}")
        out[lev] = (pick, int(model.get_layer(pick).output.shape[-1]))
    return out


def _override(name, lev, layers, at):
    names = [layers[i].name for i in at]
    if name.startswith("DenseNet"):
        return {1: "conv1_relu", 5: "relu"}.get(lev, f"pool{lev}_relu")
    if name.startswith("ConvNeXt") and lev == 5:
        return [n for n in names if n.endswith("_identity")][-1]
    if name.startswith("NASNet"):
        if lev == 1:
            return "stem_bn1"
        if lev == 5:
            return None
        concat = [n for n in names if "_concat" in n]
        return concat[-1]
    return None


def main():
    have = {s.name for s in zoo.registry.specs()}
    rows = []
    only = set(sys.argv[1:])
    for attr in sorted(n for n in dir(keras.applications) if n[0].isupper()):
        if attr.lower() in have or (only and attr not in only):
            continue
        fn = getattr(keras.applications, attr)
        size = SIZES.get(attr, 224)
        kw = (
            {"include_preprocessing": True}
            if "include_preprocessing" in inspect.signature(fn).parameters
            else {}
        )
        notop = fn(include_top=False, weights=None, input_shape=(size, size, 3), **kw)
        st = stages(attr, notop, size)
        n_notop = notop.count_params()
        keras.backend.clear_session()
        n_top = fn(weights=None, **kw).count_params()
        keras.backend.clear_session()
        default = fn(weights=None, **kw).input_shape[1] or 224
        keras.backend.clear_session()
        (tf, tu, th), (nf, nu, nh) = files(fn)
        stage_s = ", ".join(f"({n!r}, {2**lev}, {c})" for lev, (n, c) in st.items())
        rows.append(
            f"    _App({attr!r}, size={default}, stages=({stage_s},),\n"
            f"         params=({n_top}, {n_notop}),\n"
            f"         top=({tf!r}, {tu!r}, {th!r}),\n"
            f"         notop=({nf!r}, {nu!r}, {nh!r})),"
        )
        print(rows[-1], file=sys.stderr, flush=True)
    print("_TABLE = (\n" + "\n".join(rows) + "\n)")


if __name__ == "__main__":
    main()
