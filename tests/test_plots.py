"""Every figure renders (Agg), with the expected axes and the data it claims to show."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from erav1.models import ResNet18
from erav1.utils import plots
from erav1.utils.evaluation import EvaluationReport, Predictions
from erav1.utils.gradcam import feature_map_shapes, gradcam_misclassified
from erav1.utils.misclassified import find_misclassified
from erav1.utils.policies import Runtime
from erav1.utils.transforms import CIFAR10_MEAN_UINT8, Augmentation

CPU = Runtime.create("cpu", "fp32")

VAL_HISTORY = [
    {"epoch": 1, "train_loss": 2.0, "train_acc": 0.30, "val_loss": 1.8, "val_acc": 0.35, "lr": 0.05},
    {"epoch": 2, "train_loss": 1.5, "train_acc": 0.45, "val_loss": 1.4, "val_acc": 0.50, "lr": 0.10},
    {
        "epoch": 3,
        "train_loss": 1.1,
        "train_acc": 0.60,
        "val_loss": 1.2,
        "val_acc": 0.58,
        "lr": 0.01,
        "test_loss": 1.25,
        "test_acc": 0.57,
    },
]


@pytest.fixture(scope="module")
def test_images(small_splits):
    """Two real test images of each class (20)."""
    return small_splits.test.take(torch.arange(0, 500, 25))


@pytest.fixture(scope="module")
def report(test_images):
    """Hand-made predictions: classes 5-9 all right, 0-4 all wrong except one airplane (so 50%)."""
    targets = test_images.labels
    preds = targets.clone()
    preds[targets < 5] = (targets[targets < 5] + 1) % 10  # classes 0-4: all wrong, 5-9: all right
    preds[1] = targets[1]  # one image of class 0 right after all: class 0 at 50%
    logits = torch.nn.functional.one_hot(preds, 10).float() * 4.0
    return EvaluationReport.from_predictions(Predictions(logits, targets), test_images.classes)


@pytest.fixture(scope="module")
def items(report, test_images):
    return find_misclassified(report.predictions, test_images, n=10)


def line_data(fig: Figure) -> dict[str, list[float]]:
    ax = fig.axes[0]
    return {line.get_label(): list(line.get_ydata()) for line in ax.get_lines() if not line.get_label().startswith("_")}


def test_loss_and_accuracy_curves_from_a_real_history(tiny_run):
    history = tiny_run.history
    loss, acc = plots.plot_loss_curves(history), plots.plot_accuracy_curves(history)
    assert len(loss.axes) == len(acc.axes) == 1
    assert line_data(loss) == {"train": [r["train_loss"] for r in history], "test": [r["test_loss"] for r in history]}
    assert line_data(acc)["test"] == pytest.approx([100 * r["test_acc"] for r in history])


def test_curves_with_a_validation_split_show_the_final_test_score():
    fig = plots.plot_loss_curves(VAL_HISTORY)
    labels = fig.axes[0].get_legend_handles_labels()[1]
    assert labels == ["train", "val", "test (final)"]
    assert line_data(fig)["val"] == [1.8, 1.4, 1.2]
    star = fig.axes[0].collections[0].get_offsets()
    assert star.tolist() == [[3, 1.25]]


def test_lr_schedule():
    fig = plots.plot_lr_schedule(VAL_HISTORY)
    assert len(fig.axes) == 1
    assert fig.axes[0].get_lines()[0].get_ydata().tolist() == [0.05, 0.10, 0.01]
    with pytest.raises(ValueError, match="empty"):
        plots.plot_lr_schedule([])


def test_class_accuracy_bars_sorted_with_the_overall_line(report):
    fig = plots.plot_class_accuracy(report)
    assert len(fig.axes) == 1
    ax = fig.axes[0]
    widths = [bar.get_width() for bar in ax.patches]
    assert len(widths) == 10 and widths == sorted(widths, reverse=True)
    assert widths[:6] == [100.0] * 5 + [50.0]
    assert [t.get_text() for t in ax.get_yticklabels()][5] == "airplane"
    overall = [line for line in ax.get_lines() if line.get_label().startswith("overall")]
    assert overall[0].get_xdata()[0] == pytest.approx(100 * report.accuracy) == pytest.approx(55.0)


def test_confusion_matrix_is_row_normalised(report):
    fig = plots.plot_confusion_matrix(report)
    assert len(fig.axes) == 2  # the heatmap and its colorbar
    cells = np.asarray(fig.axes[0].collections[0].get_array()).reshape(10, 10)
    np.testing.assert_allclose(cells.sum(axis=1), 1.0)
    assert cells[0, 0] == 0.5 and cells[0, 1] == 0.5
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == report.classes


def test_misclassified_gallery(items, report):
    assert len(items) == 9
    fig = plots.plot_misclassified(items, report.classes)
    assert len(fig.axes) == 10  # 2 rows of 5, the last one empty
    shown = [ax for ax in fig.axes if ax.images]
    assert len(shown) == 9
    first = items[0]
    assert shown[0].get_title() == f"{report.classes[first.true]} → {report.classes[first.pred]} (86%)"  # e⁴/(e⁴+9)
    assert np.array_equal(shown[0].images[0].get_array(), first.image.permute(1, 2, 0).numpy())
    assert len(plots.plot_misclassified(items[:3], report.classes).axes) == 3


def test_gradcam_grid(items, report):
    torch.manual_seed(0)
    chosen = items[:3]
    result = gradcam_misclassified(CPU.prepare(ResNet18()), chosen, CPU)
    fig = plots.plot_gradcam(result, chosen, report.classes)
    assert len(fig.axes) == 9  # 3 rows: image, CAM for predicted, CAM for true
    assert all(len(ax.images) == 1 for ax in fig.axes)
    assert "layer3.1" in fig.get_suptitle() and "8x8" in fig.get_suptitle()
    assert fig.axes[0].get_ylabel() == "layer3.1, 8x8 map"
    assert fig.axes[1].get_title() == f"CAM for predicted: {report.classes[chosen[0].pred]}"
    assert fig.axes[2].get_title() == f"CAM for true: {report.classes[chosen[0].true]}"
    np.testing.assert_array_equal(fig.axes[4].images[0].get_array(), result.overlays_pred[1])
    with pytest.raises(ValueError, match="2 items"):
        plots.plot_gradcam(result, chosen[:2], report.classes)


def test_class_samples_one_row_per_class(test_images):
    fig = plots.plot_class_samples(test_images, per_class=2)
    assert len(fig.axes) == 20
    assert fig.axes[0].get_ylabel() == "airplane" and fig.axes[18].get_ylabel() == "truck"
    first_truck = int((test_images.labels == 9).nonzero()[0])
    assert np.array_equal(fig.axes[18].images[0].get_array(), test_images.images[first_truck].permute(1, 2, 0).numpy())


def test_augmentations_use_the_training_transforms(test_images):
    images = test_images.images[:2]
    fig = plots.plot_augmentations(images, Augmentation(), seed=0, n_views=2)
    assert len(fig.axes) == 2 * (1 + 3 + 2)  # original, crop, flip, Cutout, two full draws
    grid = np.array(fig.axes).reshape(2, 6)
    assert [ax.get_title() for ax in grid[0]] == [
        "original",
        "random crop (pad 4)",
        "horizontal flip",
        "Cutout 16x16",
        "all, draw 1",
        "all, draw 2",
    ]
    as_hwc = [img.permute(1, 2, 0).numpy() for img in images]
    for row in range(2):
        assert np.array_equal(grid[row, 0].images[0].get_array(), as_hwc[row])
        assert np.array_equal(grid[row, 2].images[0].get_array(), as_hwc[row][:, ::-1])
        assert (grid[row, 3].images[0].get_array() == 0).all(axis=-1).sum() >= 8 * 8  # a clipped 16x16 square
    assert not np.array_equal(grid[0, 4].images[0].get_array(), grid[0, 5].images[0].get_array())

    plain = plots.plot_augmentations(images[0], Augmentation(crop_padding=0, flip=False, cutout_size=0), n_views=1)
    assert len(plain.axes) == 2
    assert np.array_equal(plain.axes[1].images[0].get_array(), as_hwc[0])


def test_cutout_fills_cut_the_same_square_black_and_in_the_mean_colour(test_images):
    images = test_images.images[:2]
    grid = np.array(plots.plot_cutout_fills(images, size=16, seed=3).axes).reshape(2, 3)
    assert [ax.get_title() for ax in grid[0]] == ["original", "Cutout, zero fill", "Cutout, mean fill"]
    for row in range(2):
        original, black, mean = (grid[row, col].images[0].get_array() for col in range(3))
        cut_black, cut_mean = (black != original).any(axis=-1), (mean != original).any(axis=-1)
        assert cut_black.sum() >= 8 * 8 and (black[cut_black] == 0).all()
        assert np.array_equal(cut_black, cut_mean), "the same square, only the fill differs"
        assert (mean[cut_mean] == CIFAR10_MEAN_UINT8).all()


def test_feature_map_sizes():
    shapes = feature_map_shapes(ResNet18())
    fig = plots.plot_feature_map_sizes(shapes, target="layer3.1")
    assert len(fig.axes) == 1
    assert [bar.get_width() for bar in fig.axes[0].patches] == [s[1] for s in shapes.values()]


def test_save_figure_writes_a_png(tmp_path):
    path = plots.save_figure(plots.plot_lr_schedule(VAL_HISTORY), tmp_path / "new" / "folder" / "lr.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert path.stat().st_size > 5_000
