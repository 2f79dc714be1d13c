"""BatchNorm over the global batch of a torchrun run, for ``--sync-bn``.

On CUDA, erav1 uses torch's own :class:`torch.nn.SyncBatchNorm`.  torch has no
CPU kernels for it, so on the CPU (gloo) :class:`AllReduceBatchNorm2d` does the
same job in plain tensor ops: each process sums its rows' values and squares
per channel, one differentiable all_reduce adds the sums of every process, and
every process normalises with the mean and variance of the whole global batch.
Autograd carries the gradient back through the same all_reduce.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn


class _SumOverProcesses(torch.autograd.Function):
    """all_reduce (sum) that autograd can go through: the gradient of a sum over processes is the sum of theirs."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        total = tensor.clone()
        dist.all_reduce(total)
        return total

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        total = grad.clone()
        dist.all_reduce(total)
        return total


class AllReduceBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics are those of the whole global batch, summed over processes."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return super().forward(x)
        xf = x.float()
        count = torch.full((1,), x.numel() // x.shape[1], dtype=torch.float32, device=x.device)
        sums = _SumOverProcesses.apply(torch.cat([xf.sum((0, 2, 3)), count]))
        n = sums[-1]
        mean = sums[:-1] / n
        centred = xf - mean[:, None, None]
        var = _SumOverProcesses.apply((centred * centred).sum((0, 2, 3))) / n  # two passes: no cancellation
        with torch.no_grad():  # as BatchNorm: the running variance is the unbiased one
            self.num_batches_tracked += 1
            self.running_mean.lerp_(mean, self.momentum)
            self.running_var.lerp_(var * n / (n - 1), self.momentum)
        scale = self.weight * torch.rsqrt(var + self.eps)
        return (centred * scale[:, None, None] + self.bias[:, None, None]).to(x.dtype)


def convert_to_all_reduce_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every BatchNorm2d of ``module`` by an :class:`AllReduceBatchNorm2d` that holds the very same
    parameters and buffers, so the optimizer and checkpoints keep working on them (as torch's
    ``SyncBatchNorm.convert_sync_batchnorm`` does)."""
    if isinstance(module, nn.BatchNorm2d) and not isinstance(module, AllReduceBatchNorm2d):
        replacement = AllReduceBatchNorm2d(
            module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats, device="meta"
        )
        for name, tensor in [*module.named_parameters(recurse=False), *module.named_buffers(recurse=False)]:
            setattr(replacement, name, tensor)
        return replacement.train(module.training)
    for name, child in module.named_children():
        module.add_module(name, convert_to_all_reduce_batchnorm(child))
    return module
