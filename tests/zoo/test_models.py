"""Every registered model, every time (timm's tests/test_models.py): one build each, on one backend.

Each model `import zoo` registers is built once, at its default size with
the head, and that build is checked four ways:

- its parameters and MACs are zoo/_sizes.py's (the weights table's numbers);
- every declared stage's output has the stage's width and stride;
- a forward pass of one image gives finite predictions, and the
  `features_only` view (the declared stages' outputs, as
  `zoo.build(features_only=True)` makes it) gives finite maps of the
  declared shapes (FCN: per-pixel scores at the input size). Models of more
  than 8 GMACs skip the pass unless they are their family's smallest: their
  layers and blocks are a smaller member's (VGG-19-BN's are VGG-11-BN's,
  ResNet-152's ResNet-50's), the build has already traced every layer, and
  the passes at 224-600 px cost 1-3 s each (35 s of the CI's TensorFlow run);
- the smallest model of each family makes a `.keras` round trip with equal
  outputs: a family's members are made of the same layer classes, and a load
  is the slowest step (9 s for EfficientNet-B6, 2 s for ResNet-50).

One build per model keeps this inside the CI budget; `tests/zoo/test_build.py`
builds `features_only` models at other sizes.
"""

import math

import keras
import numpy as np
import pytest

import zoo
from zoo._sizes import SIZES

BUILTIN = [s.name for s in zoo.registry.specs() if s.builtin]
# The smallest model of each family makes the `.keras` round trip.
ROUND_TRIP = {
    min((n for n in BUILTIN if zoo.get_spec(n).family == family), key=lambda n: SIZES[n][0])
    for family in {zoo.get_spec(n).family for n in BUILTIN}
}
# Which make the forward pass: up to 8 GMACs, and the smallest of each family.
RUN = ROUND_TRIP | {n for n in BUILTIN if SIZES[n][1] <= 8e9}


def test_every_builtin_model_is_measured():
    assert sorted(SIZES) == BUILTIN


def _check_default_size(model, stages, size):
    """Each stage's output at the default size: its width, and its size within the stem's losses."""
    for stage in stages:
        out = model.get_layer(stage.layer).output
        assert out.shape[-1] == stage.channels, stage
        # "valid" stems (Inception, Xception, NASNet) lose a few pixels
        assert abs(out.shape[1] - size / stage.reduction) <= max(2, 0.1 * size / stage.reduction), (
            stage,
            out.shape,
        )
    if len(stages) > 1:
        assert [s.reduction for s in stages] == sorted({s.reduction for s in stages})
        assert all(math.log2(s.reduction).is_integer() for s in stages)


def _numpy(outputs):
    outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
    return [keras.ops.convert_to_numpy(o) for o in outputs]


@pytest.mark.one_backend  # builds, counts and a save format: the same on every backend
@pytest.mark.parametrize("name", BUILTIN)
def test_every_model_builds_runs_declares_its_stages_and_round_trips(name, tmp_path, rng):
    spec = zoo.get_spec(name)
    size = spec.default_size
    model = zoo.build(name, input_shape=(size, size, 3))
    assert (model.count_params(), zoo.count_macs(model)) == SIZES[name], (
        "stale zoo/_sizes.py: regenerate with `python scripts/measure_models.py > zoo/_sizes.py`"
    )
    if not spec.is_task:
        _check_default_size(model, spec.stages, size)
    x = rng.normal(size=(1, size, size, 3)).astype("float32")
    if spec.is_task:  # FCN: per-pixel scores at the input's size
        assert model.output_shape == (None, size, size, spec.default_classes)
        if name in RUN:
            (scores,) = _numpy(model(x))
            assert scores.shape == (1, size, size, spec.default_classes) and np.isfinite(scores).all()
        if name in ROUND_TRIP:  # on its smallest backbone: the default one's fc6 alone is 400 MB
            small = zoo.build(name, backbone="resnet18", num_classes=3, input_shape=(64, 64, 3))
            _check_round_trip(small, x[:, :64, :64], tmp_path)
        return
    # One forward pass for the predictions and the `features_only` view.
    stage_outputs = [model.get_layer(s.layer).output for s in spec.stages]
    assert model.output_shape == (None, 1000)
    if name not in RUN:
        return
    *maps, predictions = _numpy(keras.Model(model.input, [*stage_outputs, model.output])(x))
    assert predictions.shape == (1, 1000) and np.isfinite(predictions).all()
    assert [m.shape[1:] for m in maps] == [tuple(o.shape[1:]) for o in stage_outputs]
    assert all(np.isfinite(m).all() for m in maps)
    if name in ROUND_TRIP:
        _check_round_trip(keras.Model(model.input, stage_outputs), x, tmp_path)


def _check_round_trip(model, x, tmp_path):
    """A `.keras` save and load gives the same outputs."""
    before = _numpy(model(x))
    model.save(tmp_path / "model.keras")
    after = _numpy(keras.saving.load_model(tmp_path / "model.keras")(x))
    for a, b in zip(before, after, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
