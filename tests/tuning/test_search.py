"""tuning.search end to end: leaderboard, best model, reload, resume after SIGKILL."""

import json
import os
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest

import tuning
import zoo

FROZEN_ONLY = {"stages": [0], "augment": [False]}


def test_search_writes_leaderboard_and_best_model(tmp_path):
    x, y, _ = zoo.datasets.shapes(6, size=32, split="train")
    xv, yv, _ = zoo.datasets.shapes(3, size=32, split="val")
    result = tuning.search((x, y), (xv, yv), backbone="resnet18", tuner="random",
                           max_trials=3, epochs=2, directory=str(tmp_path),
                           project_name="p", unfreeze_space=FROZEN_ONLY)
    project = tmp_path / "p"
    assert {"best.keras", "best.json", "leaderboard.csv", "leaderboard.json"} <= set(os.listdir(project))
    rows = result.leaderboard
    assert len(rows) == 3 and all(r["status"].endswith("COMPLETED") for r in rows)
    assert rows[0]["score"] == max(r["score"] for r in rows) == pytest.approx(result.score)
    assert all(k.startswith(("head/", "finetune/")) for k in result.hyperparameters)
    # TensorBoard logs per trial.
    assert len(os.listdir(project / "logs")) >= 1
    again = tuning.load_best(str(tmp_path), "p")
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(again.model(xv[:4])),
        keras.ops.convert_to_numpy(result.model(xv[:4])), atol=1e-6)
    acc = again.model.evaluate(xv, yv, verbose=0, return_dict=True)["accuracy"]
    assert acc == pytest.approx(result.score, abs=1e-6)


def test_bad_arguments_are_refused(tmp_path):
    x, y, _ = zoo.datasets.shapes(2, size=32)
    with pytest.raises(ValueError, match="needs validation data"):
        tuning.search((x, y), backbone="resnet18", directory=str(tmp_path))
    with pytest.raises(ValueError, match="`tuner` must be one of"):
        tuning.search((x, y), (x, y), backbone="resnet18", tuner="grid", directory=str(tmp_path))
    with pytest.raises(ValueError, match="Did you mean"):
        tuning.search((x, y), (x, y), backbone="resnet19", directory=str(tmp_path))


SCRIPT = """
import sys, zoo, tuning
x, y, _ = zoo.datasets.shapes(12, size=32, split="train")
xv, yv, _ = zoo.datasets.shapes(4, size=32, split="val")
tuning.search((x, y), (xv, yv), backbone="resnet18", tuner="random", max_trials=4,
              epochs=3, directory=sys.argv[1], project_name="resume", tensorboard=False,
              unfreeze_space={"stages": [1], "augment": [False]}, patience=5)
"""


@pytest.mark.tf_only
def test_search_resumes_after_sigkill(tmp_path):
    script = tmp_path / "run.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "PYTHONPATH": os.getcwd() + os.pathsep + os.environ.get("PYTHONPATH", "")}
    project = tmp_path / "resume"
    times = project / "trial_times.json"
    proc = subprocess.Popen([sys.executable, str(script), str(tmp_path)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if times.exists() and len(json.loads(times.read_text())) >= 2:
            time.sleep(1.0)  # into the third trial
            break
        time.sleep(0.2)
    assert proc.poll() is None, "the search finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = json.loads(times.read_text())
    best_before = json.loads((project / "best.json").read_text())["score"]
    stamps = {t: os.path.getmtime(project / f"trial_{t}" / "trial.json") for t in done}

    subprocess.run([sys.executable, str(script), str(tmp_path)], env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=600)
    trials = sorted(p.name for p in project.iterdir() if p.is_dir() and p.name.startswith("trial_"))
    assert len(trials) == 4
    for t, stamp in stamps.items():  # finished trials were not run again
        assert os.path.getmtime(project / f"trial_{t}" / "trial.json") == stamp
    statuses = [json.loads((project / t / "trial.json").read_text())["status"] for t in trials]
    assert statuses == ["COMPLETED"] * 4
    result = tuning.load_best(str(tmp_path), "resume")
    assert result.score >= best_before
    assert len(result.leaderboard) == 4
