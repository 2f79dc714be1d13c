"""The misclassified images a reader looks at: picked deterministically from one prediction pass."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from erav1.utils.data import ImageSet
from erav1.utils.evaluation import EvaluationReport, Predictions
from erav1.utils.policies import check_choice
from erav1.utils.text import Markdown, markdown_table, percent

ORDERS = ("confidence", "index")


@dataclass
class Misclassified:
    """One wrong prediction: where it is in the dataset, the image, and what the model thought."""

    index: int
    image: torch.Tensor  # (3, 32, 32) uint8
    true: int
    pred: int
    confidence: float  # the softmax probability of the (wrong) predicted class


def find_misclassified(
    predictions: Predictions, dataset: ImageSet, n: int = 10, order: str = "confidence"
) -> list[Misclassified]:
    """Up to ``n`` misclassified images of ``dataset``, the same ones on every call.

    ``order="confidence"`` puts the most confident mistakes first (ties by
    index): those are the instructive ones.  ``order="index"`` takes them in
    dataset order.
    """
    check_choice("order", order, ORDERS)
    if n < 0:
        raise ValueError(f"n must be at least 0, got {n}")
    if len(predictions.targets) != len(dataset) or not torch.equal(predictions.targets, dataset.labels.cpu()):
        raise ValueError("the predictions were made on another dataset: their targets differ from its labels")
    preds = predictions.preds
    confidence = predictions.probs.gather(1, preds[:, None]).squeeze(1)
    wrong = (preds != predictions.targets).nonzero().flatten()  # ascending index
    if order == "confidence":
        wrong = wrong[confidence[wrong].sort(descending=True, stable=True).indices]
    return [
        Misclassified(
            index=int(i),
            image=dataset.images[i].cpu(),
            true=int(predictions.targets[i]),
            pred=int(preds[i]),
            confidence=float(confidence[i]),
        )
        for i in wrong[:n].tolist()
    ]


def describe_misclassified(items: list[Misclassified], report: EvaluationReport) -> Markdown:
    """How many test images are wrong, and the ones picked for the gallery as a table."""
    wrong = int((report.predictions.preds != report.predictions.targets).sum())
    total = len(report.predictions.targets)
    rows = [
        [item.index, report.classes[item.true], report.classes[item.pred], percent(item.confidence)] for item in items
    ]
    return Markdown(
        f"{wrong:,} of {total:,} test images are misclassified. The {len(items)} shown here are the mistakes the "
        "model was most sure of:\n\n" + markdown_table(["test image", "true class", "predicted", "confidence"], rows)
    )
