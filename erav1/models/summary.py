"""Looking inside a model: its torchinfo summary, its size, and the map size after each stage.

The book's model chapter uses these to show why the CIFAR stem matters: the
ImageNet stem (7x7 stride-2 conv, then a stride-2 max-pool) shrinks a 32x32
image four times before the first residual stage; the CIFAR stem keeps it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch
from torch import nn

from erav1.utils.text import Markdown, markdown_table

STAGES = ("layer1", "layer2", "layer3", "layer4")


def model_summary(model: nn.Module, image_size: int = 32, depth: int = 2):
    """torchinfo's layer table for one ``image_size`` RGB image (a ``ModelStatistics`` that prints as a table)."""
    from torchinfo import summary

    return summary(
        model,
        input_size=(1, 3, image_size, image_size),
        depth=depth,
        device="cpu",
        verbose=0,
        col_names=("output_size", "num_params"),
        row_settings=("var_names",),
    )


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def imagenet_resnet18(num_classes: int = 10) -> nn.Module:
    """torchvision's ResNet18, whose stem was designed for 224x224 ImageNet images (for comparison only)."""
    from torchvision.models import resnet18

    return resnet18(num_classes=num_classes)


def _stages(model: nn.Module) -> dict[str, list[str]]:
    """The residual stages (top-level ``nn.Sequential`` children, ``layer1`` ...) and their blocks' names."""
    return {
        name: [f"{name}.{block}" for block, _ in child.named_children()]
        for name, child in model.named_children()
        if isinstance(child, nn.Sequential) and len(child)
    }


def residual_blocks(model: nn.Module) -> list[str]:
    """Every residual block in forward order: ``layer1.0``, ``layer1.1``, ..., ``layer4.1``."""
    return [block for blocks in _stages(model).values() for block in blocks]


def _layer_names(model: nn.Module) -> list[str]:
    """The stem (the top-level modules before the first stage), then each stage followed by its blocks."""
    stages = _stages(model)
    children = [name for name, _ in model.named_children()]
    stem = children[: children.index(next(iter(stages)))] if stages else children
    return stem + [name for stage, blocks in stages.items() for name in (stage, *blocks)]


@contextlib.contextmanager
def restored_modes(model: nn.Module) -> Iterator[None]:
    """Put every module's train/eval flag back afterwards, even a model in mixed modes."""
    modes = [(module, module.training) for module in model.modules()]
    try:
        yield
    finally:
        for module, training in modes:
            module.training = training


def output_shapes(model: nn.Module, names: Sequence[str], image_size: int) -> dict[str, tuple[int, int, int]]:
    """Each named module's output ``(C, H, W)`` for one ``image_size`` image, from a dry forward pass.

    In eval mode and without gradients, so BatchNorm statistics are left alone.
    """
    shapes: dict[str, tuple[int, int, int]] = {}

    def recorder(name: str):
        def hook(module: nn.Module, inputs: tuple, output: object) -> None:
            if isinstance(output, torch.Tensor) and output.dim() == 4:
                shapes[name] = tuple(output.shape[1:])

        return hook

    device = next(model.parameters()).device
    handles = [model.get_submodule(name).register_forward_hook(recorder(name)) for name in names]
    try:
        with restored_modes(model), torch.no_grad():
            model.eval()
            model(torch.zeros(1, 3, image_size, image_size, device=device))
    finally:
        for handle in handles:
            handle.remove()
    return {name: shapes[name] for name in names if name in shapes}


def feature_map_shapes(model: nn.Module, image_size: int = 32) -> dict[str, tuple[int, int, int]]:
    """``(C, H, W)`` after the stem, every stage and every residual block, e.g. ``"layer3.1": (256, 8, 8)``."""
    return output_shapes(model, _layer_names(model), image_size)


def stage_sizes(model: nn.Module, image_size: int = 32) -> dict[str, tuple[int, int, int]]:
    """``{"stem": (C, H, W), "layer1": ..., ...}``: output shapes of the stem and each residual stage.

    The stem is everything the model's top level runs before ``layer1``.
    """
    shapes = feature_map_shapes(model, image_size)
    names = list(shapes)
    stem = names[names.index(STAGES[0]) - 1]
    return {"stem": shapes[stem], **{stage: shapes[stage] for stage in STAGES}}


def compare_stems(image_size: int = 32, num_classes: int = 10) -> Markdown:
    """Feature-map size after each stage, CIFAR stem vs ImageNet stem, for one ``image_size`` image."""
    from erav1.models import get_model

    cifar = stage_sizes(get_model("resnet18", num_classes), image_size)
    imagenet = stage_sizes(imagenet_resnet18(num_classes), image_size)

    def size(shape: tuple[int, int, int]) -> str:
        return f"{shape[1]}x{shape[2]} ({shape[0]} channels)"

    rows = [[stage, size(cifar[stage]), size(imagenet[stage])] for stage in cifar]
    return Markdown(
        f"Feature-map size after each stage for one {image_size}x{image_size} image:\n\n"
        + markdown_table(["stage", "CIFAR stem (this book)", "ImageNet stem (torchvision)"], rows)
    )


def describe_parameters(model: nn.Module) -> Markdown:
    """How many weights the model has, and where they sit: the deep stages hold almost all of them."""
    total = count_parameters(model)
    rows = [
        [name, f"{count_parameters(child):,}", f"{count_parameters(child) / total:.1%}"]
        for name, child in model.named_children()
        if count_parameters(child)
    ]
    return Markdown(
        f"{total:,} parameters in all, {4 * total / 1e6:.1f} MB as fp32.\n\n"
        + markdown_table(["module", "parameters", "share"], rows)
    )
