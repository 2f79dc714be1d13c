"""Looking inside a model: its torchinfo summary, its size, and the map size after each stage.

The book's model chapter uses these to show why the CIFAR stem matters: the
ImageNet stem (7x7 stride-2 conv, then a stride-2 max-pool) shrinks a 32x32
image four times before the first residual stage; the CIFAR stem keeps it.
"""

from __future__ import annotations

import torch
from torch import nn

from erav1.utils.text import Markdown, markdown_table

STAGES = ("layer1", "layer2", "layer3", "layer4")


def model_summary(model: nn.Module, image_size: int = 32, depth: int = 2):
    """torchinfo's layer table for one ``image_size`` RGB image (a ``ModelStatistics`` that prints as a table)."""
    from torchinfo import summary

    return summary(model, input_size=(1, 3, image_size, image_size), depth=depth, device="cpu", verbose=0,
                   col_names=("output_size", "num_params"), row_settings=("var_names",))


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def imagenet_resnet18(num_classes: int = 10) -> nn.Module:
    """torchvision's ResNet18, whose stem was designed for 224x224 ImageNet images (for comparison only)."""
    from torchvision.models import resnet18

    return resnet18(num_classes=num_classes)


@torch.no_grad()
def stage_sizes(model: nn.Module, image_size: int = 32) -> dict[str, tuple[int, int, int]]:
    """``{"stem": (C, H, W), "layer1": ..., ...}``: output shapes of the stem and each residual stage.

    The stem is everything the model's top level runs before ``layer1``.
    """
    shapes: dict[str, tuple[int, int, int]] = {}
    hooks = [
        module.register_forward_hook(lambda _m, _i, out, name=name: shapes.__setitem__(name, tuple(out.shape[1:])))
        for name, module in model.named_children()
    ]
    was_training = model.training
    try:
        model.eval()
        model(torch.zeros(1, 3, image_size, image_size, device=next(model.parameters()).device))
    finally:
        model.train(was_training)
        for hook in hooks:
            hook.remove()
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
    rows = [[name, f"{count_parameters(child):,}", f"{count_parameters(child) / total:.1%}"]
            for name, child in model.named_children() if count_parameters(child)]
    return Markdown(
        f"{total:,} parameters in all, {4 * total / 1e6:.1f} MB as fp32.\n\n"
        + markdown_table(["module", "parameters", "share"], rows)
    )
