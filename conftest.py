"""Settings for every test, the doctests of the three packages included (tests/conftest.py has the rest)."""

import warnings

import keras
import pytest


@pytest.fixture(autouse=True)
def _eager_where_tracing_is_not_under_test(request):
    """On TensorFlow, doctests and `tf_eager` tests run `tf.function`s eagerly.

    They check what an example prints or a script writes, and with their few
    images TensorFlow's graph tracing costs most of their time (the GoogLeNet
    example: 60 s traced, 10 s eager). How the train step traces is tested by
    the rest of the suite, on TensorFlow and under JAX's `jit`.
    """
    doctest = getattr(request.node, "dtest", None) is not None
    if keras.backend.backend() != "tensorflow" or not (doctest or "tf_eager" in request.keywords):
        yield
        return
    import tensorflow as tf

    # TensorFlow's note that tf.data still traces is about this switch, not about a model.
    warnings.filterwarnings(
        "ignore", message="Even though the `tf.config.experimental_run_functions_eagerly`"
    )
    tf.config.run_functions_eagerly(True)
    try:
        yield
    finally:
        tf.config.run_functions_eagerly(False)
