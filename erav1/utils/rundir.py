"""The run directory: what a training run writes, and how a later step reads it.

RUN_DIR/config.json       the Config, as JSON
RUN_DIR/environment.json  torch version, device, CPU/GPU model, git commit
RUN_DIR/history.json      one record per finished epoch
RUN_DIR/last.pt           everything needed to resume, after every epoch
RUN_DIR/model.pt          the final weights (a state_dict)
RUN_DIR/tensorboard/      TensorBoard event files
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
from pathlib import Path
from typing import Any

import torch

import erav1
from erav1.errors import RunDirError
from erav1.utils.text import Markdown, percent

CONFIG, ENVIRONMENT, HISTORY = "config.json", "environment.json", "history.json"
CHECKPOINT, WEIGHTS, TENSORBOARD = "last.pt", "model.pt", "tensorboard"
RUN_FILES = (CONFIG, ENVIRONMENT, HISTORY, CHECKPOINT, WEIGHTS)


def holds_run(run_dir: Path) -> bool:
    return any((run_dir / name).exists() for name in (CONFIG, CHECKPOINT, WEIGHTS))


def clear_run(run_dir: Path) -> None:
    """Remove a previous run's files (and only those) for --overwrite."""
    for name in RUN_FILES:
        (run_dir / name).unlink(missing_ok=True)
    for folder in (TENSORBOARD, "report"):
        shutil.rmtree(run_dir / folder, ignore_errors=True)


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RunDirError(
            f"{path} does not exist; is {path.parent} a run directory written by 'erav1 train'?"
        ) from None
    except json.JSONDecodeError as exc:
        raise RunDirError(f"{path} is not valid JSON ({exc})") from None


def read_history(run_dir: str | Path) -> list[dict[str, float]]:
    return read_json(Path(run_dir) / HISTORY)


def epochs_done(run_dir: Path) -> tuple[int, int]:
    """How many epochs a run has finished, and how many its config plans: equal once it has ended."""
    return len(read_history(run_dir)), read_json(run_dir / CONFIG)["epochs"]


def find_weights(run_dir: str | Path) -> Path:
    """The file holding a run's model: the final ``model.pt``, else the last checkpoint of an unfinished run."""
    run_dir = Path(run_dir).expanduser()
    if not run_dir.is_dir():
        raise RunDirError(f"run directory {run_dir} does not exist; train one with 'erav1 train --run-dir {run_dir}'")
    for name in (WEIGHTS, CHECKPOINT):
        if (run_dir / name).is_file():
            return run_dir / name
    raise RunDirError(
        f"{run_dir} holds no model (neither {WEIGHTS} nor {CHECKPOINT}); "
        f"train one with 'erav1 train --run-dir {run_dir}', or resume it with 'erav1 train --resume {run_dir}'"
    )


def _git_commit() -> str | None:
    """``ERAV1_COMMIT`` if set (a copy of the code whose .git is absent or stale), else the checked-out commit."""
    if os.environ.get("ERAV1_COMMIT"):
        return os.environ["ERAV1_COMMIT"]
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(erav1.__file__).parent,
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment_info(device: torch.device, precision: str) -> dict[str, Any]:
    info = {
        "erav1": erav1.__version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": str(device),
        "precision": precision,
        "cpu": _cpu_model(),
        "cpu_threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "git_commit": _git_commit(),
    }
    return info


def describe_hardware(environment: dict[str, Any]) -> str:
    """What a run trained on, from its environment.json: the GPU's name, else the CPU's and its threads."""
    if environment.get("gpu"):
        return environment["gpu"]
    threads = environment.get("cpu_threads", "?")
    return f"{environment.get('cpu', 'CPU')} ({threads} thread{'' if threads == 1 else 's'})"


def _compare(gap: float) -> str:
    points = abs(100 * gap)
    return "the same as" if points < 0.005 else f"{points:.2f} points {'above' if gap > 0 else 'below'}"


def describe_history(history: list[dict[str, float]]) -> Markdown:
    """The result of a run as the book reports it: the final epoch, with the best epoch beside it."""
    if not history:
        raise RunDirError("the history is empty: no epoch has finished yet")
    final = history[-1]
    scored = "val" if "val_acc" in final else "test"
    best = max(history, key=lambda record: record[f"{scored}_acc"])
    gap = final["train_acc"] - final[f"{scored}_acc"]
    seconds = sum(record["seconds"] for record in history)
    lines = [
        f"After the final epoch ({int(final['epoch'])}), "
        f"{scored} accuracy is **{percent(final[f'{scored}_acc'], 2)}**. "
        f"Train accuracy, measured on the augmented batches while the model learned, is "
        f"{percent(final['train_acc'], 2)}: {_compare(gap)} the {scored} accuracy.",
        f"The best epoch by {scored} accuracy was epoch {int(best['epoch'])} "
        f"({percent(best[f'{scored}_acc'], 2)}); the final epoch is what the book reports.",
        f"Training and scoring took {seconds / 60:.1f} min for {len(history)} epoch(s), "
        f"at {final['images_per_s']:.0f} training images per second in the last epoch.",
    ]
    return Markdown("\n\n".join(lines))
