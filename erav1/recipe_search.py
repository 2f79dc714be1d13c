"""The record of the recipe search's first rounds, run before the search moved to Optuna.

Each candidate recipe trained twice, at the same time, with the same seed:

* on 90% of the train images, scored on the held-out 10% (``val_fraction``): this run made the choice;
* on all of the train images, scored on the test set: the run the book publishes if the candidate wins.

The test set never picked anything. The rounds' results are committed under ``book/results/recipe_search/``
(``roundN.json``, and ``seeds/``); chapter 3 shows them with :func:`describe_recipe_search`. The search
itself now runs as an Optuna study (:mod:`erav1.recipe_study`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from erav1.published import RESULTS_DIR, published_file
from erav1.utils.text import Markdown, markdown_table, percent, recipe_changes, recipe_settings

PUBLISHED_SEARCH = "recipe_search"  # the search's folder among the published files: every round, and the study
SEARCH_DIR = Path(RESULTS_DIR) / PUBLISHED_SEARCH

# The recipe the issue measured on a CPU (89.67% test accuracy); every candidate changed some of it.
REFERENCE: dict[str, object] = {
    "batch_size": 128,
    "lr": 0.1,
    "decay_norm_and_bias": True,
    "cutout_p": 1.0,
    "label_smoothing": 0.1,
}
VAL_FRACTION = 0.1
ROLES = ("val", "test")  # the run that chooses, and the run that is published


def load_rounds(folder: Path) -> list[dict]:
    """Every committed round (``roundN.json``), in order."""
    paths = sorted(folder.glob("round*.json"), key=lambda p: int(p.stem.removeprefix("round")))
    if not paths:
        raise FileNotFoundError(f"no round*.json in {folder}; the rounds are committed with the book")
    return [json.loads(p.read_text(encoding="utf-8")) | {"round": int(p.stem.removeprefix("round"))} for p in paths]


def chosen_candidate(rounds: list[dict]) -> tuple[int, dict]:
    """The round and row with the highest final-epoch validation accuracy of all finished pairs."""
    finished = [
        (r["round"], row)
        for r in rounds
        for row in r["candidates"]
        if all(row.get(role, {}).get("finished") for role in ROLES)
    ]
    return max(finished, key=lambda item: item[1]["val"]["final"]["val_acc"])


def published_rounds(data_dir: str | os.PathLike = "~/.cache/erav1") -> Path | None:
    """The folder of the committed rounds: the clone's, else downloaded into ``data_dir`` (Colab); None if none.

    A download cannot list a folder, so the files are asked for by their numbers until one is missing.
    """
    first = published_file(f"{PUBLISHED_SEARCH}/round1.json", data_dir)
    if first is None:
        return None
    for pattern, number in (("round{}.json", 2), ("seeds/seed{}.history.json", 1)):
        while published_file(f"{PUBLISHED_SEARCH}/{pattern.format(number)}", data_dir) is not None:
            if pattern.startswith("seeds/"):  # _describe_seeds reads each seed's environment beside its history
                published_file(f"{PUBLISHED_SEARCH}/seeds/seed{number}.environment.json", data_dir)
            number += 1
    return first.parent


def describe_recipe_search(folder: Path | None = None, data_dir: str | os.PathLike = "~/.cache/erav1") -> Markdown:
    """Every candidate of every round, with the one the validation split chose in bold.

    ``folder`` None is the book's: the clone's, else the published files, downloaded into ``data_dir``.
    """
    folder = published_rounds(data_dir) if folder is None else folder
    if folder is None or not folder.is_dir():
        return Markdown(f"No rounds of the recipe search are published (`{SEARCH_DIR}/round*.json`).")
    rounds = load_rounds(folder)
    chosen_round, chosen = chosen_candidate(rounds)
    rows = []
    for r in rounds:
        for row in r["candidates"]:
            val, test = row.get("val", {}), row.get("test", {})
            if val.get("finished") and test.get("finished"):
                cells = [
                    percent(val["final"]["val_acc"], 2),
                    percent(test["final"]["test_acc"], 2),
                    percent(test["final"]["train_acc"], 2),
                ]
            else:
                cells = [f"dropped after {val.get('epochs', 0)} epochs", "-", "-"]
            name = f"**{row['candidate']}**" if row is chosen else row["candidate"]
            rows.append([r["round"], name, recipe_changes(row["changes"], REFERENCE, "none (the reference)"), *cells])
    table = markdown_table(
        ["round", "candidate", "changes to the reference", "val acc (chooses)", "test acc", "train acc"], rows
    )
    vals = [
        row["val"]["final"]["val_acc"] for r in rounds for row in r["candidates"] if row.get("val", {}).get("finished")
    ]
    return Markdown(
        f"Each candidate trained for {rounds[0]['epochs']} epochs twice, with the same seed: once on "
        f"{percent(1 - VAL_FRACTION, 0)} of the train images, scored on the held-out rest (val acc), and once "
        f"on all of them, scored on the test set. The reference recipe is {recipe_settings(REFERENCE)}.\n\n"
        f"{table}\n\n"
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
        history = json.loads(path.read_text(encoding="utf-8"))
        environment = json.loads((folder / f"seed{seed}.environment.json").read_text(encoding="utf-8"))
        seconds = sum(record["seconds"] for record in history)
        parts.append(
            f"seed {seed}: {percent(history[-1]['test_acc'], 2)} in {seconds:.0f} s on "
            f"{environment['gpu'] or environment['cpu']}"
        )
    return (
        "\n\nThe chosen recipe, trained again alone on the GPU with other seeds, finished at "
        + "; ".join(parts)
        + ". Seed-to-seed differences of that size mean that the closer rows above are ties."
    )
