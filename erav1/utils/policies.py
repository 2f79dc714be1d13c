"""Training policies: device, numeric precision, optimizer and LR schedule.

Each choice is a name in a small registry so the CLI can list the valid
values and refuse anything else with one clear message.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from erav1.errors import UsageError
from erav1.utils.text import Markdown

DEVICES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
# torch.compile's modes: "reduce-overhead" replays CUDA graphs, which removes the per-kernel launch cost.
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune-no-cudagraphs")
OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULERS = ("onecycle", "cosine", "step", "none")


def check_choice(what: str, value: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise UsageError(f"unknown {what} {value!r}; choose one of: {', '.join(choices)}")
    return value


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` picks cuda, then mps, then cpu."""
    check_choice("device", name, DEVICES)
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UsageError("device 'cuda' was asked for but no CUDA GPU is visible; use --device auto or cpu")
    if name == "mps" and not torch.backends.mps.is_available():
        raise UsageError("device 'mps' was asked for but MPS is not available; use --device auto or cpu")
    return torch.device(name)


def cpu_has_fast_bf16() -> bool:
    """True on CPUs with AMX or AVX512-BF16, where bf16 autocast is ~3x faster than fp32."""
    try:
        flags = Path("/proc/cpuinfo").read_text(encoding="utf-8")
    except OSError:
        return False
    return any(flag in flags.split() for flag in ("amx_bf16", "avx512_bf16"))


def resolve_precision(name: str, device: torch.device) -> str:
    """``auto``: bf16 where the hardware has it, fp16 on older GPUs (Colab's T4), else fp32."""
    check_choice("precision", name, PRECISIONS)
    if name != "auto":
        return name
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if device.type == "cpu" and cpu_has_fast_bf16():
        return "bf16"
    return "fp32"


@dataclass(frozen=True)
class Runtime:
    """Where and how the model computes: device, precision and memory format."""

    device: torch.device
    precision: str = "fp32"
    channels_last: bool = True

    @classmethod
    def create(cls, device: str = "auto", precision: str = "auto", channels_last: bool = True) -> Runtime:
        dev = resolve_device(device)
        return cls(dev, resolve_precision(precision, dev), channels_last)

    @property
    def memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.channels_last else torch.contiguous_format

    def autocast_config(self) -> dict[str, object] | None:
        """``torch.autocast``'s arguments for this precision; None for fp32, which needs no autocast."""
        if self.precision == "fp32":
            return None
        return {"device_type": self.device.type, "dtype": torch.bfloat16 if self.precision == "bf16" else torch.float16}

    def autocast(self) -> contextlib.AbstractContextManager:
        config = self.autocast_config()
        return contextlib.nullcontext() if config is None else torch.autocast(**config)

    def grad_scaler(self) -> torch.amp.GradScaler:
        """A real scaler for fp16 only; disabled (a pass-through) otherwise."""
        return torch.amp.GradScaler(self.device.type, enabled=self.precision == "fp16")

    def prepare(self, model: nn.Module) -> nn.Module:
        return model.to(self.device, memory_format=self.memory_format)

    def synchronize(self) -> None:
        """Wait until the device has done all work queued so far: a timer read before that reads the queue."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        elif self.device.type == "mps":
            torch.mps.synchronize()


def parameter_groups(model: nn.Module, weight_decay: float, decay_norm_and_bias: bool) -> list[dict]:
    """Optionally exempt BatchNorm weights and all biases (1-d tensors) from weight decay."""
    if decay_norm_and_bias:
        return [{"params": list(model.parameters()), "weight_decay": weight_decay}]
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(
    name: str,
    model: nn.Module,
    lr: float,
    weight_decay: float = 5e-4,
    momentum: float = 0.9,
    nesterov: bool = True,
    decay_norm_and_bias: bool = True,
) -> torch.optim.Optimizer:
    """The optimizer over ``model``'s parameters, stepping all of them at once (``foreach``).

    foreach runs the same arithmetic as torch's per-parameter loop, in a few multi-tensor
    kernels instead of several small ops per parameter: on CUDA it is torch's default already;
    on the CPU it saves the Python loop over ResNet18's 62 tensors and leaves the weights
    bit for bit the same (tests/test_training.py checks it).
    """
    check_choice("optimizer", name, OPTIMIZERS)
    groups = parameter_groups(model, weight_decay, decay_norm_and_bias)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=nesterov and momentum > 0, foreach=True)
    if name == "adam":
        return torch.optim.Adam(groups, lr=lr, foreach=True)
    return torch.optim.AdamW(groups, lr=lr, foreach=True)


def build_scheduler(
    name: str,
    optimizer: torch.optim.Optimizer,
    epochs: int,
    steps_per_epoch: int,
    pct_start: float = 0.25,
) -> torch.optim.lr_scheduler.LRScheduler:
    """A schedule stepped once per batch, whatever its shape.

    * onecycle: warm up to ``lr`` over ``pct_start`` of training, then cosine down.
    * cosine: cosine from ``lr`` to 0.
    * step: divide by 10 after 50% and 75% of training.
    * none: constant ``lr``.
    """
    check_choice("scheduler", name, SCHEDULERS)
    total = epochs * steps_per_epoch
    sched = torch.optim.lr_scheduler
    if name == "onecycle":
        max_lr = [g["lr"] for g in optimizer.param_groups]
        if pct_start * total == 1:  # torch's OneCycleLR divides by zero when the warm-up is exactly one step
            pct_start = 1.001 / total
        return sched.OneCycleLR(optimizer, max_lr=max_lr, total_steps=total, pct_start=pct_start)
    if name == "cosine":
        return sched.CosineAnnealingLR(optimizer, T_max=total)
    if name == "step":
        return sched.MultiStepLR(optimizer, [math.ceil(total * 0.5), math.ceil(total * 0.75)], gamma=0.1)
    return sched.LambdaLR(optimizer, lambda step: 1.0)


def lr_trajectory(
    name: str, lr: float, epochs: int, pct_start: float = 0.25, steps_per_epoch: int = 100
) -> list[float]:
    """The learning rate at every step of a schedule, from the real scheduler on a dummy parameter."""
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=lr)
    scheduler = build_scheduler(name, optimizer, epochs, steps_per_epoch, pct_start)
    lrs = []
    for _ in range(epochs * steps_per_epoch):
        lrs.append(scheduler.get_last_lr()[0])
        optimizer.step()
        scheduler.step()
    return lrs


def describe_schedule(name: str, lr: float, epochs: int, pct_start: float = 0.25) -> Markdown:
    """One sentence on the schedule's shape, with its numbers measured from :func:`lr_trajectory`."""
    steps_per_epoch = 100
    lrs = lr_trajectory(name, lr, epochs, pct_start, steps_per_epoch)
    peak_step = max(range(len(lrs)), key=lrs.__getitem__)
    return Markdown(
        f"The {name} schedule starts at lr {lrs[0]:.4g}, reaches its peak {lrs[peak_step]:.4g} "
        f"{peak_step / len(lrs):.0%} of the way through training (during epoch {peak_step // steps_per_epoch + 1} "
        f"of {epochs}), and ends at {lrs[-1]:.3g}, {lrs[0] / lrs[-1]:,.0f} times below where it started."
    )
