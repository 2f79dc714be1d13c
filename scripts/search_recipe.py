"""Run the recipe search (``erav1.recipe_study``): an Optuna study whose trials are real ``erav1 train`` runs.

    python scripts/search_recipe.py --data ../shared/data/cifar10-jpeg.zip --trials 40 --jobs 3

Every trial trains on 90% of the train images and is scored on the other 10%; the study lives in
``book/results/recipe_search/study.db`` unless ``--storage`` names another database, which workers on
several machines can share. Stopped (Ctrl-C, a lease that ends), the same command continues the study:
interrupted trials resume their run directories. Options it does not know pass through to ``erav1 train``
(for instance ``--precision fp32 --subset 200`` for a quick check of the machinery).
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from erav1.cli import install_interrupt_handlers
from erav1.recipe_study import (
    RUNS,
    STORAGE,
    STUDY_NAME,
    QueueWinnersCombined,
    StudySettings,
    default_pruner,
    first_trials,
    open_study,
    run_study,
)
from erav1.study_report import describe_study
from erav1.utils.data import load_data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--data",
        default="cifar10",
        help="the dataset, as 'erav1 train --data' takes it "
        "(default: cifar10, the official pixels; ERAV1_CIFAR10 names a local copy)",
    )
    parser.add_argument("--data-dir", default="~/.cache/erav1", help="the decoded-image cache")
    parser.add_argument("--trials", type=int, default=40, help="finished (complete or pruned) trials the study needs")
    parser.add_argument("--jobs", type=int, default=1, help="trials at once on this machine, one process each")
    parser.add_argument("--epochs", type=int, default=20, help="epochs of every trial (the rules fix 20)")
    parser.add_argument("--storage", default=STORAGE, help="SQLAlchemy URL of the study's database")
    parser.add_argument("--study", default=STUDY_NAME, help="the study's name in that database")
    parser.add_argument("--runs", type=Path, default=RUNS, help="where each trial's run directory goes")
    parser.add_argument("--device", default="auto", help="erav1 train --device")
    parser.add_argument(
        "--launcher",
        default=f"{shlex.quote(sys.executable)} -m erav1",
        help="the command before 'train', e.g. 'torchrun --nproc-per-node=2 -m erav1'",
    )
    args, train_args = parser.parse_known_args()
    install_interrupt_handlers()  # kill -INT or -TERM stops it as Ctrl-C does, even when started with '&'

    load_data(args.data, args.data_dir)  # decode once into the cache, so that the trials only read it
    # the book's recipe, the yardstick, then one lever at a time; an interrupted trial resumes before each
    study = open_study(args.storage, args.study, default_pruner(args.epochs), planned=first_trials())
    settings = StudySettings(
        data=args.data,
        runs=args.runs,
        epochs=args.epochs,
        device=args.device,
        data_dir=args.data_dir,
        train_args=tuple(train_args),
        launcher=tuple(shlex.split(args.launcher)),
    )
    run_study(study, settings, args.trials, args.jobs, callbacks=(QueueWinnersCombined(),))  # then: do they add up?
    print(describe_study(args.storage, args.study))


if __name__ == "__main__":
    main()
