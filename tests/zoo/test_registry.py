import keras
import pytest

import zoo

pytestmark = pytest.mark.one_backend  # the registry is plain Python


def test_list_models_in_natural_order_and_wildcards():
    names = zoo.list_models()
    assert names == sorted(names, key=zoo.registry.natural_key)
    assert zoo.list_models("resnet*v2") == ["resnet50v2", "resnet101v2", "resnet152v2"]
    assert zoo.list_models("resnet[0-9]*")[:5] == [
        "resnet18",
        "resnet34",
        "resnet50",
        "resnet50_tv",
        "resnet50v2",
    ]
    assert zoo.list_models("*_bn") == ["vgg11_bn", "vgg13_bn", "vgg16_bn", "vgg19_bn"]
    assert zoo.list_models("VGG1?") == ["vgg11", "vgg13", "vgg16", "vgg19"]
    assert set(zoo.list_models("resnet*")) >= {"resnet18", "resnet34", "resnet50", "resnet101", "resnet152"}


def test_names_are_case_insensitive():
    assert zoo.build("ResNet18", input_shape=(32, 32, 3)).name == "resnet18"


def test_unknown_name_suggests_close_matches():
    with pytest.raises(ValueError, match=r"Did you mean 'resnet50'"):
        zoo.build("resnet05")
    with pytest.raises(ValueError, match=r"zoo.list_models\(\)"):
        zoo.get_spec("alexnet")


def test_user_family_gets_build_list_and_info():
    stages = (zoo.Stage("stage1", "s1_conv", 2, 8), zoo.Stage("stage2", "s2_conv", 4, 16))

    @zoo.register(
        family="tiny", default_size=32, min_size=8, preprocessing="tf", stages=stages, overwrite=True
    )
    def tinynet_test(x):
        x = keras.layers.Conv2D(8, 3, strides=2, padding="same", name="s1_conv")(x)
        x = keras.layers.Conv2D(16, 3, strides=2, padding="same", name="s2_conv")(x)
        return zoo.Body(x)

    assert "tinynet_test" in zoo.list_models("tiny*")
    model = zoo.build("tinynet_test", num_classes=3, input_shape=(16, 16, 3))
    assert model.output_shape == (None, 3)
    card = zoo.info("tinynet_test")
    assert card.family == "tiny"
    assert card.params == (3 * 9 * 8 + 8) + (8 * 9 * 16 + 16) + (16 * 1000 + 1000)
    assert [(s.layer, s.reduction, s.channels) for s in card.stages] == [
        ("s1_conv", 2, 8),
        ("s2_conv", 4, 16),
    ]
    feats = zoo.build("tinynet_test", features_only=True, input_shape=(16, 16, 3))
    assert [tuple(o.shape) for o in feats.outputs] == [(None, 8, 8, 8), (None, 4, 4, 16)]
    with pytest.raises(ValueError, match="already registered"):
        zoo.register("tinynet_test", family="tiny")(tinynet_test)
