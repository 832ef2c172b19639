"""A finished run's model, served: `tuning.export` and `tuning.predict_files`.

`python -m tuning export` and `python -m tuning predict` are these two
functions plus printing. Both take the `best.keras` a run wrote (any
`.keras` of the toolkit's works; a quantized export also needs the run's
`run.json` beside it, for the images to calibrate and compare on).
"""

from __future__ import annotations

import os
import shutil
import tempfile

import numpy as np

from tuning.config import ConfigError

FORMATS = ("saved_model", "litert", "onnx")
QUANTIZE = ("int8", "float16", "dynamic")


def export(
    model: str,
    out: str,
    *,
    format: str | None = None,
    input_dtype: str = "uint8",
    tta: bool = False,
    probabilities: bool = False,
    quantize: str | None = None,
    calibration_images: int = 300,
    fallback: str | None = None,
) -> dict:
    """Write a run's model as a SavedModel, LiteRT or ONNX file that takes raw images.

    Everything is checked before anything is written, and the artifact is
    written beside `out` and renamed into place, so an interrupted export
    leaves nothing half-written. A quantized LiteRT export is calibrated on
    the run's training images, then the quantized file and a float32 one
    are both run on the run's held-out split (the LiteRT interpreter on this
    machine): accuracy, size and latency per image side by side, also
    written to `<out>.export.json`.

    Args:
        model: str. A `.keras` file written by `python -m tuning run` (its
            `classes.json` beside it gives the class names).
        out: str. The new path: a folder (saved_model), a `.tflite` file
            (litert) or an `.onnx` file. Never overwritten.
        format: str. "saved_model", "litert" or "onnx". Defaults to
            "litert" with `quantize`, else "saved_model".
        input_dtype: str. "uint8" (raw 0-255 pixels) or "float32".
            Defaults to "uint8".
        tta: bool. Serve the average with the mirror image's scores.
            Defaults to False.
        probabilities: bool. Segmentation only: serve the per-pixel
            probabilities beside the class map. Defaults to False.
        quantize: str. LiteRT post-training quantization: "int8" (weights
            and activations, integer ops, uint8 input), "float16" or
            "dynamic" (int8 weights). Defaults to None.
        calibration_images: int. Training images to calibrate on (at most
            the run's). Defaults to 300.
        fallback: str. With `quantize="int8"`: "float16" or "dynamic" to
            export instead when some layers have no int8 kernel in LiteRT
            (they would silently run in float32). Without it such a model is
            refused, naming the layers. Defaults to None.

    Returns:
        dict: `path`, `format`, `classes`; with `quantize`, also the
        comparison written to `<out>.export.json` (per file: `bytes`,
        `ms_per_image` and, for single-label classifiers, `accuracy`).

    Example:

        >>> import tuning
        >>> tuning.export("runs/demo/best.keras", "served.onnx", format="onnx", quantize="int8")
        Traceback (most recent call last):
        ...
        tuning.config.ConfigError: quantize='int8' writes LiteRT files: leave `format` unset or use format='litert' (received format='onnx').
    """
    import keras

    import zoo
    from tuning.files import write_json
    from tuning.job import load_classes, load_model

    if quantize is not None and quantize not in QUANTIZE:
        raise ConfigError(f"`quantize` must be one of {QUANTIZE} or None. Received: quantize={quantize!r}")
    if format is None:
        format = "litert" if quantize else os.path.splitext(out)[1].lstrip(".").replace("tflite", "litert")
        format = format if format in ("litert", "onnx") else "saved_model"
    if format not in FORMATS:
        raise ConfigError(f"`format` must be one of {FORMATS}. Received: format={format!r}")
    if quantize and format != "litert":
        raise ConfigError(
            f"quantize={quantize!r} writes LiteRT files: leave `format` unset or use format='litert' "
            f"(received format={format!r})."
        )
    if fallback is not None and (quantize != "int8" or fallback not in ("float16", "dynamic")):
        raise ConfigError(
            "`fallback` is 'float16' or 'dynamic', for quantize='int8' when a layer cannot be int8. "
            f"Received: fallback={fallback!r}, quantize={quantize!r}"
        )
    if not isinstance(calibration_images, int) or calibration_images < 1:
        raise ConfigError(
            f"`calibration_images` must be an int of at least 1. Received: calibration_images={calibration_images!r}"
        )
    if format in ("saved_model", "litert") and keras.backend.backend() != "tensorflow":
        raise ConfigError(
            f"format={format!r} needs the TensorFlow backend; run with KERAS_BACKEND=tensorflow "
            "(the .keras file loads on any backend)."
        )
    target = os.path.abspath(out)
    if format == "litert" and not target.endswith(".tflite"):
        raise ConfigError(
            f"format='litert' writes a .tflite file: give an `out` ending in .tflite (received {out!r})."
        )
    if os.path.exists(target):
        raise ConfigError(f"{out!r} exists; choose a new path (nothing is overwritten).")
    parent = os.path.dirname(target)
    if not os.path.isdir(parent):
        raise ConfigError(f"{out!r}: its folder {parent!r} does not exist.")
    network = load_model(model)
    if tta:
        network = _with_tta(network, model)
    segmentation = len(network.output_shape) == 4
    if probabilities and not segmentation:
        raise ConfigError(
            "`probabilities` is for segmentation models; a classifier serves its probabilities already."
        )
    if segmentation:  # any image size in, its class map (and probabilities) at that size out
        from tuning.segment import serving_model

        network = serving_model(network, probabilities=probabilities)
    stored = load_classes(model)
    classes = stored["classes"]
    images = (
        _run_images(model, network, segmentation, stored, quantize, calibration_images) if quantize else None
    )
    stem, ext = os.path.splitext(os.path.basename(target))  # Keras wants .tflite on a LiteRT file
    tmp = os.path.join(parent, f".{stem}.tmp-{os.getpid()}{ext if format != 'saved_model' else ''}")
    try:
        used, reason = quantize, None
        write = dict(format=format, input_dtype=input_dtype, class_names=classes)
        try:
            zoo.export(
                network,
                tmp,
                quantize=quantize,
                representative_data=images["calibration"] if images else None,
                **write,
            )
        except zoo.QuantizationError as e:
            if fallback is None:
                raise ConfigError(
                    f"{e} (fallback='float16', --fallback float16, writes float16 instead)"
                ) from None
            used, reason = fallback, str(e)
            zoo.export(network, tmp, quantize=fallback, **write)
        beside = tmp + ".classes.json"
        if stored["thresholds"] is not None:  # a multi-label model: its decision thresholds travel with it
            write_json(beside, stored)
        os.replace(tmp, target)
        if os.path.exists(beside):
            os.replace(beside, target + ".classes.json")
    finally:
        for leftover in (tmp, tmp + ".classes.json"):
            if os.path.isdir(leftover):
                shutil.rmtree(leftover, ignore_errors=True)
            elif os.path.exists(leftover):
                os.remove(leftover)
    record = {
        "path": target,
        "format": format,
        "input_dtype": input_dtype,
        "tta": bool(tta),
        "classes": classes,
    }
    if quantize:
        record["comparison"] = _compare(network, target, used, input_dtype, images)
        if reason is not None:
            record["comparison"].update(asked=quantize, fallback_reason=reason)
        write_json(target + ".export.json", record["comparison"])
    return record


def comparison_line(comparison: dict, path: str) -> str:
    """`int8: test accuracy 0.9861 (float32 0.9861) on 360 images, 11.3 MB (...)`: one export's comparison.

    Example:

        >>> from tuning.deploy import comparison_line
        >>> row = {"bytes": 2_000_000, "ms_per_image": 1.0, "accuracy": 0.9}
        >>> c = {"quantize": "int8", "split": "test", "images": 10, "size_ratio": 4.0,
        ...      "int8": row, "float32": {**row, "bytes": 8_000_000, "ms_per_image": 4.0}}
        >>> comparison_line(c, "m.tflite")[:59]
        'int8: test accuracy 0.9000 (float32 0.9000) on 10 images, 2'
    """
    name = comparison["quantize"]
    q, f = comparison[name], comparison["float32"]
    fell = f" (not {comparison['asked']}: {comparison['fallback_reason']})" if "asked" in comparison else ""
    accuracy = (
        f"{comparison['split']} accuracy {q['accuracy']:.4f} (float32 {f['accuracy']:.4f}) on "
        f"{comparison['images']} images, "
        if "accuracy" in q
        else ""
    )
    return (
        f"{name}{fell}: {accuracy}{q['bytes'] / 1e6:.1f} MB (float32 {f['bytes'] / 1e6:.1f} MB, "
        f"{comparison['size_ratio']}x smaller), {q['ms_per_image']:.2f} ms per image at batch 1 "
        f"(float32 {f['ms_per_image']:.2f} ms); wrote {path}.export.json"
    )


def predict_files(model, paths, batch_size: int = 32):
    """Yield `(path, scores, error)` for image files, read and decoded a few batches ahead.

    Memory stays at a few batches however many files are given; a file that
    cannot be read yields its error instead of scores, and the others go on.

    Args:
        model: a `keras.Model` taking `(batch, height, width, 3)` images in
            0-255 (what `python -m tuning run` writes), or the path of one.
        paths: image files.
        batch_size: int. Images per forward pass. Defaults to 32.

    Yields:
        `(path, scores, None)` with the model's output for the image (class
        probabilities), or `(path, None, "OSError: ...")`.

    Example:

        >>> import numpy as np, keras, tuning
        >>> net = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.GlobalAveragePooling2D()])
        >>> list(tuning.predict_files(net, ["no/such.png"]))[0][2].split(":")[0]
        'FileNotFoundError'
    """

    from tuning.data import read_batches
    from tuning.job import load_model

    if not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"`batch_size` must be an int of at least 1. Received: batch_size={batch_size!r}")
    if isinstance(model, (str, os.PathLike)):
        model = load_model(os.fspath(model))
    size = tuple(model.input_shape[1:3])
    for names, images, failed in read_batches(list(paths), size, batch_size=batch_size):
        scores = iter(model.predict_on_batch(images) if len(images) else [])
        for path in names:
            if path in failed:
                yield path, None, failed[path]
            else:
                yield path, next(scores), None


def _with_tta(network, path):
    """`network` averaged with its mirror image's scores; only for the toolkit's own models."""
    import zoo
    from tuning.tta import tta_model

    ours = any(type(l).__module__.split(".")[0] in ("zoo", "tuning") for l in zoo.layers.leaf_layers(network))
    if not ours:
        raise ConfigError(
            f"tta: {path!r} has none of the toolkit's layers (no zoo backbone, no tuning head); "
            "export it without TTA, or give a best.keras written by `python -m tuning run`."
        )
    return tta_model(network, ("flip",))


def _run_images(model, network, segmentation, stored, quantize, count):
    """The run's training images to calibrate on and its held-out images to compare on; checked first."""
    from tuning.data import read_batches
    from tuning.job import run_files

    run = os.path.dirname(os.path.abspath(model))
    try:
        files, _, config = run_files(run)
    except ConfigError:
        raise ConfigError(
            f"quantize={quantize!r} calibrates on the run's training images, and {run} holds no "
            "run.json: export a best.keras written by `python -m tuning run` in its own folder."
        ) from None
    size = network.input_shape[1:3]
    if None in size:
        size = (config.image_size, config.image_size)
    paths, _ = files["train"]
    pick = np.random.default_rng(0).permutation(len(paths))[:count]
    calibration, _ = _read(read_batches, [paths[i] for i in sorted(pick)], size)
    split = "test" if "test" in files else "val"
    test_paths, labels = files[split]
    test, truth = None, None
    if not segmentation and stored["thresholds"] is None:  # one class per image: accuracy compares
        test, kept = _read(read_batches, test_paths, size)
        truth = np.asarray(labels)[kept]
    return {"calibration": calibration, "test": test, "labels": truth, "split": split}


def _read(read_batches, paths, size):
    """`(images, readable)`: the images of `paths` that decode, and which did."""
    images, readable = [], []
    for chunk, batch, failed in read_batches(paths, size):
        images.extend(batch)
        readable.extend(p not in failed for p in chunk)
    if not images:
        raise ConfigError(
            f"none of the run's {len(paths)} images could be read (first: {paths[0]!r}): put the run's data "
            "back where run.json says, or export without `quantize`."
        )
    return np.stack(images), np.asarray(readable)


def _compare(network, out, quantize, input_dtype, images) -> dict:
    """A float32 LiteRT export beside `out`; both run on the held-out split (or, without labels, for latency)."""
    import zoo

    with tempfile.TemporaryDirectory() as scratch:
        plain = zoo.export(
            network, os.path.join(scratch, "float32.tflite"), format="litert", input_dtype=input_dtype
        )
        rows = {}
        for name, path in (("float32", plain), (quantize, out)):
            row = {"bytes": os.path.getsize(path)}
            if images["test"] is not None:
                scores, seconds = zoo.litert_predict(path, images["test"], return_latency=True)
                row["accuracy"] = float((scores.argmax(-1) == images["labels"]).mean())
            else:  # latency on the calibration images; accuracy needs one class per image
                _, seconds = zoo.litert_predict(path, images["calibration"][:50], return_latency=True)
            row["ms_per_image"] = round(seconds * 1000, 3)
            rows[name] = row
    return {
        "quantize": quantize,
        "calibration_images": len(images["calibration"]),
        "split": images["split"],
        "images": None if images["test"] is None else len(images["test"]),
        "float32": rows["float32"],
        quantize: rows[quantize],
        "size_ratio": round(rows["float32"]["bytes"] / rows[quantize]["bytes"], 2),
    }
