"""RAdam against the published update rule; schedule and logger."""

import keras
import numpy as np

import tuning


def _radam_reference(grads, lr=0.1, b1=0.9, b2=0.999, eps=1e-7, threshold=5.0, theta0=1.0):
    """Liu et al. 2019, Algorithm 2, written out in numpy."""
    theta, m, v = theta0, 0.0, 0.0
    rho_inf = 2 / (1 - b2) - 1
    out = []
    for t, g in enumerate(grads, start=1):
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        m_hat = m / (1 - b1**t)
        rho_t = rho_inf - 2 * t * b2**t / (1 - b2**t)
        if rho_t > threshold:
            l_t = np.sqrt(1 - b2**t) / (np.sqrt(v) + eps)
            r_t = np.sqrt((rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t))
            theta = theta - lr * r_t * m_hat * l_t
        else:
            theta = theta - lr * m_hat
        out.append(theta)
    return np.array(out)


def test_radam_matches_published_rule_in_both_regimes():
    grads = np.random.default_rng(0).standard_normal(12).astype("float64") + 0.5
    var = keras.Variable(np.array([1.0], "float32"))
    opt = tuning.RAdam(learning_rate=0.1)
    ours = []
    for g in grads:
        opt.apply_gradients([(keras.ops.convert_to_tensor(np.array([g], "float32")), var)])
        ours.append(float(keras.ops.convert_to_numpy(var)[0]))
    ref = _radam_reference(grads)
    # t = 1..5 are un-rectified (rho_t <= 5), later steps rectified.
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-6)


def test_radam_serializes_with_a_model(tmp_path):
    opt = tuning.RAdam(learning_rate=3e-3, beta_2=0.99, sma_threshold=4.0)
    again = keras.optimizers.deserialize(keras.optimizers.serialize(opt))
    assert isinstance(again, tuning.RAdam)
    assert (again.beta_2, again.sma_threshold) == (0.99, 4.0)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile(optimizer=opt, loss="mse")
    model.fit(np.ones((4, 3)), np.zeros((4, 2)), verbose=0)
    path = str(tmp_path / "m.keras")
    model.save(path)
    assert isinstance(keras.saving.load_model(path).optimizer, tuning.RAdam)


def test_warmup_cosine_shape():
    s = tuning.warmup_cosine(1.0, total_steps=20, warmup_steps=10)
    values = [float(keras.ops.convert_to_numpy(s(i))) for i in (0, 5, 10, 15, 20)]
    np.testing.assert_allclose(values, [0.0, 0.5, 1.0, 0.5, 0.0], atol=1e-6)
