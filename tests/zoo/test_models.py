"""zoo/sizes.py (the README's parameters and GMACs) and every declared stage, against a build."""

import math

import pytest

import zoo
from zoo.sizes import SIZES

BUILTIN = [s.name for s in zoo.registry.specs() if s.builtin]


def test_every_builtin_model_is_measured():
    assert sorted(SIZES) == BUILTIN


@pytest.mark.one_backend  # symbolic builds and counts: the same on every backend
@pytest.mark.parametrize("name", BUILTIN)
def test_sizes_and_stages_at_the_default_size(name):
    spec = zoo.get_spec(name)
    size = spec.default_size
    model = zoo.build(name, input_shape=(size, size, 3))
    assert (model.count_params(), zoo.count_macs(model)) == SIZES[name], (
        "stale zoo/sizes.py: regenerate with `python scripts/measure_models.py > zoo/sizes.py`"
    )
    if spec.is_task:
        return
    for stage in spec.stages:
        out = model.get_layer(stage.layer).output
        assert out.shape[-1] == stage.channels, stage
        # "valid" stems (Inception, Xception, NASNet) lose a few pixels
        assert abs(out.shape[1] - size / stage.reduction) <= max(2, 0.1 * size / stage.reduction), (
            stage,
            out.shape,
        )
    if len(spec.stages) > 1:
        assert [s.reduction for s in spec.stages] == sorted({s.reduction for s in spec.stages})
        assert all(math.log2(s.reduction).is_integer() for s in spec.stages)
