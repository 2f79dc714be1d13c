"""Can a CAM be trusted? The layer, the method, faithfulness (ROAD) and a randomisation sanity check.

A heatmap always looks like an explanation, so chapter 7 tests it four ways:

* :func:`cams_by_layer`: Grad-CAM of the same images at the end of every residual stage,
  to show what the map's resolution does;
* :func:`cams_by_method`: the ``grad-cam`` package's CAM methods side by side at one layer;
* :func:`measure_faithfulness`: ROAD (Rong et al., 2022): delete the pixels a map ranks most
  (or least) relevant and measure how the model's confidence falls, against a random map;
* :func:`randomisation_check`: re-initialise the model from the top down (Adebayo et al., 2018);
  a map that does not change is not explaining the trained model.

Every CAM comes from :func:`erav1.utils.gradcam.compute_cams`, so all of them share chapter 6's
batching and target rules. Everything random is seeded by an explicit ``seed``.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from pytorch_grad_cam.metrics.road import ROADLeastRelevantFirst, ROADMostRelevantFirst
from pytorch_grad_cam.utils.image import scale_cam_image
from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget
from scipy.stats import rankdata
from torch import nn

from erav1.errors import UsageError
from erav1.models.summary import STAGES, output_shapes, restored_modes
from erav1.utils.data import ImageSet, iter_batches
from erav1.utils.evaluation import Predictions
from erav1.utils.gradcam import CAM_METHODS, MIN_MAP_SIZE, check_methods, compute_cams, resolve_target_layer
from erav1.utils.misclassified import Misclassified
from erav1.utils.policies import Runtime
from erav1.utils.progress import text_bar
from erav1.utils.text import Markdown, markdown_table
from erav1.utils.transforms import CIFAR10_STD, normalize

# The defaults of chapter 7 and of `erav1 analyze`, so that both measure the same table.
METHODS = tuple(CAM_METHODS)
SAMPLE_SIZE = 20  # test images in the faithfulness sample: half classified correctly, half wrongly
SEED = 0
# ROAD's own percentiles. The package's percentile p *keeps* the p% of pixels ranked lowest
# (MoRF) or highest (LeRF) and imputes the rest, so each step removes 100 - p percent.
PERCENTILES = (10, 20, 30, 40, 50, 60, 70, 80, 90)
RANDOM = "random"  # the baseline map: seeded noise at the layer's resolution, upsampled like a CAM
ROAD_NOISE = 0.01  # NoisyLinearImputer's default noise, absolute, in the units of the model's input
ROAD_BATCH = 64


# --- the images ----------------------------------------------------------------------------------


@dataclass
class Sample:
    """Test images with their true and predicted classes; every CAM here targets the predicted class."""

    indices: list[int]  # positions in the test set
    images: torch.Tensor  # (N, 3, H, W) uint8
    true: list[int]
    pred: list[int]
    classes: list[str]

    def __len__(self) -> int:
        return len(self.indices)

    @classmethod
    def from_misclassified(cls, items: Sequence[Misclassified], classes: Sequence[str]) -> Sample:
        images = torch.stack([item.image for item in items]) if items else torch.zeros(0, 3, 32, 32, dtype=torch.uint8)
        return cls(
            [i.index for i in items], images.cpu(), [i.true for i in items], [i.pred for i in items], list(classes)
        )

    @classmethod
    def stratified(cls, predictions: Predictions, dataset: ImageSet, n: int = SAMPLE_SIZE, seed: int = SEED) -> Sample:
        """``n`` test images drawn with ``seed``: half of them misclassified (all, if there are fewer), the rest
        classified correctly.  A plain random draw from a 90%-accurate model would hold almost no mistakes."""
        if n < 1:
            raise UsageError(f"the sample needs at least 1 image, got {n}")
        if len(predictions.targets) != len(dataset) or not torch.equal(predictions.targets, dataset.labels.cpu()):
            raise ValueError("the predictions were made on another dataset: their targets differ from its labels")
        generator = torch.Generator().manual_seed(seed)
        preds = predictions.preds
        wrong = (preds != predictions.targets).nonzero().flatten()
        wrong = wrong[torch.randperm(len(wrong), generator=generator)]
        right = (preds == predictions.targets).nonzero().flatten()
        right = right[torch.randperm(len(right), generator=generator)]
        n = min(n, len(preds))
        n_wrong = min(len(wrong), max(n // 2, n - len(right)))
        chosen = torch.cat([wrong[:n_wrong], right[: n - n_wrong]]).sort().values
        return cls(
            chosen.tolist(),
            dataset.images[chosen].cpu(),
            predictions.targets[chosen].tolist(),
            preds[chosen].tolist(),
            list(dataset.classes),
        )

    @property
    def correct(self) -> np.ndarray:
        return np.array(self.true) == np.array(self.pred)

    def labels(self) -> list[str]:
        """'#12: cat' for a correct prediction, '#12: cat → dog' (true → predicted) for a mistake."""
        return [
            f"#{i}: {self.classes[t]}" + ("" if t == p else f" → {self.classes[p]}")
            for i, t, p in zip(self.indices, self.true, self.pred, strict=True)
        ]

    def images01(self) -> np.ndarray:
        """``(N, H, W, 3)`` RGB floats in [0, 1], for overlays."""
        return self.images.permute(0, 2, 3, 1).float().numpy() / 255.0


# --- CAMs side by side -------------------------------------------------------------------------


@dataclass
class CamColumn:
    """One setting's CAMs of every image of a sample, with what was measured while computing them."""

    name: str  # the layer, the method or the re-initialised stage
    title: str  # the figure's column title
    layer: str
    map_shape: tuple[int, int, int]  # (C, H, W) of the layer's output, before upsampling
    cams: np.ndarray  # (N, H, W) in [0, 1]
    seconds: float  # wall time for all N images

    @property
    def seconds_per_image(self) -> float:
        return self.seconds / max(1, len(self.cams))


@dataclass
class CamComparison:
    """The same images under several settings; :func:`erav1.utils.plots.plot_cam_comparison` draws it."""

    title: str
    sample: Sample
    columns: list[CamColumn]

    def column(self, name: str) -> CamColumn:
        return next(c for c in self.columns if c.name == name)


def _column(
    model: nn.Module,
    sample: Sample,
    runtime: Runtime,
    layer: str,
    method: str,
    name: str,
    title: Callable[[CamColumn], str] = lambda column: column.name,
    allow_coarse: bool = False,
) -> CamColumn:
    """One column, timed; ``title`` words it from what was measured."""
    target = resolve_target_layer(model, layer, sample.images.shape[-1], allow_coarse)
    shape = output_shapes(model, [target.name], sample.images.shape[-1])[target.name]
    started = time.perf_counter()
    cams = compute_cams(
        model, sample.images, sample.pred, runtime, target.name, allow_coarse=allow_coarse, method=method
    )
    column = CamColumn(name, name, target.name, shape, cams, time.perf_counter() - started)
    return dataclasses.replace(column, title=title(column))


def _map_size(column: CamColumn) -> str:
    return f"{column.name}: {column.map_shape[1]}x{column.map_shape[2]} map"


def _label_and_time(column: CamColumn) -> str:
    return f"{CAM_METHODS[column.name].label}\n{column.seconds_per_image:.2f} s per image"


def cams_by_layer(model: nn.Module, sample: Sample, runtime: Runtime, layers: Sequence[str] = STAGES) -> CamComparison:
    """Grad-CAM for the predicted class at the end of each layer, coarse ones included on purpose."""
    columns = [
        _column(model, sample, runtime, layer, "gradcam", layer, _map_size, allow_coarse=True) for layer in layers
    ]
    return CamComparison("Grad-CAM of the predicted class at the end of each stage", sample, columns)


def cams_by_method(
    model: nn.Module,
    sample: Sample,
    runtime: Runtime,
    methods: Sequence[str] = METHODS,
    layer: str = "auto",
) -> CamComparison:
    """Every method's CAM for the predicted class at one layer, each timed."""
    columns = [
        _column(model, sample, runtime, layer, method, method, _label_and_time) for method in check_methods(methods)
    ]
    return CamComparison(f"CAM methods of the grad-cam package at {columns[0].layer}", sample, columns)


def _cell(image_size: int, map_shape: tuple[int, int, int]) -> str:
    _, h, w = map_shape
    return f"{image_size // h}x{image_size // w} px"


def describe_layers(comparison: CamComparison) -> Markdown:
    """Map size and cell size of every layer, measured; which ones fall under chapter 6's minimum."""
    size = comparison.sample.images.shape[-1]
    rows = [
        [
            c.layer,
            f"{c.map_shape[1]}x{c.map_shape[2]}",
            _cell(size, c.map_shape),
            "yes" if min(c.map_shape[1:]) >= MIN_MAP_SIZE else f"no (under {MIN_MAP_SIZE}x{MIN_MAP_SIZE})",
        ]
        for c in comparison.columns
    ]
    coarsest = min(comparison.columns, key=lambda c: c.map_shape[1])
    _, h, w = coarsest.map_shape
    return Markdown(
        markdown_table(["layer", "map", "one cell covers", "fine enough to localise?"], rows)
        + f"\n\nAt {coarsest.layer} the whole {size}x{size} image is {h * w} cells of "
        f"{_cell(size, coarsest.map_shape)}: after upsampling, the heatmap can only brighten a few blocks of "
        f"{size // h} px, whatever the object's shape."
    )


def describe_methods(comparison: CamComparison) -> Markdown:
    """What each method cost per image here, and why Score-CAM is the slow one."""
    rows = [[CAM_METHODS[c.name].label, f"{c.seconds_per_image:.3f}"] for c in comparison.columns]
    text = markdown_table(["method", "seconds per image (this machine)"], rows)
    if "scorecam" in [c.name for c in comparison.columns]:
        channels = comparison.column("scorecam").map_shape[0]
        text += (
            f"\n\nScore-CAM needs no gradient but one forward pass per channel of "
            f"{comparison.column('scorecam').layer}: {channels} passes for every image."
        )
    return Markdown(text)


# --- faithfulness: ROAD ------------------------------------------------------------------------


@contextlib.contextmanager
def _seeded_torch(seed: int) -> Iterator[None]:
    """The package draws its noise from torch's global generator: seed it here, and give it back afterwards."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def untie(cams: np.ndarray, seed: int = SEED) -> np.ndarray:
    """The same ranking of pixels with ties broken at random (seeded), as ranks scaled to [0, 1].

    ROAD thresholds a map at a percentile and keeps the pixels strictly below it. Grad-CAM's
    ReLU leaves many pixels at exactly 0, and with ties a "remove 10%" step can remove all of
    them. Ranking first makes every step remove the share of pixels it names.
    """
    rng = np.random.default_rng(seed)
    flat = cams.reshape(len(cams), -1)
    order = np.lexsort((rng.random(flat.shape), flat), axis=-1)  # by value, ties by the random key
    ranks = np.empty_like(order)
    np.put_along_axis(ranks, order, np.arange(flat.shape[1])[None].repeat(len(flat), 0), axis=-1)
    return (ranks / max(1, flat.shape[1] - 1)).astype(np.float32).reshape(cams.shape)


def random_maps(n: int, map_size: tuple[int, int], image_size: tuple[int, int], seed: int = SEED) -> np.ndarray:
    """Noise at the layer's resolution, upsampled and scaled the way the package does a CAM: no information,
    but the same blockiness, so the baseline removes pixels in blobs as a CAM does."""
    noise = np.random.default_rng(seed).random((n, *map_size), dtype=np.float32)
    return scale_cam_image(scale_cam_image(noise, image_size[::-1]))


@dataclass
class Faithfulness:
    """ROAD scores of every method, and of a random map, on one sample.

    ``morf[m]`` and ``lerf[m]`` are ``(P, N)``: the softmax confidence in the predicted class
    after removing ``removed[p]`` percent of the pixels, most (MoRF) or least (LeRF) relevant first.
    """

    methods: list[str]  # the CAM methods, then RANDOM
    layer: str
    removed: list[int]  # percent of pixels removed at each step, ascending
    base: np.ndarray  # (N,) confidence before any removal
    morf: dict[str, np.ndarray]
    lerf: dict[str, np.ndarray]
    sample: Sample
    seed: int
    seconds: float

    def morf_drop(self, method: str) -> np.ndarray:
        """Per image, the confidence lost on average over the steps (higher: the map found what matters)."""
        return (self.base[None] - self.morf[method]).mean(axis=0)

    def lerf_drop(self, method: str) -> np.ndarray:
        """Per image, the confidence lost removing the least relevant pixels first (lower is better)."""
        return (self.base[None] - self.lerf[method]).mean(axis=0)

    def combined(self, method: str) -> np.ndarray:
        """Per image, the package's ROADCombined: (LeRF - MoRF) / 2 of the confidence changes, which is
        (MoRF drop - LeRF drop) / 2."""
        return (self.morf_drop(method) - self.lerf_drop(method)) / 2

    def ranking(self) -> list[str]:
        """Every method and the random map, best combined score first."""
        return sorted(self.methods, key=lambda m: -float(self.combined(m).mean()))

    def table(self) -> list[dict[str, Any]]:
        correct = self.sample.correct
        rows = []
        for m in self.ranking():
            combined = self.combined(m)
            rows.append(
                {
                    "method": m,
                    "label": _label(m),
                    "morf_drop": float(self.morf_drop(m).mean()),
                    "lerf_drop": float(self.lerf_drop(m).mean()),
                    "combined": float(combined.mean()),
                    "combined_correct": float(combined[correct].mean()) if correct.any() else None,
                    "combined_wrong": float(combined[~correct].mean()) if (~correct).any() else None,
                }
            )
        return rows

    def to_dict(self) -> dict[str, Any]:
        """For metrics.json: the sample, the settings and the table."""
        return {
            "layer": self.layer,
            "seed": self.seed,
            "target": "predicted class (softmax confidence)",
            "num_images": len(self.sample),
            "num_correct": int(self.sample.correct.sum()),
            "indices": list(self.sample.indices),
            "percent_removed": list(self.removed),
            "table": self.table(),
        }


def _label(method: str) -> str:
    return "random map" if method == RANDOM else CAM_METHODS[method].label


class _FloatOutput(nn.Module):
    """The model under the run's precision with fp32 outputs, which the package's targets turn into numpy."""

    def __init__(self, model: nn.Module, runtime: Runtime) -> None:
        super().__init__()
        self.model, self.runtime = model, runtime

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with self.runtime.autocast():
            return self.model(x).float()


def _road(
    model: nn.Module,
    x: torch.Tensor,
    cams: np.ndarray,
    targets: list,
    percentiles: Sequence[int],
    seed: int,
    step: Callable[[], Any],
) -> tuple[np.ndarray, np.ndarray]:
    """Confidence after each MoRF and LeRF step, ``(P, N)`` each, through the package's ROAD classes.

    Seeded the same way for every map, so all maps meet the same imputation noise; LeRF runs
    before MoRF, as in the package's ROADCombined.
    """
    results = {}
    with _seeded_torch(seed):
        for kind, metric in (("lerf", ROADLeastRelevantFirst), ("morf", ROADMostRelevantFirst)):
            per_step = []
            for percentile in percentiles:
                road = metric(percentile)
                scores = [
                    road(x[idx], cams[idx], targets[idx], model, return_diff=False)
                    for idx in iter_batches(len(x), ROAD_BATCH)
                ]
                per_step.append(np.concatenate(scores))
                step()
            results[kind] = np.stack(per_step)
    return results["morf"], results["lerf"]


def measure_faithfulness(
    model: nn.Module,
    sample: Sample,
    runtime: Runtime,
    methods: Sequence[str] = METHODS,
    layer: str = "auto",
    seed: int = SEED,
    percentiles: Sequence[int] = PERCENTILES,
    progress: bool = True,
    allow_coarse: bool = False,
) -> Faithfulness:
    """ROAD for each method's CAM of the predicted class, and for a random map, on ``sample``.

    The imputation works on the model's input, the normalised image, which is what the
    package expects: its linear interpolation commutes with the per-channel normalisation,
    and only its small noise term is in normalised units. Confidences are computed under
    the run's precision, in eval mode.
    """
    methods = check_methods(methods)
    if not all(0 < p < 100 for p in percentiles):
        raise UsageError(f"ROAD percentiles must lie strictly between 0 and 100, got {list(percentiles)}")
    if len(sample) == 0:
        raise UsageError("the faithfulness sample is empty")
    started = time.perf_counter()
    percentiles = sorted(percentiles, reverse=True)  # so that the share of pixels removed grows step by step
    target = resolve_target_layer(model, layer, sample.images.shape[-1], allow_coarse)
    x = normalize(sample.images.to(runtime.device)).contiguous(memory_format=runtime.memory_format)
    targets = [ClassifierOutputSoftmaxTarget(c) for c in sample.pred]
    names = [*methods, RANDOM]
    morf, lerf = {}, {}
    bar = text_bar(total=len(names) * (1 + 2 * len(percentiles)), desc="ROAD", unit="step", enabled=progress)
    scored = _FloatOutput(model, runtime)
    with restored_modes(model), torch.no_grad():
        model.eval()
        base = torch.cat([scored(x[idx]).softmax(1) for idx in iter_batches(len(x), ROAD_BATCH)])
        base = base[torch.arange(len(x)), torch.tensor(sample.pred)].cpu().numpy()
        for name in names:
            bar.set_postfix(method=name, refresh=False)
            if name == RANDOM:
                cams = random_maps(len(sample), target.map_size, tuple(sample.images.shape[-2:]), seed)
            else:
                cams = compute_cams(
                    model, sample.images, sample.pred, runtime, target.name, allow_coarse=allow_coarse, method=name
                )
            bar.update()
            morf[name], lerf[name] = _road(scored, x, untie(cams, seed), targets, percentiles, seed, bar.update)
    bar.close()
    return Faithfulness(
        names,
        target.name,
        [100 - p for p in percentiles],
        base,
        morf,
        lerf,
        sample,
        seed,
        time.perf_counter() - started,
    )


def describe_faithfulness(result: Faithfulness) -> Markdown:
    """The table, and which method ranks first, how far ahead, and what the random map scores."""
    rows = [
        [
            row["label"] if row["method"] != RANDOM else f"*{row['label']}*",
            f"{row['morf_drop']:.3f}",
            f"{row['lerf_drop']:.3f}",
            f"**{row['combined']:.3f}**",
            "–" if row["combined_correct"] is None else f"{row['combined_correct']:.3f}",
            "–" if row["combined_wrong"] is None else f"{row['combined_wrong']:.3f}",
        ]
        for row in result.table()
    ]
    n, n_correct = len(result.sample), int(result.sample.correct.sum())
    ranking = [m for m in result.ranking() if m != RANDOM]
    scores = {m: float(result.combined(m).mean()) for m in result.methods}
    best = ranking[0]
    tied = [m for m in ranking if abs(scores[m] - scores[best]) < 1e-6]
    beaten = sum(_clearly_above(result.combined(m), result.combined(RANDOM)) for m in ranking)
    text = (
        f"ROAD on {n} test images ({n_correct} classified correctly, {n - n_correct} wrongly), CAMs at "
        f"{result.layer} for the predicted class, {min(result.removed)}% to {max(result.removed)}% of the pixels "
        f"removed in {len(result.removed)} steps (seed {result.seed}, {result.seconds:.0f} s):\n\n"
        + markdown_table(
            ["method", "MoRF drop (↑)", "LeRF drop (↓)", "combined (↑)", "combined, correct", "combined, wrong"], rows
        )
    )
    if len(tied) > 1:
        text += (
            f"\n\nOn this model no method ranks first: {len(tied)} of them tie at a combined score of "
            f"{scores[best]:.3f}"
        )
    else:
        text += f"\n\nOn this model **{_label(best)} ranks first**, with a combined score of {scores[best]:.3f}"
        if len(ranking) > 1:
            second = ranking[1]
            diff = result.combined(best) - result.combined(second)
            text += f", {float(diff.mean()):.3f} ahead of {_label(second)}"
            if n > 1:
                text += (
                    f" (paired standard error over the images {float(diff.std(ddof=1) / np.sqrt(n)):.3f}; "
                    "a lead under about two standard errors could be the sample's luck)"
                )
    text += (
        f". The random map scores {scores[RANDOM]:.3f}: that is what no information looks like here, and "
        f"{beaten} of the {len(ranking)} methods score above it by more than two paired standard errors."
    )
    return Markdown(text)


def _clearly_above(scores: np.ndarray, baseline: np.ndarray) -> bool:
    """Above the baseline by more than two paired standard errors over the images (by any margin for one image)."""
    diff = scores - baseline
    margin = 2 * float(diff.std(ddof=1)) / np.sqrt(len(diff)) if len(diff) > 1 else 0.0
    return float(diff.mean()) > margin


def describe_road_noise() -> Markdown:
    """The size of ROAD's imputation noise in grey levels, from the normalisation statistics."""
    levels = [ROAD_NOISE * s * 255 for s in CIFAR10_STD]
    return Markdown(
        f"The imputation runs on the normalised image that the model receives. Filling a pixel from its neighbours "
        f"gives the same result before or after normalising, and the package's noise of {ROAD_NOISE} in "
        f"normalised units is {min(levels):.2f} to {max(levels):.2f} grey levels (of 255) per channel."
    )


# --- the randomisation sanity check --------------------------------------------------------------

TRAINED = "trained"


def randomisation_stages(model: nn.Module) -> list[tuple[str, list[str]]]:
    """Groups of top-level modules from the output down: the head (``linear``), each stage, then the stem."""
    names = [name for name, child in model.named_children() if any(True for _ in child.parameters())]
    stages = [n for n in names if n in STAGES]
    if not stages:
        raise UsageError(f"the model has none of the stages {', '.join(STAGES)} to re-initialise")
    first, last = names.index(stages[0]), names.index(stages[-1])
    head = [(n, [n]) for n in reversed(names[last + 1 :])]
    return head + [(s, [s]) for s in reversed(stages)] + [("stem", names[:first])] * bool(names[:first])


def rank_correlation(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Spearman's rho of each pair of maps ``a[i]``, ``b[i]``; 0 where a map is constant (it ranks nothing)."""
    ra = rankdata(a.reshape(len(a), -1), axis=1)
    rb = rankdata(b.reshape(len(b), -1), axis=1)
    ra -= ra.mean(axis=1, keepdims=True)
    rb -= rb.mean(axis=1, keepdims=True)
    denominator = np.sqrt((ra**2).sum(axis=1) * (rb**2).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = (ra * rb).sum(axis=1) / denominator
    return np.where(denominator > 0, rho, 0.0)


@dataclass
class RandomisationCheck:
    """Grad-CAMs of one sample as the model is re-initialised stage by stage, cumulatively."""

    maps: CamComparison  # the trained model's column first, then one per re-initialised stage
    correlation: dict[str, np.ndarray]  # stage -> (N,) Spearman's rho with the trained model's CAM
    constant: dict[str, int]  # stage -> how many maps came out constant (counted as rho = 0)
    seed: int


def _reinitialise(modules: Sequence[nn.Module]) -> None:
    """Each submodule's own ``reset_parameters``: the weights (and BatchNorm statistics) of a fresh model."""
    for module in modules:
        for sub in module.modules():
            if hasattr(sub, "reset_parameters"):
                sub.reset_parameters()


def randomisation_check(
    model: nn.Module,
    sample: Sample,
    runtime: Runtime,
    layer: str = "auto",
    seed: int = SEED,
    progress: bool = True,
) -> RandomisationCheck:
    """Cascading randomisation on a copy of ``model``; ``model`` itself is never changed."""
    copy_ = copy.deepcopy(model)
    stages = randomisation_stages(copy_)
    trained = _column(copy_, sample, runtime, layer, "gradcam", TRAINED)
    columns = [trained]
    for step, (name, modules) in enumerate(text_bar(stages, desc="re-initialising", unit="stage", enabled=progress)):
        with _seeded_torch(seed + step):
            _reinitialise([copy_.get_submodule(m) for m in modules])
        columns.append(_column(copy_, sample, runtime, trained.layer, "gradcam", name, title=lambda c: f"+ {c.name}"))
    correlation = {c.name: rank_correlation(trained.cams, c.cams) for c in columns}
    constant = {c.name: int((np.ptp(c.cams.reshape(len(sample), -1), axis=1) == 0).sum()) for c in columns}
    comparison = CamComparison(
        f"Grad-CAM at {trained.layer} as the model is re-initialised from the top down", sample, columns
    )
    return RandomisationCheck(comparison, correlation, constant, seed)


def describe_randomisation(check: RandomisationCheck) -> Markdown:
    """The mean rank correlation with the trained model's CAM after each cumulative re-initialisation."""
    n = len(check.maps.sample)
    rows = [
        [
            c.name if c.name == TRAINED else f"+ {c.name}",
            f"{float(check.correlation[c.name].mean()):.2f}",
            f"{float(np.median(check.correlation[c.name])):.2f}",
            check.constant[c.name],
        ]
        for c in check.maps.columns
    ]
    stages = [c.name for c in check.maps.columns[1:]]
    after_top = check.correlation[stages[min(1, len(stages) - 1)]].mean()
    text = (
        f"Spearman's rank correlation between each image's Grad-CAM and the trained model's, over {n} images "
        f"(seed {check.seed}):\n\n"
        + markdown_table(["re-initialised down to", "mean", "median", "constant maps (counted as 0)"], rows)
        + f"\n\nOnce {' and '.join(stages[:2])} are re-initialised, the mean correlation is {float(after_top):.2f}, "
        f"down from 1 for the trained model (a CAM always agrees with itself)."
    )
    return Markdown(text)
