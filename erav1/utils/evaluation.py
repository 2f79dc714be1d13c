"""Evaluation: one batched prediction pass, and every metric derived from it."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from erav1.utils.data import ImageSet, iter_batches
from erav1.utils.policies import Runtime
from erav1.utils.transforms import normalize


@dataclass
class Predictions:
    """The outcome of one pass over a dataset, on the CPU."""

    logits: torch.Tensor  # (N, C) float32
    targets: torch.Tensor  # (N,) int64

    @property
    def probs(self) -> torch.Tensor:
        return self.logits.softmax(dim=1)

    @property
    def preds(self) -> torch.Tensor:
        return self.logits.argmax(dim=1)

    def loss(self, label_smoothing: float = 0.0) -> float:
        return F.cross_entropy(self.logits, self.targets, label_smoothing=label_smoothing).item()

    def accuracy(self) -> float:
        return (self.preds == self.targets).float().mean().item()


@torch.no_grad()
def predict(model: nn.Module, dataset: ImageSet, runtime: Runtime, batch_size: int = 512) -> Predictions:
    """Logits for every image, in eval mode, under the run's precision."""
    was_training = model.training
    model.eval()
    outputs = []
    for idx in iter_batches(len(dataset), batch_size):
        x = normalize(dataset.images[idx].to(runtime.device, non_blocking=True))
        with runtime.autocast():
            outputs.append(model(x.contiguous(memory_format=runtime.memory_format)).float().cpu())
    model.train(was_training)
    return Predictions(torch.cat(outputs), dataset.labels.cpu())
