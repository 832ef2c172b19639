import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402


def pytest_collection_modifyitems(config, items):
    if keras.backend.backend() == "tensorflow":
        return
    skip = pytest.mark.skip(reason=f"TensorFlow-only; backend is {keras.backend.backend()}")
    once = pytest.mark.skip(reason="backend-independent check; runs in the TensorFlow pass")
    for item in items:
        # Doctests of modules that declare `TF_ONLY = True` (surgery.hub) too.
        dtest = getattr(item, "dtest", None)
        if "tf_only" in item.keywords or (dtest is not None and dtest.globs.get("TF_ONLY")):
            item.add_marker(skip)
        elif "one_backend" in item.keywords:
            item.add_marker(once)


@pytest.fixture(autouse=True)
def _fresh_session():
    keras.utils.set_random_seed(0)
    yield
    keras.backend.clear_session()


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def randomize_bn_stats(model, rng):
    """Give BN moving statistics non-trivial values so parity checks bite."""
    for w in model.weights:
        if w.path.endswith("moving_variance"):
            w.assign(rng.uniform(0.5, 1.5, w.shape).astype("float32"))
        elif w.path.endswith("moving_mean"):
            w.assign(rng.normal(0, 0.1, w.shape).astype("float32"))
