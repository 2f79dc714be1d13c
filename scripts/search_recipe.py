"""Choose the book's training recipe on a validation split, with the winner's full run trained beside it.

Each candidate recipe trains twice, at the same time, on one GPU:

* on 90% of the train images, scored on the held-out 10% (``--val-fraction``): this run makes the choice;
* on all of the train images, scored on the test set: the run the book publishes if the candidate wins.

The test set never picks anything: the winner is the candidate with the best final-epoch validation
accuracy, and its test-scored twin is the published run. Both runs use the same seed.

A GPU shared by several runs can be slower than hoped, so a monitor watches the epoch times. If the
grid would not finish before ``--deadline`` seconds, it drops the lowest-priority candidate (both of
its runs) and looks again after the next epoch. Candidates are listed in priority order.

    python scripts/search_recipe.py --data ../shared/data/cifar10-jpeg.zip --out runs/search --deadline 450
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from erav1.utils.data import load_data

# Changes to the Config defaults, highest priority first, one grid per round. Round 1 isolates one
# lever per step: weight decay on BatchNorm, then Cutout on half the images, then label smoothing.
# Its winner was the reference recipe, all four within 0.8 points, so round 2 varies the step size.
ROUNDS: dict[int, dict[str, dict[str, object]]] = {
    1: {
        "no-bn-decay+cutout-half+no-smoothing": {
            "decay_norm_and_bias": False, "cutout_p": 0.5, "label_smoothing": 0.0,
        },
        "no-bn-decay+cutout-half": {"decay_norm_and_bias": False, "cutout_p": 0.5, "label_smoothing": 0.1},
        "reference": {"decay_norm_and_bias": True, "cutout_p": 1.0, "label_smoothing": 0.1},
        "no-bn-decay": {"decay_norm_and_bias": False, "cutout_p": 1.0, "label_smoothing": 0.1},
    },
    2: {
        "lr-0.2": {"lr": 0.2},
        "lr-0.4": {"lr": 0.4},
        "batch-512+lr-0.4": {"batch_size": 512, "lr": 0.4},
        "lr-0.2+smoothing-0.2": {"lr": 0.2, "label_smoothing": 0.2},
    },
}
ROLES = ("val", "test")  # the run that chooses, and the run that is published


@dataclass
class Run:
    candidate: str
    role: str
    run_dir: Path
    process: subprocess.Popen | None = None
    dropped: bool = False

    def history(self) -> list[dict[str, float]]:
        try:
            return json.loads((self.run_dir / "history.json").read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return []

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None


def cli_flags(changes: dict[str, object]) -> list[str]:
    flags = []
    for name, value in changes.items():
        flag = "--" + name.replace("_", "-")
        if isinstance(value, bool):
            flags.append(flag if value else flag.replace("--", "--no-", 1))
        else:
            flags += [flag, str(value)]
    return flags


def launch(run: Run, args: argparse.Namespace) -> None:
    split = ["--val-fraction", str(args.val_fraction)] if run.role == "val" else []
    quick = ["--subset", str(args.subset)] if args.subset else []
    command = [
        sys.executable, "-m", "erav1", "train", "--data", args.data, "--epochs", str(args.epochs),
        "--run-dir", str(run.run_dir), "--overwrite", "--no-progress",
        *split, *quick, *cli_flags(args.grid[run.candidate]),
    ]
    run.run_dir.mkdir(parents=True, exist_ok=True)
    log = open(args.out / f"{run.run_dir.name}.log", "w")  # noqa: SIM115 - the child process owns it
    run.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)


def projected_finish(run: Run, epochs: int, now: float) -> float | None:
    """When the run should end, from its last two epoch times; None before it has two."""
    history = run.history()
    if len(history) < 2:
        return None
    per_epoch = sum(r["seconds"] for r in history[-2:]) / 2
    return now + per_epoch * (epochs - len(history))


def drop(candidate: str, runs: list[Run], reason: str) -> None:
    print(f"dropping {candidate}: {reason}", flush=True)
    for run in runs:
        if run.candidate == candidate:
            run.dropped = True
            if run.running:
                run.process.send_signal(signal.SIGTERM)


def monitor(runs: list[Run], args: argparse.Namespace, start: float) -> None:
    """Wait for the runs; drop candidates from the end while the grid would overrun the deadline."""
    epochs_at_last_drop: dict[str, int] = {}
    while any(run.running for run in runs):
        time.sleep(5)
        now = time.monotonic() - start
        live = [run for run in runs if run.running and not run.dropped]
        if not live:
            continue
        if now > args.deadline:
            for candidate in dict.fromkeys(run.candidate for run in live):
                drop(candidate, runs, f"still running at the deadline ({args.deadline:.0f} s)")
            continue
        progress = {run.run_dir.name: len(run.history()) for run in live}
        if any(progress[k] <= epochs_at_last_drop.get(k, -1) for k in progress):
            continue  # let every run finish an epoch at the new speed before judging again
        finishes = [projected_finish(run, args.epochs, now) for run in live]
        if None in finishes or max(finishes) <= args.deadline:
            continue
        candidates = list(dict.fromkeys(run.candidate for run in live))
        if len(candidates) > 1:
            drop(candidates[-1], runs, f"the grid would end at {max(finishes):.0f} s, after the deadline")
            epochs_at_last_drop = progress
    for run in runs:
        if run.process is not None:
            run.process.wait()


def summarize(runs: list[Run], grid: dict[str, dict[str, object]], epochs: int) -> dict[str, object]:
    rows = []
    for candidate in grid:
        pair = {run.role: run for run in runs if run.candidate == candidate}
        row: dict[str, object] = {"candidate": candidate, "changes": grid[candidate]}
        for role, run in pair.items():
            history = run.history()
            finished = len(history) == epochs and run.process is not None and run.process.returncode == 0
            row[role] = {
                "run_dir": str(run.run_dir), "finished": finished, "epochs": len(history),
                "dropped": run.dropped,
                "final": history[-1] if history else None,
                "minutes": sum(r["seconds"] for r in history) / 60,
            }
        rows.append(row)
    eligible = [r for r in rows if all(r.get(role, {}).get("finished") for role in ROLES)]
    winner = max(eligible, key=lambda r: r["val"]["final"]["val_acc"]) if eligible else None
    return {"epochs": epochs, "rule": "highest final-epoch val_acc among candidates whose two runs finished",
            "candidates": rows, "winner": winner["candidate"] if winner else None,
            "published_run": winner["test"]["run_dir"] if winner else None}


def _cell(row: dict, role: str, key: str) -> str:
    """A finished run's final-epoch number in percent, else '-'."""
    run = row.get(role, {})
    final = run.get("final")
    return f"{100 * final[key]:.2f}" if run.get("finished") and final and key in final else "-"


def print_table(summary: dict[str, object]) -> None:
    print(f"\n{'candidate':<40} {'val acc':>8} {'train acc':>9} {'test acc':>8}  (test never chooses)")
    for row in summary["candidates"]:
        print(f"{row['candidate']:<40} {_cell(row, 'val', 'val_acc'):>8} {_cell(row, 'test', 'train_acc'):>9} "
              f"{_cell(row, 'test', 'test_acc'):>8}")
    print(f"winner (by val): {summary['winner']}; published run: {summary['published_run']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="the dataset, as 'erav1 train --data' takes it")
    parser.add_argument("--out", type=Path, default=Path("runs/search"), help="where the runs and logs go")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--val-fraction", type=float, default=0.1)
    parser.add_argument("--deadline", type=float, default=450, help="seconds from start for the whole grid")
    parser.add_argument("--subset", type=int, help="N images per split: a quick check of the script itself")
    parser.add_argument("--round", type=int, choices=sorted(ROUNDS), default=max(ROUNDS), help="which grid to run")
    parser.add_argument("--candidates", type=int, help="use only the first N candidates of the grid")
    args = parser.parse_args()

    start = time.monotonic()
    args.out.mkdir(parents=True, exist_ok=True)
    load_data(args.data)  # decode once into the cache, so the runs below only read it
    print(f"data ready after {time.monotonic() - start:.0f} s", flush=True)
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    args.grid = ROUNDS[args.round]
    names = list(args.grid)[: args.candidates]
    runs = [Run(name, role, args.out / f"{name}.{role}") for name in names for role in ROLES]
    for run in runs:
        launch(run, args)
    try:
        monitor(runs, args, start)
    except KeyboardInterrupt:
        for run in runs:
            if run.running:
                run.process.send_signal(signal.SIGTERM)
        raise
    summary = summarize(runs, args.grid, args.epochs) | {"wall_s": time.monotonic() - start}
    (args.out / "selection.json").write_text(json.dumps(summary, indent=2))
    print_table(summary)


if __name__ == "__main__":
    main()
