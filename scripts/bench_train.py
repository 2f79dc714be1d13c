"""Training throughput: erav1's default path against kuangliu/pytorch-cifar's loop, same run.

The baseline is kuangliu's ``main.py`` training loop as published: torchvision
transforms on PIL images (RandomCrop(32, 4), flip, ToTensor, Normalize) through a
``DataLoader(batch_size=128, shuffle=True, num_workers=2)``, fp32, NCHW, SGD with
momentum 0.9 and weight decay 5e-4.  erav1's path is ``erav1.main.train_one_epoch``
with the defaults ``fit`` would use on this machine (Runtime "auto"), at the
baseline's batch size of 128 unless ``--batch-size`` says otherwise (the book's
recipe uses 512), so the default comparison is like for like.  Both train the
same ResNet18 on the same real images, alternating A B A B, and each measures
``--images`` training images per round after a warm-up.

    python scripts/bench_train.py --data ../shared/data/cifar10-jpeg.zip
    python scripts/bench_train.py --data ../shared/data/cifar10-jpeg.zip --batch-size 512

The last line is ``ratio: X.XX`` (erav1 images/s over baseline images/s).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torchvision.transforms as T
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset

from erav1.main import Config, train_one_epoch
from erav1.models import ResNet18
from erav1.utils.data import ImageSet, load_data
from erav1.utils.evaluation import predict
from erav1.utils.policies import Runtime, build_optimizer, build_scheduler
from erav1.utils.transforms import CIFAR10_MEAN, CIFAR10_STD

FULL_RUN_IMAGES = 50_000 * 20
FULL_RUN_EVAL_IMAGES = 10_000 * 20
BASELINE_BATCH_SIZE = 128  # kuangliu/pytorch-cifar main.py


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


def baseline_round(model, optimizer, loader, warmup_batches: int) -> float:
    """kuangliu's train(): returns images/s over the batches after the warm-up."""
    criterion = nn.CrossEntropyLoss()
    model.train()
    train_loss, correct, total, timed = 0.0, 0, 0, 0
    for batch_idx, (inputs, targets) in enumerate(loader):
        if batch_idx == warmup_batches:
            start = time.perf_counter()
        optimizer.zero_grad()
        outputs = model(inputs)
        loss = criterion(outputs, targets)
        loss.backward()
        optimizer.step()
        train_loss += loss.item()
        correct += outputs.max(1)[1].eq(targets).sum().item()
        total += targets.size(0)
        if batch_idx >= warmup_batches:
            timed += targets.size(0)
    return timed / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="../shared/data/cifar10-jpeg.zip")
    parser.add_argument("--data-dir", default="~/.cache/erav1")
    parser.add_argument("--images", type=int, default=2560, help="timed training images per round and path")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=BASELINE_BATCH_SIZE,
                        help="erav1's batch size (default: the baseline's, %(default)s)")
    args = parser.parse_args()

    defaults = Config(batch_size=args.batch_size)
    warmup = 2 * defaults.batch_size
    data = load_data(args.data, args.data_dir, subset=args.images + warmup)
    runtime = Runtime.create(defaults.device, defaults.precision, defaults.channels_last)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, erav1 runtime: "
          f"{runtime.device} {runtime.precision} channels_last={runtime.channels_last}, "
          f"batch {defaults.batch_size} (baseline {BASELINE_BATCH_SIZE})")

    # erav1: the real train_one_epoch, data in memory on the device.
    torch.manual_seed(0)
    model_a = runtime.prepare(ResNet18())
    opt_a = build_optimizer(defaults.optimizer, model_a, defaults.lr, defaults.weight_decay, defaults.momentum,
                            defaults.nesterov)
    sched_a = build_scheduler("none", opt_a, 1, 1)
    generator = torch.Generator(device=runtime.device).manual_seed(0)
    criterion = nn.CrossEntropyLoss(label_smoothing=defaults.label_smoothing)
    train_set = data.train.to(runtime.device)
    timed_set = train_set.take(torch.arange(warmup, len(train_set)))
    warm_set = train_set.take(torch.arange(warmup))

    def erav1_round() -> float:
        args_ = (opt_a, sched_a, criterion, runtime, runtime.grad_scaler(), defaults.augmentation, generator,
                 defaults.batch_size)
        train_one_epoch(model_a, warm_set, *args_, epoch=0, progress=False)
        return train_one_epoch(model_a, timed_set, *args_, epoch=0, progress=False)["images_per_s"]

    # baseline: kuangliu/pytorch-cifar main.py
    torch.manual_seed(0)
    model_b = ResNet18()
    opt_b = torch.optim.SGD(model_b.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    transform = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor(),
                           T.Normalize(CIFAR10_MEAN, CIFAR10_STD)])
    loader = DataLoader(PILDataset(data.train, transform), batch_size=BASELINE_BATCH_SIZE, shuffle=True, num_workers=2)

    rates: dict[str, list[float]] = {"erav1": [], "baseline": []}
    for r in range(args.rounds):
        rates["erav1"].append(erav1_round())
        print(f"round {r + 1}: erav1    {rates['erav1'][-1]:7.1f} img/s", flush=True)
        rates["baseline"].append(baseline_round(model_b, opt_b, loader, warmup_batches=2))
        print(f"round {r + 1}: baseline {rates['baseline'][-1]:7.1f} img/s", flush=True)

    start = time.perf_counter()
    predict(model_a, data.test.to(runtime.device), runtime, defaults.eval_batch_size)
    eval_rate = len(data.test) / (time.perf_counter() - start)

    erav1_rate, baseline_rate = (statistics.median(rates[k]) for k in ("erav1", "baseline"))
    for name, rate in (("erav1", erav1_rate), ("baseline", baseline_rate)):
        minutes = FULL_RUN_IMAGES / rate / 60
        print(f"{name:8s}: {rate:7.1f} img/s -> 20 epochs x 50,000 images: {minutes:6.1f} min of training")
    total = (FULL_RUN_IMAGES / erav1_rate + FULL_RUN_EVAL_IMAGES / eval_rate) / 60
    print(f"erav1 eval: {eval_rate:.0f} img/s; full 20-epoch run with a test pass per epoch: {total:.1f} min")
    print(f"ratio: {erav1_rate / baseline_rate:.2f}")


if __name__ == "__main__":
    main()
