"""Run one round of the recipe search (``erav1.recipe_search``) on this machine's GPU.

    python scripts/search_recipe.py --round 2 --data ../shared/data/cifar10-jpeg.zip --out runs/search2

It writes every run under ``--out`` and ``selection.json``, whose winner was chosen on validation
accuracy alone. Copy ``selection.json`` to ``book/results/recipe_search/roundN.json`` to show it in
chapter 3.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import time
from pathlib import Path

from erav1.recipe_search import (
    ROLES,
    ROUNDS,
    VAL_FRACTION,
    Run,
    SearchSettings,
    launch,
    monitor,
    print_table,
    summarize,
)
from erav1.utils.data import load_data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="the dataset, as 'erav1 train --data' takes it")
    parser.add_argument("--data-dir", default="~/.cache/erav1", help="the decoded-image cache")
    parser.add_argument("--out", type=Path, default=Path("runs/search"), help="where the runs and logs go")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--val-fraction", type=float, default=VAL_FRACTION)
    parser.add_argument("--deadline", type=float, default=450, help="seconds from start for the whole grid")
    parser.add_argument("--subset", type=int, help="N images per split: a quick check of the script itself")
    parser.add_argument("--round", type=int, choices=sorted(ROUNDS), default=max(ROUNDS), help="which grid to run")
    parser.add_argument("--candidates", type=int, help="use only the first N candidates of the grid")
    args = parser.parse_args()
    settings = SearchSettings(args.data, args.out, args.data_dir, args.epochs, args.val_fraction, args.deadline,
                              args.subset)

    start = time.monotonic()
    settings.out.mkdir(parents=True, exist_ok=True)
    load_data(settings.data, settings.data_dir)  # decode once into the cache, so the runs below only read it
    print(f"data ready after {time.monotonic() - start:.0f} s", flush=True)
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    grid = dict(list(ROUNDS[args.round].items())[: args.candidates])
    runs = [Run(name, role, settings.out / f"{name}.{role}") for name in grid for role in ROLES]
    for run in runs:
        launch(run, grid[run.candidate], settings)
    try:
        monitor(runs, settings.epochs, settings.deadline_s, start)
    except KeyboardInterrupt:
        for run in runs:
            if run.running:
                run.process.send_signal(signal.SIGTERM)
        raise
    summary = summarize(runs, grid, settings.epochs) | {"wall_s": time.monotonic() - start}
    (settings.out / "selection.json").write_text(json.dumps(summary, indent=2))
    print_table(summary)


if __name__ == "__main__":
    main()
