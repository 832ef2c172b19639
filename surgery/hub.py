"""TF Hub / SavedModel feature extractors as Keras 3 layers, and export back.

`hub.KerasLayer` is a tf-keras layer: inside a Keras 3 model it fails ("A
KerasTensor cannot be used as input to a TensorFlow function"), and
`keras.layers.TFSMLayer` knows neither hub handles, `training`, nor
regularization losses. `hub_layer` is a Keras 3 layer around a TF2
SavedModel with all three; `export_feature_extractor` writes any Keras model
in the same reusable-SavedModel format, so the round trip runs offline.

This is the one part of `surgery` that needs TensorFlow: a SavedModel is a
TensorFlow graph. On JAX or PyTorch both functions raise with what to do.
"""

from __future__ import annotations

import hashlib
import inspect
import os
import shutil
import tempfile
from typing import Any

import keras

from surgery.engine import _all_sublayers, _declare_input_shape, _in_safe_mode

__all__ = ["HubLayer", "export_feature_extractor", "hub_layer", "saved_model_sha256"]
TF_ONLY = True  # the test suite skips this module's doctests on JAX and PyTorch


def _require_tensorflow(what):
    if keras.backend.backend() != "tensorflow":
        raise RuntimeError(
            f"{what} runs a TensorFlow SavedModel, which executes only on the TensorFlow "
            f"backend; this process uses KERAS_BACKEND={keras.backend.backend()!r}. Set "
            "KERAS_BACKEND=tensorflow before importing keras (e.g. `KERAS_BACKEND=tensorflow "
            "python train.py`), or export the features once on TensorFlow and train on them."
        )
    import tensorflow as tf

    return tf


def _download(handle: str) -> str:
    """A hub handle's SavedModel, downloaded once into the hub cache and unpacked atomically.

    Hub's compressed format (`?tf-hub-format=compressed`, a tar.gz), as
    `tensorflow_hub.resolve` fetches it, without importing `tensorflow_hub`
    (which needs `pkg_resources`, gone from current setuptools). The cache
    is `$TFHUB_CACHE_DIR`, else `<keras home>/tfhub`, one folder per handle.
    Hub publishes no checksums: pin one with `hub_layer(..., sha256=)`.
    """
    import tarfile
    import urllib.error
    import urllib.request

    from zoo._keras import keras_home

    url = handle if "://" in handle else f"https://{handle}"
    cache = os.environ.get("TFHUB_CACHE_DIR") or os.path.join(keras_home(), "tfhub")
    target = os.path.join(cache, hashlib.sha1(url.encode()).hexdigest())
    if os.path.isdir(target):
        return target
    os.makedirs(cache, exist_ok=True)
    work = tempfile.mkdtemp(dir=cache, prefix=".download-")
    try:
        archive = os.path.join(work, "model.tar.gz")
        query = "&" if "?" in url else "?"
        try:
            urllib.request.urlretrieve(f"{url}{query}tf-hub-format=compressed", archive)
        except (urllib.error.URLError, OSError) as e:
            reason = getattr(e, "reason", None) or e
            raise ConnectionError(
                f"Could not download the hub model {handle!r} ({reason}). It is fetched once, "
                f"then read from {cache}; check the network (or a proxy), or download it where "
                "you have one and pass the local SavedModel directory instead."
            ) from None
        try:
            with tarfile.open(archive) as tar:
                if hasattr(tarfile, "data_filter"):  # Python >= 3.10.12 / 3.11.4: refuses unsafe members
                    tar.extractall(os.path.join(work, "model"), filter="data")
                else:
                    for member in tar.getmembers():
                        inside = os.path.normpath(member.name)
                        if inside.startswith(("..", "/")) or member.issym() or member.islnk():
                            raise tarfile.TarError(f"unsafe member {member.name!r}")
                    tar.extractall(os.path.join(work, "model"))
        except (tarfile.TarError, OSError) as e:
            raise ValueError(
                f"{url} did not send a SavedModel archive ({e}); check the handle (a TF2 "
                "SavedModel on tfhub.dev or Kaggle)."
            ) from None
        os.replace(os.path.join(work, "model"), target)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return target


def _resolve(handle):
    """A local SavedModel directory for `handle` (a path, hub handle or URL)."""
    path = os.fspath(handle)
    if os.path.isdir(path):
        local = path
    elif os.path.exists(path):
        raise ValueError(
            f"{path!r} is a file, not a SavedModel directory (one holding saved_model.pb and variables/)."
        )
    elif "://" in path or path.startswith(("tfhub.dev/", "www.kaggle.com/", "kaggle.com/")):
        local = _download(path)
    else:
        raise FileNotFoundError(
            f"No SavedModel at {path!r}: give an existing directory, a "
            "https:// hub URL or a tfhub.dev/... handle."
        )
    if os.path.exists(os.path.join(local, "tfhub_module.pb")):
        raise ValueError(
            f"{path!r} is a TF1 Hub module (hub.Module format, tfhub_module.pb): TF1 graph "
            "modules cannot run in TF2 or Keras 3. Use the model's TF2 SavedModel version "
            "(on tfhub.dev/Kaggle: the variation marked 'TF2' or 'SavedModel')."
        )
    if not (
        os.path.exists(os.path.join(local, "saved_model.pb"))
        or os.path.exists(os.path.join(local, "saved_model.pbtxt"))
    ):
        raise ValueError(f"{path!r} is not a SavedModel (no saved_model.pb in it).")
    return local


def saved_model_sha256(path) -> str:
    """SHA-256 over a SavedModel directory's files (relative paths and contents).

    Pin it as `hub_layer(handle, sha256=...)`: a download or cache entry that
    differs (corrupt, tampered with, or a changed upstream model) is refused.

    Example:

        >>> import tempfile, zoo, surgery
        >>> base = zoo.build("resnet18", include_top=False, pooling="avg", input_shape=(32, 32, 3))
        >>> path = surgery.export_feature_extractor(base, tempfile.mkdtemp() + "/fx")
        >>> len(surgery.hub.saved_model_sha256(path))
        64
    """
    digest = hashlib.sha256()
    root = os.fspath(path)
    for folder, dirs, files in sorted(os.walk(root)):
        dirs.sort()
        for name in sorted(files):
            full = os.path.join(folder, name)
            rel = os.path.relpath(full, root).replace(os.sep, "/")
            if rel == "fingerprint.pb":  # written per save; not part of the model
                continue
            digest.update(rel.encode() + b"\0")
            with open(full, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    digest.update(chunk)
            digest.update(b"\0")
    return digest.hexdigest()


def _check_sha256(local, handle, expected):
    actual = saved_model_sha256(local)
    if actual != expected.lower():
        raise ValueError(
            f"The SavedModel for {handle!r} (in {local}) has SHA-256 {actual}, not the pinned "
            f"{expected}: the download or cache entry is corrupt or the model changed. Delete "
            f"{local} to download it again, or update the pin if the change is expected."
        )


@keras.saving.register_keras_serializable(package="surgery")
class HubLayer(keras.layers.Layer):
    """A TF2 SavedModel (local or from TF Hub) as a Keras 3 layer.

    Use `surgery.hub_layer(...)` to create one; see its docstring.
    """

    def __init__(
        self,
        handle: str | os.PathLike,
        *,
        trainable: bool = False,
        output_key: str | None = None,
        signature: str | None = None,
        arguments: dict | None = None,
        input_shape: tuple | None = None,
        signature_outputs_as_dict: bool = False,
        sha256: str | None = None,
        **kwargs: Any,
    ) -> None:
        tf = _require_tensorflow("surgery.hub_layer")
        super().__init__(trainable=trainable, **kwargs)
        self.handle = os.fspath(handle)
        self.output_key = output_key
        self.signature = signature
        self.arguments = dict(arguments or {})
        self.signature_outputs_as_dict = signature_outputs_as_dict
        self._declared_input_shape = tuple(input_shape) if input_shape is not None else None
        self.sha256 = sha256
        local = _resolve(self.handle)
        if sha256 is not None:
            _check_sha256(local, self.handle, sha256)
        self._obj = tf.saved_model.load(local)
        if signature is not None:
            if signature not in self._obj.signatures:
                raise ValueError(
                    f"The SavedModel has no signature {signature!r}; it has {sorted(self._obj.signatures)}."
                )
            self._func = self._obj.signatures[signature]
            self._training_arg = False
        else:
            if not callable(self._obj):
                raise ValueError(
                    f"The SavedModel at {self.handle!r} has no __call__ (not a reusable "
                    "SavedModel); name one of its signatures with `signature=`: "
                    f"{sorted(self._obj.signatures)}."
                )
            self._func = self._obj
            self._training_arg = _accepts_training(self._obj)
        # The SavedModel's own variables become the layer's Keras weights (the
        # same tf.Variables, not copies): optimizers update what the graph
        # reads, and `.keras` files store the (fine-tuned) values.
        variables = list(getattr(self._obj, "variables", []))
        if not variables and signature is not None:
            variables = list(self._func.variables)
        trainable_ids = {id(v) for v in getattr(self._obj, "trainable_variables", variables)}
        for v in variables:
            weight = keras.Variable(
                v,
                trainable=id(v) in trainable_ids and v.trainable,
                dtype=v.dtype.name,
                name=v.name.split(":")[0].replace("/", "_"),
            )
            self._track_variable(weight)
        self._regularizers = list(getattr(self._obj, "regularization_losses", []) or [])
        self._input_dtype = _input_dtype(self._func, signature)
        self.built = True

    @property
    def saved_model(self):
        """The loaded SavedModel object (`tf.saved_model.load`)."""
        return self._obj

    def call(self, inputs: Any, training: bool | None = None) -> Any:
        tf = _require_tensorflow("surgery.hub_layer")
        if self._input_dtype is not None:
            inputs = tf.nest.map_structure(lambda t: tf.cast(t, self._input_dtype), inputs)
        kwargs = dict(self.arguments)
        if self._training_arg:
            kwargs["training"] = bool(training) and self.trainable
        if self.signature is not None:
            outputs = self._func(**_as_signature_inputs(self._func, inputs), **kwargs)
            if not self.signature_outputs_as_dict and self.output_key is None:
                if len(outputs) != 1:
                    raise ValueError(
                        f"Signature {self.signature!r} has outputs {sorted(outputs)}; "
                        "pick one with `output_key=` or pass "
                        "`signature_outputs_as_dict=True`."
                    )
                outputs = next(iter(outputs.values()))
        else:
            outputs = self._func(inputs, **kwargs)
        if self.output_key is not None:
            if not isinstance(outputs, dict) or self.output_key not in outputs:
                keys = sorted(outputs) if isinstance(outputs, dict) else "a single tensor"
                raise ValueError(
                    f"`output_key={self.output_key!r}` is not among the SavedModel's outputs ({keys})."
                )
            outputs = outputs[self.output_key]
        if training and self.trainable:
            for regularizer in self._regularizers:
                self.add_loss(regularizer())
        return tf.nest.map_structure(
            lambda t: tf.cast(t, self.compute_dtype) if t.dtype.is_floating else t, outputs
        )

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        spec = _output_spec(self._func, self.signature, self.output_key, input_shape)
        if spec is None:  # not described by a signature: trace it instead
            return None
        return spec

    def compute_output_spec(self, inputs: Any, training: bool | None = None) -> Any:
        shape = self.compute_output_shape(tuple(inputs.shape))
        if shape is not None:
            return keras.KerasTensor(shape, dtype=self.compute_dtype)
        return super().compute_output_spec(inputs, training=training)

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "handle": self.handle,
            "output_key": self.output_key,
            "signature": self.signature,
            "arguments": self.arguments,
            "input_shape": self._declared_input_shape,
            "signature_outputs_as_dict": self.signature_outputs_as_dict,
            "sha256": self.sha256,
        }

    @classmethod
    def from_config(cls, config):
        # Loading re-resolves the handle (a hub download is cached); the
        # weights saved with the model are assigned afterwards by Keras.
        if _in_safe_mode():
            raise ValueError(
                f"This model contains a SavedModel layer ({config.get('handle')!r}); loading it "
                "runs that SavedModel's graph, which Keras' safe mode forbids. If you trust it, "
                "load with `keras.saving.load_model(path, safe_mode=False)`."
            )
        return cls(**config)


def hub_layer(
    handle: str | os.PathLike,
    *,
    trainable: bool = False,
    output_key: str | None = None,
    signature: str | None = None,
    arguments: dict | None = None,
    input_shape: tuple | None = None,
    name: str | None = None,
    dtype: str | None = None,
    sha256: str | None = None,
) -> HubLayer:
    """Wrap a TF2 SavedModel or TF Hub model as a Keras 3 layer (TensorFlow backend).

    The Keras 3 replacement for `hub.KerasLayer`, usable in Sequential and
    functional models: the seeds'
    `Sequential([hub.KerasLayer(url, input_shape=(224, 224, 3)), Dense(n)])`
    works verbatim with `surgery.hub_layer`.

    - `handle`: a local SavedModel directory, a `https://` URL or a
      `tfhub.dev/...` handle (downloaded once in hub's compressed format
      and cached under `TFHUB_CACHE_DIR`, else `~/.keras/tfhub`; offline,
      a `ConnectionError` says what to do).
      Hub publishes no checksums: pass `sha256=` (from
      `surgery.hub.saved_model_sha256` on a copy you trust) to refuse a
      corrupt or changed download; loading a saved model checks it again.
    - The output shape comes from the SavedModel's traced signatures when
      they describe it (no graph is run to build the model); otherwise the
      call is traced once.
    - `training` is passed to the SavedModel's `__call__` when it accepts
      one (BatchNorm/Dropout inside switch modes), and only when the layer is
      trainable, as `hub.KerasLayer` does.
    - `trainable=True`: the SavedModel's trainable variables are the layer's
      trainable weights, so `fit` fine-tunes them; its
      `regularization_losses` are added to the model's losses in training.
    - dtype policies: inputs are cast to the dtype the SavedModel was traced
      for and outputs to the layer's compute dtype; the SavedModel itself
      computes in the dtype it was saved with (a graph cannot be re-typed), so
      `mixed_bfloat16` speeds up the layers around it, not inside it.
    - A model holding it saves to `.keras` (the handle and the weights) and
      loads back with `keras.saving.load_model(path, safe_mode=False)` (the
      handle is resolved again; running a stored graph is what Keras' safe
      mode refuses, as for `TFSMLayer`).

    Args:
        handle: str or path. See above.
        trainable: bool. Fine-tune the SavedModel's variables. Defaults to False.
        output_key: str. Pick one output of a dict-returning SavedModel.
        signature: str. Call this signature (e.g. "serving_default") instead
            of `__call__`; its outputs are a dict (use `output_key`).
        arguments: dict. Extra keyword arguments for every call.
        input_shape: tuple. `(height, width, channels)`, for a Sequential's
            first layer (as in `hub.KerasLayer`).
        name: str. Layer name.
        dtype: dtype policy name.
        sha256: str. Expected `saved_model_sha256` of the resolved SavedModel.

    Returns:
        A `HubLayer` (a `keras.layers.Layer`).

    Raises:
        RuntimeError: on the JAX or PyTorch backends.
        ValueError: a TF1 `hub.Module`, a directory that is not a SavedModel,
            an unknown signature or output key, a `sha256` mismatch.

    Example:

        >>> import tempfile, keras, numpy as np, zoo, surgery
        >>> base = zoo.build("resnet18", include_top=False, pooling="avg", input_shape=(32, 32, 3))
        >>> path = surgery.export_feature_extractor(base, tempfile.mkdtemp() + "/resnet18")
        >>> model = keras.Sequential([surgery.hub_layer(path, input_shape=(32, 32, 3)),
        ...                           keras.layers.Dense(5)])
        >>> model.output_shape
        (None, 5)
    """
    kwargs = {"name": name} if name else {}
    if dtype is not None:
        kwargs["dtype"] = dtype
    layer = HubLayer(
        handle,
        trainable=trainable,
        output_key=output_key,
        signature=signature,
        arguments=arguments,
        input_shape=input_shape,
        sha256=sha256,
        **kwargs,
    )
    if input_shape is not None:
        # What Sequential reads to create its Input, as for hub.KerasLayer.
        _declare_input_shape(layer, input_shape)
    return layer


def export_feature_extractor(
    model: keras.Model,
    path: str | os.PathLike,
    *,
    input_shape: tuple | None = None,
    dtype: str | None = None,
    overwrite: bool = False,
) -> str:
    """Write a Keras model as a reusable (TF Hub style) TF2 SavedModel.

    The SavedModel has what TF Hub's reusable-SavedModel convention asks:
    `__call__(inputs, training=False)` (traced for both modes, so
    BatchNorm/Dropout behave), `variables`, `trainable_variables`,
    `regularization_losses` (the model's weight regularizers, as functions),
    and a `serving_default` signature. Any Keras model qualifies: a zoo
    backbone, or a `surgery.cut` of any model. The write is atomic (a
    temporary directory renamed into place).

    Args:
        model: keras.Model (single input).
        path: str. Target directory.
        input_shape: tuple. Input shape to trace, without the batch.
            Defaults to the model's; spatial sizes the model leaves as None
            stay free (any image size).
        dtype: str. Input dtype. Defaults to the model's input dtype.
        overwrite: bool. Replace an existing directory. Defaults to False.

    Returns:
        `path`.

    Example:

        >>> import tempfile, zoo, surgery
        >>> base = zoo.build("resnet18", include_top=False, pooling="avg")
        >>> path = surgery.export_feature_extractor(base, tempfile.mkdtemp() + "/fx")
        >>> sorted(p for p in __import__("os").listdir(path))
        ['assets', 'fingerprint.pb', 'saved_model.pb', 'variables']
    """
    tf = _require_tensorflow("surgery.export_feature_extractor")
    if not isinstance(model, keras.Model) or len(model.inputs) != 1:
        raise ValueError(
            "`model` must be a keras.Model with one input (a feature extractor). Received: "
            f"{type(model).__name__}{'' if not isinstance(model, keras.Model) else f' with {len(model.inputs)} inputs'}; "
            "export a single-input part of it (e.g. `surgery.cut(model, layer)` of one branch)."
        )
    path = os.fspath(path)
    if os.path.exists(path) and not overwrite:
        raise FileExistsError(f"{path!r} exists; pass overwrite=True to replace it.")
    shape = (None,) + tuple(input_shape if input_shape is not None else model.inputs[0].shape[1:])
    spec = tf.TensorSpec(shape, dtype or model.inputs[0].dtype, name="inputs")

    root = tf.__internal__.tracking.AutoTrackable()  # what keras.export uses too
    root.variables = [v.value for v in model.variables]
    root.trainable_variables = [v.value for v in model.trainable_variables]

    @tf.function
    def call(inputs, training=False):
        return model(inputs, training=training)

    call.get_concrete_function(spec, training=False)
    call.get_concrete_function(spec, training=True)
    root.__call__ = call
    root.regularization_losses = [tf.function(fn, input_signature=[]) for fn in _regularizers(model)]
    serving = tf.function(lambda inputs: {"outputs": model(inputs, training=False)}, input_signature=[spec])
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".export-", dir=parent)
    try:
        tf.saved_model.save(root, tmp, signatures={"serving_default": serving})
        if os.path.exists(path):
            shutil.rmtree(path)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def _regularizers(model):
    """Zero-argument functions computing each weight regularization penalty."""
    fns = []
    for layer in _all_sublayers(model):
        for attr, weight_attr in (
            ("kernel_regularizer", "kernel"),
            ("bias_regularizer", "bias"),
            ("depthwise_regularizer", "depthwise_kernel"),
        ):
            reg = getattr(layer, attr, None)
            weight = getattr(layer, weight_attr, None) if reg is not None else None
            if reg is not None and weight is not None:
                fns.append(_penalty(reg, weight))
    return fns


def _penalty(regularizer, weight):
    def penalty():
        return regularizer(weight.value)

    return penalty


def _accepts_training(obj):
    call = obj.__call__
    spec = getattr(call, "function_spec", None) or getattr(call, "_function_spec", None)
    try:
        names = list(spec.fullargspec.args) + list(spec.fullargspec.kwonlyargs)
    except AttributeError:
        try:
            names = list(inspect.signature(call).parameters)
        except (TypeError, ValueError):
            return False
    return "training" in names


def _concrete_functions(func, signature):
    if signature is not None:
        return [func]
    return list(getattr(func.__call__, "concrete_functions", []) or [])


def _input_dtype(func, signature):
    for fn in _concrete_functions(func, signature):
        specs = [s for s in _flat(fn.structured_input_signature) if hasattr(s, "dtype")]
        if specs:
            return specs[0].dtype
    return None


def _flat(structure):
    import tensorflow as tf

    return tf.nest.flatten(structure)


def _as_signature_inputs(fn, inputs):
    names = list(fn.structured_input_signature[1])
    if isinstance(inputs, dict):
        return inputs
    if len(names) != 1:
        raise ValueError(f"The signature takes several inputs {names}; pass a dict.")
    return {names[0]: inputs}


def _output_spec(func, signature, output_key, input_shape):
    """The output shape the SavedModel's traced functions give for `input_shape`."""
    input_shape = tuple(input_shape)
    for fn in _concrete_functions(func, signature):
        specs = [s for s in _flat(fn.structured_input_signature) if hasattr(s, "shape")]
        if len(specs) != 1 or not specs[0].shape.is_compatible_with(input_shape):
            continue
        outputs = fn.structured_outputs
        if isinstance(outputs, dict):
            if output_key is None:
                if len(outputs) != 1:
                    return None
                outputs = next(iter(outputs.values()))
            elif output_key in outputs:
                outputs = outputs[output_key]
            else:
                return None
        if not hasattr(outputs, "shape"):
            return None
        shape = list(outputs.shape.as_list())
        if shape:
            shape[0] = input_shape[0]
        return tuple(shape)
    return None
