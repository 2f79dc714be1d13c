"""The LR range test (Smith, 2017) for the book's recipe, through the ``torch-lr-finder`` package.

The test trains a fresh model for a few iterations while the learning rate grows
exponentially, and records the loss: where it falls fastest is the package's
suggestion. Here it runs the recipe of :class:`erav1.main.Config` (optimizer,
momentum, weight decay, batch size, label smoothing) on the same augmented,
normalised batches that training draws (:func:`erav1.main.training_batches`).

torch-lr-finder draws its progress bar with ``tqdm.autonotebook``: a widget in a
notebook, which a built book shows as nothing. :func:`run_lr_range_test` swaps in a
plain-text bar on stdout for the duration of the call.
"""

from __future__ import annotations

import contextlib
import functools
import io
import math
import sys
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from torch import nn

from erav1.errors import UsageError
from erav1.main import Config, training_batches
from erav1.utils.data import ImageSet, load_data
from erav1.utils.policies import Runtime, build_optimizer
from erav1.utils.progress import text_bar
from erav1.utils.text import Markdown

START_LR, END_LR = 1e-4, 10.0  # the sweep, exponential: five decades around any plausible peak
ITERATIONS = 40  # chapter 3's default: 40 batches of 512 is 20,480 images, under one pass over the train split
# The package's defaults are made for its sweep of 100 iterations: it smooths the loss with an exponential
# average of weight 0.05 (a lag of about 20 iterations) and its plot skips the first 10 and the last 5
# points. Over a shorter sweep the same numbers would shift the curve by decades of lr and hide most of
# it, so each is scaled to keep its share of the sweep (see `scaled_defaults`).
PACKAGE_ITERATIONS, PACKAGE_SMOOTHING, PACKAGE_SKIP = 100, 0.05, (10, 5)
# The package stops when the loss passes 5x its best. A cross-entropy that starts near ln(10) = 2.3
# saturates around 4 when the steps are too large, then creeps down again as the network collapses,
# and the package would mark that creep as the steepest descent. 1.5x its best, far worse than a
# uniform guess, stops the sweep where the training has clearly diverged.
DIVERGE_THRESHOLD = 1.5
AGREE_FACTOR = 3.0  # two learning rates "agree" when they are within this factor of each other


def scaled_defaults(iterations: int) -> tuple[float, int, int]:
    """``(smooth_f, skip_start, skip_end)``: the package's defaults, scaled to a sweep of ``iterations``."""
    share = iterations / PACKAGE_ITERATIONS
    skip_start, skip_end = (max(1, round(skip * share)) for skip in PACKAGE_SKIP)
    return min(0.5, PACKAGE_SMOOTHING / share), skip_start, skip_end


def _import_package() -> Any:
    """torch_lr_finder's module, imported without the warning ``tqdm.autonotebook`` prints without ipywidgets."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import torch_lr_finder.lr_finder as package
    return package


class _Epochs:
    """An iterable over the training batches: every ``iter()`` is a new, seeded epoch."""

    def __init__(self, dataset: ImageSet, config: Config, runtime: Runtime) -> None:
        self.dataset, self.config, self.runtime = dataset, config, runtime
        self.generator = torch.Generator(device=runtime.device).manual_seed(config.seed)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return training_batches(
            self.dataset, self.config.batch_size, self.config.augmentation, self.generator, self.runtime
        )

    def __len__(self) -> int:
        return math.ceil(len(self.dataset) / self.config.batch_size)


@dataclass
class LRRangeTest:
    """The losses of one range test, and the package's suggestion."""

    lrs: list[float]
    losses: list[float]  # smoothed by the package (see scaled_defaults)
    suggested_lr: float  # the steepest descent of the loss, as the package's plot marks it
    iterations: int  # asked for; fewer ran if the loss diverged
    batch_size: int
    train_images: int  # the training split it drew from
    seconds: float
    finder: Any  # the torch_lr_finder.LRFinder, kept for its own plot
    skip: tuple[int, int] = PACKAGE_SKIP  # points the plot and the suggestion leave out at the start and end

    @property
    def diverged(self) -> bool:
        return len(self.lrs) < self.iterations

    @property
    def images_seen(self) -> int:
        return len(self.lrs) * self.batch_size

    @property
    def lowest_loss_lr(self) -> float:
        return self.lrs[min(range(len(self.losses)), key=self.losses.__getitem__)]

    def draw(self, ax: Axes) -> float:
        """The package's own plot (loss against lr, suggestion marked) on ``ax``; returns the suggestion."""
        with contextlib.redirect_stdout(io.StringIO()):  # it prints the suggestion; the book says it in prose
            _, suggestion = self.finder.plot(skip_start=self.skip[0], skip_end=self.skip[1], ax=ax, suggest_lr=True)
        return float(suggestion)


def run_lr_range_test(
    config: Config,
    iterations: int = ITERATIONS,
    start_lr: float = START_LR,
    end_lr: float = END_LR,
    train: ImageSet | None = None,
    progress: bool = True,
) -> LRRangeTest:
    """Sweep the learning rate from ``start_lr`` to ``end_lr`` over ``iterations`` batches of the recipe.

    ``train`` defaults to ``config``'s training split (its ``subset`` and ``val_fraction``
    apply, so the test set never takes part). The model is a fresh one seeded with
    ``config.seed``; torch's global random state is given back afterwards.
    """
    smooth_f, skip_start, skip_end = scaled_defaults(iterations)
    needed = skip_start + skip_end + 2  # what the package's plot needs for a suggestion
    if iterations < needed:
        raise UsageError(f"the LR range test needs at least {needed} iterations for a suggestion, got {iterations}")
    if not 0 < start_lr < end_lr:
        raise UsageError(f"the sweep must go up from a positive lr, got {start_lr} to {end_lr}")
    package = _import_package()
    runtime = Runtime.create(config.device, config.precision, config.channels_last)
    if train is None:
        train = load_data(config.data, config.data_dir, config.subset, config.val_fraction, config.resize).train
    with torch.random.fork_rng(devices=[]):  # the weights are drawn on the CPU, then moved
        torch.manual_seed(config.seed)
        model = runtime.prepare(config.new_model(len(train.classes)))
    optimizer = build_optimizer(
        config.optimizer,
        model,
        start_lr,
        config.weight_decay,
        config.momentum,
        config.nesterov,
        config.decay_norm_and_bias,
    )
    amp = runtime.autocast_config()
    finder = package.LRFinder(
        model,
        optimizer,
        nn.CrossEntropyLoss(label_smoothing=config.label_smoothing),
        device=runtime.device,
        amp_backend="torch" if amp else None,
        amp_config=amp,
        grad_scaler=runtime.grad_scaler() if amp else None,
    )

    class Batches(package.TrainDataLoaderIter):
        """The package's way to take batches from any iterable: ours are already ``(x, y)``."""

        def inputs_labels_from_batch(self, batch: tuple[torch.Tensor, torch.Tensor]) -> tuple:
            return batch

    # stdout is bound here, before the package's own prints are swallowed below
    bar = functools.partial(text_bar, desc="LR range test", unit="batch", enabled=progress, file=sys.stdout)
    started = time.perf_counter()
    # The package prints "Learning rate search finished..." (and a divergence, which the history shows too).
    with _patched(package, "tqdm", bar), contextlib.redirect_stdout(io.StringIO()):
        finder.range_test(
            Batches(_Epochs(train.to(runtime.device), config, runtime)),
            end_lr=end_lr,
            num_iter=iterations,
            smooth_f=smooth_f,
            diverge_th=DIVERGE_THRESHOLD,
        )
    seconds = time.perf_counter() - started
    lrs, losses = list(finder.history["lr"]), list(finder.history["loss"])
    if len(lrs) < needed:
        raise UsageError(
            f"the loss diverged after {len(lrs)} of {iterations} iterations, too few for a suggestion "
            f"(at least {needed}); lower end_lr (now {end_lr}) or raise iterations"
        )
    test = LRRangeTest(
        lrs, losses, math.nan, iterations, config.batch_size, len(train), seconds, finder, (skip_start, skip_end)
    )
    test.suggested_lr = test.draw(Figure().subplots())
    return test


@contextlib.contextmanager
def _patched(module: Any, name: str, value: Any) -> Iterator[None]:
    """``module.name = value`` for the duration of the block only."""
    saved = getattr(module, name)
    setattr(module, name, value)
    try:
        yield
    finally:
        setattr(module, name, saved)


def describe_lr_range_test(test: LRRangeTest, chosen_lr: float, factor: float = AGREE_FACTOR) -> Markdown:
    """What the test ran on, its suggestion beside the validation-chosen peak, and whether they agree."""
    passes = test.images_seen / test.train_images
    reuse = (
        "so no image was drawn twice"
        if passes <= 1
        else f"{passes:.1f} passes over the split, so images recur (with new augmentations)"
    )
    ratio = max(test.suggested_lr, chosen_lr) / min(test.suggested_lr, chosen_lr)
    agree = ratio <= factor
    lines = [
        f"The range test ran {len(test.lrs)} iterations of {test.batch_size} images ({test.images_seen:,} images "
        f"from a training split of {test.train_images:,}, {reuse}) in {test.seconds:.0f} s"
        + (
            f", and stopped early, after {len(test.lrs)} of {test.iterations}, when the smoothed loss passed "
            f"{DIVERGE_THRESHOLD:g} times its best: it had diverged"
            if test.diverged
            else ""
        )
        + ".",
        f"The package suggests **lr {test.suggested_lr:.3g}**, where the loss falls fastest; the smoothed loss is "
        f"lowest at lr {test.lowest_loss_lr:.3g}. The validation search chose a OneCycle peak of **{chosen_lr:g}**. "
        f"The two are a factor of {ratio:.1f} apart, so by this book's rule (agreement means within a factor of "
        f"{factor:g}) they **{'agree' if agree else 'do not agree'}**.",
    ]
    return Markdown("\n\n".join(lines))
