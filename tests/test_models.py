import pytest
import torch

from erav1.errors import UsageError
from erav1.models import MODELS, ResNet18, ResNet34, count_parameters, get_model


def test_resnet18_has_the_published_parameter_count():
    assert count_parameters(ResNet18(num_classes=10)) == 11_173_962


def test_resnet34_is_deeper_with_basic_blocks_only():
    model = ResNet34()
    assert [len(getattr(model, f"layer{i}")) for i in range(1, 5)] == [3, 4, 6, 3]
    assert count_parameters(model) == 21_282_122
    assert not any("Bottleneck" in type(m).__name__ for m in model.modules())


def test_output_shape_and_cifar_stem():
    model = ResNet18(num_classes=7).eval()
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 7)
    assert model.conv1.kernel_size == (3, 3) and model.conv1.stride == (1, 1)
    assert not any(isinstance(m, torch.nn.MaxPool2d) for m in model.modules())


def test_stages_run_at_32_16_8_4_px():
    model = ResNet18().eval()
    sizes = {}
    hooks = [
        getattr(model, name).register_forward_hook(lambda m, i, o, name=name: sizes.__setitem__(name, o.shape[1:]))
        for name in ("layer1", "layer2", "layer3", "layer4")
    ]
    with torch.no_grad():
        model(torch.randn(1, 3, 32, 32))
    for h in hooks:
        h.remove()
    assert sizes == {
        "layer1": (64, 32, 32),
        "layer2": (128, 16, 16),
        "layer3": (256, 8, 8),
        "layer4": (512, 4, 4),
    }


def test_other_input_sizes_work_thanks_to_adaptive_pooling():
    model = ResNet18().eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 64, 48)).shape == (1, 10)


def test_get_model_by_name_and_unknown_name_lists_choices():
    assert count_parameters(get_model("ResNet18", 10)) == 11_173_962
    with pytest.raises(UsageError) as err:
        get_model("vgg11")
    for name in MODELS:
        assert name in str(err.value)
