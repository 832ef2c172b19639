"""TransferHyperModel: prefixed space, two phases, BN kept frozen, cached features."""

import warnings

import keras
import keras_tuner as kt
import numpy as np
import pytest

import tuning
import zoo


@pytest.fixture(scope="module")
def data():
    x, y, _ = zoo.datasets.shapes(10, size=32, split="train")
    xv, yv, _ = zoo.datasets.shapes(4, size=32, split="val")
    return x, y, xv, yv


def _hp(**values):
    hp = kt.HyperParameters()
    for k, v in values.items():
        hp.Fixed(k, v)
    return hp


def test_space_is_prefixed_and_stage_aware():
    hm = tuning.TransferHyperModel("resnet18", num_classes=3, input_shape=(32, 32, 3))
    hp = kt.HyperParameters()
    hm.build(hp)
    assert all(n.startswith(("head/", "finetune/")) for n in hp.values)
    stages = hp._hps["finetune/stages"][0]
    assert list(stages.values) == list(range(len(zoo.stages_of(hm._template)) + 1))
    # Yes/no choices stay booleans (KerasTuner's Choice would make them 0/1,
    # shown as such in every trial line, leaderboard and figure).
    assert isinstance(hp.values["head/batch_norm"], bool)
    assert isinstance(hp.values["finetune/augment"], bool)


def test_two_phases_train_only_the_sampled_depth(data):
    x, y, xv, yv = data
    hm = tuning.TransferHyperModel(
        "resnet18", num_classes=6, input_shape=(32, 32, 3), unfreeze_space={"augment": [False]}
    )
    hp = _hp(
        **{"finetune/stages": 1, "finetune/train_bn": False, "head/dense_layers": 0, "head/optimizer": "adam"}
    )
    model = hm.build(hp)
    watch = {
        n: keras.ops.convert_to_numpy(model.get_layer(n).weights[0]).copy()
        for n in ("conv4_block2_2_conv", "conv5_block2_2_conv", "conv5_block2_2_bn")
    }
    bn_mean = keras.ops.convert_to_numpy(model.get_layer("conv5_block2_2_bn").moving_mean).copy()
    history = hm.fit(hp, model, x, y, epochs=2, validation_data=(xv, yv), verbose=0)
    assert len(history.history["loss"]) == 2  # one epoch per phase
    after = {n: keras.ops.convert_to_numpy(model.get_layer(n).weights[0]) for n in watch}
    assert np.array_equal(after["conv4_block2_2_conv"], watch["conv4_block2_2_conv"])  # frozen stage
    assert not np.array_equal(after["conv5_block2_2_conv"], watch["conv5_block2_2_conv"])  # unfrozen
    assert np.array_equal(after["conv5_block2_2_bn"], watch["conv5_block2_2_bn"])  # BN kept frozen
    assert np.array_equal(
        keras.ops.convert_to_numpy(model.get_layer("conv5_block2_2_bn").moving_mean), bn_mean
    )


def test_per_stage_learning_rates_decay_towards_the_input(data, tmp_path):
    x, y, xv, yv = data
    hm = tuning.TransferHyperModel(
        "resnet18",
        num_classes=6,
        input_shape=(32, 32, 3),
        unfreeze_space={"augment": [False], "stage_lr_decay": [1.0, 0.5]},
    )
    hp = _hp(
        **{
            "finetune/stages": 2,
            "finetune/stage_lr_decay": 0.5,
            "finetune/lr_factor": 0.1,
            "head/learning_rate": 1e-2,
            "head/dense_layers": 0,
            "head/optimizer": "adam",
        }
    )
    model = hm.build(hp)
    history = hm.fit(
        hp,
        model,
        x,
        y,
        epochs=2,
        validation_data=(xv, yv),
        verbose=0,
        callbacks=[tuning.LearningRateLogger()],
    )
    opt = model.optimizer
    assert isinstance(opt, keras.optimizers.MultiOptimizer)
    # The optimizer that updates each variable, and its learning rate.
    rate = {
        v.path: float(keras.ops.convert_to_numpy(o.learning_rate))
        for o in opt.optimizers
        for v in o._trainable_variables
    }
    np.testing.assert_allclose(rate["head/predictions/kernel"], 1e-3, rtol=1e-6)
    np.testing.assert_allclose(rate["conv5_block2_2_conv/kernel"], 5e-4, rtol=1e-6)
    np.testing.assert_allclose(rate["conv4_block1_1_conv/kernel"], 2.5e-4, rtol=1e-6)
    assert not any(p.startswith(("conv3", "conv2", "conv1")) for p in rate)  # frozen: no optimizer
    assert history.history["lr"][-1] == pytest.approx(1e-3)
    model.save(tmp_path / "m.keras")  # the MultiOptimizer serializes with the model
    back = keras.saving.load_model(tmp_path / "m.keras")
    np.testing.assert_allclose(back.predict(xv, verbose=0), model.predict(xv, verbose=0), atol=1e-5)


def test_cached_features_match_the_naive_path(data, tmp_path):
    x, y, xv, yv = data
    hp_values = {
        "finetune/stages": 0,
        "finetune/augment": False,
        "head/pooling": "avg",
        "head/dense_layers": 1,
        "head/units": 64,
        "head/dropout": 0.0,
        "head/batch_norm": False,
        "head/optimizer": "adam",
        "head/learning_rate": 3e-3,
    }
    scores, features = {}, {}
    # In memory; over the memory limit (0 bytes): float16 files, memory-mapped; no cache.
    for mode, cached, limit in (("memory", True, 2**30), ("file", True, 0), ("naive", False, 2**30)):
        keras.utils.set_random_seed(1)
        hm = tuning.TransferHyperModel(
            "resnet18",
            num_classes=6,
            input_shape=(32, 32, 3),
            cache_features=cached,
            feature_cache_bytes=limit,
            feature_cache_dir=tmp_path / "features",
            seed=3,
        )
        hp = _hp(**hp_values)
        keras.utils.set_random_seed(2)
        model = hm.build(hp)
        h = hm.fit(
            hp, model, x, y, epochs=3, validation_data=(xv, yv), shuffle=False, batch_size=20, verbose=0
        )
        scores[mode] = h.history["val_accuracy"][-1]
        if cached:
            features[mode] = [np.asarray(f, "float32") for f, _ in hm._feature_cache.values()]
            assert len(hm._feature_cache) == 2  # train and val, computed once
            on_disk = [isinstance(f, np.memmap) for f, _ in hm._feature_cache.values()]
            assert on_disk == [mode == "file"] * 2
            # The full model carries the head trained on features.
            full = model.evaluate(xv, yv, verbose=0, return_dict=True)["accuracy"]
            assert abs(full - scores[mode]) < 1e-6
    files = sorted(p.name for p in (tmp_path / "features").iterdir())
    assert len(files) == 2 and all(f.startswith("resnet18") and f.endswith(".f16") for f in files)
    # float16 on disk: the same features to float16's precision, read in the same order
    # (shuffle=False), and the head learns what it learns from float32 features in memory.
    for on_disk, in_memory in zip(features["file"], features["memory"]):
        np.testing.assert_allclose(on_disk, in_memory, rtol=2e-3, atol=1e-3)
    assert abs(scores["file"] - scores["memory"]) <= 1 / len(yv) + 1e-6, scores
    assert abs(scores["memory"] - scores["naive"]) <= 0.01, scores


@pytest.mark.tf_only  # tf.data, as keras.utils.image_dataset_from_directory yields
def test_cached_features_from_a_dataset(data):
    import tensorflow as tf

    x, y, xv, yv = data
    train = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
    val = tf.data.Dataset.from_tensor_slices((xv, yv)).batch(16)
    hm = tuning.TransferHyperModel("resnet18", num_classes=6, input_shape=(32, 32, 3))
    hp = _hp(**{"finetune/stages": 0, "finetune/augment": False})
    model = hm.build(hp)
    h = hm.fit(hp, model, train, epochs=1, validation_data=val, verbose=0)
    assert len(hm._feature_cache) == 2 and "val_accuracy" in h.history
    fx, fy = hm._feature_cache[next(iter(hm._feature_cache))]
    assert len(fx) == len(fy) == len(x)


def test_augmentation_sits_first_and_from_scratch_trains_everything(data):
    x, y, xv, yv = data
    # A two-stage backbone: what is checked does not depend on its size (a
    # resnet18 took 52 s on JAX, most of it compiling the augmented step).
    inputs = keras.Input((32, 32, 3))
    h = keras.layers.Conv2D(8, 3, strides=2, padding="same", name="conv1_conv")(inputs)
    h = keras.layers.ReLU()(keras.layers.BatchNormalization(name="conv1_bn")(h))
    h = keras.layers.Conv2D(16, 3, strides=2, padding="same", activation="relu", name="conv2")(h)
    backbone = keras.Model(inputs, h, name="tiny")
    hm = tuning.TransferHyperModel(backbone, num_classes=6, input_shape=(32, 32, 3), phase1_fraction=0.0)
    hp = _hp(
        **{
            "finetune/stages": len(hm.stages),
            "finetune/train_bn": True,
            "finetune/augment": True,
            "head/dense_layers": 0,
            "head/optimizer": "adam",
        }
    )
    model = hm.build(hp)
    assert model.layers[1].name == "augment"
    a, b = (keras.ops.convert_to_numpy(model.get_layer("augment")(x[:4], training=True)) for _ in range(2))
    assert not np.array_equal(a, b)  # random in training
    first = keras.ops.convert_to_numpy(model.get_layer("conv1_conv").kernel).copy()
    mean = keras.ops.convert_to_numpy(model.get_layer("conv1_bn").moving_mean).copy()
    history = hm.fit(hp, model, x, y, epochs=1, validation_data=(xv, yv), verbose=0)
    assert len(history.history["loss"]) == 1  # no head-only phase with phase1_fraction=0
    assert not np.array_equal(keras.ops.convert_to_numpy(model.get_layer("conv1_conv").kernel), first)
    assert not np.array_equal(keras.ops.convert_to_numpy(model.get_layer("conv1_bn").moving_mean), mean)


@pytest.mark.parametrize(
    "loss",
    [
        pytest.param("bce", marks=pytest.mark.one_backend),  # Keras' own losses: one backend
        pytest.param("focal", marks=pytest.mark.one_backend),
        "asymmetric",  # the toolkit's own loss code: every backend
    ],
)
def test_multilabel_head_trains_with_each_loss_and_reports_map(loss):
    # The sigmoid head, each loss and Keras' multi-label PR-AUC (`map`).
    inputs = keras.Input((16, 16, 3))
    h = keras.layers.Conv2D(8, 3, strides=2, padding="same", activation="relu", name="conv1")(inputs)
    h = keras.layers.Conv2D(8, 3, strides=2, padding="same", activation="relu", name="conv2")(h)
    backbone = keras.Model(inputs, h, name="tiny")
    hm = tuning.TransferHyperModel(
        backbone, num_classes=4, task="multilabel", input_shape=(16, 16, 3), phase1_fraction=0.0
    )
    hp = _hp(**{"head/loss": loss, "head/dense_layers": 0, "head/optimizer": "adam", "finetune/stages": 2})
    model = hm.build(hp)
    assert model.get_layer("head").layers[-1].activation.__name__ == "sigmoid"
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (16, 16, 16, 3)).astype("float32")
    y = (rng.random((16, 4)) < 0.4).astype("float32")
    history = hm.fit(hp, model, x, y, epochs=1, batch_size=8, validation_data=(x, y), verbose=0)
    assert {"map", "val_map", "micro_f1"} <= set(history.history)
    assert 0 <= history.history["val_map"][0] <= 1
    with pytest.raises(ValueError, match="class_weight"):
        tuning.TransferHyperModel(
            backbone, num_classes=4, task="multilabel", input_shape=(16, 16, 3), class_weight="balanced"
        )


def test_augmented_models_compile_with_xla_on_jax(tmp_path):
    # Keras marks rotation, zoom and translation not jittable (TensorFlow has
    # no XLA kernel for them), which made a whole augmented model train op by
    # op on JAX. allow_jit lifts that on JAX, for built and loaded models.
    from tuning.hypermodel import augmentation_layers
    from tuning.job import load_model

    on_jax = keras.backend.backend() == "jax"
    model = keras.Sequential(
        [
            keras.Input((8, 8, 3)),
            keras.Sequential(augmentation_layers(), name="augment"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(2),
        ]
    )
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    if on_jax:  # on TensorFlow's CPU and on torch, jit_compile="auto" means no XLA anyway
        assert model.jit_compile is True
    x = np.random.default_rng(0).uniform(0, 255, (4, 8, 8, 3)).astype("float32")
    model.fit(x, np.array([0, 1, 0, 1]), epochs=1, verbose=0)
    path = str(tmp_path / "m.keras")
    model.save(path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loaded = load_model(path)
    assert not [str(w.message) for w in caught if "jit_compile" in str(w.message)]
    rotation = loaded.get_layer("augment").get_layer("augment_rotation")
    assert rotation.supports_jit is on_jax
    assert loaded.compiled and (loaded.jit_compile is True or not on_jax)
    np.testing.assert_allclose(loaded.predict_on_batch(x), model.predict_on_batch(x), rtol=1e-5, atol=1e-5)
