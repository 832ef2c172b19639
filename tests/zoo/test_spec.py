"""The static model spec: stages, tasks and weight sources as data, read without building."""

import ast
import dataclasses
import hashlib
import os
import pathlib

import keras
import numpy as np
import pytest

import surgery
import zoo
from zoo import registry

ONE_BACKEND = pytest.mark.one_backend  # structure checks: the same on every backend


@pytest.fixture
def count_builds(monkeypatch):
    """Wrap every registered body and builder; the list records each call."""
    calls = []

    def counted(fn, name):
        def wrapper(*args, **kwargs):
            calls.append(name)
            return fn(*args, **kwargs)

        return wrapper

    for name, spec in list(registry._REGISTRY.items()):
        changes = {}
        if spec.body is not None:
            changes["body"] = counted(spec.body, name)
        if spec.builder is not None:
            changes["builder"] = counted(spec.builder, name)
        monkeypatch.setitem(registry._REGISTRY, name, dataclasses.replace(spec, **changes))
    return calls


@ONE_BACKEND
def test_stages_are_data_and_reading_them_builds_nothing(count_builds):
    assert zoo.get_spec("resnet50").stages[3] == zoo.Stage("conv4", "conv4_block6_out", 16, 1024)
    assert [s.channels for s in zoo.get_spec("googlenet").stages] == [64, 192, 480, 832, 1024]
    assert [s.layer for s in zoo.get_spec("googlenet_paper").stages][1] == "conv3_lrn"
    assert zoo.get_spec("resnet18").stages_for(activation="mish")[0].layer == "conv1_mish"
    builtin = [
        n
        for n in zoo.list_models(task="classification")
        if zoo.get_spec(n).family in ("resnet", "resnet_v2", "vgg", "googlenet")
    ]
    assert len(builtin) == 21
    for name in builtin:
        stages = zoo.get_spec(name).stages
        assert [s.reduction for s in stages] == [2, 4, 8, 16, 32], name
    assert count_builds == []


@ONE_BACKEND
def test_stages_of_foreign_model_builds_no_registered_model(count_builds):
    foreign = keras.applications.MobileNetV2(weights=None, include_top=False, input_shape=(64, 64, 3))
    inferred = zoo.stages_of(foreign)
    assert [s.reduction for s in inferred] == [2, 4, 8, 16, 32]
    assert inferred[-1].layer == foreign.layers[-1].name and inferred[-1].channels == 1280
    assert count_builds == []


@ONE_BACKEND
def test_info_builds_once(count_builds):
    zoo._cards._card.cache_clear()
    card = zoo.info("resnet18")
    assert count_builds == ["resnet18"]
    assert card.params == 11_699_112 and card.gmacs == pytest.approx(1.81, abs=0.01)
    assert card.stages == zoo.get_spec("resnet18").stages
    zoo.info("resnet18")
    assert count_builds == ["resnet18"]  # cached


@ONE_BACKEND
@pytest.mark.parametrize(
    "name", ["resnet18", "resnet50", "resnet50v2", "vgg11", "vgg11_bn", "googlenet", "googlenet_paper"]
)
def test_declared_stages_match_the_built_graph(name):
    """Each stage function covers its family; the parameter tests build the other depths."""
    model = zoo.build(name, include_top=False, input_shape=(64, 64, 3))
    for s in zoo.get_spec(name).stages:
        out = model.get_layer(s.layer).output
        assert (64 // out.shape[1], out.shape[-1]) == (s.reduction, s.channels), (name, s)


@ONE_BACKEND
def test_an_unbuilt_sequential_model_has_no_stages_and_no_error():
    unbuilt = keras.Sequential([keras.layers.Conv2D(4, 3, strides=2)])
    assert zoo.stages_of(unbuilt) == []


def test_mish_stages_are_found_by_stamp():
    m = zoo.build("resnet18", include_top=False, input_shape=(32, 32, 3), activation="mish")
    assert [s.layer for s in zoo.stages_of(m)][0] == "conv1_mish"
    assert [s.name for s in zoo.stages_of(m)] == ["stem", "conv2", "conv3", "conv4", "conv5"]


@ONE_BACKEND
def test_stamp_survives_rename_save_load_and_surgery(tmp_path, count_builds):
    declared = [s.name for s in zoo.get_spec("resnet101").stages]
    model = zoo.build("resnet101", include_top=False, input_shape=(32, 32, 3), name="mine")
    count_builds.clear()
    assert [s.name for s in zoo.stages_of(model)] == declared
    # resnet50's stage layers all exist in resnet101 too: the stamp, not a layer match, decides.
    assert zoo.stages_of(model)[3].layer == "conv4_block23_out"
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert [s.layer for s in zoo.stages_of(loaded)] == [s.layer for s in zoo.get_spec("resnet101").stages]
    grafted = surgery.graft(loaded, [keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(3)])
    assert [s.name for s in zoo.stages_of(grafted)] == declared
    assert count_builds == []


@ONE_BACKEND
def test_tasks_take_only_their_arguments():
    spec = zoo.get_spec("fcn8s")
    assert spec.is_task and spec.task == "segmentation" and spec.default_backbone == "vgg16"
    assert zoo.list_models(task="segmentation") == ["fcn8s", "fcn16s", "fcn32s"]
    for kwargs, word in [
        (dict(pooling="avg"), "pooling"),
        (dict(features_only=True), "features_only"),
        (dict(include_top=False), "include_top"),
        (dict(aux_logits=True), "aux_logits"),
    ]:
        with pytest.raises(ValueError, match=rf"segmentation model and does not take `{word}`.*It takes:"):
            zoo.build("fcn8s", **kwargs)
    with pytest.raises(TypeError, match="unexpected keyword argument 'poolin'"):
        zoo.build("fcn8s", poolin="avg")
    with pytest.raises(ValueError, match="does not take `backbone`"):
        zoo.build("resnet18", backbone="vgg16")
    with pytest.raises(ValueError, match="does not take `aux_logits`"):
        zoo.build("resnet18", aux_logits=True)


def test_keras_applications_style_arguments():
    model = zoo.build("resnet50", classes=10, name="mine", input_tensor=keras.Input((64, 64, 3)))
    assert model.name == "mine" and model.output_shape == (None, 10)
    with pytest.raises(ValueError, match="another name for `num_classes`"):
        zoo.build("resnet18", classes=10, num_classes=5)
    with pytest.raises(TypeError, match="symbolic tensor"):
        zoo.build("resnet18", input_tensor=np.zeros((1, 32, 32, 3)))


@ONE_BACKEND
def test_weight_sources_describe_their_preprocessing():
    assert zoo.get_spec("resnet50").weights["imagenet"].preprocessing == "caffe"
    assert zoo.get_spec("resnet50v2").weights["imagenet"].preprocessing == "tf"
    src = zoo.get_spec("googlenet").weights["imagenet"]
    assert (src.origin, src.preprocessing, src.top1, src.input_size) == ("torchvision", "tf", 69.778, 224)
    assert zoo.get_spec("vgg16").weights["imagenet"].mean == (103.939, 116.779, 123.68)
    text = str(zoo.info("resnet50"))
    assert "'caffe' preprocessing, 224px bilinear, top-1 74.9%" in text


def test_include_preprocessing_follows_the_chosen_source(tmp_path, monkeypatch, rng):
    """A source trained with torch normalisation on a model whose default is caffe."""
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    stages = (zoo.Stage("s1", "s1_conv", 2, 4),)
    ref = _tiny(stages)
    os.makedirs(tmp_path / "models")
    path = tmp_path / "models" / "tiny_torch.weights.h5"
    zoo.build("tinyprep_ref", num_classes=2, input_shape=(16, 16, 3)).save_weights(path)
    md5 = hashlib.md5(path.read_bytes()).hexdigest()
    source = zoo.weights.WeightSource(
        "https://example.invalid/tiny_torch.weights.h5",
        path.name,
        md5,
        include_top=True,
        origin="test",
        preprocessing="torch",
        num_classes=2,
    )
    spec = dataclasses.replace(zoo.get_spec(ref), name="tinyprep", weights={"imagenet": source})
    monkeypatch.setitem(registry._REGISTRY, "tinyprep", spec)
    model = zoo.build(
        "tinyprep", num_classes=2, input_shape=(16, 16, 3), weights="imagenet", include_preprocessing=True
    )
    assert model.get_layer("preprocessing").mode == "torch"
    assert (
        zoo.build("tinyprep", num_classes=2, input_shape=(16, 16, 3), include_preprocessing=True)
        .get_layer("preprocessing")
        .mode
        == "caffe"
    )
    images = rng.uniform(0, 255, (1, 4, 4, 3)).astype("float32")
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(zoo.preprocess(images, "tinyprep")),
        keras.ops.convert_to_numpy(zoo.preprocess(images, "torch")),
    )


def _tiny(stages):
    @zoo.register(
        "tinyprep_ref", family="tiny", min_size=8, stages=stages, preprocessing="caffe", overwrite=True
    )
    def body(x):
        return zoo.Body(keras.layers.Conv2D(4, 3, strides=2, padding="same", name="s1_conv")(x))

    return "tinyprep_ref"


@ONE_BACKEND
def test_one_classifier_head_everywhere():
    names = [
        l.name
        for l in zoo.layers.classifier_head(
            5, pooling="flatten", hidden_units=(8,), dropout=0.7, prefix="aux1_"
        )
    ]
    assert names == ["aux1_flatten", "aux1_fc1", "aux1_dropout", "aux1_predictions"]
    with pytest.raises(ValueError, match="`pooling` must be one of"):
        zoo.layers.classifier_head(5, pooling="mean")
    root = pathlib.Path(zoo.__file__).parent
    for path in root.glob("*.py"):
        source = path.read_text()
        code = [line for line in source.splitlines() if ">>>" not in line and "..." not in line]
        dense = sum("layers.Dense(" in line for line in code)
        assert dense <= (2 if path.name == "layers.py" else 0), path.name  # hidden + output
        imports = [n for n in ast.walk(ast.parse(source)) if isinstance(n, (ast.Import, ast.ImportFrom))]
        for node in imports:
            modules = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            assert not any(m.split(".")[0] in ("surgery", "tuning") for m in modules), path.name


@ONE_BACKEND
def test_docs_weights_table_is_generated_from_the_registry():
    readme = (pathlib.Path(__file__).parents[2] / "docs" / "models.md").read_text()
    start, end = "<!-- weights-table -->\n", "\n<!-- /weights-table -->"
    shown = readme[readme.index(start) + len(start) : readme.index(end)]
    assert shown == zoo._cards.weights_table(), (
        "docs/models.md's weights table is stale: paste zoo._cards.weights_table() between its markers"
    )
    names = {line.split(" | ")[0].strip("| ") for line in shown.splitlines()[2:]}
    assert {"resnet18", "resnet34", "vgg11", "vgg13_bn", "googlenet"} <= names
