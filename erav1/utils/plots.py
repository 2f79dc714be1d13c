"""Every figure of the book and of ``erav1 analyze``; each function returns a matplotlib Figure.

Figures are built from ``matplotlib.figure.Figure``, not pyplot, so nothing is
registered globally: they render under any backend (Agg in tests and the
CLI), are freed once dropped, and a notebook shows one that is a cell's last
value (or ``display(fig)``).  :func:`save_figure` writes any of them as PNG.
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import seaborn as sns
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from erav1.utils.cam_trust import RANDOM, CamComparison, Faithfulness, RandomisationCheck
from erav1.utils.data import ImageSet
from erav1.utils.evaluation import EvaluationReport
from erav1.utils.gradcam import CAM_METHODS, MIN_MAP_SIZE, GradCamResult, overlay
from erav1.utils.lr_finder import LRRangeTest
from erav1.utils.misclassified import Misclassified
from erav1.utils.transforms import CUTOUT_FILLS, Augmentation, cutout, random_crop, random_horizontal_flip

if TYPE_CHECKING:
    from erav1.study_report import LeverEffect

History = Sequence[dict[str, float]]


class NotebookFigure(Figure):
    """A Figure that Jupyter shows as a PNG when it is a cell's value.

    A bare ``Figure`` only renders once the inline backend is active, which
    with matplotlib >= 3.8 happens on the first pyplot call; these figures
    never make one, so they say how to draw themselves.
    """

    def _repr_png_(self) -> bytes:
        buffer = io.BytesIO()
        self.savefig(buffer, format="png", bbox_inches="tight")
        return buffer.getvalue()


def _figure(
    nrows: int = 1, ncols: int = 1, figsize: tuple[float, float] = (7.0, 4.5), style: str = "whitegrid"
) -> tuple[Figure, np.ndarray]:
    """A constrained-layout Figure and its ``(nrows, ncols)`` axes, in a seaborn style (no global rcParams)."""
    with sns.axes_style(style):
        fig = NotebookFigure(figsize=figsize, layout="constrained")
        axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, axes


def _show_image(ax: Axes, image: np.ndarray | torch.Tensor, interpolation: str = "bicubic") -> None:
    """One image (``(3, H, W)`` uint8 tensor or ``(H, W, 3)`` array), upscaled by ``imshow``, without ticks."""
    if isinstance(image, torch.Tensor):
        image = image.detach().cpu().permute(1, 2, 0).numpy()
    ax.imshow(image, interpolation=interpolation)
    ax.set(xticks=[], yticks=[])
    for spine in ax.spines.values():
        spine.set_visible(False)


def save_figure(fig: Figure, path: str | os.PathLike, dpi: int = 150) -> Path:
    """Write ``fig`` as PNG (or whatever the suffix says), creating the folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    return path


# --- training curves -----------------------------------------------------------------------


def _eval_split(history: History) -> str:
    """The split scored every epoch: ``val`` when the run held one out, else ``test``."""
    if not history:
        raise ValueError("the history is empty: no finished epoch to plot")
    return "val" if "val_loss" in history[0] else "test"


def _plot_curves(history: History, metric: str, ylabel: str, title: str, scale: float = 1.0) -> Figure:
    """Train and eval ``metric`` per epoch; with a validation split, the final test score as a star."""
    split = _eval_split(history)
    fig, axes = _figure()
    ax = axes[0, 0]
    epochs = [r["epoch"] for r in history]
    for name in ("train", split):
        ax.plot(epochs, [scale * r[f"{name}_{metric}"] for r in history], marker="o", label=name)
    final = history[-1].get(f"test_{metric}")
    if split == "val" and final is not None:
        ax.scatter([epochs[-1]], [scale * final], marker="*", s=200, color="crimson", zorder=3, label="test (final)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set(xlabel="epoch", ylabel=ylabel, title=title)
    ax.legend()
    return fig


def plot_loss_curves(history: History) -> Figure:
    return _plot_curves(history, "loss", "cross-entropy loss", "Loss")


def plot_accuracy_curves(history: History) -> Figure:
    return _plot_curves(history, "acc", "accuracy (%)", "Accuracy", scale=100.0)


def plot_lr_schedule(history: History) -> Figure:
    """The learning rate of each epoch's last step (the schedule itself steps every batch)."""
    _eval_split(history)
    fig, axes = _figure()
    ax = axes[0, 0]
    ax.plot([r["epoch"] for r in history], [r["lr"] for r in history], marker="o")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set(xlabel="epoch", ylabel="learning rate", title="Learning-rate schedule (at the end of each epoch)")
    return fig


# --- test-set results ----------------------------------------------------------------------


def plot_class_accuracy(report: EvaluationReport) -> Figure:
    """One bar per class, best first, and a line at the overall accuracy."""
    ranked = sorted(
        report.class_accuracy.items(), key=lambda kv: -math.inf if math.isnan(kv[1]) else kv[1], reverse=True
    )
    names = [name for name, _ in ranked]
    percent = [100 * acc for _, acc in ranked]
    fig, axes = _figure(figsize=(8.0, 1.5 + 0.45 * len(names)))
    ax = axes[0, 0]
    sns.barplot(x=percent, y=names, hue=names, palette="viridis", legend=False, orient="h", ax=ax)
    for row, value in enumerate(percent):
        ax.text(value + 1, row, f"{value:.1f}%", va="center", fontsize=9)
    ax.axvline(100 * report.accuracy, color="crimson", linestyle="--", label=f"overall {100 * report.accuracy:.1f}%")
    ax.set(xlim=(0, 110), xlabel="accuracy (%)", ylabel="", title="Class-wise accuracy")
    ax.legend(loc="lower right")
    return fig


def plot_confusion_matrix(report: EvaluationReport) -> Figure:
    """Row-normalised: each row shows where the images of one true class went."""
    counts = report.confusion.double()
    rows = (counts / counts.sum(dim=1, keepdim=True)).numpy()  # NaN for a class without images
    fig, axes = _figure(figsize=(9.0, 7.5), style="white")
    ax = axes[0, 0]
    sns.heatmap(
        rows,
        annot=True,
        fmt=".2f",
        cmap="Blues",
        vmin=0,
        vmax=1,
        square=True,
        ax=ax,
        xticklabels=report.classes,
        yticklabels=report.classes,
        annot_kws={"fontsize": 8},
        cbar_kws={"label": "fraction of the true class"},
    )
    ax.set(xlabel="predicted class", ylabel="true class", title="Confusion matrix (each row sums to 1)")
    ax.tick_params(axis="x", rotation=45)
    ax.tick_params(axis="y", rotation=0)
    return fig


def _grid(n: int, ncols: int) -> tuple[int, int]:
    ncols = max(1, min(ncols, n))
    return max(1, math.ceil(n / ncols)), ncols


def _caption(item: Misclassified, classes: Sequence[str]) -> str:
    return f"{classes[item.true]} → {classes[item.pred]} ({item.confidence:.0%})"


def plot_misclassified(
    items: Sequence[Misclassified], classes: Sequence[str], ncols: int = 5, interpolation: str = "bicubic"
) -> Figure:
    """A gallery titled "true → predicted (confidence)", the 32x32 images upscaled to be readable."""
    nrows, ncols = _grid(len(items), ncols)
    fig, axes = _figure(nrows, ncols, figsize=(2.6 * ncols, 2.8 * nrows + 0.4), style="white")
    for ax in axes.flat:
        ax.set_axis_off()
    for ax, item in zip(axes.flat, items, strict=False):
        _show_image(ax, item.image, interpolation)
        ax.set_axis_on()
        ax.set_title(_caption(item, classes), fontsize=10)
    if items:
        fig.suptitle(f"{len(items)} misclassified images: true → predicted (confidence)")
    else:
        axes[0, 0].text(0.5, 0.5, "no misclassified images", ha="center", va="center")
    return fig


def plot_gradcam(result: GradCamResult, items: Sequence[Misclassified], classes: Sequence[str]) -> Figure:
    """One row per image: the image, the CAM for the predicted class, the CAM for the true class."""
    if len(items) != len(result.images):
        raise ValueError(f"{len(items)} items for a Grad-CAM result of {len(result.images)} images")
    h, w = result.map_size
    where = f"{result.layer}, {h}x{w} map"
    fig, axes = _figure(max(1, len(items)), 3, figsize=(8.0, 2.7 * max(1, len(items)) + 0.5), style="white")
    for row, item in enumerate(items):
        true, pred = classes[item.true], classes[item.pred]
        panels = [
            (result.images[row], f"#{item.index}: {_caption(item, classes)}"),
            (result.overlays_pred[row], f"CAM for predicted: {pred}"),
            (result.overlays_true[row], f"CAM for true: {true}"),
        ]
        for ax, (image, title) in zip(axes[row], panels, strict=True):
            _show_image(ax, image)
            ax.set_title(title, fontsize=9)
        axes[row, 0].set_ylabel(where, fontsize=8)
    if not items:
        for ax in axes.flat:
            ax.set_axis_off()
        axes[0, 1].text(0.5, 0.5, "no misclassified images", ha="center", va="center")
    size = result.images.shape[1] if len(items) else 32
    fig.suptitle(f"Grad-CAM at {result.layer}: its {h}x{w} feature map, upsampled to {size}x{size}")
    return fig


# --- the data and the model, for the book ----------------------------------------------------


def plot_class_samples(dataset: ImageSet, per_class: int = 8, interpolation: str = "bicubic") -> Figure:
    """One row per class: its first ``per_class`` images in dataset order."""
    classes = dataset.classes
    fig, axes = _figure(len(classes), per_class, figsize=(1.2 * per_class + 1.2, 1.2 * len(classes)), style="white")
    labels = dataset.labels.cpu()
    for c, row in enumerate(axes):
        indices = (labels == c).nonzero().flatten()[:per_class].tolist()
        for ax in row:
            ax.set_axis_off()
        for ax, i in zip(row, indices, strict=False):
            _show_image(ax, dataset.images[i], interpolation)
            ax.set_axis_on()
        row[0].set_axis_on()
        row[0].set(xticks=[], yticks=[])
        row[0].set_ylabel(classes[c], rotation=0, ha="right", va="center")
    return fig


def plot_augmentations(
    images: torch.Tensor,
    augmentation: Augmentation,
    seed: int = 0,
    n_views: int = 4,
    interpolation: str = "nearest",
) -> Figure:
    """Each image beside what training does to it, using the training code's own transforms.

    Columns: the original, each enabled step alone (crop, flip, Cutout, all
    applied every time), then ``n_views`` independent draws of the full
    ``augmentation``.  Nearest-neighbour upscaling keeps the crop's padding and
    Cutout's square crisp.
    """
    batch = images.unsqueeze(0) if images.dim() == 3 else images
    generator = torch.Generator(device=batch.device).manual_seed(seed)
    columns = [("original", batch)]
    if augmentation.crop_padding:
        pad = augmentation.crop_padding
        columns.append((f"random crop (pad {pad})", random_crop(batch, pad, generator)))
    if augmentation.flip:
        columns.append(("horizontal flip", random_horizontal_flip(batch, generator, p=1.0)))
    if augmentation.cutout_size:
        size = augmentation.cutout_size
        columns.append((f"Cutout {size}x{size}", cutout(batch, size, generator, 1.0, augmentation.cutout_fill)))
    columns += [(f"all, draw {v + 1}", augmentation(batch, generator)) for v in range(n_views)]
    return _image_columns(columns, 1.6, interpolation)


def _image_columns(columns: list[tuple[str, torch.Tensor]], width: float, interpolation: str) -> Figure:
    """A grid with one titled column per ``(title, batch)``, one row per image of the batches."""
    rows = len(columns[0][1])
    fig, axes = _figure(rows, len(columns), figsize=(width * len(columns), 1.7 * rows + 0.3), style="white")
    for col, (title, views) in enumerate(columns):
        axes[0, col].set_title(title, fontsize=9)
        for row in range(rows):
            _show_image(axes[row, col], views[row], interpolation)
    return fig


def plot_cutout_fills(images: torch.Tensor, size: int = 16, seed: int = 0, interpolation: str = "nearest") -> Figure:
    """The same Cutout squares (same seed) filled both ways: black, and the mean colour.

    Columns: the original, then one column per fill in :data:`CUTOUT_FILLS`, so the reader
    compares the fills, not two different squares.
    """
    batch = images.unsqueeze(0) if images.dim() == 3 else images
    columns = [("original", batch)] + [
        (f"Cutout, {fill} fill", cutout(batch, size, torch.Generator(device=batch.device).manual_seed(seed), 1.0, fill))
        for fill in CUTOUT_FILLS
    ]
    return _image_columns(columns, 1.8, interpolation)


def plot_feature_map_sizes(
    shapes: dict[str, tuple[int, int, int]], target: str | None = None, min_size: int = MIN_MAP_SIZE
) -> Figure:
    """The side of each layer's feature map, from :func:`erav1.utils.gradcam.feature_map_shapes`.

    Bars under ``min_size`` are grey: too coarse for Grad-CAM.  ``target``,
    e.g. the chosen Grad-CAM layer, is highlighted.
    """
    names = list(shapes)
    sides = [shapes[n][1] for n in names]
    palette = [
        "crimson" if n == target else "tab:blue" if s >= min_size else "tab:gray"
        for n, s in zip(names, sides, strict=True)
    ]
    fig, axes = _figure(figsize=(8.0, 1.0 + 0.35 * len(names)))
    ax = axes[0, 0]
    sns.barplot(x=sides, y=names, hue=names, palette=palette, legend=False, orient="h", ax=ax)
    for row, name in enumerate(names):
        c, h, w = shapes[name]
        ax.text(sides[row] + 0.3, row, f"{c}×{h}×{w}", va="center", fontsize=8)
    ax.axvline(min_size, color="black", linestyle=":", label=f"Grad-CAM needs ≥ {min_size}x{min_size}")
    ax.set(
        xlim=(0, max(sides) * 1.25),
        xlabel="feature-map side (px)",
        ylabel="",
        title="Feature-map size after each layer",
    )
    ax.legend(loc="lower right")
    return fig


# --- can a CAM be trusted (chapter 7) and the LR range test (chapter 3) ------------------------


def plot_cam_comparison(comparison: CamComparison, rows: int | None = None) -> Figure:
    """One row per image (the first ``rows``), the image, then one overlay per column of the comparison."""
    sample, columns = comparison.sample, comparison.columns
    n = len(sample) if rows is None else min(rows, len(sample))
    images = sample.images01()[:n]
    labels = sample.labels()[:n]
    fig, axes = _figure(
        max(1, n), 1 + len(columns), figsize=(1.9 * (1 + len(columns)), 2.1 * max(1, n) + 0.6), style="white"
    )
    for ax in axes.flat:
        ax.set_axis_off()
    for col, column in enumerate(columns, start=1):
        axes[0, col].set_title(column.title, fontsize=9)
        for row, blended in enumerate(overlay(images, column.cams[:n])):
            _show_image(axes[row, col], blended)
            axes[row, col].set_axis_on()
    axes[0, 0].set_title("image", fontsize=9)
    for row in range(n):
        _show_image(axes[row, 0], images[row])
        axes[row, 0].set_axis_on()
        axes[row, 0].set_ylabel(labels[row], fontsize=8)
    fig.suptitle(comparison.title)
    return fig


def plot_road_curves(result: Faithfulness) -> Figure:
    """Mean confidence in the predicted class as pixels are removed, MoRF and LeRF side by side."""
    fig, axes = _figure(1, 2, figsize=(11.0, 4.5))
    x = [0, *result.removed]
    base = float(result.base.mean())
    palette = dict(zip(result.methods, sns.color_palette("tab10", len(result.methods)), strict=True))
    for ax, kind, curves in (
        (axes[0, 0], "MoRF: most relevant removed first (lower is better)", result.morf),
        (axes[0, 1], "LeRF: least relevant removed first (higher is better)", result.lerf),
    ):
        for method in result.methods:
            label = "random map" if method == RANDOM else CAM_METHODS[method].label
            style = {"color": "black", "linestyle": "--"} if method == RANDOM else {"color": palette[method]}
            ax.plot(x, [base, *curves[method].mean(axis=1)], marker="o", markersize=3, label=label, **style)
        ax.set(xlabel="pixels removed (%)", ylabel="mean confidence in the predicted class", title=kind, ylim=(0, 1.02))
        ax.title.set_fontsize(10)
    axes[0, 1].legend(fontsize=8, loc="lower left")
    fig.suptitle(f"ROAD on {len(result.sample)} test images, CAMs at {result.layer}")
    return fig


def plot_randomisation(check: RandomisationCheck) -> Figure:
    """Rank correlation with the trained model's CAM after each cumulative re-initialisation: every image, and
    the mean."""
    names = [c.name for c in check.maps.columns]
    labels = [n if i == 0 else f"+ {n}" for i, n in enumerate(names)]
    values = np.stack([check.correlation[n] for n in names])  # (stages, N)
    fig, axes = _figure(figsize=(8.0, 4.5))
    ax = axes[0, 0]
    ax.plot(labels, values, color="tab:blue", alpha=0.15, linewidth=1)
    ax.plot(labels, values.mean(axis=1), color="crimson", marker="o", linewidth=2.5, label="mean over the images")
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set(
        xlabel="re-initialised, from the top down (cumulative)",
        ylabel="Spearman's rank correlation",
        title=f"Grad-CAM at {check.maps.columns[0].layer} against the trained model's",
        ylim=(-1.02, 1.02),
    )
    ax.legend(loc="upper right")
    return fig


def plot_lr_range_test(test: LRRangeTest, chosen_lr: float) -> Figure:
    """torch-lr-finder's own plot (loss against lr, its suggestion marked) beside the validation-chosen peak."""
    fig, axes = _figure()
    ax = axes[0, 0]
    suggestion = test.draw(ax)
    ax.axvline(chosen_lr, color="black", linestyle="--", label=f"validation-chosen peak {chosen_lr:g}")
    ax.axvline(suggestion, color="red", linestyle=":", label=f"suggestion {suggestion:.3g}")
    ax.set(title=f"LR range test: {len(test.lrs)} batches of {test.batch_size}, lr growing exponentially")
    ax.legend()
    return fig


# --- the recipe study (chapter 3) -------------------------------------------------------------


def plot_lever_effects(effects: Sequence[LeverEffect]) -> Figure:
    """One bar per lever changed alone: points of validation accuracy gained over trial 0, best on top.

    A pruned trial is hatched and compared at the epoch where it was stopped, as :class:`LeverEffect` says.
    """
    ranked = sorted(effects, key=lambda effect: effect.points)
    fig, axes = _figure(figsize=(8.0, 1.5 + 0.5 * max(len(ranked), 1)))
    ax = axes[0, 0]
    for row, effect in enumerate(ranked):
        colour = "tab:green" if effect.points > 0 else "tab:red"
        hatch = "//" if effect.pruned else None
        ax.barh(row, effect.points, color=colour, alpha=0.45 if effect.pruned else 0.85, hatch=hatch, edgecolor=colour)
        ending = f", pruned at epoch {effect.epoch}" if effect.pruned else ""
        ax.annotate(  # right of the bar, or of zero for a loss, where the row is empty
            f"{effect.points:+.2f} (trial {effect.trial}{ending})",
            (max(effect.points, 0.0), row),
            xytext=(4, 0),
            textcoords="offset points",
            va="center",
            fontsize=9,
        )
    ax.set_yticks(range(len(ranked)), [", ".join(f"{k}={v}" for k, v in e.change.items()) for e in ranked])
    ax.axvline(0, color="black", linewidth=0.8)
    low = min((e.points for e in ranked), default=0.0)
    high = max((e.points for e in ranked), default=0.0)
    left = min(low, 0.0) - 0.05 * max(high - low, 0.5)
    right = max(high, 0.0)
    ax.set_xlim(left, 2 * right - left)  # the labels get as much room as the bars
    ax.set(
        xlabel="validation accuracy minus trial 0's at the same epoch (points)",
        title="Each lever changed alone, against trial 0 (one seed each)",
    )
    return fig
