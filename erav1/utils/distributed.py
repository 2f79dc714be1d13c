"""One run on several devices: ``torchrun --standalone --nproc_per_node=N -m erav1 train ...``.

torchrun starts one process per device and tells each its place through the
environment (RANK, WORLD_SIZE, LOCAL_RANK).  :class:`Distributed` reads that
place and holds the few collective steps a run needs: which rows of a batch
this process trains on, sums over processes, gathering evaluation outputs.
Without torchrun it is the single process of world size 1, and every method
is a no-op that leaves a run exactly as it was.

The global batch stays what ``--batch-size`` says: every process draws the
same epoch permutation from the seeded generator, augments the same global
batch, and trains on its own contiguous rows of it, so the images and random
draws are those of a single-process run.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from erav1.errors import UsageError
from erav1.utils.syncbn import convert_to_all_reduce_batchnorm

TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


@dataclass(frozen=True)
class Distributed:
    """This process's place among the processes of one run."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> Distributed:
        """The place torchrun gave this process; a single process when torchrun did not start it."""
        if "WORLD_SIZE" not in environ:
            return cls()
        try:
            rank, world_size, local_rank = (int(environ[name]) for name in TORCHRUN_VARS)
        except (KeyError, ValueError):
            shown = ", ".join(f"{name}={environ.get(name)!r}" for name in TORCHRUN_VARS)
            raise UsageError(
                f"incomplete torchrun environment ({shown}); launch with "
                "'torchrun --standalone --nproc_per_node=N -m erav1 train ...'"
            ) from None
        return cls(rank, world_size, local_rank)

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0 alone writes files and prints."""
        return self.rank == 0

    def launcher(self) -> str:
        """How this run was started, for the commands that messages print."""
        return f"torchrun --standalone --nproc_per_node={self.world_size} -m erav1" if self.enabled else "erav1"

    # --- setting up ---------------------------------------------------------------------

    def check_batches(self, batch_size: int, train_size: int) -> None:
        """The global batch must split evenly, and the epoch's last, shorter batch must still reach every process."""
        if not self.enabled:
            return
        if batch_size % self.world_size:
            lower = batch_size - batch_size % self.world_size
            raise UsageError(
                f"--batch-size {batch_size} is the global batch and must split evenly among the {self.world_size} "
                f"processes torchrun started; use a multiple of {self.world_size}, such as "
                f"{lower or self.world_size} or {lower + self.world_size}"
            )
        last = train_size % batch_size or batch_size
        if last < self.world_size:
            raise UsageError(
                f"the last batch of each epoch holds {last} of {train_size} training images, fewer than the "
                f"{self.world_size} processes; choose a --batch-size that leaves at least {self.world_size} "
                "for the last batch"
            )

    def place(self, device: torch.device) -> torch.device:
        """This process's device: GPU LOCAL_RANK under torchrun on CUDA."""
        if not self.enabled:
            return device
        if device.type == "cuda":
            if self.local_rank >= torch.cuda.device_count():
                raise UsageError(
                    f"torchrun started more processes on this machine than the {torch.cuda.device_count()} visible "
                    f"GPU(s) (local rank {self.local_rank}); use --nproc_per_node={torch.cuda.device_count()}"
                )
            torch.cuda.set_device(self.local_rank)
            return torch.device("cuda", self.local_rank)
        if device.type != "cpu":
            raise UsageError(
                f"torchrun runs on CUDA GPUs (nccl) or the CPU (gloo), not on {device.type}; "
                "use --device cuda or --device cpu"
            )
        return device

    def start(self, device: torch.device) -> None:
        """Join the other processes: nccl between GPUs, gloo on the CPU."""
        if self.enabled and not dist.is_initialized():
            backend = "nccl" if device.type == "cuda" else "gloo"
            dist.init_process_group(backend, device_id=device if device.type == "cuda" else None)

    def stop(self) -> None:
        if self.enabled and dist.is_initialized():
            dist.destroy_process_group()

    def wrap(self, model: nn.Module, device: torch.device, sync_bn: bool) -> nn.Module:
        """The model that trains: DistributedDataParallel under torchrun, else the model itself.

        DDP gives every process rank 0's buffers (BatchNorm's running statistics) before each forward
        pass, which each then updates with its own rows; :meth:`sync_buffers` copies rank 0's again
        before an evaluation, so every process evaluates the model that rank 0 saves.
        """
        if not self.enabled:
            return model
        if sync_bn:  # torch's SyncBatchNorm has CUDA kernels only
            if device.type == "cuda":
                model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
            else:
                model = convert_to_all_reduce_batchnorm(model)
        ids = [device.index] if device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(model, device_ids=ids)

    # --- during training ----------------------------------------------------------------

    def shard(self, batch: int) -> slice:
        """This process's rows of a global batch of ``batch``: contiguous, sizes differing by at most one."""
        size, extra = divmod(batch, self.world_size)
        start = self.rank * size + min(self.rank, extra)
        return slice(start, start + size + (self.rank < extra))

    def gradient_scale(self, rows: int, batch: int) -> float:
        """Factor on this process's mean loss so that DDP's average over processes is the global batch's mean.

        1.0 whenever the batch splits evenly; only an epoch's short last batch can split unevenly.
        """
        return rows * self.world_size / batch

    def sum_(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum ``tensor`` over all processes, in place."""
        if self.enabled:
            dist.all_reduce(tensor)
        return tensor

    def sync_buffers(self, model: nn.Module) -> None:
        """Give every process rank 0's buffers (BatchNorm running statistics)."""
        if self.enabled:
            for buffer in model.buffers():
                dist.broadcast(buffer, src=0)

    def gather_rows(self, part: torch.Tensor, total: int) -> torch.Tensor:
        """Concatenate every process's :meth:`shard` of ``total`` rows, in rank order."""
        if not self.enabled:
            return part
        longest = -(-total // self.world_size)
        padded = part.new_zeros((longest, *part.shape[1:]))
        padded[: len(part)] = part
        parts = [torch.empty_like(padded) for _ in range(self.world_size)]
        dist.all_gather(parts, padded)
        shards = [Distributed(r, self.world_size).shard(total) for r in range(self.world_size)]
        return torch.cat([p[: s.stop - s.start] for p, s in zip(parts, shards, strict=True)])

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()


SINGLE_PROCESS = Distributed()
