"""Time Grad-CAM for 10 misclassified images, for the predicted and the true class (a print, not a test).

    python scripts/bench_gradcam.py                       # an untrained ResNet18, 10 random images
    python scripts/bench_gradcam.py --run-dir RUN_DIR     # a trained run, its 10 most confident test mistakes

Times the whole of ``gradcam_misclassified`` (20 CAMs in one batch, plus the
overlays) after a warm-up call, and reports the median of the repeats.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from erav1.models import ResNet18
from erav1.utils.data import load_data
from erav1.utils.evaluation import load_model, predict
from erav1.utils.gradcam import gradcam_misclassified
from erav1.utils.misclassified import Misclassified, find_misclassified
from erav1.utils.policies import Runtime
from erav1.utils.rundir import environment_info


def untrained_setup(device: str, n: int) -> tuple[torch.nn.Module, list[Misclassified], Runtime]:
    """Random images and labels: Grad-CAM's cost does not depend on what the pixels show."""
    torch.manual_seed(0)
    runtime = Runtime.create(device, "fp32")
    model = runtime.prepare(ResNet18()).eval()
    images = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8)
    labels = torch.randint(0, 10, (n,)).tolist()
    items = [Misclassified(i, images[i], true, (true + 1) % 10, 0.5) for i, true in enumerate(labels)]
    return model, items, runtime


def run_setup(run_dir: str, device: str, n: int) -> tuple[torch.nn.Module, list[Misclassified], Runtime]:
    loaded = load_model(run_dir, device=device)
    config = loaded.config or {}
    test = load_data(config["data"], config["data_dir"], config.get("subset"), verbose=False).test
    items = find_misclassified(predict(loaded.model, test, loaded.runtime), test, n)
    return loaded.model, items, loaded.runtime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", help="a trained run (default: an untrained ResNet18)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--n", type=int, default=10, help="images (each gets a predicted- and a true-class CAM)")
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()

    setup = run_setup(args.run_dir, args.device, args.n) if args.run_dir else untrained_setup(args.device, args.n)
    model, items, runtime = setup
    machine = environment_info(runtime.device, runtime.precision)
    gradcam_misclassified(model, items, runtime)  # warm-up: first calls create the conv kernels
    seconds = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        result = gradcam_misclassified(model, items, runtime)
        if runtime.device.type == "cuda":
            torch.cuda.synchronize()
        seconds.append(time.perf_counter() - start)
    print(
        f"Grad-CAM, {len(items)} images x (predicted + true class) at {result.layer} ({result.map_size[0]}x"
        f"{result.map_size[1]}), {'run ' + args.run_dir if args.run_dir else 'untrained ResNet18'}\n"
        f"  device {runtime.device} ({machine['gpu'] or machine['cpu']}), {machine['cpu_threads']} CPU threads, "
        f"{runtime.precision}\n"
        f"  median {statistics.median(seconds):.3f} s, min {min(seconds):.3f} s, max {max(seconds):.3f} s "
        f"over {args.repeats} repeats (target < 2 s)"
    )


if __name__ == "__main__":
    main()
