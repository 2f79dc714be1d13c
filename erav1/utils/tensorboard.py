"""TensorBoard logging of the per-epoch history (``tensorboard --logdir RUN_DIR``)."""

from __future__ import annotations

from pathlib import Path

from torch.utils.tensorboard import SummaryWriter


class TensorBoardLogger:
    """Writes each epoch's record as scalars, grouped as loss/*, accuracy/* and lr."""

    def __init__(self, log_dir: str | Path, start_epoch: int = 0) -> None:
        # purge_step drops events a killed run wrote past its last checkpoint.
        self.writer = SummaryWriter(str(log_dir), purge_step=start_epoch + 1 if start_epoch else None)

    def log_epoch(self, record: dict[str, float]) -> None:
        epoch = int(record["epoch"])
        for key, value in record.items():
            if key.endswith("_loss"):
                self.writer.add_scalar(f"loss/{key[:-5]}", value, epoch)
            elif key.endswith("_acc"):
                self.writer.add_scalar(f"accuracy/{key[:-4]}", value, epoch)
        self.writer.add_scalar("lr", record["lr"], epoch)
        self.writer.add_scalar("images_per_s", record["images_per_s"], epoch)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
