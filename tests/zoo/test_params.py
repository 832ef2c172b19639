"""Exact parameter counts against ../shared/reference.md (and torchvision)."""

import numpy as np
import pytest

import zoo
from zoo._sizes import SIZES

# Parameter counts and cards are properties of the architecture, not of the backend.
pytestmark = pytest.mark.one_backend

# (total count_params, trainable)
EXPECTED = {
    "vgg16": (138_357_544, 138_357_544),
    "vgg19": (143_667_240, 143_667_240),
    "vgg11": (132_863_336, 132_863_336),  # torchvision vgg11
    "vgg13": (133_047_848, 133_047_848),  # torchvision vgg13
    "vgg16_bn": (138_374_440, 138_365_992),  # torchvision vgg16_bn: 138,365,992
    "resnet18": (11_699_112, 11_689_512),
    "resnet34": (21_814_696, 21_797_672),
    "resnet50": (25_636_712, None),
    "resnet50_tv": (25_610_152, 25_557_032),  # torchvision resnet50: 25,557,032
    "resnet101": (44_707_176, None),
    "resnet152": (60_419_944, None),
    "resnet50v2": (25_613_800, None),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_parameter_count(name):
    # zoo/_sizes.py's count is a build's: tests/zoo/test_models.py builds every model against it.
    total, trainable = EXPECTED[name]
    assert SIZES[name][0] == total
    if trainable is not None:
        model = zoo.build(name, input_shape=(224, 224, 3))
        assert sum(int(np.prod(w.shape)) for w in model.trainable_weights) == trainable


def test_model_card_resnet50():
    card = zoo.info("resnet50")
    assert card.params == 25_636_712
    assert card.gmacs == pytest.approx(3.86, abs=0.01)  # keras layout: stride on the 1x1
    assert [(s.layer, s.reduction, s.channels) for s in card.stages] == [
        ("conv1_relu", 2, 64),
        ("conv2_block3_out", 4, 256),
        ("conv3_block4_out", 8, 512),
        ("conv4_block6_out", 16, 1024),
        ("conv5_block3_out", 32, 2048),
    ]
    assert card.weights["imagenet"].file_hash == "2cb95161c43110f7111970584f804107"
    text = str(card)
    assert "25,636,712" in text and "conv4_block6_out" in text and "3.86 GMACs" in text


def test_model_card_vgg16_and_v2():
    card = zoo.info("vgg16")
    assert card.gmacs == pytest.approx(15.47, abs=0.01)
    assert [s.layer for s in card.stages] == [f"block{i}_pool" for i in range(1, 6)]
    v2 = zoo.info("resnet50v2")
    assert [s.reduction for s in v2.stages] == [2, 4, 8, 16, 32]
    assert [s.channels for s in v2.stages] == [64, 256, 512, 1024, 2048]
