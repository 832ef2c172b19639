"""torchvision state dicts <-> zoo weights, one mapping per family, kept as data.

A mapping is a list of rows `(torch module, Keras layer, kind)`; the same
rows drive both directions (`from_torchvision`, `to_torchvision`), so they
cannot disagree. Kinds:

- `"conv"`: `weight` (O, I, kh, kw) <-> kernel (kh, kw, I, O), and `bias`
  when the module has one;
- `"bn"`: `weight`, `bias`, `running_mean`, `running_var` <-> gamma, beta,
  moving mean, moving variance (`num_batches_tracked` is dropped);
- `"linear"`: `weight` (out, in) <-> kernel (in, out), `bias`;
- `("linear_chw", c, h, w)`: a Linear after torch's (C, H, W) flatten, whose
  input rows are re-ordered to Keras' (H, W, C) flatten.

Key names are torchvision's exact ones (`layer2.0.downsample.1.running_var`,
`features.7.weight`, `classifier.0.weight`). Each family keeps its rows in
its own module: `zoo.models.resnet.torchvision_rows`,
`zoo.models.vgg.torchvision_rows`, `zoo.models.googlenet.torchvision_rows`.
"""

from __future__ import annotations

import numpy as np

from zoo.weights import WeightSource

_BN = ("weight", "bias", "running_mean", "running_var")
URL = "https://download.pytorch.org/models/"


def source(file_name: str, top1: float, *, resize: int = 256) -> WeightSource:
    """A torchvision ImageNet file: its URL, the sha256 prefix in its name, its recipe.

    torchvision's classification weights share one evaluation: RGB mean/std
    ("torch") normalisation, bilinear resize to `resize`, centre crop 224.

    Example:

        >>> import zoo
        >>> zoo.torchvision.source("resnet18-f37072fd.pth", 69.758).file_hash
        'f37072fd'
    """
    return WeightSource(
        URL + file_name,
        file_name,
        file_name.rsplit("-", 1)[1].split(".")[0],
        include_top=True,
        origin="torchvision",
        preprocessing="torch",
        top1=top1,
        crop_fraction=224 / resize,
        license="BSD-3-Clause (torchvision)",
    )


def _to_numpy(value):
    if hasattr(value, "detach"):  # a torch tensor
        value = value.detach().cpu().numpy()
    return np.asarray(value)


def from_torchvision(state_dict, rows, *, model_name: str = "the model") -> dict:
    """Convert a torchvision state dict into zoo weights (`"<layer>/<i>" -> array`).

    Entries the rows do not know make it an error (another architecture or
    layout), naming them; missing head entries are fine (a state dict of a
    feature extractor).

    Args:
        state_dict: mapping of torch names to arrays or tensors.
        rows: the family's mapping (`zoo.models.resnet.torchvision_rows(...)`, ...).
        model_name: str. For the error message.

    Returns:
        A dict that `zoo.build(weights=...)`, `zoo.weights.load_weights` and
        `surgery.restore` accept.

    Example:

        >>> import zoo
        >>> m = zoo.build("resnet18", num_classes=10, input_shape=(32, 32, 3))
        >>> rows = zoo.models.resnet.torchvision_rows((2, 2, 2, 2))
        >>> sd = zoo.torchvision.to_torchvision(m, rows)
        >>> zoo.weights.load_weights(m, zoo.torchvision.from_torchvision(sd, rows)).ok
        True
    """
    sd = {k: _to_numpy(v) for k, v in state_dict.items() if not k.endswith("num_batches_tracked")}
    out, used = {}, set()
    for torch_name, keras_name, kind in rows:
        if kind == "bn":
            keys = [f"{torch_name}.{p}" for p in _BN]
            if keys[0] not in sd:
                continue
            for i, key in enumerate(keys):
                out[f"{keras_name}/{i}"] = sd[key]
        else:
            keys = [f"{torch_name}.weight", f"{torch_name}.bias"]
            if keys[0] not in sd:
                continue
            w = sd[keys[0]]
            if kind == "conv":
                w = w.transpose(2, 3, 1, 0)
            elif isinstance(kind, tuple):  # linear_chw
                _, c, h, wd = kind
                w = w.reshape(w.shape[0], c, h, wd).transpose(0, 2, 3, 1).reshape(w.shape[0], -1).T
            else:
                w = w.T
            out[f"{keras_name}/0"] = w
            if keys[1] in sd:
                out[f"{keras_name}/1"] = sd[keys[1]]
        used.update(k for k in keys if k in sd)
    unexpected = sorted(set(sd) - used)
    if unexpected:
        raise ValueError(
            f"{len(unexpected)} entries of the state dict are not part of {model_name}'s "
            f"torchvision layout: {unexpected[:6]}{' ...' if len(unexpected) > 6 else ''}. "
            "Is it a state dict of another architecture or depth? Nothing was loaded."
        )
    if not out:
        raise ValueError(f"No entry of the state dict belongs to {model_name}'s torchvision layout.")
    return out


def to_torchvision(model, rows) -> dict:
    """The inverse of `from_torchvision`: a zoo model as a torchvision state dict.

    Returns contiguous numpy arrays keyed exactly like
    `torchvision.models.<name>().state_dict()` (BatchNorm's
    `num_batches_tracked` included), so that
    `tv.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()}, strict=True)`
    loads it when the model has its classifier (`include_top=True`).

    Example:

        >>> import zoo
        >>> m = zoo.build("vgg11_bn", include_top=False, input_shape=(32, 32, 3))
        >>> sd = zoo.torchvision.to_torchvision(m, zoo.models.vgg.torchvision_rows((1, 1, 2, 2, 2), batch_norm=True))
        >>> sd["features.0.weight"].shape, "features.1.num_batches_tracked" in sd
        ((64, 3, 3, 3), True)
    """
    import keras

    names = {layer.name: layer for layer in model.layers}
    out = {}
    for torch_name, keras_name, kind in rows:
        if keras_name not in names:
            continue
        arrays = [keras.ops.convert_to_numpy(v) for v in names[keras_name].weights]
        if kind == "bn":
            for p, a in zip(_BN, arrays):
                out[f"{torch_name}.{p}"] = a
            out[f"{torch_name}.num_batches_tracked"] = np.array(0, dtype="int64")
            continue
        w = arrays[0]
        if kind == "conv":
            w = w.transpose(3, 2, 0, 1)
        elif isinstance(kind, tuple):
            _, c, h, wd = kind
            w = w.T.reshape(-1, h, wd, c).transpose(0, 3, 1, 2).reshape(w.shape[1], -1)
        else:
            w = w.T
        out[f"{torch_name}.weight"] = w
        if len(arrays) > 1:
            out[f"{torch_name}.bias"] = arrays[1]
    return {k: np.ascontiguousarray(v) for k, v in out.items()}
