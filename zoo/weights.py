"""Weight files: reading every format users have, matching, all-or-nothing loading.

One place reads weights for the whole toolkit: `zoo.build(weights=...)` and
`surgery.restore` both call `read_weights`, `plan_assignment` and
`Plan.apply`. Formats:

- Keras 3 `.weights.h5` (`model.save_weights`): variables stored under
  `layers/<snake_case_class>[_<n>]/vars/<i>`, i.e. by layer *type and order*.
- legacy Keras 2 `.h5` (keras.applications ImageNet files, `save_weights`
  and full-model `model.save("x.h5")`): stored by *layer name*.
- `.keras` archives: the `.weights.h5` inside, with the layer names
  recovered from the archive's config.
- `.npz` files and `dict`s of arrays keyed `"<layer name>/<index>"`.
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import os
import zipfile
from collections.abc import Mapping, Sequence

import keras
import numpy as np

from zoo._keras import _snake, keras_home
from zoo.layers import PREPROCESSING_CONSTANTS, leaf_layers

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class WeightSource:
    """A known, downloadable weight file and how it was trained (pure data).

    Like timm's `PretrainedCfg`: what a user needs to feed the weights
    correctly travels with them, not with the architecture (the same
    ResNet-50 has caffe-mode keras.applications weights and mean/std
    torchvision weights).

    Args:
        url: str. Where the file is downloaded from.
        file_name: str. Name of the file in Keras' cache (`~/.keras/models`).
        file_hash: str. md5 or sha256 of the file, or the sha256 prefix that
            torchvision puts in its file names; checked after download.
        include_top: bool. Whether the file holds the classifier head.
        origin: str. Who trained it, e.g. `"keras.applications"`.
        preprocessing: str. The input normalisation it was trained with:
            `"caffe"` (BGR, minus the ImageNet mean), `"torch"` (RGB 0-1,
            mean/std), `"tf"` (-1..1) or `"none"` (RGB 0-255: the model
            normalises inside). Defaults to `"caffe"`.
        input_size: int. Square training/evaluation resolution. Defaults
            to 224.
        interpolation: str. Resize interpolation of its evaluation.
            Defaults to `"bilinear"`.
        crop_fraction: float. Centre-crop fraction of its evaluation
            (224 of 256 = 0.875). Defaults to 0.875.
        top1: float. Reported ImageNet-1k validation top-1 (%), when known.
        num_classes: int. Classes of the head it was trained with.
        license: str. Licence of the weights, when stated by the source.

    Example:

        >>> import zoo
        >>> src = zoo.get_spec("resnet50").weights["imagenet"]
        >>> src.preprocessing, src.input_size, src.top1, src.mean
        ('caffe', 224, 74.9, (103.939, 116.779, 123.68))
    """

    url: str
    file_name: str
    file_hash: str
    include_top: bool
    origin: str = "keras.applications"
    preprocessing: str = "caffe"
    input_size: int = 224
    interpolation: str = "bilinear"
    crop_fraction: float = 0.875
    top1: float | None = None
    num_classes: int = 1000
    license: str = ""

    @property
    def mean(self) -> tuple:
        """Per-channel mean subtracted (caffe: BGR 0-255; torch: RGB 0-1)."""
        return PREPROCESSING_CONSTANTS[self.preprocessing][0]

    @property
    def std(self) -> tuple:
        """Per-channel divisor (1 for caffe; 0.5 scale for tf)."""
        return PREPROCESSING_CONSTANTS[self.preprocessing][1]

    def describe(self) -> str:
        """One line for model cards and tables.

        Example:

            >>> import zoo
            >>> print(zoo.get_spec("resnet50v2").weights["imagenet"].describe())
            keras.applications, 'tf' preprocessing, 224px bilinear, top-1 76.0%
        """
        top1 = f", top-1 {self.top1}%" if self.top1 is not None else ""
        return (
            f"{self.origin}, {self.preprocessing!r} preprocessing, "
            f"{self.input_size}px {self.interpolation}{top1}"
        )


KERAS_APPLICATIONS_URL = "https://storage.googleapis.com/tensorflow/keras-applications/"


def keras_applications_sources(top: Sequence[str], notop: Sequence[str], **meta) -> dict:
    """keras.applications' two files of one model, as the `imagenet`/`imagenet_notop` sources.

    The one place that makes keras.applications sources, for the families
    that load its files (VGG, ResNet, the keras.applications backbones).

    Args:
        top: `(file_name, url, file_hash)` of the file with the classifier.
        notop: `(file_name, url, file_hash)` of the file without it.
        meta: the other `WeightSource` fields (`preprocessing`, `top1`,
            `input_size`, `license`, ...); `origin` is `"keras.applications"`.

    Example:

        >>> import zoo
        >>> url = zoo.weights.KERAS_APPLICATIONS_URL
        >>> pair = zoo.weights.keras_applications_sources(
        ...     ("a.h5", url + "a.h5", ""), ("b.h5", url + "b.h5", ""), top1=70.0)
        >>> [(tag, s.include_top) for tag, s in pair.items()]
        [('imagenet', True), ('imagenet_notop', False)]
    """
    return {
        tag: WeightSource(
            url, file_name, file_hash, include_top=include_top, origin="keras.applications", **meta
        )
        for tag, include_top, (file_name, url, file_hash) in (
            ("imagenet", True, top),
            ("imagenet_notop", False, notop),
        )
    }


def legacy_keras_files(folder: str, name: str, hashes: Sequence[str]) -> tuple:
    """The `(top, notop)` entries of keras.applications' older file names (`<name>_weights_tf_dim_ordering_tf_kernels[_notop].h5`).

    Example:

        >>> import zoo
        >>> top, notop = zoo.weights.legacy_keras_files("vgg16", "vgg16", ("h1", "h2"))
        >>> notop[0]
        'vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5'
    """
    out = []
    for suffix, file_hash in zip(("", "_notop"), hashes, strict=True):
        file_name = f"{name}_weights_tf_dim_ordering_tf_kernels{suffix}.h5"
        out.append((file_name, f"{KERAS_APPLICATIONS_URL}{folder}/{file_name}", file_hash))
    return tuple(out)


@dataclasses.dataclass
class Entry:
    """The arrays of one layer in a weight file.

    `name` is the layer name when the format stores it; `path` is the
    Keras 3 storage path (`layers/conv2d_3`) when it does.
    """

    name: str | None
    path: str | None
    arrays: list


class WeightFileError(ValueError):
    """A weight file that cannot be read or does not fit the model."""


# --------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------


def read_weights(source: str | os.PathLike | Mapping) -> list[Entry]:
    """Read a weight file, archive, model or dict into a list of `Entry`.

    Args:
        source: a path (`.weights.h5`, `.h5`, `.keras`, `.npz`), a Keras
            model, or a dict mapping `"<layer>/<index>"` (or `"<layer>"` to
            a list) to arrays.

    Example:

        >>> import keras, zoo, tempfile, os
        >>> m = zoo.build("vgg11", input_shape=(32, 32, 3), include_top=False)
        >>> p = os.path.join(tempfile.mkdtemp(), "m.weights.h5")
        >>> m.save_weights(p)
        >>> len(zoo.weights.read_weights(p))
        8
    """
    if isinstance(source, keras.Model):
        return [
            Entry(layer.name, None, [keras.ops.convert_to_numpy(v) for v in _own_vars(layer)])
            for layer in leaf_layers(source)
            if _own_vars(layer)
        ]
    if isinstance(source, Mapping):
        return _read_mapping(source)
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(
            "A weight source must be a path, a keras.Model or a dict of "
            f"arrays. Received: {type(source).__name__}"
        )
    path = os.fspath(source)
    if not os.path.exists(path):
        raise FileNotFoundError(f"No weight file at {path!r}.")
    try:
        if zipfile.is_zipfile(path) and not path.endswith(".npz"):
            return _read_keras_archive(path)
        if path.endswith(".npz"):
            with np.load(path, allow_pickle=False) as data:
                return _read_mapping({k: data[k] for k in data.files})
        return _read_h5(path)
    except WeightFileError:
        raise
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as e:
        raise WeightFileError(
            f"Could not read weights from {path!r}: the file is truncated, "
            f"corrupt or not a Keras weight file ({type(e).__name__}: {e}). "
            "Download or save it again."
        ) from e


def _read_mapping(mapping) -> list[Entry]:
    grouped: dict[str, dict[int, np.ndarray]] = {}
    for key, value in mapping.items():
        if isinstance(value, (list, tuple)):
            grouped.setdefault(key, {}).update({i: np.asarray(v) for i, v in enumerate(value)})
            continue
        layer, _, index = str(key).rpartition("/")
        if not layer or not index.isdigit():
            raise WeightFileError(
                "Keys of a weight dict must look like '<layer name>/<index>' "
                f"(e.g. 'conv1_conv/0'). Received key: {key!r}"
            )
        grouped.setdefault(layer, {})[int(index)] = np.asarray(value)
    return [Entry(name, None, [arrays[i] for i in sorted(arrays)]) for name, arrays in grouped.items()]


def _read_h5(path_or_file, layer_names: Sequence[str] | None = None):
    import h5py

    with h5py.File(path_or_file, "r") as f:
        root = f["model_weights"] if "model_weights" in f else f
        if "layer_names" in root.attrs:
            return _read_legacy_h5(root)
        if "layers" in f:
            entries = []
            _walk_keras3_h5(f["layers"], "layers", entries)
            return entries
    raise WeightFileError(
        f"{path_or_file!r} is an HDF5 file but holds no Keras weights "
        "(neither a 'layers' group nor 'layer_names')."
    )


def _decode(x):
    return x.decode("utf8") if isinstance(x, bytes) else str(x)


def _read_legacy_h5(root) -> list[Entry]:
    entries = []
    for name in (_decode(n) for n in root.attrs["layer_names"]):
        group = root[name]
        weight_names = [_decode(n) for n in group.attrs.get("weight_names", [])]
        if weight_names:
            entries.append(Entry(name, None, [np.asarray(group[w]) for w in weight_names]))
    return entries


def _walk_keras3_h5(group, prefix, entries):
    import h5py

    for key in group:
        sub = group[key]
        if not isinstance(sub, h5py.Group):
            continue
        path = f"{prefix}/{key}"
        if "vars" in sub and len(sub["vars"]):
            arrays = [np.asarray(sub["vars"][str(i)]) for i in range(len(sub["vars"]))]
            entries.append(Entry(None, path, arrays))
        for child in sub:
            if child != "vars" and isinstance(sub[child], h5py.Group):
                _walk_keras3_h5(sub[child], f"{path}/{child}", entries)


def _read_keras_archive(path) -> list[Entry]:
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        if "model.weights.h5" not in names:
            raise WeightFileError(
                f"{path!r} is a zip file but not a `.keras` archive (no model.weights.h5 inside)."
            )
        config = json.loads(archive.read("config.json"))
        data = io.BytesIO(archive.read("model.weights.h5"))
    entries = _read_h5(data)
    # Recover layer names: replay Keras' storage naming over the config.
    by_path = {}
    _paths_from_config(config, "layers", by_path)
    for e in entries:
        e.name = by_path.get(e.path)
    return entries


def _paths_from_config(config, prefix, out):
    layers = config.get("config", {}).get("layers", [])
    used: dict[str, int] = {}
    for layer in layers:
        key = _unique(_snake(layer["class_name"]), used)
        path = f"{prefix}/{key}"
        out[path] = layer.get("config", {}).get("name") or layer.get("name")
        if layer["class_name"] in ("Functional", "Sequential", "Model"):
            _paths_from_config(layer, f"{path}/layers", out)


def read_state_dict(path: str | os.PathLike) -> dict:
    """Read a PyTorch state dict from `.pth`/`.pt` (needs torch) or `.npz`.

    `.pth` files are read with `torch.load(weights_only=True)`, which
    refuses pickled code. A `.npz` holds the same names as arrays, for
    machines without torch.

    Example:

        >>> import numpy as np, os, tempfile, zoo
        >>> p = os.path.join(tempfile.mkdtemp(), "sd.npz")
        >>> np.savez(p, **{"fc.bias": np.zeros(3)})
        >>> list(zoo.weights.read_state_dict(p))
        ['fc.bias']
    """
    path = os.fspath(path)
    if path.endswith(".npz"):
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    try:
        import torch
    except ImportError as e:
        raise ImportError(
            f"Reading {path!r} needs PyTorch (`pip install torch`). Without it, "
            "convert the state dict to .npz on a machine that has torch: "
            "`np.savez(out, **{k: v.numpy() for k, v in sd.items()})`."
        ) from e
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for corrupt pickles
        raise WeightFileError(
            f"Could not read a PyTorch state dict from {path!r} "
            f"({type(e).__name__}: {e}). The file is corrupt, truncated, or "
            "not a plain state dict."
        ) from e
    if "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    return {k: v.detach().cpu().numpy() for k, v in sd.items()}


# --------------------------------------------------------------------------
# The model side
# --------------------------------------------------------------------------


def _unique(name: str, used: dict) -> str:
    if name in used:
        used[name] += 1
        return f"{name}_{used[name]}"
    used[name] = 0
    return name


def _own_vars(layer) -> list:
    """Variables a layer stores itself, in Keras' storage order."""
    if isinstance(layer, keras.Model):
        return []
    return list(layer.weights)


def _model_paths(model, prefix="layers") -> dict:
    """Keras 3 storage path of every weighted leaf layer of `model`."""
    out = {}
    used: dict[str, int] = {}
    for layer in model.layers:
        key = _unique(_snake(type(layer).__name__), used)
        if isinstance(layer, keras.Model):
            out.update(_model_paths(layer, f"{prefix}/{key}/layers"))
        elif layer.weights:
            out[f"{prefix}/{key}"] = layer
    return out


# --------------------------------------------------------------------------
# Matching and assignment
# --------------------------------------------------------------------------


@dataclasses.dataclass
class Plan:
    """What a restore will do: assignments and everything that did not fit.

    Attributes:
        assignments: list of `(variable, array)` pairs, all shape-checked.
        loaded: list of layer names that receive weights.
        missing: layers with weights in the model but not in the source.
        unexpected: entries in the source that no model layer takes.
        mismatched: `(layer, model shapes, source shapes)` triples.
        match: the matching rule that produced this plan.
    """

    assignments: list
    loaded: list
    missing: list
    unexpected: list
    mismatched: list
    match: str
    layers: list = dataclasses.field(default_factory=list, repr=False)

    def apply(self):
        """Assign every planned array. Validation already happened."""
        for variable, array in self.assignments:
            variable.assign(array)
        for layer in self.layers:
            # Layers that cache tensors derived from their variables
            # (Normalization's mean/variance) refresh them here, as Keras'
            # own loaders do after `load_own_variables`.
            if hasattr(layer, "finalize_state"):
                layer.finalize_state()

    @property
    def ok(self) -> bool:
        return not (self.missing or self.mismatched)

    def describe(self, limit: int = 8) -> str:
        def cut(items):
            items = [str(i) for i in items]
            more = f" … (+{len(items) - limit})" if len(items) > limit else ""
            return ", ".join(items[:limit]) + more

        lines = [f"matched by {self.match}: {len(self.loaded)} layers loaded"]
        if self.missing:
            lines.append(f"missing from the source ({len(self.missing)}): {cut(self.missing)}")
        if self.unexpected:
            lines.append(f"not used from the source ({len(self.unexpected)}): {cut(self.unexpected)}")
        if self.mismatched:
            lines.append(
                f"shape mismatches ({len(self.mismatched)}): "
                + cut(f"{n} model {m} vs source {s}" for n, m, s in self.mismatched)
            )
        return "\n".join(lines)


def _shapes(arrays):
    return [tuple(np.shape(a)) for a in arrays]


def plan_assignment(model: keras.Model, entries: list[Entry], match: str = "auto") -> Plan:
    """Match source entries to the model's layers without changing anything.

    Args:
        model: keras.Model. The model to receive weights.
        entries: list of `Entry`, from `read_weights`.
        match: str. `"name"` (layer names), `"path"` (Keras 3 storage path:
            layer type and order), `"order"` (weighted layers in order),
            `"shape"` (in order, skipping source entries whose shapes do not
            fit), or `"auto"`: names when the source has them and they
            cover the model best, otherwise storage paths, otherwise order.

    Example:

        >>> import zoo
        >>> a = zoo.build("vgg11", input_shape=(32, 32, 3), include_top=False)
        >>> b = zoo.build("vgg11", input_shape=(32, 32, 3), include_top=False)
        >>> plan = zoo.weights.plan_assignment(b, zoo.weights.read_weights(a))
        >>> plan.ok, plan.match
        (True, 'name')
    """
    modes = ("auto", "name", "path", "order", "shape")
    if match not in modes:
        raise ValueError(f"`match` must be one of {modes}. Received: match={match!r}")
    if match != "auto":
        return _plan(model, entries, match)
    candidates = []
    if any(e.name for e in entries):
        candidates.append("name")
    if any(e.path for e in entries):
        candidates.append("path")
    candidates.append("order")
    plans = [_plan(model, entries, m) for m in candidates]
    # Best: fewest problems, then most layers loaded; earlier rule wins ties.
    return min(
        plans,
        key=lambda p: (len(p.missing) + len(p.mismatched), -len(p.loaded)),
    )


def _plan(model, entries, match) -> Plan:
    weighted = [l for l in leaf_layers(model) if l.weights]
    pairs, unexpected = [], []
    if match == "name":
        by_name = {l.name: l for l in weighted}
        for e in entries:
            layer = by_name.get(e.name) if e.name else None
            pairs.append((layer, e)) if layer is not None else unexpected.append(e.name or e.path)
    elif match == "path":
        by_path = _model_paths(model)
        for e in entries:
            layer = by_path.get(e.path) if e.path else None
            pairs.append((layer, e)) if layer is not None else unexpected.append(e.path or e.name)
    elif match == "order":
        pairs = list(zip(weighted, entries))
        unexpected = [e.name or e.path for e in entries[len(weighted) :]]
    else:  # shape
        remaining = list(entries)
        for layer in weighted:
            want = _shapes(layer.weights)
            for i, e in enumerate(remaining):
                if _shapes(e.arrays) == want:
                    pairs.append((layer, e))
                    del remaining[i]
                    break
        unexpected = [e.name or e.path for e in remaining]

    assignments, loaded, mismatched, seen, targets = [], [], [], set(), []
    for layer, e in pairs:
        seen.add(id(layer))
        want, got = _shapes(layer.weights), _shapes(e.arrays)
        if want != got:
            mismatched.append((layer.name, want, got))
            continue
        loaded.append(layer.name)
        targets.append(layer)
        assignments.extend(zip(layer.weights, e.arrays))
    missing = [l.name for l in weighted if id(l) not in seen]
    return Plan(assignments, loaded, missing, unexpected, mismatched, match, targets)


def load_weights(
    model: keras.Model,
    source: str | os.PathLike | Mapping,
    *,
    match: str = "auto",
    allow_unexpected: bool = True,
) -> Plan:
    """Load weights into `model` all-or-nothing; raise if anything is missing.

    Every weighted layer of the model must be found with the right shapes,
    otherwise a `WeightFileError` lists what went wrong and the model keeps
    the weights it had. Entries the model does not use (a classifier head
    loaded into `include_top=False`) are allowed unless
    `allow_unexpected=False`.

    Example:

        >>> import zoo, tempfile, os
        >>> a = zoo.build("vgg11", input_shape=(32, 32, 3), include_top=False)
        >>> p = os.path.join(tempfile.mkdtemp(), "a.weights.h5")
        >>> a.save_weights(p)
        >>> b = zoo.build("vgg11", input_shape=(32, 32, 3), include_top=False)
        >>> zoo.weights.load_weights(b, p).ok
        True
    """
    entries = read_weights(source)
    plan = plan_assignment(model, entries, match)
    if not plan.ok or (plan.unexpected and not allow_unexpected):
        where = source if isinstance(source, (str, os.PathLike)) else type(source).__name__
        raise WeightFileError(
            f"The weights in {where!s} do not fit model {model.name!r}; "
            "nothing was loaded.\n" + plan.describe() + "\nCheck that the "
            "file was saved from the same architecture (and the same "
            "`include_top`), or use `surgery.restore(model, source)` for a "
            "partial load with a report."
        )
    plan.apply()
    if plan.unexpected:
        logger.info("Ignored %d source entries: %s", len(plan.unexpected), plan.unexpected[:8])
    return plan


def fetch(source: WeightSource) -> str:
    """Download (or find in Keras' cache) a known weight file, hash-checked.

    Raises a clear error naming the file and where to put it when the
    download is impossible (no network).
    """
    home = keras_home()
    cache_dir = os.path.join(home, "models")
    # torchvision publishes only a sha256 prefix (in the file name); check
    # that ourselves, keras.utils.get_file checks full md5/sha256 hashes.
    prefix_only = len(source.file_hash) < 32
    try:
        path = keras.utils.get_file(
            source.file_name,
            source.url,
            cache_dir=home,
            cache_subdir="models",
            file_hash=None if prefix_only else source.file_hash,
        )
    except Exception as e:  # get_file raises bare Exception on URL errors
        raise WeightFileError(
            f"Could not download {source.file_name!r} from {source.url} "
            f"({type(e).__name__}: {e}). For offline use, download it on a "
            f"machine with network access and place it at "
            f"{os.path.join(cache_dir, source.file_name)!r} (hash "
            f"{source.file_hash}), or pass `weights=<path to the file>`."
        ) from e
    if prefix_only and not _sha256(path).startswith(source.file_hash):
        os.remove(path)  # never leave a corrupt file in the cache
        raise WeightFileError(
            f"{path!r} does not match its published sha256 prefix "
            f"{source.file_hash!r}; it was removed. Download it again."
        )
    return path


def _sha256(path) -> str:
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
