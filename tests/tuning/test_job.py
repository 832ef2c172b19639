"""tuning.run in-process: the config, recipes, budget, imbalance, error analysis, CV and bad input."""

import csv
import json
import os
import pathlib
import shutil

import keras
import numpy as np
import pytest
from PIL import Image

import tuning
from tuning.__main__ import main
from tuning.config import ConfigError, SearchConfig

# Head-only trials on cached features of a frozen random-init backbone: seconds per run.
FAST = dict(
    backbone="resnet18",
    image_size=32,
    recipe="pretrained",
    tuner="random",
    head_space={
        "pooling": ["avg"],
        "dense_layers": [0, 0],
        "learning_rate": [3e-2, 3e-2],
        "optimizer": ["adam"],
    },
    unfreeze_space={"stages": [0], "augment": [False]},
    patience=0,
    tta=("flip",),
)
COLOURS = {"red": (200, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 200)}


def _colour_folders(root, counts, *, mislabelled=0, seed=0):
    """train/val/test folders of noisy solid-colour images; `mislabelled` red ones filed under green."""
    rng = np.random.default_rng(seed)

    def save(folder, name, colour):
        os.makedirs(folder, exist_ok=True)
        pixels = np.clip(np.array(colour) + rng.normal(0, 25, (16, 16, 3)), 0, 255).astype("uint8")
        Image.fromarray(pixels).save(os.path.join(folder, name))

    for split, share in (("train", 1.0), ("val", 0.5), ("test", 0.5)):
        for cls, n in counts.items():
            for i in range(max(2, int(n * share))):
                save(os.path.join(root, split, cls), f"{cls}_{i:03d}.png", COLOURS[cls])
    planted = []
    for i in range(mislabelled):
        planted.append(os.path.join(root, "train", "green", f"planted_{i}.png"))
        save(os.path.dirname(planted[-1]), os.path.basename(planted[-1]), COLOURS["red"])
    return planted


@pytest.mark.one_backend  # plain Python
def test_config_round_trip_diff_and_bad_settings(tmp_path):
    config = tuning.recipes.from_scratch(
        backbone="resnet18,resnet34", time_budget="20m", class_weight="balanced"
    )
    assert config.backbone == ("resnet18", "resnet34") and config.time_budget == 1200.0
    assert SearchConfig.from_json(config.to_json()) == config
    assert config.resume_conflicts(config.replace(max_trials=9, time_budget=60, cv=3)) == {}
    assert config.replace(seed=1).resume_conflicts(config) == {"seed": (0, 1)}  # earlier -> now
    pretrained = tuning.recipes.pretrained()
    assert pretrained.weights == "imagenet" and pretrained.patience == 3 and pretrained.phase1_fraction == 0.5
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"epoch": 3, "backbone": "resnet18"}))
    with pytest.raises(ConfigError, match=r"Unknown settings 'epoch' \(did you mean epochs"):
        SearchConfig.load(str(path))
    path.write_text("{epochs: 3}")
    with pytest.raises(ConfigError, match="is not valid JSON"):
        SearchConfig.load(str(path))
    for bad, message in (
        (dict(cv=1), "`cv` must be 0"),
        (dict(objective="f1"), "`objective` must be one of"),
        (dict(time_budget="-5m"), "Cannot read the duration"),
        (dict(time_budget=0), "`time_budget` must be a duration above 0"),
        (dict(class_weight="auto"), "`class_weight` must be one of"),
    ):
        with pytest.raises(ConfigError, match=message):
            SearchConfig(**bad)


@pytest.mark.one_backend  # the job's logic; the model code runs on every backend elsewhere
def test_imbalanced_run_with_mislabels_duplicates_tta_and_cv(tmp_path, capsys):
    data = str(tmp_path / "data")
    planted = _colour_folders(data, {"red": 36, "green": 12, "blue": 4}, mislabelled=2)
    leaked = os.path.join(data, "test", "red", "leak.png")
    shutil.copyfile(os.path.join(data, "train", "red", "red_005.png"), leaked)
    out = str(tmp_path / "run")
    config = SearchConfig(**FAST, max_trials=1, epochs=12, class_weight="balanced", cv=2)
    result = tuning.run(data, out, config, verbose=1)
    printed = capsys.readouterr().out
    # 36 red against 4 blue: the objective becomes balanced accuracy, and it says so.
    assert result.objective == "val_balanced_accuracy" and "objective: val_balanced_accuracy" in printed
    assert result.evaluation["accuracy"] > 0.9 and result.evaluation["balanced_accuracy"] > 0.9
    best = result.leaderboard[0]
    assert {"val_accuracy", "val_balanced_accuracy", "val_macro_f1"} <= set(best)
    assert {"test_accuracy", "test_balanced_accuracy", "test_macro_f1", "test_tta_accuracy"} <= set(best)
    report = pathlib.Path(os.path.join(out, "report.md")).read_text()
    for figure in ("| accuracy |", "| balanced accuracy |", "| macro-F1 |", "flip TTA", "CV mean +- sd"):
        assert figure in report
    record = json.loads(pathlib.Path(os.path.join(out, "run.json")).read_text())
    assert record["objective"] == "val_balanced_accuracy" and record["config"]["class_weight"] == "balanced"
    assert record["cv"]["folds"] == 2 and len(record["cv"]["accuracy"]["values"]) == 2
    assert 0 <= record["cv"]["accuracy"]["sd"] <= 1 and "cv_accuracy" in best
    # The planted mislabels head suspects.csv; the leaked test image is reported with its twin.
    with open(os.path.join(out, "suspects.csv")) as f:
        suspects = [row["path"] for row in csv.DictReader(f)]
    assert sorted(suspects[:2]) == sorted(planted)
    assert "Leakage:" in report and "leak.png" in report and "red_005.png" in report
    assert "exact" in report and "near (" not in report  # same-colour images are not duplicates
    assert os.path.exists(os.path.join(out, "plots", "top_losses.png")) or "was misclassified" in report


@pytest.mark.one_backend
def test_time_budget_stops_the_search_and_the_report_says_what_it_cut(tmp_path):
    data = str(tmp_path / "data")
    _colour_folders(data, {"red": 8, "green": 8})
    out = str(tmp_path / "run")
    # Full-model trials (no cache): each epoch costs real time, ten trials cannot fit.
    config = SearchConfig(
        **{**FAST, "unfreeze_space": {"stages": [1], "augment": [False]}, "tta": ()},
        phase1_fraction=0.0,
        max_trials=10,
        epochs=50,
        time_budget=6,
    )
    result = tuning.run(data, out, config, verbose=0)
    budget = result.budget
    assert budget["trials_finished"] < 10 and budget["trials_asked"] == 10
    # Within the budget plus one epoch (and a trial's start-up and end): generous on a busy CI machine.
    assert budget["search_seconds"] < 6 + 30
    assert budget["trials_stopped"] or budget["stopped_search"]
    report = pathlib.Path(os.path.join(out, "report.md")).read_text()
    assert "## Time budget" in report and "cut:" in report


@pytest.mark.one_backend  # argument handling; nothing is trained
def test_bad_job_input_fails_in_one_line_before_writing(tmp_path, capsys):
    import keras

    data = str(tmp_path / "data")
    _colour_folders(data, {"red": 4, "green": 4})
    out = tmp_path / "run"
    settings = tmp_path / "settings.json"
    settings.write_text(json.dumps({"max_trails": 3}))
    plain = tmp_path / "plain.keras"
    keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Flatten(), keras.layers.Dense(2)]).save(plain)
    for args, message in (
        (["run", "--data", data, "--out", str(out), "--cv", "9"], "cv=9 folds need at least 9"),
        (["run", "--data", data, "--out", str(out), "--config", str(settings)], "did you mean max_trials"),
        (
            ["export", "--model", str(plain), "--tta", "--out", str(tmp_path / "x")],
            "none of the toolkit's layers",
        ),
    ):
        assert main(args) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and err.startswith("error:") and len(err.splitlines()) == 1, err
    assert not out.exists() and not (tmp_path / "x").exists()


@pytest.mark.one_backend  # numpy only
def test_near_duplicates_need_the_same_pixels_not_only_the_same_class():
    from tuning.analysis import duplicates

    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (4, 16, 16, 3)).astype("float32")
    images[1] = np.clip(images[0] + rng.normal(0, 4, (16, 16, 3)), 0, 255)  # a re-encoded copy of 0
    images[3] = 255 - images[2]  # the same shapes in other colours
    embeddings = np.array([[1.0, 0.0], [1.0, 0.01], [0.0, 1.0], [0.0, 1.0]])  # a class-level view
    import tempfile

    folder = tempfile.mkdtemp()
    paths = []  # four distinct files: no exact pair
    for i in range(4):
        paths.append(os.path.join(folder, f"{i}.bin"))
        with open(paths[-1], "wb") as f:
            f.write(bytes([i]))
    rows = duplicates(paths, ["train", "test", "train", "test"], embeddings, images, threshold=0.9)
    assert [(r["kind"], r["path_a"], r["path_b"]) for r in rows] == [("near", paths[0], paths[1])]


def test_data_parallel_on_one_device_warns_and_torch_is_refused(capsys):
    config = tuning.SearchConfig(distribution="data-parallel", batch_size=8)
    if keras.backend.backend() == "torch":
        with pytest.raises(
            tuning.ConfigError, match="not supported on the torch backend; use KERAS_BACKEND=jax"
        ):
            tuning.data_parallel(config)
        return
    if len(keras.distribution.list_devices()) > 1:
        pytest.skip("several devices: the two-device test covers them")
    plan = tuning.data_parallel(config, verbose=1)
    assert (plan.devices, plan.batch_size, plan.distribution, plan.strategy) == (1, 8, None, None)
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and out[0].startswith("warning: --distribution data-parallel found one device (")


@pytest.mark.tf_only  # a TensorFlow CPU note; other backends get backend_note's
def test_precision_note_only_for_fp32_on_a_cpu_with_native_bf16(tmp_path, monkeypatch):
    import tuning.job

    def cpu(text):
        path = tmp_path / "cpuinfo"
        path.write_text(text)
        monkeypatch.setattr(tuning.job, "_CPUINFO", str(path))

    cpu("processor\t: 0\nflags\t\t: fpu sse2 avx512f avx512_bf16 amx_tile\n")
    note = tuning.job.precision_note("fp32")
    assert note.startswith("this CPU computes bfloat16 natively (avx512_bf16): --precision bf16")
    assert tuning.job.precision_note("bf16") is None  # already the fast setting
    cpu("processor\t: 0\nFeatures\t: fp asimd bf16 i8mm\n")  # Arm
    assert "(bf16)" in tuning.job.precision_note("fp32")
    cpu("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f\n")
    assert tuning.job.precision_note("fp32") is None
    monkeypatch.setattr(tuning.job, "_CPUINFO", str(tmp_path / "missing"))  # not Linux
    assert tuning.job.precision_note("fp32") is None


def test_distillation_loss_is_cross_entropy_plus_the_softened_kl():
    from tuning.distillation import DistillationLoss, pack_targets

    teacher = np.log(np.array([[0.6, 0.3, 0.1], [0.2, 0.2, 0.6]], "float32"))
    student = np.array([[0.5, 0.25, 0.25], [0.1, 0.3, 0.6]], "float32")
    y = pack_targets(np.array([0, 2]), teacher)
    t = 3.0
    ce = -np.log(student[[0, 1], [0, 2]])
    p = np.exp(teacher / t) / np.exp(teacher / t).sum(-1, keepdims=True)
    q = np.exp(np.log(student) / t) / np.exp(np.log(student) / t).sum(-1, keepdims=True)
    kl = (p * np.log(p / q)).sum(-1)
    got = float(keras.ops.convert_to_numpy(DistillationLoss(temperature=t, alpha=0.3)(y, student)))
    assert got == pytest.approx(float(np.mean(0.3 * ce + 0.7 * t * t * kl)), rel=1e-4)
    with pytest.raises(ValueError, match="`alpha` must be in"):
        DistillationLoss(alpha=1.5)


@pytest.mark.one_backend  # the run, the student and the report; the loss is checked on every backend
def test_a_tiny_distill_run_writes_a_student_that_names_its_teacher(tmp_path, capsys):
    data = tmp_path / "data"
    _colour_folders(str(data), {"red": 8, "green": 8, "blue": 8})
    run = str(tmp_path / "run")
    tuning.run(str(data), run, SearchConfig(**{**FAST, "max_trials": 1, "epochs": 2}), verbose=0)
    assert main(["distill", "--teacher", run, "--student", "mobilenetv3smal"]) == 2
    assert "Did you mean 'mobilenetv3small'" in capsys.readouterr().err
    assert main(["distill", "--teacher", str(tmp_path / "nothing"), "--student", "mobilenetv3small"]) == 2
    assert "holds no run.json" in capsys.readouterr().err
    assert main(["distill", "--teacher", run, "--alpha", "2"]) == 2
    assert not os.path.exists(os.path.join(run, "distill-mobilenetv3small"))  # nothing written
    # MobileNet (v1) as the student: TensorFlow traces its train step in 9 s, MobileNetV3-Small's in 18 s.
    assert main(["distill", "--teacher", run, "--student", "mobilenet", "--epochs", "2"]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith("student mobilenet: test accuracy ") and "(teacher " in line
    out = os.path.join(run, "distill-mobilenet")
    record = json.loads(pathlib.Path(out, "distill.json").read_text())
    assert record["teacher"] == os.path.abspath(os.path.join(run, "best.keras"))
    assert record["student_macs"] < record["teacher_macs"] and len(record["val_accuracy"]) == 2
    student = tuning.job.load_model(os.path.join(out, "student.keras"))
    assert student.output_shape == (None, 3)
    assert json.loads(pathlib.Path(out, "classes.json").read_text()) == ["blue", "green", "red"]
    assert main(["distill", "--teacher", run, "--student", "mobilenet"]) == 2  # never overwrites
    assert "already holds a student.keras" in capsys.readouterr().err
