"""The divergence check without a host sync per check: every loss is read, late or not, and the first bad one named."""

from __future__ import annotations

import math

import pytest
import torch

from erav1.errors import NonFiniteLossError
from erav1.utils.losswatch import LossWatch

CPU = torch.device("cpu")


def feed(watch: LossWatch, losses: list[float], lrs: list[float] | None = None, batch: int = 4) -> list:
    """Steps 1..n with these mean losses; returns what the watch reported after each step."""
    lrs = lrs or [0.1 * step for step in range(1, len(losses) + 1)]
    seen = []
    for step, (loss, lr) in enumerate(zip(losses, lrs, strict=True), start=1):
        seen.append(watch.add(step, torch.tensor(loss * batch), batch, lr, last=step == len(losses)))
    return seen


@pytest.mark.parametrize("lagged", [False, True], ids=["read at once (CPU)", "read one check late (CUDA)"])
def test_finite_losses_are_reported_as_window_means(lagged):
    seen = feed(LossWatch(1, CPU, every=3, lagged=lagged), [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0])
    if lagged:  # each window is read at the next check; the epoch's end reads what is left
        assert seen == [None, None, None, None, None, 2.0, 7.0]
    else:
        assert seen == [None, None, 2.0, None, None, 5.0, 7.0]


@pytest.mark.parametrize("lagged", [False, True], ids=["read at once (CPU)", "read one check late (CUDA)"])
def test_the_first_bad_step_and_its_lr_are_named_however_late_the_loss_is_read(lagged):
    """A NaN step makes the weights NaN, so every later loss is NaN too: the message must name the first."""
    losses = [1.0, 1.0, 1.0, 1.0, math.inf, math.nan, math.nan, math.nan, math.nan, math.nan]
    watch = LossWatch(2, CPU, every=3, lagged=lagged)
    with pytest.raises(NonFiniteLossError, match=r"became inf at epoch 2, step 5 \(lr 0.5\)"):
        for step, loss in enumerate(losses, start=1):
            watch.add(step, torch.tensor(loss * 4), 4, 0.1 * step, last=step == len(losses))
    assert step == (9 if lagged else 6), "stopped at the first check that read step 5"


def test_a_bad_last_step_is_caught_before_the_epoch_ends():
    with pytest.raises(NonFiniteLossError, match="became nan at epoch 1, step 3"):
        feed(LossWatch(1, CPU, every=10, lagged=True), [1.0, 1.0, math.nan])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the non-blocking copy and its event exist on CUDA only")
def test_on_cuda_the_losses_reach_the_host_without_a_sync_and_the_first_bad_step_is_named():
    cuda = torch.device("cuda")
    watch = LossWatch(3, cuda, every=2)
    assert watch.lagged
    losses = [1.0, 2.0, 3.0, math.nan, math.nan, math.nan, math.nan]
    with pytest.raises(NonFiniteLossError, match=r"became nan at epoch 3, step 4 \(lr 0.4\)"):
        for step, loss in enumerate(losses, start=1):
            mean = watch.add(step, torch.tensor(loss * 4, device=cuda), 4, 0.1 * step, last=step == len(losses))
            if step == 4:  # steps 1-2 read at this check, one check late
                assert mean == 1.5 and watch._in_flight.loss_sums.is_pinned()
