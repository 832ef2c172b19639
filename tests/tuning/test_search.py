"""tuning.search end to end: leaderboard, best model, reload, resume after SIGKILL."""

import json
import os
import re
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest

import tuning
import zoo
from tuning.callbacks import ReleaseFreedMemory

FROZEN_ONLY = {"stages": [0], "augment": [False]}


class _CheckpointsSeen(keras.callbacks.Callback):
    def __init__(self, project):
        super().__init__()
        self.project, self.seen = project, []

    def on_train_end(self, logs=None):
        self.seen += list(self.project.glob("trial_*/checkpoint*"))


def test_search_writes_leaderboard_and_best_model(tmp_path, capsys):
    x, y, _ = zoo.datasets.shapes(6, size=32, split="train")
    xv, yv, _ = zoo.datasets.shapes(3, size=32, split="val")
    seen = _CheckpointsSeen(tmp_path / "p")
    result = tuning.search(
        (x, y),
        (xv, yv),
        backbone="resnet18",
        tuner="random",
        max_trials=3,
        epochs=2,
        directory=str(tmp_path),
        project_name="p",
        unfreeze_space=FROZEN_ONLY,
        callbacks=[seen],
    )
    # By default one line per trial, numbered as KerasTuner counts, with the time left.
    lines = [l for l in capsys.readouterr().out.splitlines() if l.startswith("[trial ")]
    assert [l.split()[1] for l in lines] == ["1/3", "2/3", "3/3"]
    assert " best " in lines[-1] and "left" in lines[0] and "left" not in lines[-1]
    assert re.search(r" head/batch_norm=(true|false) ", lines[0]), lines[0]  # key=value, true/false
    project = tmp_path / "p"
    # Random search keeps best.keras and reads no checkpoint again: trials write none at all.
    assert not seen.seen and not list(project.glob("trial_*/checkpoint*"))
    assert {"best.keras", "best.json", "leaderboard.csv", "leaderboard.json"} <= set(os.listdir(project))
    rows = result.leaderboard
    assert len(rows) == 3 and all(r["status"].endswith("COMPLETED") for r in rows)
    assert rows[0]["score"] == max(r["score"] for r in rows) == pytest.approx(result.score)
    assert all(k.startswith(("head/", "finetune/")) for k in result.hyperparameters)
    # What deploying each trial costs, measured after its training.
    for r in rows:
        assert r["params"] > 11_000_000 and r["macs"] > 0 and r["weights_mb"] > 40 and r["latency_ms"] > 0
    assert json.loads((project / "best.json").read_text())["costs"]["params"] == rows[0]["params"]
    # TensorBoard logs per trial.
    assert len(os.listdir(project / "logs")) >= 1
    again = tuning.load_best(str(tmp_path), "p")
    np.testing.assert_allclose(  # compiled: an eager pass compiles each op on JAX
        again.model.predict_on_batch(xv[:4]), result.model.predict_on_batch(xv[:4]), atol=1e-6
    )
    acc = again.model.evaluate(xv, yv, verbose=0, return_dict=True)["accuracy"]
    assert acc == pytest.approx(result.score, abs=1e-6)


@pytest.mark.one_backend  # KerasTuner's oracle and the hypermodel: backend-independent
def test_search_over_two_backbones_tries_each_with_its_own_cache(tmp_path):
    x, y, _ = zoo.datasets.shapes(4, size=32, split="train")
    hm_backbones = ["resnet18", "mobilenetv3small"]
    result = tuning.search(
        (x, y),
        (x, y),
        backbone=hm_backbones,
        tuner="random",
        max_trials=2,
        epochs=1,
        directory=str(tmp_path),
        project_name="p",
        unfreeze_space=FROZEN_ONLY,
        verbose=0,
        fastest_within=1.0,  # every trial qualifies: the fastest is kept
    )
    # The first trials cover every backbone, whatever the random draw.
    assert sorted(r["backbone"] for r in result.leaderboard) == sorted(hm_backbones)
    fastest = min(result.leaderboard, key=lambda r: r["latency_ms"])
    assert result.hyperparameters["backbone"] == fastest["backbone"]
    assert result.model.name == f"{fastest['backbone']}_transfer"
    best = json.loads((tmp_path / "p" / "best.json").read_text())
    assert best["trial_id"] == fastest["trial_id"] and "fastest trial within 1.0" in best["chosen"]
    assert not (tmp_path / "p" / "candidates").exists()
    hm = tuning.TransferHyperModel(hm_backbones, num_classes=6, input_shape=(32, 32, 3))
    feats = {b: hm.features(x, y, backbone=b)[0].shape for b in hm_backbones}
    assert feats == {"resnet18": (len(x), 1, 1, 512), "mobilenetv3small": (len(x), 1, 1, 576)}
    assert len(hm._feature_cache) == 2  # one cache per backbone, not per trial


@pytest.mark.one_backend
def test_bad_arguments_are_refused(tmp_path):
    x, y, _ = zoo.datasets.shapes(2, size=32)
    with pytest.raises(ValueError, match="needs validation data"):
        tuning.search((x, y), backbone="resnet18", directory=str(tmp_path))
    with pytest.raises(ValueError, match="`tuner` must be one of"):
        tuning.search((x, y), (x, y), backbone="resnet18", tuner="grid", directory=str(tmp_path))
    with pytest.raises(ValueError, match="Did you mean"):
        tuning.search((x, y), (x, y), backbone="resnet19", directory=str(tmp_path))


@pytest.mark.one_backend  # which tuners read a checkpoint again: nothing trains
def test_checkpoints_are_written_only_where_something_reads_them(tmp_path):
    hm = tuning.TransferHyperModel("resnet18", num_classes=2, input_shape=(32, 32, 3))

    def reads(**kw):
        return tuning.make_tuner(hm, directory=str(tmp_path), overwrite=True, **kw).checkpoints_read

    assert not reads(tuner="random", keep_checkpoints=False)
    assert reads(tuner="hyperband", keep_checkpoints=False)  # continues trials from checkpoints
    assert reads(tuner="random", keep_checkpoints=True)
    assert reads(tuner="random", keep_checkpoints=False, keep_best=False)  # the only saved model


@pytest.mark.one_backend  # the choice is arithmetic on leaderboard rows
def test_latency_aware_objectives_pick_the_right_trial():
    from tuning.tuners import pick

    rows = [
        {"trial_id": "big", "score": 0.95, "latency_ms": 9.0},
        {"trial_id": "mid", "score": 0.945, "latency_ms": 4.0},
        {"trial_id": "small", "score": 0.90, "latency_ms": 1.0},
        {"trial_id": "untimed", "score": 0.99, "latency_ms": None},
    ]
    assert pick(rows)["trial_id"] == "untimed"
    assert pick(rows, max_latency_ms=5.0)["trial_id"] == "mid"  # the best under the cap
    assert pick(rows, max_latency_ms=1.0)["trial_id"] == "small"  # the cap is inclusive
    assert pick(rows, max_latency_ms=0.5) is None
    assert pick(rows[:3], within=0.01)["trial_id"] == "mid"  # fastest within one point of 0.95
    assert pick(rows[:3], within=0.06)["trial_id"] == "small"
    losses = [dict(r, score=1 - r["score"]) for r in rows[:3]]
    assert pick(losses, direction="min", max_latency_ms=5.0)["trial_id"] == "mid"


@pytest.mark.one_backend  # a file written or not
def test_a_latency_cap_keeps_only_fast_enough_trials(tmp_path):
    import keras_tuner as kt

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    keeper = tuning.tuners.BestModelKeeper(
        str(tmp_path), kt.Objective("val_accuracy", "max"), max_latency_ms=5.0
    )
    assert not keeper.offer(model, 0.9, {}, costs={"latency_ms": 9.0})  # better but too slow
    assert not keeper.offer(model, 0.9, {}, costs=None)  # unmeasured: cannot be within the cap
    assert not os.path.exists(tmp_path / "best.keras")
    assert keeper.offer(model, 0.8, {}, costs={"latency_ms": 4.0})
    assert keeper.best()["costs"] == {"latency_ms": 4.0}


SCRIPT = """
import sys, zoo, tuning
x, y, _ = zoo.datasets.shapes(12, size=32, split="train")
xv, yv, _ = zoo.datasets.shapes(4, size=32, split="val")
tuning.search((x, y), (xv, yv), backbone="resnet18", tuner="random", max_trials=2,
              epochs=2, directory=sys.argv[1], project_name="resume", tensorboard=False,
              unfreeze_space={"stages": [1], "augment": [False]}, patience=5)
"""


@pytest.mark.tf_only
def test_search_resumes_after_sigkill(tmp_path):
    script = tmp_path / "run.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "PYTHONPATH": os.getcwd() + os.pathsep + os.environ.get("PYTHONPATH", "")}
    project = tmp_path / "resume"
    times = project / "trial_times.json"
    proc = subprocess.Popen(
        [sys.executable, str(script), str(tmp_path)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if times.exists() and len(json.loads(times.read_text())) >= 1:
            time.sleep(1.0)  # into the second trial
            break
        time.sleep(0.2)
    assert proc.poll() is None, "the search finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = json.loads(times.read_text())
    best_before = json.loads((project / "best.json").read_text())["score"]
    stamps = {t: os.path.getmtime(project / f"trial_{t}" / "trial.json") for t in done}

    subprocess.run(
        [sys.executable, str(script), str(tmp_path)],
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        timeout=600,
    )
    trials = sorted(p.name for p in project.iterdir() if p.is_dir() and p.name.startswith("trial_"))
    assert len(trials) == 2
    for t, stamp in stamps.items():  # finished trials were not run again
        assert os.path.getmtime(project / f"trial_{t}" / "trial.json") == stamp
    statuses = [json.loads((project / t / "trial.json").read_text())["status"] for t in trials]
    assert statuses == ["COMPLETED"] * 2
    result = tuning.load_best(str(tmp_path), "resume")
    assert result.score >= best_before
    assert len(result.leaderboard) == 2


_RSS_MB = []  # module-level: KerasTuner deep-copies callbacks for every trial


def _rss_mb():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) / 1024 for line in f if line.startswith("VmRSS:"))


class _RecordRSS(keras.callbacks.Callback):
    def on_train_end(self, logs=None):
        _RSS_MB.append(_rss_mb())


@pytest.mark.tf_only  # where the leak was (JAX grew 12 MB per resnet18 trial, TensorFlow 200 MB)
@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads RSS from /proc (Linux)")
def test_trials_do_not_keep_their_models_in_memory(tmp_path):
    # Full-model trials of a backbone whose weights dominate memory: 2.4 M
    # parameters in one convolution, with Adam about 40 MB per model and
    # optimizer. Before the fix, TensorFlow's gradient registry kept each
    # trial's traced step and so its variables: +40 MB per trial. Frozen
    # (cached features) trials are mixed in. (20 resnet18 trials:
    # scripts/bench_memory.py.)
    from tuning._keras import custom_gradient_names

    inputs = keras.Input((8, 8, 3))
    h = keras.layers.Conv2D(256, 3, strides=2, padding="same", activation="relu", name="s1")(inputs)
    h = keras.layers.Conv2D(1024, 3, strides=2, padding="same", activation="relu", name="s2")(h)
    backbone = keras.Model(inputs, h, name="heavy")
    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, (16, 8, 8, 3)).astype("uint8")
    y = np.arange(16) % 2
    registered = custom_gradient_names()
    _RSS_MB.clear()
    tuning.search(
        (x, y),
        (x, y),
        backbone=backbone,
        tuner="random",
        max_trials=8,
        epochs=1,
        batch_size=16,
        directory=str(tmp_path),
        project_name="mem",
        tensorboard=False,
        phase1_fraction=0.0,
        unfreeze_space={"stages": [0, 2], "augment": [False]},
        callbacks=[_RecordRSS()],
    )
    assert custom_gradient_names() <= registered  # every trial's were released
    full = len(_RSS_MB)
    assert full >= 6
    growth = (_RSS_MB[-1] - _RSS_MB[2]) / (full - 3)
    print(f"RSS after the 3rd fit {_RSS_MB[2]:.0f} MB, after fit {full} {_RSS_MB[-1]:.0f} MB")
    assert growth < 15, f"RSS grew {growth:.0f} MB per fit: {[round(r) for r in _RSS_MB]}"


DATA_PARALLEL = """
import json, sys
import jax, keras, numpy as np, tuning
seen = []
class Where(keras.callbacks.Callback):
    def on_train_batch_end(self, batch, logs=None):
        v = self.model.trainable_variables[-1].value
        seen.append(len(v.sharding.device_set))
devices = jax.devices()
dist = keras.distribution.DataParallel(devices=devices)
rng = np.random.default_rng(0)
x = rng.integers(0, 255, (16, 16, 16, 3)).astype("uint8")
y = np.arange(16) % 2
inputs = keras.Input((16, 16, 3))
h = keras.layers.Conv2D(8, 3, strides=2, padding="same", name="s1")(inputs)
h = keras.layers.Conv2D(8, 3, strides=2, padding="same", name="s2")(h)
result = tuning.search((x, y), (x, y), backbone=keras.Model(inputs, h), tuner="random",
                       max_trials=1, epochs=2, batch_size=8, directory=sys.argv[1],
                       project_name="dp", tensorboard=False, distribution=dist,
                       unfreeze_space={"stages": [2], "augment": [False]}, callbacks=[Where()])
report = {"devices": len(devices), "replicas": seen, "batches": len(seen), "score": result.score}
# The job's --distribution data-parallel: one trial of the main job on both devices. The
# report after the search is the single-device code every other job test runs: skipped here.
import tuning.job
job = {}
def searched(config, data, out, hypermodel, result, splits, *rest):
    job.update(scale=hypermodel.learning_rate_scale, score=result.score,
               batch=int(next(iter(splits["train"]))[0].shape[0]))
tuning.job._finish = searched
seen.clear()
config = tuning.SearchConfig(distribution="data-parallel", batch_size=4, max_trials=1, epochs=1,
                             image_size=32, demo_images_per_class=4, tta=(),
                             unfreeze_space={"stages": [1], "augment": [False]})
tuning.run(out=sys.argv[1] + "/job", config=config, callbacks=[Where()])
report["job"] = {**job, "replicas": sorted(set(seen))}
print(json.dumps(report))
"""


@pytest.mark.skipif(keras.backend.backend() != "jax", reason="runs in the JAX pass of the suite")
def test_a_trial_and_the_job_train_data_parallel_on_two_jax_devices(tmp_path):
    env = {
        **os.environ,
        "KERAS_BACKEND": "jax",
        "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
        "PYTHONPATH": os.pathsep.join([os.getcwd(), os.environ.get("PYTHONPATH", "")]),
    }
    done = subprocess.run(
        [sys.executable, "-c", DATA_PARALLEL, str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["devices"] == 2
    assert report["batches"] >= 4 and set(report["replicas"]) == {2}  # weights on both devices
    job = report["job"]
    assert "data-parallel on 2 devices: global batch 4 x 2 = 8, learning rates x 2" in done.stdout
    assert job["replicas"] == [2] and job["batch"] == 8 and job["scale"] == 2.0 and job["score"] is not None


_BATCH_THREADS = []  # module-level: KerasTuner deep-copies the callbacks


class _RecordThread(keras.callbacks.Callback):
    async_safe = True

    def on_train_batch_end(self, batch, logs=None):
        import threading

        _BATCH_THREADS.append(threading.current_thread() is threading.main_thread())


@pytest.mark.skipif(
    keras.backend.backend() == "tensorflow", reason="Keras dispatches callbacks synchronously on TensorFlow"
)
@pytest.mark.parametrize("stages", [0, 1], ids=["cached_head", "full_model"])
def test_trials_keep_asynchronous_dispatch(tmp_path, stages, capsys):
    """No callback of a trial (KerasTuner's, early stopping, TensorBoard, the
    epoch printer) makes Keras wait for every step's logs: an async-safe
    batch hook runs off the main thread only when all the others allow it."""
    _BATCH_THREADS.clear()
    x, y, _ = zoo.datasets.shapes(4, size=32, split="train")
    tuning.search(
        (x, y),
        (x, y),
        measure_costs=False,  # what is checked is fit's dispatch
        backbone="resnet18",
        tuner="random",
        max_trials=1,
        epochs=1,
        batch_size=8,
        directory=str(tmp_path),
        verbose=2,
        phase1_fraction=0.0,
        unfreeze_space={"stages": [stages], "augment": [False]},
        callbacks=[_RecordThread(), ReleaseFreedMemory(every=1)],  # the job's own batch hook too
    )
    assert _BATCH_THREADS and not any(_BATCH_THREADS)
    assert "epoch 1/1 - " in capsys.readouterr().out


@pytest.mark.one_backend  # a callback's cadence; glibc's malloc_trim where there is one
def test_release_freed_memory_trims_every_n_batches_and_at_epoch_end():
    import sys

    from tuning.callbacks import malloc_trim

    assert (malloc_trim() is not None) == sys.platform.startswith("linux")  # glibc on the CI machines
    cb = ReleaseFreedMemory(every=4)
    m = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    m.compile("sgd", "mse")
    m.fit(np.zeros((40, 2)), np.zeros(40), batch_size=4, epochs=2, verbose=0, callbacks=[cb])
    assert cb.releases == 2 * (2 + 1)  # batches 4 and 8 of 10, then the epoch's end; twice
    with pytest.raises(ValueError, match="every"):
        ReleaseFreedMemory(every=0)


def test_precision_applies_to_every_trial(tmp_path):
    """KerasTuner resets Keras' global dtype policy before each trial; the
    hypermodel builds every trial under `precision` anyway, softmax in float32."""
    x, y, _ = zoo.datasets.shapes(4, size=32, split="train")
    result = tuning.search(
        (x, y),
        (x, y),
        measure_costs=False,  # the policy, not the costs
        backbone="resnet18",
        tuner="random",
        max_trials=2,
        epochs=1,
        directory=str(tmp_path),
        precision="bf16",
        unfreeze_space={"stages": [0, 1], "augment": [False]},
    )
    model = result.model
    convs = [l for l in model.layers if isinstance(l, keras.layers.Conv2D)]
    assert convs and all(l.dtype_policy.name == "mixed_bfloat16" for l in convs)
    assert all(w.dtype == "float32" for w in model.weights)
    assert model.get_layer("head").get_layer("predictions").compute_dtype == "float32"
    assert model.predict_on_batch(x[:2]).dtype == np.float32  # compiled (eager compiles each op on JAX)
    assert keras.config.dtype_policy().name == "float32"  # the caller's policy is left alone
    with pytest.raises(ValueError, match="Unknown precision 'fp8'"):
        tuning.search((x, y), (x, y), backbone="resnet18", directory=str(tmp_path), precision="fp8")
