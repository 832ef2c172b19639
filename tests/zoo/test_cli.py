import json

import keras
import pytest

from zoo import _bench as bench
from zoo.__main__ import main
from zoo._bench import bench_model


def test_demo_list_info(capsys):
    assert main(["list", "vgg1?_bn"]) == 0
    out = capsys.readouterr().out
    assert "vgg11_bn" in out and "vgg19_bn" in out and "resnet" not in out
    assert main(["info", "resnet34"]) == 0
    assert "21,814,696" in capsys.readouterr().out
    assert main(["demo", "--model", "resnet18"]) == 0
    out = capsys.readouterr().out
    assert "16 models" in out or "models:" in out
    assert "11,699,112" in out  # the card


def test_bench_writes_side_by_side_ratios(tmp_path, capsys):
    # TensorFlow: the zoo model next to keras.applications' (resnet50, the
    # smallest zoo model with a keras.applications twin). Elsewhere the CLI
    # and the zoo side on resnet18, with JAX's jitted ceiling beside it: the
    # keras.applications side is the same code on every backend.
    backend = keras.backend.backend()
    tf = backend == "tensorflow"
    path = tmp_path / "bench.json"
    sides = [] if tf else ["--sides", "zoo,ceiling" if backend == "jax" else "zoo"]
    model = "resnet50" if tf else "resnet18"
    args = ["bench", "--models", model, "--batch", "2", "--steps", "1", "--size", "32", "--repeats", "1"]
    main([*args, "--json", str(path), "--torch", "off", *sides])
    rows = json.loads(path.read_text())
    assert rows[0]["model"] == model
    assert (
        rows[0]["zoo_train_img_s"] > 0 and rows[0]["zoo_train_tflops"] > 0 and rows[0]["precision"] == "fp32"
    )
    assert "keras_torch_train_img_s" not in rows[0]  # --torch off: no torch side at all
    if tf:
        assert rows[0]["keras_infer_img_s"] > 0 and rows[0]["infer_ratio"] > 0 and rows[0]["train_ratio"] > 0
    if backend == "jax":  # the jitted stateless step, side by side
        assert rows[0]["ceiling_train_img_s"] > 0 and rows[0]["ceiling_train_ratio"] > 0
    out = capsys.readouterr().out
    assert "inference" in out and "train step" in out and ("keras.app" in out or not tf)


def test_bench_sides_precision_and_bad_arguments():
    row = bench_model(
        "resnet18", batch=2, steps=2, size=32, repeats=1, precision="bf16", sides=["zoo"], peak_tflops=1.0
    )
    assert row["precision"] == "bf16" and row["zoo_infer_img_s"] > 0
    assert "keras_infer_img_s" not in row and row["zoo_train_mfu"] == row["zoo_train_tflops"]
    assert keras.config.dtype_policy().name == "float32"  # restored
    with pytest.raises(ValueError, match="Unknown sides"):
        bench_model("resnet18", batch=2, steps=1, size=32, sides=["tf"])
    with pytest.raises(ValueError, match="Unknown precision"):
        bench_model("resnet18", batch=2, steps=1, size=32, precision="fp16")
    with pytest.raises(ValueError, match="Did you mean"):
        bench_model("resnet5O", batch=2, steps=1, size=32)


def test_bench_torch_columns_need_torchvision(monkeypatch):
    monkeypatch.setattr(bench, "torch_available", lambda: False)
    with pytest.raises(ImportError, match="torchvision"):
        bench_model("resnet18", batch=2, steps=1, size=32, torch=True)


@pytest.mark.tf_only  # one child process on the torch backend, compared from TensorFlow
def test_bench_keras_torch_side():
    if not bench._importable("torch"):
        pytest.skip("torch is not installed")
    row = bench_model("resnet18", batch=2, steps=1, size=32, repeats=1, sides=["zoo", "keras_torch"])
    assert row["keras_torch_train_img_s"] > 0 and row["keras_torch_infer_img_s"] > 0
    assert row["keras_torch_train_ratio"] == row["zoo_train_img_s"] / row["keras_torch_train_img_s"]
    assert "torch_train_img_s" not in row  # torchvision was not asked for


def test_bench_torchvision_columns():
    """Where torchvision is installed (not in CI): eager and compiled, same run."""
    if not bench.torch_available():
        pytest.skip("torchvision is not installed")
    row = bench_model("resnet18", batch=2, steps=1, size=32, repeats=1, sides=["zoo", "torch", "compiled"])
    for key in ("torch_infer_img_s", "compiled_train_img_s", "torch_train_ratio", "compiled_infer_ratio"):
        assert row[key] > 0
