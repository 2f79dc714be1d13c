"""Evaluation: one batched prediction pass, every metric derived from it, and loading a trained model back.

:func:`predict` is the only place a model is run over a dataset for scoring.
The overall accuracy, the class-wise accuracy and the confusion matrix of an
:class:`EvaluationReport` all come from that one pass.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from erav1.errors import CheckpointError, RunDirError
from erav1.models import get_model
from erav1.utils.checkpoint import load_checkpoint, load_weights
from erav1.utils.data import CIFAR10_CLASSES, ImageSet, iter_batches
from erav1.utils.policies import Runtime
from erav1.utils.rundir import CONFIG, find_weights, read_json
from erav1.utils.text import Markdown, percent
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
def predict(
    model: nn.Module, dataset: ImageSet, runtime: Runtime, batch_size: int = 512, flip: bool = False
) -> Predictions:
    """Logits for every image, in eval mode, under the run's precision.

    ``flip`` is test-time augmentation: each image is also scored mirrored, and the two
    logits are averaged. It costs a second pass, and its accuracy is a different number
    from the plain one, so the book always reports the two side by side.
    """
    was_training = model.training
    model.eval()
    outputs = []
    for idx in iter_batches(len(dataset), batch_size):
        x = normalize(dataset.images[idx].to(runtime.device, non_blocking=True))
        views = (x, x.flip(3)) if flip else (x,)
        with runtime.autocast():
            logits = [model(v.contiguous(memory_format=runtime.memory_format)).float() for v in views]
        outputs.append((sum(logits) / len(logits)).cpu())
    model.train(was_training)
    return Predictions(torch.cat(outputs), dataset.labels.cpu())


# --- metrics from predicted and true labels --------------------------------------------


def confusion_matrix(preds: torch.Tensor, targets: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Counts ``(C, C)`` int64: row = true class, column = predicted class."""
    preds, targets = preds.cpu().long().flatten(), targets.cpu().long().flatten()
    if preds.shape != targets.shape:
        raise ValueError(f"{len(preds)} predictions for {len(targets)} targets")
    for name, labels in (("predictions", preds), ("targets", targets)):
        if len(labels) and not 0 <= int(labels.min()) <= int(labels.max()) < num_classes:
            raise ValueError(f"{name} must be class indices in [0, {num_classes}), got {labels.min()}..{labels.max()}")
    counts = torch.bincount(targets * num_classes + preds, minlength=num_classes * num_classes)
    return counts.view(num_classes, num_classes)


def _row_accuracy(confusion: torch.Tensor) -> torch.Tensor:
    """Correct / total per true class, float64; NaN for a class with no images, which has no accuracy."""
    return confusion.diagonal().double() / confusion.sum(dim=1).double()


def class_accuracy(preds: torch.Tensor, targets: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Accuracy ``(C,)`` within each true class (NaN where a class has no images)."""
    return _row_accuracy(confusion_matrix(preds, targets, num_classes))


@dataclass
class EvaluationReport:
    """Everything a reader looks at after training, from one prediction pass."""

    accuracy: float
    class_accuracy: dict[str, float]
    confusion: torch.Tensor  # (C, C) int64, rows = true class
    classes: list[str]
    predictions: Predictions

    @classmethod
    def from_predictions(cls, predictions: Predictions, classes: Sequence[str]) -> EvaluationReport:
        confusion = confusion_matrix(predictions.preds, predictions.targets, len(classes))
        per_class = _row_accuracy(confusion).tolist()
        return cls(
            accuracy=(confusion.trace().double() / confusion.sum()).item(),
            class_accuracy=dict(zip(classes, per_class, strict=True)),
            confusion=confusion,
            classes=list(classes),
            predictions=predictions,
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: plain numbers and lists; a class without images has accuracy ``None``."""
        return {
            "accuracy": self.accuracy,
            "num_images": len(self.predictions.targets),
            "classes": self.classes,
            "class_accuracy": {c: None if math.isnan(a) else a for c, a in self.class_accuracy.items()},
            "confusion_matrix": self.confusion.tolist(),
        }


def evaluate_model(
    model: nn.Module, dataset: ImageSet, runtime: Runtime, batch_size: int = 512, flip: bool = False
) -> EvaluationReport:
    """Overall accuracy, class-wise accuracy and confusion matrix from exactly one :func:`predict` pass."""
    return EvaluationReport.from_predictions(predict(model, dataset, runtime, batch_size, flip), dataset.classes)


# --- a trained model, back from disk -----------------------------------------------------


@dataclass
class LoadedModel:
    """A model ready for inference, with what is known about where it came from."""

    model: nn.Module
    runtime: Runtime
    classes: list[str]
    config: dict[str, Any] | None  # the run's config.json; None for a bare weights file
    source: Path  # the file the weights were read from


def load_model(
    source: str | os.PathLike,
    device: str = "auto",
    precision: str = "auto",
    model_name: str = "resnet18",
    classes: Sequence[str] | None = None,
) -> LoadedModel:
    """Load a run directory, or a weights file, into an eval-mode model on ``device``.

    A run directory names its architecture in config.json and holds its weights
    in model.pt, or only in last.pt while unfinished.  A weights file is a plain
    state_dict of ``model_name`` (fp16 copies load too) or a training checkpoint.
    Class names come from ``classes``, else the checkpoint, else CIFAR-10.
    Every file is read with ``weights_only=True``.
    """
    runtime = Runtime.create(device, precision)  # an unavailable device fails before any loading
    source = Path(source).expanduser()
    config = None
    if source.is_dir():
        weights_file = find_weights(source)
        if (source / CONFIG).is_file():
            config = read_json(source / CONFIG)
            model_name = config.get("model", model_name)
    elif source.is_file():
        weights_file = source
    else:
        raise RunDirError(
            f"{source} does not exist; give a run directory written by 'erav1 train' or a weights file (.pt)"
        )
    state_dict, saved_classes = _read_state_dict(weights_file)
    if classes is None:
        classes = saved_classes or CIFAR10_CLASSES
    model = get_model(model_name, num_classes=len(classes))
    _check_class_count(model, state_dict, classes, weights_file)
    load_weights(model, state_dict, weights_file)
    model = runtime.prepare(model).eval()
    return LoadedModel(model, runtime, list(classes), config, weights_file)


def _read_state_dict(path: Path) -> tuple[Any, list[str] | None]:
    """The state_dict in a weights file or a training checkpoint, cast to fp32, and any saved class names."""
    saved = load_checkpoint(path)
    classes = None
    if isinstance(saved, dict) and isinstance(saved.get("model"), dict):  # a last.pt checkpoint
        saved, classes = saved["model"], saved.get("classes")
    if isinstance(saved, dict):  # fp16/bf16 copies halve a file; the model computes in fp32
        saved = {k: v.float() if isinstance(v, torch.Tensor) and v.is_floating_point() else v for k, v in saved.items()}
    return saved, classes


def _check_class_count(model: nn.Module, state_dict: Any, classes: Sequence[str], source: Path) -> None:
    """Name the real problem when the weights' classifier has another number of outputs than there are names."""
    name, expected = list(model.state_dict().items())[-1]  # the classifier's bias: one entry per class
    found = state_dict.get(name) if isinstance(state_dict, dict) else None
    if isinstance(found, torch.Tensor) and found.shape != expected.shape:
        raise CheckpointError(
            f"{source} holds weights for {found.shape[0]} classes, not for the {len(classes)} named "
            f"({', '.join(classes)}); pass its {found.shape[0]} class names as classes"
        )


def describe_report(report: EvaluationReport) -> Markdown:
    """The headline numbers of one evaluation pass, as the book quotes them."""
    ranked = sorted(((a, c) for c, a in report.class_accuracy.items() if not math.isnan(a)), reverse=True)
    confusion = report.confusion.clone()
    confusion.fill_diagonal_(0)
    true, pred = divmod(int(confusion.argmax()), len(report.classes))
    class_size = int(report.confusion[true].sum())
    lines = [
        f"Test accuracy: **{percent(report.accuracy, 2)}** on {len(report.predictions.targets):,} test images.",
        f"Easiest class: {ranked[0][1]} ({percent(ranked[0][0])}); "
        f"hardest: {ranked[-1][1]} ({percent(ranked[-1][0])}).",
    ]
    if int(confusion[true, pred]):
        lines.append(
            f"The most frequent mistake is {report.classes[true]} taken for {report.classes[pred]}: "
            f"{int(confusion[true, pred])} of {class_size} {report.classes[true]} images "
            f"({percent(int(confusion[true, pred]) / class_size)})."
        )
    return Markdown("\n\n".join(lines))


def describe_flip_tta(plain: EvaluationReport, flipped: EvaluationReport) -> Markdown:
    """Flip test-time augmentation as a second number beside the plain one, never in its place."""
    gap = flipped.accuracy - plain.accuracy
    changed = int((plain.predictions.preds != flipped.predictions.preds).sum())
    direction = "above" if gap > 0 else "below" if gap < 0 else "the same as"
    points = f"{abs(100 * gap):.2f} points {direction}" if gap else direction
    return Markdown(
        f"With flip test-time augmentation, accuracy is **{percent(flipped.accuracy, 2)}**: {points} the plain "
        f"{percent(plain.accuracy, 2)}. Averaging each image with its mirror image changed the prediction for "
        f"{changed:,} of {len(plain.predictions.targets):,} images. It costs a second forward pass, so the number "
        "this book reports as its result stays the plain one."
    )
