"""surgery.hub_layer / export_feature_extractor: SavedModels as Keras 3 layers, offline."""

import os

import keras
import numpy as np
import pytest

import surgery
import zoo

tf_only = pytest.mark.tf_only


def np_(x):
    return keras.ops.convert_to_numpy(x)


def _close(actual, expected, tol=1e-5):
    """Equal up to float32 reordering: max |diff| < tol x the output's scale."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape
    scale = max(1.0, float(np.max(np.abs(expected))))
    assert float(np.max(np.abs(actual - expected))) < tol * scale


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    if keras.backend.backend() != "tensorflow":
        pytest.skip("TensorFlow-only")
    keras.utils.set_random_seed(1)
    base = zoo.build("resnet18", include_top=False, pooling="avg", input_shape=(None, None, 3))
    rng = np.random.default_rng(0)
    for w in base.weights:  # non-trivial BN statistics, so training/inference differ
        if w.path.endswith("moving_variance"):
            w.assign(rng.uniform(0.5, 1.5, w.shape).astype("float32"))
        elif w.path.endswith("moving_mean"):
            w.assign(rng.normal(0, 0.1, w.shape).astype("float32"))
    path = surgery.export_feature_extractor(base, str(tmp_path_factory.mktemp("hub") / "resnet18"))
    return base, path


@tf_only
def test_export_has_the_reusable_savedmodel_api(exported):
    import tensorflow as tf

    base, path = exported
    obj = tf.saved_model.load(path)
    assert len(obj.variables) == len(base.weights)
    assert len(obj.trainable_variables) == len(base.trainable_weights)
    assert "serving_default" in obj.signatures
    x = np.random.default_rng(1).uniform(0, 255, (2, 40, 40, 3)).astype("float32")
    _close(obj(x, training=False).numpy(), np_(base(x)))
    with pytest.raises(FileExistsError, match="overwrite=True"):
        surgery.export_feature_extractor(base, path)


@tf_only
@pytest.mark.parametrize("size", [32, 48])
def test_round_trip_in_sequential_and_functional(exported, size):
    base, path = exported
    x = np.random.default_rng(size).uniform(0, 255, (3, size, size, 3)).astype("float32")
    expected = np_(base(x))
    # The seeds' idiom, verbatim but for the layer.
    seq = keras.Sequential(
        [surgery.hub_layer(path, input_shape=(size, size, 3)), keras.layers.Dense(6, activation="softmax")]
    )
    assert seq.output_shape == (None, 6)
    _close(np_(seq.layers[0](x)), expected)
    inputs = keras.Input((size, size, 3))
    features = surgery.hub_layer(path, name="features")(inputs)
    assert tuple(features.shape) == (None, 512)  # from the signature, not by running it
    functional = keras.Model(inputs, features)
    _close(np_(functional(x)), expected)


@tf_only
def test_training_passes_through_only_when_trainable(exported):
    base, path = exported
    x = np.random.default_rng(2).uniform(0, 255, (4, 32, 32, 3)).astype("float32")
    frozen = surgery.hub_layer(path)
    _close(np_(frozen(x, training=True)), np_(base(x, training=False)))
    tuned = surgery.hub_layer(path, trainable=True)
    twin = keras.models.clone_model(base)  # training=True updates BN statistics: not the fixture's
    twin.set_weights(base.get_weights())
    _close(np_(tuned(x, training=True)), np_(twin(x, training=True)), tol=1e-4)  # batch statistics
    assert not np.allclose(np_(tuned(x, training=True)), np_(tuned(x, training=False)), atol=1e-3)


def _classifier(path, trainable):
    model = keras.Sequential(
        [
            surgery.hub_layer(path, trainable=trainable, input_shape=(32, 32, 3)),
            keras.layers.Dense(6, activation="softmax"),
        ]
    )
    model.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy")
    return model


@tf_only
def test_fine_tuning_changes_variables_and_lowers_the_loss(exported):
    _, path = exported
    x, y, _ = zoo.datasets.shapes(4, size=32)
    tuned = _classifier(path, trainable=True)
    hub = tuned.layers[0]
    assert len(hub.trainable_weights) == len(exported[0].trainable_weights)
    before = [np_(w).copy() for w in hub.weights]
    history = tuned.fit(x, y, epochs=6, batch_size=24, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]
    after = [np_(w) for w in hub.weights]
    assert sum(not np.array_equal(a, b) for a, b in zip(before, after)) > len(before) // 2
    # ...and the graph reads those same variables.
    direct = np_(hub.saved_model(x[:2].astype("float32"), training=False))
    _close(np_(hub(x[:2])), direct)

    frozen = _classifier(path, trainable=False)
    assert not frozen.layers[0].trainable_weights
    before = [np_(w).copy() for w in frozen.layers[0].weights]
    frozen.fit(x, y, epochs=2, batch_size=24, verbose=0)
    assert all(np.array_equal(a, np_(b)) for a, b in zip(before, frozen.layers[0].weights))


@tf_only
def test_regularization_losses_join_the_model(tmp_path):
    inputs = keras.Input((8,))
    outputs = keras.layers.Dense(4, kernel_regularizer=keras.regularizers.L2(0.1), name="d")(inputs)
    small = keras.Model(inputs, outputs)
    path = surgery.export_feature_extractor(small, str(tmp_path / "reg"))
    layer = surgery.hub_layer(path, trainable=True)
    x = np.ones((2, 8), "float32")
    layer(x, training=True)
    expected = 0.1 * np.sum(np_(small.get_layer("d").kernel) ** 2)
    assert len(layer.losses) == 1
    np.testing.assert_allclose(float(np_(layer.losses[0])), expected, rtol=1e-5)
    layer(x, training=False)
    assert not layer.losses


@tf_only
def test_keras_file_round_trip(exported, tmp_path):
    _, path = exported
    x = np.random.default_rng(3).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    model = _classifier(path, trainable=True)
    model.fit(*zoo.datasets.shapes(2, size=32)[:2], epochs=1, verbose=0)  # weights != the export's
    target = str(tmp_path / "clf.keras")
    model.save(target)
    with pytest.raises(ValueError, match="safe_mode=False"):
        keras.saving.load_model(target)
    back = keras.saving.load_model(target, safe_mode=False)
    _close(np_(back(x)), np_(model(x)))


@tf_only
def test_bad_handles_say_what_they_are(tmp_path):
    tf1 = tmp_path / "tf1"
    tf1.mkdir()
    (tf1 / "tfhub_module.pb").write_bytes(b"")
    (tf1 / "saved_model.pb").write_bytes(b"")
    with pytest.raises(ValueError, match="TF1 Hub module"):
        surgery.hub_layer(str(tf1))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="not a SavedModel"):
        surgery.hub_layer(str(empty))
    with pytest.raises(FileNotFoundError, match="No SavedModel"):
        surgery.hub_layer(str(tmp_path / "missing"))


def test_a_pinned_sha256_refuses_a_changed_savedmodel(exported, tmp_path):
    import shutil

    _, path = exported
    digest = surgery.hub.saved_model_sha256(path)
    layer = surgery.hub_layer(path, sha256=digest)  # the pin matches
    assert layer.get_config()["sha256"] == digest
    copy = tmp_path / "copy"
    shutil.copytree(path, copy)
    assert surgery.hub.saved_model_sha256(copy) == digest  # a copy is the same model
    index = next((copy / "variables").glob("*.index"))
    index.write_bytes(index.read_bytes() + b"x")  # a corrupt download
    with pytest.raises(ValueError, match="has SHA-256 .* not the pinned"):
        surgery.hub_layer(str(copy), sha256=digest)


@pytest.mark.skipif(keras.backend.backend() == "tensorflow", reason="the non-TensorFlow error")
def test_other_backends_get_a_clear_error(tmp_path):
    with pytest.raises(RuntimeError, match="KERAS_BACKEND=tensorflow"):
        surgery.hub_layer(str(tmp_path))
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    with pytest.raises(RuntimeError, match="KERAS_BACKEND=tensorflow"):
        surgery.export_feature_extractor(model, str(tmp_path / "x"))


@tf_only
def test_a_hub_url_downloads_once_and_offline_says_so(exported, tmp_path, monkeypatch):
    """Hub's compressed format from a local HTTP server; a dead URL names the network failure."""
    import functools
    import http.server
    import tarfile
    import threading

    base, path = exported
    served = tmp_path / "served"
    served.mkdir()
    with tarfile.open(served / "model.tar.gz", "w:gz") as tar:
        for item in os.listdir(path):
            tar.add(os.path.join(path, item), arcname=item)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("TFHUB_CACHE_DIR", str(tmp_path / "cache"))
    try:
        url = f"http://127.0.0.1:{server.server_port}/model.tar.gz"
        layer = surgery.hub_layer(url, sha256=surgery.hub.saved_model_sha256(path))
        x = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
        _close(np_(layer(x)), np_(base(x)))
        cached = os.listdir(tmp_path / "cache")
        assert len(cached) == 1  # unpacked into one folder per handle, no partial downloads left
        server.shutdown()
        surgery.hub_layer(url)  # the second time comes from the cache, server or not
    finally:
        server.server_close()
    with pytest.raises(
        ConnectionError, match=r"Could not download the hub model .* local SavedModel directory"
    ):
        surgery.hub_layer(f"http://127.0.0.1:{server.server_port}/gone")
