"""The LR range test of chapter 3: torch-lr-finder on the recipe's batches, and what the book says about it."""

from __future__ import annotations

import math

import pytest
import torch

from erav1.errors import UsageError
from erav1.main import Config, training_batches
from erav1.utils.lr_finder import LRRangeTest, describe_lr_range_test, run_lr_range_test, scaled_defaults
from erav1.utils.plots import plot_lr_range_test
from erav1.utils.policies import Runtime
from erav1.utils.transforms import Augmentation, normalize


def config(cifar_zip, cache_dir, **overrides) -> Config:
    values = dict(
        data=str(cifar_zip), data_dir=str(cache_dir), subset=500, batch_size=8, device="cpu", precision="fp32"
    )  # small batches: a test checks the plumbing, not the suggestion
    return Config(**{**values, **overrides})


def test_training_batches_are_shuffled_augmented_and_normalised(small_splits):
    train = small_splits.train
    runtime = Runtime.create("cpu", "fp32", channels_last=False)
    generator = torch.Generator().manual_seed(0)
    batches = list(
        training_batches(train, 128, Augmentation(cutout_size=0, crop_padding=0, flip=False), generator, runtime)
    )
    assert [len(y) for _, y in batches] == [128, 128, 128, 116]  # every image once, the last batch ragged
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(0))
    x, y = batches[0]
    assert torch.equal(y, train.labels[order[:128]])
    torch.testing.assert_close(x, normalize(train.images[order[:128]]))  # nothing augmented: just normalised


def test_the_range_test_sweeps_the_recipe_and_leaves_global_state_alone(cifar_zip, cache_dir, capsys):
    state = torch.get_rng_state()
    test = run_lr_range_test(config(cifar_zip, cache_dir), iterations=12)
    assert torch.equal(torch.get_rng_state(), state)
    assert len(test.lrs) == len(test.losses) <= 12 and test.batch_size == 8 and test.train_images == 500
    assert test.lrs[0] == pytest.approx(1e-4) and all(b > a for a, b in zip(test.lrs, test.lrs[1:], strict=False))
    ratios = [b / a for a, b in zip(test.lrs, test.lrs[1:], strict=False)]
    assert max(ratios) == pytest.approx(min(ratios))  # exponential
    assert all(math.isfinite(loss) for loss in test.losses)
    skip_start, skip_end = test.skip
    assert test.suggested_lr in test.lrs[skip_start : len(test.lrs) - skip_end]
    out, err = capsys.readouterr()
    assert "LR range test" in out and err == ""  # a plain-text bar on stdout, the package's prints swallowed
    assert "Learning rate search finished" not in out
    fig = plot_lr_range_test(test, 0.4)
    labels = fig.axes[0].get_legend_handles_labels()[1]
    assert "steepest gradient" in labels and "validation-chosen peak 0.4" in labels


def test_the_same_seed_gives_the_same_curve(cifar_zip, cache_dir):
    one = run_lr_range_test(config(cifar_zip, cache_dir, seed=1, batch_size=4), iterations=10, progress=False)
    two = run_lr_range_test(config(cifar_zip, cache_dir, seed=1, batch_size=4), iterations=10, progress=False)
    assert one.lrs == two.lrs and one.losses == two.losses


def test_too_few_iterations_or_a_bad_sweep_is_one_clear_error(cifar_zip, cache_dir):
    with pytest.raises(UsageError, match="at least 4 iterations"):
        run_lr_range_test(config(cifar_zip, cache_dir), iterations=3)
    with pytest.raises(UsageError, match="must go up"):
        run_lr_range_test(config(cifar_zip, cache_dir), start_lr=1.0, end_lr=0.1)


def fake(suggested: float, lrs: int = 20, iterations: int = 20, batch_size: int = 512, train: int = 50_000):
    return LRRangeTest(
        [0.001 * 1.5**i for i in range(lrs)],
        [2.0 - 0.01 * i for i in range(lrs)],
        suggested,
        iterations,
        batch_size,
        train,
        12.0,
        finder=None,
    )


def test_agreement_is_within_the_stated_factor():
    text = describe_lr_range_test(fake(0.2), 0.4)
    assert "suggests **lr 0.2**" in text and "peak of **0.4**" in text
    assert "a factor of 2.0 apart" in text and "within a factor of 3) they **agree**" in text
    assert "they **do not agree**" in describe_lr_range_test(fake(0.1), 0.4)
    assert "a factor of 4.0 apart" in describe_lr_range_test(fake(1.6), 0.4)
    assert "10,240 images from a training split of 50,000, so no image was drawn twice" in text
    assert "3.2 passes over the split" in describe_lr_range_test(fake(0.2, train=3_200), 0.4)
    assert "stopped early, after 18 of 20, when the smoothed loss passed 1.5 times its best" in (
        describe_lr_range_test(fake(0.2, lrs=18), 0.4)
    )


def test_the_packages_defaults_keep_their_share_of_a_shorter_sweep():
    assert scaled_defaults(100) == (pytest.approx(0.05), 10, 5)  # the package's own
    assert scaled_defaults(40) == (pytest.approx(0.125), 4, 2)
    assert scaled_defaults(10) == (pytest.approx(0.5), 1, 1)


def test_chapter_3_sizes_the_range_test_like_the_module():
    from book_checks import ROOT

    from erav1.book.parameters import declared_parameters
    from erav1.utils.lr_finder import ITERATIONS

    assert declared_parameters(ROOT / "book" / "03_training.ipynb")["lr_finder_iterations"] == ITERATIONS
