"""Confirm the study's best recipe: train it on all of train with three seeds, then publish seed 0 with the others.

    python scripts/confirm_recipe.py --data cifar10 --jobs 3
    python scripts/confirm_recipe.py --data cifar10 --published     # no study: confirm the published run

The recipe is the complete trial with the highest validation accuracy (``erav1.recipe_study``); the test set
only scores these runs. The published run is seed 0, the book's seed, whichever seed scores highest; the
others go into ``summary.json`` with their spread (``erav1 publish --seed-run``). Stopped, the same command
resumes every seed's run. Options it does not know pass through to ``erav1 train``.

Each seed is also kept in ``book/results/recipe_search/confirm/`` as soon as it ends (its record, and seed 0's
weights until they are published): run directories are not committed and go with their machine, and on a
CPU a seed takes a session. Committed, a kept seed is restored on the next machine instead of trained again.

``--published`` is the path without a GPU: it trains the published run's recipe, for its epochs and on its
subset, with the seeds that ``summary.json`` does not list yet, and adds each one to it as soon as it ends
(``--jobs`` at a time), refreshing the README, the landing page and chapter 3's seed table; the published
weights stay. On a CPU a seed trains for hours, so the command is meant to run in the background and to be
run again.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from erav1.book.refresh import refresh_if_published
from erav1.cli import install_interrupt_handlers
from erav1.errors import Erav1Error
from erav1.publish import CONFIRMATION_SEEDS, add_seed_runs, publish_run, recipe_changes, recipe_options, summary_seeds
from erav1.published import RESULTS_DIR, SUMMARY
from erav1.recipe_study import KEPT_SEEDS, STORAGE, STUDY_NAME, StudySettings, best_recipe, train_seeds
from erav1.study_report import load_existing_study
from erav1.utils.rundir import WEIGHTS, read_json


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="cifar10", help="the dataset, as 'erav1 train --data' takes it")
    parser.add_argument("--data-dir", default="~/.cache/erav1", help="the decoded-image cache")
    parser.add_argument("--storage", default=STORAGE, help="SQLAlchemy URL of the study's database")
    parser.add_argument("--study", default=STUDY_NAME, help="the study's name in that database")
    parser.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        help="the seeds; the first is published (default: 0 1 2, or with --published the seeds "
        "of 0 1 2 that summary.json does not list)",
    )
    parser.add_argument(
        "--published", action="store_true", help="confirm the run published in --out instead of a study's best recipe"
    )
    parser.add_argument("--jobs", type=int, default=1, help="seeds at once on this machine, one process each")
    parser.add_argument(
        "--epochs", type=int, help="epochs of every run (default: 20, as the rules fix; with --published, its epochs)"
    )
    parser.add_argument("--runs", type=Path, default=Path("runs/confirm"), help="where each seed's run goes")
    parser.add_argument("--out", type=Path, default=Path(RESULTS_DIR), help="where summary.json and the weights go")
    parser.add_argument("--device", default="auto", help="erav1 train --device, and the device publish scores on")
    args, train_args = parser.parse_known_args()
    install_interrupt_handlers()  # kill -INT or -TERM stops it as Ctrl-C does, even when started with '&'

    if args.published:
        confirm_published(args, train_args)
        return
    study = load_existing_study(args.storage, args.study)
    if study is None:
        sys.exit(f"error: no study {args.study!r} in {args.storage}; run scripts/search_recipe.py first")
    try:
        recipe = best_recipe(study)
    except Erav1Error as exc:
        sys.exit(f"error: {exc}")
    print(
        f"trial {study.best_trial.number}, validation accuracy {100 * study.best_value:.2f}%: "
        + " ".join(f"{name}={value}" for name, value in recipe.items()),
        flush=True,
    )
    seeds = args.seeds or list(range(CONFIRMATION_SEEDS))
    kept = args.out / KEPT_SEEDS
    try:
        runs = train_seeds(recipe, settings(args, args.epochs or 20, train_args), seeds, args.jobs, kept)
    except Erav1Error as exc:
        sys.exit(f"error: {exc}\nThe seeds that ended are kept in {kept}; committed, they are not trained again.")
    summary = publish_run(runs[0], args.out, args.device, tuple(runs[1:]))
    (kept / f"{runs[0].name}.{WEIGHTS}").unlink(missing_ok=True)  # published now: the weights file is the same bytes
    report_seeds(summary)
    changes = recipe_changes(recipe)
    print(
        f"published seed {summary['seed']} into {args.out}; "
        + (
            "chapter 3 trains it with Config's defaults"
            if not changes
            else "to train it in chapter 3, set these Config defaults: "
            + shlex.join(f"{name}={value}" for name, value in changes.items())
        )
    )


def confirm_published(args: argparse.Namespace, train_args: list[str]) -> None:
    """Train the published recipe with the seeds its summary lacks, then add them to it."""
    summary_file = args.out / SUMMARY
    if not summary_file.is_file():
        sys.exit(f"error: {summary_file} does not exist, so there is no published run to confirm")
    summary = read_json(summary_file)
    listed = {record["seed"] for record in summary_seeds(summary)}
    seeds = args.seeds or [seed for seed in range(CONFIRMATION_SEEDS) if seed not in listed]
    if not seeds:
        sys.exit(f"the published run already has seeds {sorted(listed)}; name others with --seeds")
    recipe = recipe_options(summary["recipe"]) | ({"subset": summary["subset"]} if summary.get("subset") else {})
    print(
        f"the published run (seed {summary['seed']}, {100 * summary['test_accuracy']:.2f}%) with seeds "
        f"{' '.join(map(str, seeds))}: " + " ".join(f"{name}={value}" for name, value in recipe.items()),
        flush=True,
    )
    run_settings = settings(args, args.epochs or summary["epochs"], train_args)
    try:
        for start in range(0, len(seeds), args.jobs):  # a seed joins as soon as it ends: CPU seeds span sessions
            runs = train_seeds(recipe, run_settings, seeds[start : start + args.jobs], args.jobs)
            report_seeds(add_seed_runs(args.out, tuple(runs)))
            refresh_if_published(args.out)
    except Erav1Error as exc:
        sys.exit(f"error: {exc}")


def settings(args: argparse.Namespace, epochs: int, train_args: list[str]) -> StudySettings:
    return StudySettings(
        data=args.data,
        runs=args.runs,
        epochs=epochs,
        device=args.device,
        data_dir=args.data_dir,
        train_args=tuple(train_args),
        launcher=(sys.executable, "-m", "erav1"),
    )


def report_seeds(summary: dict) -> None:
    for record in summary["seeds"]:
        print(f"seed {record['seed']}: final test accuracy {100 * record['test_accuracy']:.2f}%")


if __name__ == "__main__":
    main()
