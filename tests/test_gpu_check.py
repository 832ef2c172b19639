"""scripts/gpu_check.py: its tables and verdicts, and one real step (the GPU run itself is not CI's)."""

import importlib.util
import json
import os
import pathlib
import sys

import pytest

SCRIPT = pathlib.Path(__file__).parent.parent / "scripts" / "gpu_check.py"


def _module():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _row(model, **sides):
    row = {"model": model, "batch": 256, "size": 224}
    for side, (train, infer) in sides.items():
        row[f"{side}_train_img_s"], row[f"{side}_infer_img_s"] = train, infer
    for what in ("train", "infer"):
        for other in ("ceiling", "compiled"):
            row[f"{other}_{what}_ratio"] = row[f"zoo_{what}_img_s"] / row[f"{other}_{what}_img_s"]
    return row


@pytest.mark.one_backend
def test_tables_state_each_target_as_met_or_not():
    gpu_check = _module()
    r50 = _row("resnet50", zoo=(5000, 21000), ceiling=(5400, 23000), compiled=(5600, 20000))
    result = {
        "date": "2026-11-28",
        "card": "NVIDIA H100 80GB HBM3",
        "tiny": False,
        "versions": {"keras": "3.15.1", "torch": "-"},
        "steps": [
            {"step": "bench_resnet50", "status": "ok", "seconds": 100.0, "rows": [r50]},
            {"step": "memory_zoo", "status": "ok", "seconds": 20.0, "rows": [{"peak_memory_mb": 9000.0}]},
            {"step": "memory_keras", "status": "ok", "seconds": 20.0, "rows": [{"peak_memory_mb": 10000.0}]},
            {"step": "parity", "status": "ok", "seconds": 60.0, "models": {"resnet18": "OK", "vgg11": "MISMATCH"}},
            {"step": "tuning_run", "status": "ok", "seconds": 80.0, "accuracy": 0.95, "images": 360,
             "measured_on": "test accuracy"},
            {"step": "bench_vgg16_googlenet", "status": "timed out after 40 s", "seconds": 40.0},
        ],
    }  # fmt: skip
    md = gpu_check.markdown(result)
    assert "NVIDIA H100 80GB HBM3 on 2026-11-28" in md and "torch -" not in md
    assert "| resnet50 | train img/s | 5,000 |" in md
    assert "| resnet50 train vs torch.compile | >= 1.0x | 0.89x | not met |" in md
    assert "| resnet50 train vs jitted step | >= 0.9x | 0.93x | met |" in md
    assert "| resnet50 inference vs torch.compile | >= 1.0x | 1.05x | met |" in md
    assert "| resnet50 peak memory vs keras.app | <= 1.0x | 0.90x | met |" in md
    assert "1/2 models match (mismatch: vgg11)" in md
    assert "test accuracy 0.950 on 360 images, 80 s wall" in md
    assert "| bench_vgg16_googlenet | timed out after 40 s | 40.0 |" in md


@pytest.mark.one_backend
def test_a_step_that_overruns_is_recorded_and_the_files_stay_readable(tmp_path):
    gpu_check = _module()
    check = gpu_check.Check(str(tmp_path), budget=60, tiny=True)
    quick = check.run(
        "quick", [sys.executable, "-c", "print('hello')"], cap=30, parse=lambda out: {"said": out.strip()}
    )
    slow = check.run("slow", [sys.executable, "-c", "import time; time.sleep(60)"], cap=2)
    assert quick["status"] == "ok" and quick["said"] == "hello"
    assert slow["status"] == "timed out after 2 s" and slow["seconds"] < 10
    written = json.loads((tmp_path / "gpu_check.json").read_text())
    assert [s["step"] for s in written["steps"]] == ["quick", "slow"]
    assert sorted(os.listdir(tmp_path)) == ["gpu_check.json", "gpu_check.log", "gpu_check.md"]
