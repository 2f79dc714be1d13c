"""Train and test loops, and ``fit``: a run from Config to run directory.

Read top to bottom: the Config, one training epoch, one evaluation, then
``fit``, which wires data, model, optimizer and schedule together, checkpoints
after every epoch and can resume from the last one.
"""

from __future__ import annotations

import math
import shlex
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from erav1.errors import CheckpointError, DataError, NonFiniteLossError, RunDirError, UsageError
from erav1.models import MODELS, get_model
from erav1.utils import rundir
from erav1.utils.checkpoint import (
    CHECKPOINT_FORMAT,
    atomic_save,
    atomic_write_json,
    load_checkpoint,
    load_training_checkpoint,
    load_weights,
    remove_partial_writes,
)
from erav1.utils.data import ImageSet, iter_batches, load_data
from erav1.utils.distributed import SINGLE_PROCESS, Distributed
from erav1.utils.evaluation import Predictions, predict
from erav1.utils.losswatch import LossWatch
from erav1.utils.policies import (
    COMPILE_MODES,
    DEVICES,
    OPTIMIZERS,
    PRECISIONS,
    SCHEDULERS,
    Runtime,
    build_optimizer,
    build_scheduler,
    check_choice,
)
from erav1.utils.progress import text_bar
from erav1.utils.tensorboard import TensorBoardLogger
from erav1.utils.text import Markdown, markdown_table
from erav1.utils.transforms import CUTOUT_FILLS, Augmentation, normalize


def _opt(default: Any, help: str, choices: tuple[str, ...] | None = None, **kw: Any) -> Any:
    """A Config field whose help text and choices also drive the CLI."""
    return field(default=default, metadata={"help": help, "choices": choices, **kw})


# Defaults that have changed, with the value they had before. A config.json or summary.json older than such an
# option trained that value, and the recipe study keeps comparing every lever with its trial 0, which began there.
SUPERSEDED_DEFAULTS: dict[str, Any] = {"cutout_p": 1.0}  # Cutout on every image, until the study's trial 9 won


@dataclass
class Config:
    """Everything that defines a training run. The CLI is generated from these fields."""

    model: str = _opt("resnet18", "model architecture", tuple(MODELS))
    zero_init_residual: bool = _opt(False, "zero each residual block's last BatchNorm scale: blocks start as shortcuts")
    epochs: int = _opt(20, "number of training epochs")
    batch_size: int = _opt(512, "training batch size")
    optimizer: str = _opt("sgd", "optimizer", OPTIMIZERS)
    lr: float = _opt(0.4, "learning rate (the peak for onecycle)")
    momentum: float = _opt(0.9, "SGD momentum")
    nesterov: bool = _opt(True, "Nesterov momentum for SGD")
    weight_decay: float = _opt(5e-4, "weight decay")
    decay_norm_and_bias: bool = _opt(True, "apply weight decay to BatchNorm weights and biases too")
    scheduler: str = _opt("onecycle", "LR schedule, stepped every batch", SCHEDULERS)
    pct_start: float = _opt(0.25, "onecycle: fraction of training spent warming up")
    label_smoothing: float = _opt(0.1, "label smoothing of the cross-entropy loss")
    ema_decay: float = _opt(0.0, "score and save a moving average of the weights with this decay per step (0: off)")
    crop_padding: int = _opt(4, "RandomCrop zero padding in px (0 turns cropping off)")
    flip: bool = _opt(True, "random horizontal flip")
    cutout_size: int = _opt(16, "Cutout square side in px (0 turns Cutout off)")
    cutout_p: float = _opt(0.5, "fraction of images that get Cutout")
    cutout_fill: str = _opt("zero", "Cutout square colour: black, or the mean colour (0 once normalised)", CUTOUT_FILLS)
    seed: int = _opt(0, "random seed: model init, shuffling and augmentation")
    device: str = _opt("auto", "auto picks cuda, then mps, then cpu", DEVICES)
    precision: str = _opt("auto", "auto: bf16 where supported, fp16 on older GPUs, else fp32", PRECISIONS)
    channels_last: bool = _opt(True, "channels_last memory format")
    compile: bool = _opt(False, "torch.compile the model")
    compile_mode: str = _opt(
        "default", "torch.compile's mode, with --compile (reduce-overhead: CUDA graphs)", COMPILE_MODES
    )
    sync_bn: bool = _opt(False, "under torchrun: BatchNorm statistics over the global batch, not each process's share")
    data: str = _opt("cifar10", "'cifar10' (official, downloaded) or a path to an image folder or .zip")
    resize: bool = _opt(True, "resize image-folder images that are not 32x32 (--no-resize refuses them)")
    data_dir: str = _opt("~/.cache/erav1", "where the official dataset and decoded-image caches live")
    subset: int | None = _opt(None, "use N images per split, stratified by class (quick runs)")
    val_fraction: float = _opt(0.0, "hold out this fraction of train for validation (0: score on test)")
    eval_batch_size: int = _opt(512, "batch size for evaluation")
    run_dir: str = _opt("runs/resnet18", "where the run's files go")
    resume: bool = _opt(False, "continue the run in run_dir from its last finished epoch", cli=False)
    overwrite: bool = _opt(False, "replace a run that run_dir already holds")

    def __post_init__(self) -> None:
        check_choice("model", self.model, tuple(MODELS))
        check_choice("optimizer", self.optimizer, OPTIMIZERS)
        check_choice("scheduler", self.scheduler, SCHEDULERS)
        check_choice("device", self.device, DEVICES)
        check_choice("precision", self.precision, PRECISIONS)
        check_choice("cutout_fill", self.cutout_fill, CUTOUT_FILLS)
        for name in ("epochs", "batch_size", "eval_batch_size"):
            if getattr(self, name) < 1:
                raise UsageError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.subset is not None and self.subset < 1:
            raise UsageError(f"subset must be at least 1, got {self.subset}")
        if self.lr <= 0:
            raise UsageError(f"lr must be positive, got {self.lr}")
        if not 0 <= self.val_fraction < 1:
            raise UsageError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        if not 0 <= self.ema_decay < 1:
            raise UsageError(
                f"ema_decay must be in [0, 1) (0 turns the EMA off; at 1 it would keep the initial "
                f"weights), got {self.ema_decay}"
            )
        for name in ("label_smoothing", "cutout_p", "pct_start"):
            if not 0 <= getattr(self, name) <= 1:
                raise UsageError(f"{name} must be between 0 and 1, got {getattr(self, name)}")
        if self.scheduler == "onecycle" and self.pct_start == 1:
            raise UsageError("pct_start must be below 1: onecycle needs steps left to anneal after the warm-up")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_saved_dict(self) -> dict[str, Any]:
        """What config.json records: the run itself, not how this invocation treats the run directory."""
        return {**self.to_dict(), "resume": False, "overwrite": False}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Config:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise UsageError(f"unknown config option(s) {', '.join(unknown)}; valid: {', '.join(sorted(known))}")
        return cls(**values)

    @property
    def augmentation(self) -> Augmentation:
        return Augmentation(self.crop_padding, self.flip, self.cutout_size, self.cutout_p, self.cutout_fill)

    def new_model(self, num_classes: int) -> nn.Module:
        """The untrained model of this recipe (its initial weights come from torch's global RNG)."""
        return get_model(self.model, num_classes, zero_init_residual=self.zero_init_residual)


def config_defaults() -> dict[str, Any]:
    """Config's defaults: the book's recipe, what chapter 3 and ``erav1 train`` run."""
    return {f.name: f.default for f in fields(Config)}


def first_defaults() -> dict[str, Any]:
    """Config's defaults, each superseded one at its first value: what older files trained, where the study began."""
    return config_defaults() | SUPERSEDED_DEFAULTS


# Options that may change between a run and its resumption without changing its result.
RESUMABLE_CHANGES = {
    "device",
    "data_dir",
    "run_dir",
    "resume",
    "overwrite",
    "compile",
    "compile_mode",
    "eval_batch_size",
}


@dataclass
class FitResult:
    model: nn.Module
    history: list[dict[str, float]]
    run_dir: Path
    classes: list[str]

    @property
    def final(self) -> dict[str, float]:
        """The last epoch's record: the reported result, never the best epoch."""
        return self.history[-1]


def training_batches(
    dataset: ImageSet,
    batch_size: int,
    augment: Augmentation,
    generator: torch.Generator,
    runtime: Runtime,
    dist: Distributed = SINGLE_PROCESS,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """One epoch of model-ready ``(x, y)`` batches: a seeded shuffle, the augmentation, normalisation.

    Training and the LR range test (:mod:`erav1.utils.lr_finder`) both draw from it, so the
    range test sees exactly the batches training would. Under torchrun each process augments the
    whole global batch with the shared generator and keeps its own rows (:meth:`Distributed.shard`).
    """
    order = torch.randperm(len(dataset), generator=generator, device=generator.device)
    for idx in iter_batches(len(dataset), batch_size, order):
        images, labels = augment(dataset.images[idx], generator), dataset.labels[idx]
        rows = dist.shard(len(labels))
        yield normalize(images[rows]).contiguous(memory_format=runtime.memory_format), labels[rows]


def weight_ema(model: nn.Module, decay: float) -> AveragedModel | None:
    """An exponential moving average of ``model``'s weights, or None when ``decay`` is 0 (off).

    ``use_buffers=True`` averages BatchNorm's running statistics along with the weights, so the average
    is a model ready to evaluate: no extra pass over the training data to recompute its statistics
    (as SWA's ``update_bn`` does). ``model`` is the module itself, never its DDP or compile wrapper, so
    that the average's state_dict is a plain model's.
    """
    if decay == 0:
        return None
    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)


def train_one_epoch(
    model: nn.Module,
    dataset: ImageSet,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    criterion: nn.Module,
    runtime: Runtime,
    scaler: torch.amp.GradScaler,
    augment: Augmentation,
    generator: torch.Generator,
    batch_size: int,
    epoch: int,
    progress: bool = True,
    dist: Distributed = SINGLE_PROCESS,
    ema: AveragedModel | None = None,
) -> dict[str, float]:
    """One pass over ``dataset`` (already on the device) in a seeded random order; ``ema`` follows every step.

    Under torchrun every process draws the same order and augments the whole global batch with the
    same generator, so the random draws stay those of a single-process run, then trains on its own
    rows (:meth:`Distributed.shard`); DDP averages the gradients. No step waits for the device:
    the loss is checked by a :class:`LossWatch`, and the totals are read once, at the end.
    """
    model.train()
    n = len(dataset)
    loss_sum = torch.zeros((), device=runtime.device)
    correct = torch.zeros((), dtype=torch.long, device=runtime.device)
    watch = LossWatch(epoch, runtime.device, dist)
    bar = text_bar(total=n, desc=f"epoch {epoch}", unit="img", enabled=progress)
    start = time.perf_counter()
    batches = training_batches(dataset, batch_size, augment, generator, runtime, dist)
    for step, (x, y) in enumerate(batches, start=1):
        global_batch = min(batch_size, n - (step - 1) * batch_size)  # every process's rows together
        with runtime.autocast():
            logits = model(x)
            loss = criterion(logits, y)
        scale = dist.gradient_scale(len(y), global_batch)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss if scale == 1 else loss * scale).backward()
        scaler.step(optimizer)
        scaler.update()
        if ema is not None:  # DDP and torch.compile wrappers list their module's parameters and buffers, in order
            ema.update_parameters(model)
        lr = scheduler.get_last_lr()[0]
        scheduler.step()

        step_loss = loss.detach() * len(y)
        loss_sum += step_loss
        correct += (logits.argmax(1) == y).sum()
        mean = watch.add(step, step_loss, global_batch, lr, last=step * batch_size >= n)
        bar.update(global_batch)
        if mean is not None:
            bar.set_postfix(loss=f"{mean:.3f}", lr=f"{lr:.4f}", refresh=False)
    bar.close()
    runtime.synchronize()
    seconds = time.perf_counter() - start
    dist.sum_(loss_sum)
    dist.sum_(correct)
    return {
        "train_loss": loss_sum.item() / n,
        "train_acc": correct.item() / n,
        "lr": lr,
        "train_seconds": seconds,
        "images_per_s": n / seconds,
    }


def evaluate(
    model: nn.Module,
    dataset: ImageSet,
    runtime: Runtime,
    batch_size: int = 512,
    label_smoothing: float = 0.0,
    dist: Distributed = SINGLE_PROCESS,
) -> dict[str, float]:
    """Loss and accuracy on a dataset: one batched pass, no augmentation.

    Under torchrun each process scores its own share of the images, and the logits of all shares are
    gathered, so every process reports the loss and accuracy over every image.
    """
    if not dist.enabled:
        predictions = predict(model, dataset, runtime, batch_size)
    else:
        rows = dist.shard(len(dataset))
        part = dataset.take(torch.arange(rows.start, rows.stop, device=dataset.labels.device))
        logits = predict(model, part, runtime, batch_size).logits.to(runtime.device)
        predictions = Predictions(dist.gather_rows(logits, len(dataset)).cpu(), dataset.labels.cpu())
    return {"loss": predictions.loss(label_smoothing), "acc": predictions.accuracy()}


def _resume_command(run_dir: Path, launcher: str = "erav1") -> str:
    return f"{launcher} train --resume {shlex.quote(str(run_dir))}"


def _start_or_resume(config: Config, run_dir: Path) -> dict[str, Any] | None:
    """Check the run directory and return the checkpoint to resume from, if any.

    Nothing is written or removed here: an --overwrite clears the old run only
    once the new one has its data and model, so a mistake cannot cost the old run.
    """
    if not rundir.holds_run(run_dir) or config.overwrite:
        return None
    if not config.resume:
        raise RunDirError(
            f"{run_dir} already holds a run. Continue it with '{_resume_command(run_dir)}', "
            f"or replace it with --overwrite."
        )
    path = run_dir / rundir.CHECKPOINT
    if not path.exists():
        if (run_dir / rundir.WEIGHTS).exists():
            raise RunDirError(
                f"{run_dir} holds final weights ({rundir.WEIGHTS}) but no {rundir.CHECKPOINT} to resume from; "
                "a resumed run would start over and replace them. Use --overwrite to start over."
            )
        return None  # stopped before its first epoch ended: nothing to keep
    checkpoint = load_training_checkpoint(path)
    _check_unchanged(config, checkpoint["config"], path)
    return checkpoint


def _check_unchanged(config: Config, saved: dict[str, Any], source: Path) -> None:
    """Resuming must not change the run: only RESUMABLE_CHANGES may differ from the saved config."""
    changed = sorted(k for k, v in config.to_dict().items() if k not in RESUMABLE_CHANGES and saved.get(k, v) != v)
    if changed:
        detail = ", ".join(f"{k}: {saved[k]!r} -> {getattr(config, k)!r}" for k in changed)
        raise RunDirError(
            f"cannot resume from {source}: it was saved with other settings ({detail}); "
            f"resume with the run's own config.json ('{_resume_command(source.parent)}'), or use --overwrite."
        )


def _finished_run(config: Config, run_dir: Path, say: Callable[..., None] = print) -> FitResult | None:
    """A finished run, returned as it is: resuming it trains nothing and rewrites none of its files.

    Only config.json, history.json and model.pt are needed, so a run trained elsewhere (on a GPU, say)
    can be copied in without its 90 MB last.pt, and the book's chapter 3 then shows it instead of
    training again.
    """
    weights = run_dir / rundir.WEIGHTS
    if not config.resume or config.overwrite or not weights.is_file():
        return None
    history = rundir.read_history(run_dir)
    if len(history) != config.epochs:
        return None
    _check_unchanged(config, rundir.read_json(run_dir / rundir.CONFIG), run_dir / rundir.CONFIG)
    runtime = Runtime.create(config.device, config.precision, config.channels_last)
    data = load_data(
        config.data, config.data_dir, config.subset, config.val_fraction, resize=config.resize, verbose=say is print
    )
    checkpoint = run_dir / rundir.CHECKPOINT
    if checkpoint.is_file():  # it names the classes; model.pt alone only has their number
        _check_same_classes(load_training_checkpoint(checkpoint), checkpoint, data.classes, config.data)
    model = runtime.prepare(get_model(config.model, num_classes=len(data.classes)))
    load_weights(model, load_checkpoint(weights), weights)
    environment = rundir.read_json(run_dir / rundir.ENVIRONMENT)
    where = environment.get("gpu") or environment.get("cpu") or environment.get("device")
    say(
        f"{run_dir} has finished all {config.epochs} epochs, trained earlier on {where} "
        f"({environment.get('precision')}): nothing to train (--overwrite trains it again). Its epochs:"
    )
    eval_name = "val" if "val_acc" in history[-1] else "test"
    for record in history:
        say(_format_epoch(record, config.epochs, eval_name))
    return FitResult(model, history, run_dir, data.classes)


def _check_same_classes(checkpoint: dict[str, Any], source: Path, classes: list[str], data: str) -> None:
    """A resumed run must see the classes its checkpoint was trained on, in the same order."""
    if checkpoint["classes"] != classes:
        raise DataError(
            f"{source} was trained on {len(checkpoint['classes'])} classes ({', '.join(checkpoint['classes'])}), "
            f"but {data} has {len(classes)} ({', '.join(classes)}); resume with the data the run started on"
        )


def _restore(
    checkpoint: dict[str, Any],
    source: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    scaler: torch.amp.GradScaler,
    generator: torch.Generator,
    ema: AveragedModel | None,
) -> list[dict[str, float]]:
    """Put every piece of training state back; return the history so far."""
    load_weights(model, checkpoint["model"], source)
    try:
        optimizer.load_state_dict(checkpoint["optimizer"])
        scheduler.load_state_dict(checkpoint["scheduler"])
        scaler.load_state_dict(checkpoint["scaler"])
        generator.set_state(checkpoint["rng"]["generator"])
        torch.set_rng_state(checkpoint["rng"]["torch"])
        if ema is not None:
            ema.load_state_dict(checkpoint["ema"])
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{source} does not match this run's training state ({exc})") from None
    return list(checkpoint["history"])


def _diverged(problem: str, precision: str, run_dir: Path, saved_epochs: int) -> NonFiniteLossError:
    kept = (
        f"{run_dir / rundir.CHECKPOINT} keeps the last good epoch ({saved_epochs})"
        if saved_epochs
        else "no epoch had finished, so there is no checkpoint"
    )
    hint = "Lower --lr" + ("" if precision == "fp32" else ", or try --precision fp32")
    return NonFiniteLossError(f"{problem}; the run stopped, and {kept}. {hint}.")


def _check_finite_scores(record: dict[str, float], steps_per_epoch: int) -> None:
    """A diverged model can still train on finite losses while its evaluation is already NaN or inf."""
    for key in [k for k in record if k.endswith("_loss") and k != "train_loss"]:
        if not math.isfinite(record[key]):
            raise NonFiniteLossError(
                f"the {key.removesuffix('_loss')} loss became {record[key]} at epoch {int(record['epoch'])}, "
                f"in the evaluation after step {steps_per_epoch} (lr {record['lr']:.4g})"
            )


def _format_epoch(record: dict[str, float], epochs: int, eval_name: str) -> str:
    return (
        f"epoch {int(record['epoch']):>3}/{epochs}  "
        f"train loss {record['train_loss']:.4f} acc {100 * record['train_acc']:6.2f}%  "
        f"{eval_name} loss {record[eval_name + '_loss']:.4f} acc {100 * record[eval_name + '_acc']:6.2f}%  "
        f"lr {record['lr']:.4f}  {record['seconds']:.0f}s  {record['images_per_s']:.0f} img/s"
    )


def _optimizer_and_schedule(
    config: Config, model: nn.Module, epochs: int, steps_per_epoch: int
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    optimizer = build_optimizer(
        config.optimizer,
        model,
        config.lr,
        config.weight_decay,
        config.momentum,
        config.nesterov,
        config.decay_norm_and_bias,
    )
    return optimizer, build_scheduler(config.scheduler, optimizer, epochs, steps_per_epoch, config.pct_start)


def _saved(saved_epochs: int, epochs: int, run_dir: Path, dist: Distributed) -> str:
    """What a stopped run keeps, and the command that continues it."""
    return (
        f"{saved_epochs} of {epochs} epochs are saved in {run_dir / rundir.CHECKPOINT}. "
        f"Resume with: {_resume_command(run_dir, dist.launcher())}"
    )


def _silent(*args: Any, **kwargs: Any) -> None:
    """``print`` for every process but rank 0: one run prints once, however many processes it has."""


def fit(config: Config, progress: bool = True) -> FitResult:
    """Train ``config.model`` for ``config.epochs``; write and return the run.

    Under ``torchrun --nproc_per_node=N`` every process runs this function on its own device, as one
    DistributedDataParallel run; rank 0 alone writes the run's files and prints.
    """
    dist = Distributed.from_env()
    run_dir = Path(config.run_dir).expanduser()
    finished = _finished_run(config, run_dir, print if dist.is_main else _silent)
    if finished is not None:
        return finished
    checkpoint = _start_or_resume(config, run_dir)
    runtime = Runtime.create(config.device, config.precision, config.channels_last)
    runtime = replace(runtime, device=dist.place(runtime.device))
    if runtime.device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    dist.start(runtime.device)
    try:
        return _train(config, run_dir, checkpoint, runtime, dist, progress)
    finally:
        dist.stop()


def _train(
    config: Config,
    run_dir: Path,
    checkpoint: dict[str, Any] | None,
    runtime: Runtime,
    dist: Distributed,
    progress: bool,
) -> FitResult:
    """The run itself, in one process of ``dist``: data, model, optimizer, then epoch after epoch."""
    say = print if dist.is_main else _silent
    data = load_data(
        config.data, config.data_dir, config.subset, config.val_fraction, resize=config.resize, verbose=dist.is_main
    )
    dist.check_batches(config.batch_size, len(data.train))
    if checkpoint is not None:
        _check_same_classes(checkpoint, run_dir / rundir.CHECKPOINT, data.classes, config.data)
    torch.manual_seed(config.seed)  # the same initial weights in every process
    model = runtime.prepare(config.new_model(len(data.classes)))
    ema = weight_ema(model, config.ema_decay)
    scored = model if ema is None else ema.module  # the model that is evaluated and saved as model.pt
    steps_per_epoch = -(-len(data.train) // config.batch_size)
    optimizer, scheduler = _optimizer_and_schedule(config, model, config.epochs, steps_per_epoch)
    scaler = runtime.grad_scaler()
    generator = torch.Generator(device=runtime.device).manual_seed(config.seed)
    criterion = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)

    history: list[dict[str, float]] = []  # the epochs saved in last.pt
    if checkpoint is not None:
        history = _restore(checkpoint, run_dir / rundir.CHECKPOINT, model, optimizer, scheduler, scaler, generator, ema)
        say(f"resuming {run_dir} after epoch {len(history)}/{config.epochs}")
    train_model = dist.wrap(model, runtime.device, config.sync_bn)
    if config.compile:
        train_model = torch.compile(train_model, mode=config.compile_mode)

    dist.barrier()  # every process has read the run directory before rank 0 changes it
    logger = None
    if dist.is_main:
        if config.overwrite:
            rundir.clear_run(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        remove_partial_writes(run_dir, rundir.RUN_FILES)  # left by writes that a kill cut short
        atomic_write_json(config.to_saved_dict(), run_dir / rundir.CONFIG)
        environment = rundir.environment_info(runtime.device, runtime.precision) | {"processes": dist.world_size}
        atomic_write_json(environment, run_dir / rundir.ENVIRONMENT)
        atomic_write_json(history, run_dir / rundir.HISTORY)
        logger = TensorBoardLogger(run_dir / rundir.TENSORBOARD, start_epoch=len(history))

    train_set = data.train.to(runtime.device)
    eval_name, eval_set = data.eval_name, data.eval_set.to(runtime.device)
    on = f"{runtime.device}" if not dist.enabled else f"{dist.world_size} x {runtime.device.type} (torchrun)"
    say(
        f"training {config.model} on {len(train_set)} images ({data.source}), scoring {eval_name} "
        f"({len(eval_set)}) | {on}, {runtime.precision}, batch {config.batch_size}"
    )
    try:
        for epoch in range(len(history) + 1, config.epochs + 1):
            start = time.perf_counter()
            record = {"epoch": epoch}
            record |= train_one_epoch(
                train_model,
                train_set,
                optimizer,
                scheduler,
                criterion,
                runtime,
                scaler,
                config.augmentation,
                generator,
                config.batch_size,
                epoch,
                progress and dist.is_main,
                dist,
                ema,
            )
            dist.sync_buffers(scored)  # evaluate, in every process, the model that rank 0 saves
            scores = evaluate(scored, eval_set, runtime, config.eval_batch_size, config.label_smoothing, dist)
            record |= {f"{eval_name}_loss": scores["loss"], f"{eval_name}_acc": scores["acc"]}
            if ema is not None:
                record["scored"] = "ema"  # the scores are the average's; train_loss and train_acc the trained model's
            if epoch == config.epochs and data.val is not None:
                final = evaluate(scored, data.test, runtime, config.eval_batch_size, config.label_smoothing, dist)
                record |= {"test_loss": final["loss"], "test_acc": final["acc"]}
            _check_finite_scores(record, steps_per_epoch)
            record["seconds"] = time.perf_counter() - start
            if dist.is_main:
                atomic_save(
                    {
                        "format": CHECKPOINT_FORMAT,
                        "epoch": epoch,
                        "config": config.to_saved_dict(),
                        "model": model.state_dict(),
                        "optimizer": optimizer.state_dict(),
                        "scheduler": scheduler.state_dict(),
                        "scaler": scaler.state_dict(),
                        "rng": {"generator": generator.get_state(), "torch": torch.get_rng_state()},
                        "history": history + [record],
                        "classes": data.classes,
                    }
                    | ({} if ema is None else {"ema": ema.state_dict()}),
                    run_dir / rundir.CHECKPOINT,
                )
            history.append(record)
            if dist.is_main:
                atomic_write_json(history, run_dir / rundir.HISTORY)
                logger.log_epoch(record)
            say(_format_epoch(record, config.epochs, eval_name), flush=True)
    except NonFiniteLossError as exc:
        raise _diverged(str(exc), runtime.precision, run_dir, len(history)) from None
    except KeyboardInterrupt:
        say(f"\ninterrupted: {_saved(len(history), config.epochs, run_dir, dist)}", flush=True)
        raise
    except Exception:
        if dist.enabled:  # most often another process died (killed, out of memory): say what is kept
            say(f"\nstopped: {_saved(len(history), config.epochs, run_dir, dist)}", flush=True)
        raise
    finally:
        if logger is not None:
            logger.close()

    if dist.is_main:
        atomic_save(scored.state_dict(), run_dir / rundir.WEIGHTS)
    return FitResult(scored, history, run_dir, data.classes)


def describe_config(config: Config) -> Markdown:
    """The recipe as a table: every Config field, its value and what it means."""
    rows = [[f"`{f.name}`", f"`{getattr(config, f.name)!r}`", f.metadata["help"]] for f in fields(Config)]
    return Markdown(markdown_table(["option", "value", "meaning"], rows))


def describe_expected_time(config: Config, steps: int = 2) -> Markdown:
    """Before training: where it will run and, without a GPU, how long a short measured burst says it will take.

    A reader who opens chapter 3 on a runtime without a GPU should learn that before the hours start, not after.
    The burst is ``steps`` batches of the recipe's real training step on real images, after one warm-up batch, on
    a throw-away model, so the run itself is untouched.
    """
    run_dir = Path(config.run_dir).expanduser()
    kept = config.resume and not config.overwrite and (run_dir / rundir.HISTORY).is_file()
    done = len(rundir.read_history(run_dir)) if kept else 0
    if done >= config.epochs:
        return Markdown(
            f"`{run_dir}` holds a finished run of {config.epochs} epochs: the next cell trains nothing and shows it."
        )
    runtime = Runtime.create(config.device, config.precision, config.channels_last)
    if runtime.device.type == "cuda":
        gpu = torch.cuda.get_device_name(runtime.device)
        return Markdown(f"Training runs on the GPU ({gpu}, {runtime.precision}).")
    data = load_data(config.data, config.data_dir, config.subset, config.val_fraction, config.resize, verbose=False)
    images_per_s = _burst_speed(config, data.train, runtime, steps)
    left = config.epochs - done
    minutes = round(left * len(data.train) / images_per_s / 60)
    duration = f"{minutes // 60} h {minutes % 60:02d} min" if minutes >= 60 else f"{minutes} min"
    return Markdown(
        f"**No GPU here:** training runs on the {runtime.device.type.upper()} in {runtime.precision}, at about "
        f"{images_per_s:,.0f} images/s (measured just now over {steps} batches of {config.batch_size}). "
        f"{left} epoch{'s' * (left != 1)} of {len(data.train):,} images will take about **{duration}**, plus a "
        "test pass per epoch. In Colab, *Runtime > Change runtime type > T4 GPU* makes it minutes, and a run "
        "that stops resumes from its last finished epoch."
    )


def _burst_speed(config: Config, train: ImageSet, runtime: Runtime, steps: int) -> float:
    """Images per second of the recipe's training step: one warm-up batch, then ``steps`` timed batches."""
    torch.manual_seed(config.seed)
    model = runtime.prepare(config.new_model(len(train.classes)))
    optimizer, scheduler = _optimizer_and_schedule(config, model, 1, steps + 1)
    generator = torch.Generator(device=runtime.device).manual_seed(config.seed)
    parts = (
        optimizer,
        scheduler,
        nn.CrossEntropyLoss(),
        runtime,
        runtime.grad_scaler(),
        config.augmentation,
        generator,
        config.batch_size,
        0,
    )
    warm_up = torch.arange(min(config.batch_size, len(train)))
    timed = torch.arange(len(warm_up), len(warm_up) + steps * config.batch_size) % len(train)
    train_one_epoch(model, train.take(warm_up), *parts, progress=False)
    return train_one_epoch(model, train.take(timed), *parts, progress=False)["images_per_s"]
