"""The book's sentences about evaluation, mistakes and Grad-CAM: measured from the objects they describe."""

from __future__ import annotations

import numpy as np
import torch

from erav1.models import get_model
from erav1.utils.evaluation import EvaluationReport, Predictions, describe_report
from erav1.utils.gradcam import GradCamResult, describe_gradcam, describe_target_layer
from erav1.utils.misclassified import Misclassified, describe_misclassified
from erav1.utils.plots import plot_loss_curves


def report() -> EvaluationReport:
    targets = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    preds = torch.tensor([0, 0, 0, 1, 1, 1, 0, 0])
    return EvaluationReport.from_predictions(Predictions(torch.eye(2)[preds] * 5, targets), ["cat", "dog"])


def test_describe_report_quotes_the_report():
    text = describe_report(report())
    assert "Test accuracy: **62.50%** on 8 test images." in text
    assert "Easiest class: cat (75.0%); hardest: dog (50.0%)." in text
    assert "dog taken for cat: 2 of 4 dog images (50.0%)" in text


def test_describe_misclassified_counts_every_mistake_and_lists_the_shown_ones():
    items = [Misclassified(6, torch.zeros(3, 32, 32, dtype=torch.uint8), true=1, pred=0, confidence=0.99)]
    text = describe_misclassified(items, report())
    assert text.startswith("3 of 8 test images are misclassified. The 1 shown")
    assert "| 6 | dog | cat | 99.0% |" in text


def test_describe_target_layer_and_gradcam_give_measured_sizes():
    text = describe_target_layer(get_model("resnet18"))
    assert "**layer3.1**: its map is 8x8, so each CAM cell covers 4x4 px" in text
    assert "layer4.1, its map is 4x4, so each CAM cell covers 8x8 px: below the 5x5 minimum" in text
    cams = np.zeros((2, 32, 32), dtype=np.float32)
    cams[:, 3, 3] = 1
    result = GradCamResult(
        "layer3.1",
        (8, 8),
        cams,
        cams,
        cams[..., None].repeat(3, -1),
        cams[..., None].repeat(3, -1),
        np.zeros((2, 32, 32, 3), dtype=np.float32),
    )
    assert "whose 8x8 map is upsampled to 32x32 px (each cell covers 4x4 px). For 2 of 2" in describe_gradcam(result)


def test_figures_render_as_png_in_a_notebook_without_pyplot():
    fig = plot_loss_curves([{"epoch": 1, "train_loss": 2.0, "test_loss": 2.1}])
    assert fig._repr_png_().startswith(b"\x89PNG")
