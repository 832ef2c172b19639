"""zoo.ensemble: mean and majority vote of trained classifiers, saved like any model."""

import keras
import numpy as np
import pytest

import zoo


def _member(seed, classes=4, name="member"):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Flatten()(inputs)
    outputs = keras.layers.Dense(classes, activation="softmax")(x)
    return keras.Model(inputs, outputs, name=name)


@pytest.fixture(scope="module")
def members():
    return [_member(s) for s in range(3)]  # same name on purpose: the usual case


@pytest.fixture(scope="module")
def x():
    return np.random.default_rng(0).uniform(0, 1, (16, 8, 8, 3)).astype("float32")


def _probs(models, x):
    return np.stack([keras.ops.convert_to_numpy(m(x)) for m in models])


def test_mean_is_the_average_of_the_members(members, x):
    model = zoo.ensemble(members, mode="mean")
    np.testing.assert_allclose(keras.ops.convert_to_numpy(model(x)), _probs(members, x).mean(0), atol=1e-6)
    weighted = zoo.ensemble(members, mode="mean", weights=[2, 1, 1])
    expected = np.tensordot([0.5, 0.25, 0.25], _probs(members, x), axes=1)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(weighted(x)), expected, atol=1e-6)


def test_vote_follows_the_majority_and_breaks_ties_by_confidence(members, x):
    model = zoo.ensemble(members, mode="vote")
    out = keras.ops.convert_to_numpy(model(x))
    np.testing.assert_allclose(out.sum(-1), 1.0, atol=1e-5)
    probs = _probs(members, x)
    top = probs.argmax(-1)  # (members, batch)
    for i in range(len(x)):
        counts = np.bincount(top[:, i], minlength=4)
        best = np.flatnonzero(counts == counts.max())
        expected = best[np.argmax(probs[:, i, best].mean(0))]
        assert out[i].argmax() == expected


def test_saves_and_loads_like_any_model(members, x, tmp_path):
    for mode in ("mean", "vote"):
        model = zoo.ensemble(members, mode=mode)
        path = str(tmp_path / f"{mode}.keras")
        model.save(path)
        back = keras.saving.load_model(path)
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(back(x)), keras.ops.convert_to_numpy(model(x)), atol=1e-6
        )


@pytest.mark.one_backend  # argument checks; the GoogLeNet build alone took 18 s on JAX
def test_bad_members_are_refused_clearly(members):
    with pytest.raises(ValueError, match="at least two"):
        zoo.ensemble(members[:1])
    with pytest.raises(ValueError, match="mode"):
        zoo.ensemble(members, mode="median")
    with pytest.raises(ValueError, match="share input and output shapes"):
        zoo.ensemble([members[0], _member(5, classes=3)])
    with pytest.raises(ValueError, match="one weight per member"):
        zoo.ensemble(members, weights=[1, 2])
    aux = zoo.build("googlenet", aux_logits=True, num_classes=4, input_shape=(96, 96, 3))
    with pytest.raises(ValueError, match="strip_auxiliary"):
        zoo.ensemble([aux, aux])
