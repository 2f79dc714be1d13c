"""The recipe search: candidates trained in pairs on one GPU, chosen on a validation split.

Each candidate recipe trains twice, at the same time:

* on 90% of the train images, scored on the held-out 10% (``val_fraction``): this run makes the choice;
* on all of the train images, scored on the test set: the run the book publishes if the candidate wins.

The test set never picks anything: the winner is the candidate with the best final-epoch validation
accuracy, and its test-scored twin is the published run. Both runs use the same seed.

A GPU shared by several runs can be slower than hoped, so a monitor watches the epoch times. If the
grid would not finish before the deadline, it drops the lowest-priority candidate (both of its runs)
and looks again after the next epoch. ``scripts/search_recipe.py`` runs one round; chapter 3 shows
the committed results of every round with :func:`describe_recipe_search`.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from erav1.utils.text import Markdown, markdown_table, percent

SEARCH_DIR = Path("book/results/recipe_search")  # the committed selection.json of every round

# The recipe the issue measured on a CPU (89.67% test accuracy); every candidate changes some of it.
REFERENCE: dict[str, object] = {
    "batch_size": 128, "lr": 0.1, "decay_norm_and_bias": True, "cutout_p": 1.0, "label_smoothing": 0.1,
}
# Changes to the reference, highest priority first, one grid per round. Round 1 isolates one
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
VAL_FRACTION = 0.1
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


@dataclass(frozen=True)
class SearchSettings:
    """What every run of a round shares."""

    data: str
    out: Path
    data_dir: str = "~/.cache/erav1"
    epochs: int = 20
    val_fraction: float = VAL_FRACTION
    deadline_s: float = 450.0
    subset: int | None = None  # a quick check of the machinery, not a search


def cli_flags(options: dict[str, object]) -> list[str]:
    """``{"cutout_p": 0.5, "flip": False}`` -> ``["--cutout-p", "0.5", "--no-flip"]``."""
    flags = []
    for name, value in options.items():
        flag = "--" + name.replace("_", "-")
        if isinstance(value, bool):
            flags.append(flag if value else flag.replace("--", "--no-", 1))
        else:
            flags += [flag, str(value)]
    return flags


def launch(run: Run, changes: dict[str, object], settings: SearchSettings) -> None:
    """Start ``erav1 train`` for one run of a candidate, logging to ``out/RUN.log``."""
    split = ["--val-fraction", str(settings.val_fraction)] if run.role == "val" else []
    quick = ["--subset", str(settings.subset)] if settings.subset else []
    command = [
        sys.executable, "-m", "erav1", "train", "--data", settings.data, "--data-dir", settings.data_dir,
        "--epochs", str(settings.epochs),
        "--run-dir", str(run.run_dir), "--overwrite", "--no-progress",
        *split, *quick, *cli_flags(REFERENCE | changes),
    ]
    run.run_dir.mkdir(parents=True, exist_ok=True)
    log = open(settings.out / f"{run.run_dir.name}.log", "w")  # noqa: SIM115 - the child process owns it
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


def monitor(runs: list[Run], epochs: int, deadline_s: float, start: float) -> None:
    """Wait for the runs; drop candidates from the end while the grid would overrun the deadline."""
    epochs_at_last_drop: dict[str, int] = {}
    while any(run.running for run in runs):
        time.sleep(5)
        now = time.monotonic() - start
        live = [run for run in runs if run.running and not run.dropped]
        if not live:
            continue
        if now > deadline_s:
            for candidate in dict.fromkeys(run.candidate for run in live):
                drop(candidate, runs, f"still running at the deadline ({deadline_s:.0f} s)")
            continue
        progress = {run.run_dir.name: len(run.history()) for run in live}
        if any(progress[k] <= epochs_at_last_drop.get(k, -1) for k in progress):
            continue  # let every run finish an epoch at the new speed before judging again
        finishes = [projected_finish(run, epochs, now) for run in live]
        if None in finishes or max(finishes) <= deadline_s:
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


def _describe_changes(changes: dict[str, object]) -> str:
    different = {k: v for k, v in changes.items() if REFERENCE.get(k) != v}
    return ", ".join(f"`{k}={v}`" for k, v in different.items()) or "none (the reference)"


def load_rounds(folder: Path) -> list[dict]:
    """Every committed round (``roundN.json``), in order."""
    paths = sorted(folder.glob("round*.json"), key=lambda p: int(p.stem.removeprefix("round")))
    if not paths:
        raise FileNotFoundError(f"no round*.json in {folder}; run scripts/search_recipe.py first")
    return [json.loads(p.read_text()) | {"round": int(p.stem.removeprefix("round"))} for p in paths]


def chosen_candidate(rounds: list[dict]) -> tuple[int, dict]:
    """The round and row with the highest final-epoch validation accuracy of all finished pairs."""
    finished = [(r["round"], row) for r in rounds for row in r["candidates"]
                if all(row.get(role, {}).get("finished") for role in ROLES)]
    return max(finished, key=lambda item: item[1]["val"]["final"]["val_acc"])


def describe_recipe_search(folder: Path = SEARCH_DIR) -> Markdown:
    """Every candidate of every round, with the one the validation split chose in bold."""
    if not folder.is_dir():  # erav1 installed without the book beside it, as on Colab
        return Markdown(f"The recipe search's results are in the book's repository, under `{SEARCH_DIR}/`.")
    rounds = load_rounds(folder)
    chosen_round, chosen = chosen_candidate(rounds)
    rows = []
    for r in rounds:
        for row in r["candidates"]:
            val, test = row.get("val", {}), row.get("test", {})
            if val.get("finished") and test.get("finished"):
                cells = [percent(val["final"]["val_acc"], 2), percent(test["final"]["test_acc"], 2),
                         percent(test["final"]["train_acc"], 2)]
            else:
                cells = [f"dropped after {val.get('epochs', 0)} epochs", "-", "-"]
            name = f"**{row['candidate']}**" if row is chosen else row["candidate"]
            rows.append([r["round"], name, _describe_changes(row["changes"]), *cells])
    table = markdown_table(
        ["round", "candidate", "changes to the reference", "val acc (chooses)", "test acc", "train acc"], rows)
    reference = ", ".join(f"`{k}={v}`" for k, v in REFERENCE.items())
    vals = [row["val"]["final"]["val_acc"] for r in rounds for row in r["candidates"]
            if row.get("val", {}).get("finished")]
    return Markdown(
        f"Each candidate trained for {rounds[0]['epochs']} epochs twice, with the same seed: once on "
        f"{percent(1 - VAL_FRACTION, 0)} of the train images, scored on the held-out rest (val acc), and once "
        "on all of them, scored on the test set. The reference recipe is " + reference + ".\n\n"
        + table + "\n\n"
        f"The validation accuracies span {100 * (max(vals) - min(vals)):.2f} points. The highest, "
        f"**{percent(chosen['val']['final']['val_acc'], 2)}** for **{chosen['candidate']}** "
        f"(round {chosen_round}), chose the recipe; the test column was filled in by the twins of the same "
        "runs and chose nothing. Train accuracy is measured on the augmented batches while the model learned."
        + _describe_seeds(folder / "seeds")
    )


def _describe_seeds(folder: Path) -> str:
    """The chosen recipe again with other seeds (``seedN.history.json``): how much of the table is noise."""
    runs = sorted(folder.glob("seed*.history.json"))
    if not runs:
        return ""
    parts = []
    for path in runs:
        seed = path.name.split(".")[0].removeprefix("seed")
        history = json.loads(path.read_text())
        environment = json.loads((folder / f"seed{seed}.environment.json").read_text())
        seconds = sum(record["seconds"] for record in history)
        parts.append(f"seed {seed}: {percent(history[-1]['test_acc'], 2)} in {seconds:.0f} s on "
                     f"{environment['gpu'] or environment['cpu']}")
    return ("\n\nThe chosen recipe, trained again alone on the GPU with other seeds, finished at "
            + "; ".join(parts) + ". Seed-to-seed differences of that size mean that the closer rows above are ties.")

