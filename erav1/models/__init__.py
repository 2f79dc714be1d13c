"""Models by name: ``get_model("resnet18", num_classes=10)``."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from erav1.errors import UsageError
from erav1.models.resnet import BasicBlock, ResNet, ResNet18, ResNet34
from erav1.models.summary import compare_stems, count_parameters, describe_parameters, model_summary, stage_sizes

MODELS: dict[str, Callable[..., nn.Module]] = {  # (num_classes, *, zero_init_residual=False)
    "resnet18": ResNet18,
    "resnet34": ResNet34,
}


def get_model(name: str, num_classes: int = 10, *, zero_init_residual: bool = False) -> nn.Module:
    try:
        factory = MODELS[name.lower()]
    except KeyError:
        raise UsageError(f"unknown model {name!r}; choose one of: {', '.join(MODELS)}") from None
    return factory(num_classes, zero_init_residual=zero_init_residual)


__all__ = [
    "MODELS",
    "BasicBlock",
    "ResNet",
    "ResNet18",
    "ResNet34",
    "compare_stems",
    "count_parameters",
    "describe_parameters",
    "get_model",
    "model_summary",
    "stage_sizes",
]
