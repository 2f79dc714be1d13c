"""Confirm the study's best recipe: train it on all of train with three seeds, then publish seed 0 with the others.

    python scripts/confirm_recipe.py --data cifar10 --jobs 3

The recipe is the complete trial with the highest validation accuracy (``erav1.recipe_study``); the test set
only scores these runs. The published run is seed 0, the book's seed, whichever seed scores highest; the
others go into ``summary.json`` with their spread (``erav1 publish --seed-run``). Stopped, the same command
resumes every seed's run. Options it does not know pass through to ``erav1 train``.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from erav1.errors import Erav1Error
from erav1.publish import CONFIRMATION_SEEDS, publish_run, recipe_changes
from erav1.published import RESULTS_DIR
from erav1.recipe_study import STORAGE, STUDY_NAME, StudySettings, best_recipe, train_seeds
from erav1.study_report import load_existing_study


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="cifar10", help="the dataset, as 'erav1 train --data' takes it")
    parser.add_argument("--data-dir", default="~/.cache/erav1", help="the decoded-image cache")
    parser.add_argument("--storage", default=STORAGE, help="SQLAlchemy URL of the study's database")
    parser.add_argument("--study", default=STUDY_NAME, help="the study's name in that database")
    parser.add_argument("--seeds", type=int, nargs="+", default=list(range(CONFIRMATION_SEEDS)),
                        help="the seeds; the first is published (default: %(default)s)")
    parser.add_argument("--jobs", type=int, default=1, help="seeds at once on this machine, one process each")
    parser.add_argument("--epochs", type=int, default=20, help="epochs of every run (the rules fix 20)")
    parser.add_argument("--runs", type=Path, default=Path("runs/confirm"), help="where each seed's run goes")
    parser.add_argument("--out", type=Path, default=Path(RESULTS_DIR), help="where summary.json and the weights go")
    parser.add_argument("--device", default="auto", help="erav1 train --device, and the device publish scores on")
    args, train_args = parser.parse_known_args()

    study = load_existing_study(args.storage, args.study)
    if study is None:
        sys.exit(f"error: no study {args.study!r} in {args.storage}; run scripts/search_recipe.py first")
    try:
        recipe = best_recipe(study)
    except Erav1Error as exc:
        sys.exit(f"error: {exc}")
    print(f"trial {study.best_trial.number}, validation accuracy {100 * study.best_value:.2f}%: "
          + " ".join(f"{name}={value}" for name, value in recipe.items()), flush=True)
    settings = StudySettings(data=args.data, runs=args.runs, epochs=args.epochs, device=args.device,
                             data_dir=args.data_dir, train_args=tuple(train_args),
                             launcher=(sys.executable, "-m", "erav1"))
    runs = train_seeds(recipe, settings, args.seeds, args.jobs)
    summary = publish_run(runs[0], args.out, args.device, tuple(runs[1:]))
    for record in summary["seeds"]:
        print(f"seed {record['seed']}: final test accuracy {100 * record['test_accuracy']:.2f}%")
    changes = recipe_changes(recipe)
    print(f"published seed {summary['seed']} into {args.out}; "
          + ("chapter 3 trains it with Config's defaults" if not changes else
             "to train it in chapter 3, set these Config defaults: "
             + shlex.join(f"{name}={value}" for name, value in changes.items())))


if __name__ == "__main__":
    main()
