"""Training throughput: erav1's loop against kuangliu/pytorch-cifar's, in one process, at one batch size.

The baseline is kuangliu's ``main.py`` training loop as published: torchvision
transforms on PIL images (RandomCrop(32, 4), flip, ToTensor, Normalize) through a
``DataLoader(shuffle=True, num_workers=2)``, fp32, NCHW, SGD with momentum 0.9
and weight decay 5e-4, one ``loss.item()`` per step.  On CUDA its loader pins
memory and its batches are copied with ``non_blocking=True`` (kuangliu does
neither: this only helps the baseline), and one GPU serves both loops.
erav1's path is ``erav1.main.train_one_epoch`` with the settings ``fit`` would
use on the device (``--precision auto``, channels_last, data in device memory,
batched augmentation).  Both train the same ResNet18 on the same real images at
``--batch-size`` (default: kuangliu's 128), alternating A B A B; each round
times ``--images`` images after a warm-up, and the device is synchronised
before every timer is read.

    python scripts/bench_train.py --data ../shared/data/cifar10-jpeg.zip --json book/results/bench/cpu-NAME.json
    python scripts/bench_train.py --device cuda --full-run --json book/results/bench/gpu-NAME.json
    python scripts/bench_train.py --refresh-readme     # README's table from book/results/bench/*.json
    python scripts/bench_train.py --profile --rounds 1 # where erav1's step spends its time (torch.profiler)

It prints each round, the medians, erav1's 20-epoch time (estimated from the
measured training and evaluation throughput; ``--full-run`` also measures a
whole ``fit`` of 20 epochs), and last ``ratio: X.XX`` (erav1 over baseline).
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import torch
import torchvision.transforms as T
from PIL import Image
from torch import nn
from torch.profiler import ProfilerActivity, profile
from torch.utils.data import DataLoader, Dataset

from erav1.main import Config, fit, train_one_epoch
from erav1.models import ResNet18
from erav1.utils.benchmarks import BENCH_DIR, BENCH_FORMAT, refresh_bench_table
from erav1.utils.checkpoint import atomic_write_json
from erav1.utils.data import ImageSet, load_data
from erav1.utils.evaluation import predict
from erav1.utils.policies import (
    COMPILE_MODES,
    DEVICES,
    PRECISIONS,
    Runtime,
    build_optimizer,
    build_scheduler,
    cpu_has_fast_bf16,
)
from erav1.utils.rundir import environment_info
from erav1.utils.transforms import CIFAR10_MEAN, CIFAR10_STD

ROOT = Path(__file__).resolve().parents[1]
EPOCHS, TRAIN_IMAGES, TEST_IMAGES = 20, 50_000, 10_000  # the book's run on all of CIFAR-10
BASELINE_BATCH_SIZE = 128  # kuangliu/pytorch-cifar main.py
WARMUP_BATCHES = 2


class PILDataset(Dataset):
    """What torchvision's CIFAR10 does per item: an array to a PIL image, then the transform."""

    def __init__(self, images: ImageSet, transform) -> None:
        self.arrays = images.images.permute(0, 2, 3, 1).numpy()
        self.labels = images.labels.tolist()
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        return self.transform(Image.fromarray(self.arrays[i])), self.labels[i]


def baseline_round(model, optimizer, loader, runtime: Runtime) -> float:
    """kuangliu's train(): returns images/s over the batches after the warm-up."""
    criterion = nn.CrossEntropyLoss()
    model.train()
    train_loss, correct, total, timed = 0.0, 0, 0, 0
    for batch_idx, (inputs, targets) in enumerate(loader):
        if batch_idx == WARMUP_BATCHES:
            runtime.synchronize()
            start = time.perf_counter()
        inputs = inputs.to(runtime.device, non_blocking=True)
        targets = targets.to(runtime.device, non_blocking=True)
        optimizer.zero_grad()
        outputs = model(inputs)
        loss = criterion(outputs, targets)
        loss.backward()
        optimizer.step()
        train_loss += loss.item()
        correct += outputs.max(1)[1].eq(targets).sum().item()
        total += targets.size(0)
        if batch_idx >= WARMUP_BATCHES:
            timed += targets.size(0)
    runtime.synchronize()
    return timed / (time.perf_counter() - start)


def measure_full_run(args: argparse.Namespace) -> tuple[float, float]:
    """Wall time of a whole ``fit`` (data loading, compiling, 20 epochs of training and evaluation, checkpoints),
    and its final test accuracy, which says that the fast path still learns."""
    with tempfile.TemporaryDirectory(prefix="erav1-bench-") as run_dir:
        config = Config(
            data=args.data,
            data_dir=args.data_dir,
            batch_size=args.batch_size,
            device=args.device,
            precision=args.precision,
            epochs=EPOCHS,
            run_dir=run_dir,
            compile=args.compile,
            compile_mode=args.compile_mode,
        )
        start = time.perf_counter()
        result = fit(config, progress=False)
        return time.perf_counter() - start, result.history[-1]["test_acc"]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "cifar10-jpeg.zip"))
    parser.add_argument("--data-dir", default="~/.cache/erav1")
    parser.add_argument("--device", choices=DEVICES, default="auto", help="device of both loops (default: auto)")
    parser.add_argument("--precision", choices=PRECISIONS, default="auto", help="erav1's precision (default: auto)")
    parser.add_argument("--images", type=int, default=2560, help="timed training images per round and loop")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--batch-size",
        type=int,
        default=BASELINE_BATCH_SIZE,
        help="batch size of both loops (default: kuangliu's, %(default)s)",
    )
    parser.add_argument("--workers", type=int, default=2, help="the baseline's DataLoader workers (kuangliu: 2)")
    parser.add_argument("--threads", type=int, help="CPU math threads of both loops (default: torch's, all cores)")
    parser.add_argument("--full-run", action="store_true", help="also time a whole 20-epoch fit on all the data")
    parser.add_argument("--compile", action="store_true", help="torch.compile erav1's model (its round and its fit)")
    parser.add_argument("--compile-mode", choices=COMPILE_MODES, default="default", help="torch.compile's mode")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="also print torch.profiler's table of where one round of erav1's loop spends its time",
    )
    parser.add_argument("--json", type=Path, help="write the results to this file")
    parser.add_argument(
        "--refresh-readme", action="store_true", help=f"only rewrite README's table from {BENCH_DIR}/*.json, then exit"
    )
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    if args.refresh_readme:
        changed = refresh_bench_table(ROOT / "README.md", ROOT / BENCH_DIR)
        print(f"README.md {'updated' if changed else 'already up to date'} from {BENCH_DIR}/")
        return

    if args.threads:
        torch.set_num_threads(args.threads)
    runtime = Runtime.create(args.device, args.precision, channels_last=True)
    if runtime.device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # as fit() does, and kuangliu's main.py
    recipe = Config(batch_size=args.batch_size)
    warmup = WARMUP_BATCHES * args.batch_size
    data = load_data(args.data, args.data_dir, subset=args.images + warmup)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {runtime.device}: erav1 "
        f"{runtime.precision} channels_last, baseline fp32 NCHW, both at batch {args.batch_size}",
        flush=True,
    )

    # erav1: the real train_one_epoch, data in device memory; a constant lr (the schedule costs nothing).
    torch.manual_seed(0)
    model_a = runtime.prepare(ResNet18())
    # compiled in the warm-up of the first round
    train_a = torch.compile(model_a, mode=args.compile_mode) if args.compile else model_a
    opt_a = build_optimizer(recipe.optimizer, model_a, recipe.lr, recipe.weight_decay, recipe.momentum, recipe.nesterov)
    sched_a = build_scheduler("none", opt_a, 1, 1)
    generator = torch.Generator(device=runtime.device).manual_seed(0)
    criterion = nn.CrossEntropyLoss(label_smoothing=recipe.label_smoothing)
    train_set = data.train.to(runtime.device)
    warm_set, timed_set = train_set.take(torch.arange(warmup)), train_set.take(torch.arange(warmup, len(train_set)))

    def erav1_round() -> float:
        common = (
            opt_a,
            sched_a,
            criterion,
            runtime,
            runtime.grad_scaler(),
            recipe.augmentation,
            generator,
            args.batch_size,
        )
        train_one_epoch(train_a, warm_set, *common, epoch=0, progress=False)
        return train_one_epoch(train_a, timed_set, *common, epoch=0, progress=False)["images_per_s"]

    # baseline: kuangliu/pytorch-cifar main.py
    torch.manual_seed(0)
    model_b = ResNet18().to(runtime.device)
    opt_b = torch.optim.SGD(model_b.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    transform = T.Compose(
        [T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor(), T.Normalize(CIFAR10_MEAN, CIFAR10_STD)]
    )
    loader = DataLoader(
        PILDataset(data.train, transform),
        batch_size=args.batch_size,
        shuffle=True,
        num_workers=args.workers,
        pin_memory=runtime.device.type == "cuda",
    )

    load_before = os.getloadavg()  # other work on the machine slows both loops; the JSON says how much there was
    rounds: dict[str, list[float]] = {"erav1": [], "baseline": []}
    for r in range(args.rounds):
        rounds["erav1"].append(erav1_round())
        print(f"round {r + 1}: erav1    {rounds['erav1'][-1]:8.1f} img/s", flush=True)
        rounds["baseline"].append(baseline_round(model_b, opt_b, loader, runtime))
        print(f"round {r + 1}: baseline {rounds['baseline'][-1]:8.1f} img/s", flush=True)

    if args.profile:
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if runtime.device.type == "cuda" else [])
        with profile(activities=activities) as profiled:
            erav1_round()
        sorts = ["self_cpu_time_total"] + (["self_cuda_time_total"] if runtime.device.type == "cuda" else [])
        for sort_by in sorts:  # the host's work (launches, waits), then the device's kernels
            print(profiled.key_averages().table(sort_by=sort_by, row_limit=15), flush=True)

    test_set = data.test.to(runtime.device)
    predict(model_a, test_set, runtime, recipe.eval_batch_size)  # warm-up
    start = time.perf_counter()
    predict(model_a, test_set, runtime, recipe.eval_batch_size)
    eval_rate = len(test_set) / (time.perf_counter() - start)

    erav1_rate, baseline_rate = (statistics.median(rounds[k]) for k in ("erav1", "baseline"))
    estimated = EPOCHS * (TRAIN_IMAGES / erav1_rate + TEST_IMAGES / eval_rate)
    for name, rate in (("erav1", erav1_rate), ("baseline", baseline_rate)):
        print(
            f"{name:8s}: {rate:8.1f} img/s -> {EPOCHS} epochs x {TRAIN_IMAGES:,} images: "
            f"{EPOCHS * TRAIN_IMAGES / rate / 60:6.1f} min of training"
        )
    print(
        f"erav1 eval: {eval_rate:.0f} img/s; {EPOCHS} epochs with a test pass each, estimated: "
        f"{estimated / 60:.1f} min",
        flush=True,
    )
    measured, final_acc = measure_full_run(args) if args.full_run else (None, None)
    if measured is not None:
        print(f"erav1 {EPOCHS}-epoch fit, measured end to end: {measured:.1f} s, final test accuracy {final_acc:.2%}")
    ratio = erav1_rate / baseline_rate
    print(f"ratio: {ratio:.2f}")

    if args.json:
        atomic_write_json(
            {
                "format": BENCH_FORMAT,
                "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "command": shlex.join(["python", "scripts/bench_train.py", *sys.argv[1:]]),
                "environment": environment_info(runtime.device, runtime.precision),
                "cpu_fast_bf16": cpu_has_fast_bf16(),
                "load_average_1min": {"before": load_before[0], "after": os.getloadavg()[0]},
                "settings": {
                    "batch_size": args.batch_size,
                    "images_per_round": args.images,
                    "rounds": args.rounds,
                    "warmup_batches": WARMUP_BATCHES,
                    "baseline_workers": args.workers,
                    "compile": args.compile and args.compile_mode,
                    "data": data.source,  # what the pixels are, and where they were read from
                },
                "erav1": {"images_per_s": erav1_rate, "rounds": rounds["erav1"], "eval_images_per_s": eval_rate},
                "baseline": {"images_per_s": baseline_rate, "rounds": rounds["baseline"]},
                "ratio": ratio,
                "full_run": {
                    "epochs": EPOCHS,
                    "train_images": TRAIN_IMAGES,
                    "test_images": TEST_IMAGES,
                    "estimated_s": estimated,
                    "measured_s": measured,
                    "final_test_acc": final_acc,
                },
            },
            args.json,
        )
        print(f"wrote {args.json}; 'python scripts/bench_train.py --refresh-readme' puts it into README's table")


if __name__ == "__main__":
    main()
