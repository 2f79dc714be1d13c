import pytest
import torch

from erav1.errors import UsageError
from erav1.models import MODELS, BasicBlock, ResNet18, ResNet34, count_parameters, get_model


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


@pytest.mark.parametrize("build", [ResNet18, ResNet34, lambda **kw: get_model("resnet18", 10, **kw)])
def test_zero_init_residual_starts_every_block_as_its_shortcut(build):
    torch.manual_seed(0)
    model = build(zero_init_residual=True).eval()
    blocks = [m for m in model.modules() if isinstance(m, BasicBlock)]
    assert len(blocks) in (8, 16)
    for block in blocks:
        assert not block.bn2.weight.any()
        assert block.bn1.weight.all(), "only the last BatchNorm of a block starts at 0"
    assert model.bn1.weight.all() and all(b.shortcut[1].weight.all() for b in blocks if len(b.shortcut))
    torch.manual_seed(0)
    assert count_parameters(model) == count_parameters(build())
    with torch.no_grad():
        for block in (blocks[0], next(b for b in blocks if len(b.shortcut))):  # identity, then projection shortcut
            x = torch.randn(2, block.conv1.in_channels, 8, 8)
            assert torch.equal(block(x), torch.relu(block.shortcut(x)))


def test_zero_init_residual_is_off_by_default_and_changes_no_other_weight():
    torch.manual_seed(0)
    default = ResNet18().state_dict()
    torch.manual_seed(0)
    zeroed = ResNet18(zero_init_residual=True).state_dict()
    assert count_parameters(ResNet18(zero_init_residual=True)) == 11_173_962
    changed = sorted(k for k in default if not torch.equal(default[k], zeroed[k]))
    assert changed == sorted(f"layer{s}.{b}.bn2.weight" for s in range(1, 5) for b in range(2))
    assert all(default[k].all() for k in changed), "by default the last BatchNorm scale is 1, as any other"
