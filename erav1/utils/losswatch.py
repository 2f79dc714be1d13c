"""Stop a diverging run without making the host wait for the device at every check.

A ``loss.item()`` every few steps drains the GPU's queue of work each time.  The
watch keeps every step's loss as a device tensor instead, and every ``every``
steps sends the window since the last check to the host: on CUDA as a
``non_blocking`` copy (into pinned memory) followed by an event, read one check
later, by which time the GPU has long finished it, so reading costs no stall.
On other devices the copy is read at once, as cheap there as any other op.
The epoch's last window is always read before the epoch ends.

A NaN or inf loss makes the gradients and then the weights NaN, so every later
step is non-finite too.  The watch keeps the step number and lr of each loss,
so the error names the *first* bad step however late it is read.  Under
torchrun the windows are summed over processes first, so every process reads
the same losses and all stop at the same check.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from erav1.errors import NonFiniteLossError
from erav1.utils.distributed import SINGLE_PROCESS, Distributed

NAN_CHECK_EVERY = 10  # steps between two windows sent to the host


@dataclass
class _Window:
    first_step: int
    loss_sums: torch.Tensor  # on the host once ``done`` has completed; summed over processes
    batches: list[int]  # global batch sizes: loss_sums / batches is each step's mean loss
    lrs: list[float]
    done: torch.Event | None  # None: already on the host


class LossWatch:
    """The training losses of one epoch, checked for NaN and inf a window at a time."""

    def __init__(
        self,
        epoch: int,
        device: torch.device,
        dist: Distributed = SINGLE_PROCESS,
        every: int = NAN_CHECK_EVERY,
        lagged: bool | None = None,
    ) -> None:
        """``lagged``: read each window one check late (default: on CUDA, where reading at once would stall)."""
        self.epoch, self.device, self.dist, self.every = epoch, device, dist, every
        self.lagged = device.type == "cuda" if lagged is None else lagged
        self._sums: list[torch.Tensor] = []
        self._batches: list[int] = []
        self._lrs: list[float] = []
        self._first_step = 1
        self._in_flight: _Window | None = None

    def add(self, step: int, loss_sum: torch.Tensor, batch: int, lr: float, last: bool) -> float | None:
        """Record step ``step``: this process's summed loss over its rows of a global batch of ``batch``.

        Returns the mean loss of the latest window read (for the progress bar), or None when none was read.
        Raises :class:`NonFiniteLossError` naming the first step whose loss was NaN or inf.
        """
        self._sums.append(loss_sum)
        self._batches.append(batch)
        self._lrs.append(lr)
        if step % self.every and not last:
            return None
        window = self._send()
        self._first_step = step + 1
        earlier, self._in_flight = self._in_flight, window
        mean = self._read(earlier) if earlier is not None else None
        if last or not self.lagged:
            mean = self._read(window)
            self._in_flight = None
        return mean

    def _send(self) -> _Window:
        sums = self.dist.sum_(torch.stack(self._sums).float())
        host = sums.to("cpu", non_blocking=self.lagged)
        done = None
        if self.lagged and self.device.type != "cpu":  # the copy is in flight until the device reaches this event
            done = torch.Event(device=self.device)
            done.record()
        window = _Window(self._first_step, host, self._batches, self._lrs, done)
        self._sums, self._batches, self._lrs = [], [], []
        return window

    def _read(self, window: _Window) -> float:
        if window.done is not None:
            window.done.synchronize()
        losses = window.loss_sums / torch.tensor(window.batches, dtype=torch.float32)
        bad = (~torch.isfinite(losses)).nonzero()
        if len(bad):
            first = int(bad[0])
            raise NonFiniteLossError(
                f"the training loss became {losses[first].item()} at epoch {self.epoch}, "
                f"step {window.first_step + first} (lr {window.lrs[first]:.4g})"
            )
        return losses.mean().item()
