"""`tuning.export` and `tuning.predict_files` as library calls (the CLI test trains and exports a real run)."""

import os

import numpy as np
import pytest

import tuning
from tuning.config import ConfigError


@pytest.mark.one_backend  # argument checks; nothing is built or written
@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"out": "m.onnx", "format": "onnx", "quantize": "int8"}, "writes LiteRT files"),
        ({"out": "m.tflite", "quantize": "int4"}, "`quantize` must be one of"),
        ({"out": "m.bin", "format": "pickle"}, "`format` must be one of"),
        ({"out": "m", "format": "litert"}, "ending in .tflite"),
        ({"out": "m.tflite", "quantize": "int8", "calibration_images": 0}, "at least 1"),
        ({"out": "there", "format": "onnx"}, "exists; choose a new path"),
        ({"out": os.path.join("nowhere", "m.onnx")}, "does not exist"),
    ],
)
def test_export_refuses_bad_arguments_before_writing(tmp_path, monkeypatch, kwargs, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "there").mkdir()
    kwargs = dict(kwargs)
    out = kwargs.pop("out")
    with pytest.raises(ConfigError, match=message.replace(".", r"\.").replace("`", ".")):
        tuning.export("best.keras", out, **kwargs)
    assert sorted(os.listdir(tmp_path)) == ["there"]


@pytest.mark.one_backend  # the batching and error handling are backend-independent
def test_predict_files_streams_batches_and_reports_unreadable_files(tmp_path):
    import keras
    from PIL import Image

    rng = np.random.default_rng(0)
    paths = []
    for i in range(5):
        paths.append(str(tmp_path / f"{i}.png"))
        Image.fromarray(rng.integers(0, 255, (12, 10, 3), dtype="uint8")).save(paths[-1])
    broken = tmp_path / "2b.png"
    broken.write_bytes(b"not an image")
    paths.insert(3, str(broken))
    model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.GlobalAveragePooling2D()])
    got = list(tuning.predict_files(model, paths, batch_size=2))
    assert [p for p, _, _ in got] == paths  # in order, one result per file
    assert got[3][1] is None and got[3][2].split(":")[0] in ("UnidentifiedImageError", "OSError")
    one_by_one = [s for _, s, _ in tuning.predict_files(model, paths, batch_size=1) if s is not None]
    np.testing.assert_allclose(np.stack([s for _, s, e in got if e is None]), np.stack(one_by_one), atol=1e-5)
    with pytest.raises(ConfigError, match="batch_size"):
        next(tuning.predict_files(model, paths, batch_size=0))
