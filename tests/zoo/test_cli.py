import json

import keras

from zoo.__main__ import main


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
    path = tmp_path / "bench.json"
    main(["bench", "--models", "resnet50", "--batch", "2", "--steps", "1", "--size", "32",
          "--repeats", "1", "--json", str(path)])
    rows = json.loads(path.read_text())
    assert rows[0]["model"] == "resnet50"
    assert rows[0]["zoo_train_img_s"] > 0 and rows[0]["keras_infer_img_s"] > 0
    assert rows[0]["infer_ratio"] > 0 and rows[0]["train_ratio"] > 0
    assert rows[0]["zoo_train_tflops"] > 0 and rows[0]["precision"] == "fp32"
    if keras.backend.backend() == "jax":  # the jitted stateless step, side by side
        assert rows[0]["ceiling_train_img_s"] > 0 and rows[0]["ceiling_train_ratio"] > 0
    assert "ratio" in capsys.readouterr().out
