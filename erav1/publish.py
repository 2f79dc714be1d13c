"""``erav1 publish``: turn a finished run into the book's published results.

Writes two files that the book, the README and Colab readers use:

* ``summary.json``: the final epoch's test accuracy (never the best epoch's), the
  class-wise and final train accuracy, the whole recipe, the wall time, the
  hardware, the torch version, the data and its fingerprint, the commit, and the
  sha256 of the weights, against which a reader's download is checked;
* ``resnet18_cifar10.pt``: the final weights as an fp16 ``state_dict`` (about
  22 MB), which chapters 4-6 can load instead of a run directory.

A recipe is confirmed before it is published: the same recipe trains again with other seeds
(``erav1 publish RUN_DIR --seed-run OTHER_RUN ...``), and ``summary.json`` lists every seed's final test
accuracy and their spread. A seed that finishes later, where the published run's directory is not, joins
the published summary on its own (``erav1 publish --seed-run OTHER_RUN``). The published run is the one
with the seed fixed before any of them trained (``Config.seed``, 0), never the best of them on test.

Every number is read from the run's own files or measured on its test set here.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from erav1.analysis import analyze_run
from erav1.errors import RunDirError
from erav1.published import PREVIOUS_RECIPE, PUBLISHED_WEIGHTS, SUMMARY
from erav1.utils.checkpoint import atomic_write_json, load_checkpoint, save_fp16_weights
from erav1.utils.rundir import (
    CONFIG,
    ENVIRONMENT,
    WEIGHTS,
    describe_hardware,
    epochs_done,
    read_history,
    read_json,
)

RECIPE_KEYS = (
    "model",
    "optimizer",
    "lr",
    "momentum",
    "nesterov",
    "weight_decay",
    "decay_norm_and_bias",
    "scheduler",
    "pct_start",
    "batch_size",
    "label_smoothing",
    "crop_padding",
    "flip",
    "cutout_size",
    "cutout_p",
    "cutout_fill",
    "zero_init_residual",
    "ema_decay",
)
CONFIRMATION_SEEDS = 3  # how many seeds of a recipe train before the book calls it confirmed
SEED_FIELDS = ("seed", "test_accuracy", "train_accuracy", "wall_time_s", "hardware", "commit")
DATA_KEYS = ("data", "subset", "val_fraction")  # the same images: "cifar10" is fingerprint-checked when loaded


def _check_finished(run_dir: Path, weights: bool = True) -> None:
    """Refuse a run that has not trained all its epochs; with ``weights``, one without its final weights too.

    A seed that only confirms the published one needs no weights: its record is all that is published of it.
    """
    done, planned = epochs_done(run_dir)
    if done != planned:
        raise RunDirError(
            f"{run_dir} has finished {done} of {planned} epochs; only a finished run is "
            f"published. Finish it with 'erav1 train --resume {run_dir}'."
        )
    if weights and not (run_dir / WEIGHTS).is_file():
        raise RunDirError(
            f"{run_dir} has finished its epochs but holds no {WEIGHTS}, and the published run's weights are "
            "published with it; publish the run directory that 'erav1 train' wrote them into."
        )


def recipe_options(config: dict[str, Any]) -> dict[str, Any]:
    """The recipe's options from a config.json or a summary's recipe; a run older than an option trained its
    first default (``SUPERSEDED_DEFAULTS`` holds those that have changed since)."""
    from erav1.main import first_defaults

    defaults = first_defaults()
    return {key: config.get(key, defaults[key]) for key in RECIPE_KEYS}


def recipe_changes(config: dict[str, Any]) -> dict[str, Any]:
    """Where a run's recipe differs from Config's defaults: what chapter 3 must train to show that run."""
    from erav1.main import config_defaults

    defaults = config_defaults()
    return {key: value for key, value in recipe_options(config).items() if value != defaults[key]}


def run_record(run_dir: Path) -> dict[str, Any]:
    """What a run's own files say about it: every field of ``summary.json`` that needs no evaluation."""
    return record_of(read_json(run_dir / CONFIG), read_json(run_dir / ENVIRONMENT), read_history(run_dir))


def record_of(config: dict[str, Any], environment: dict[str, Any], history: list[dict[str, Any]]) -> dict[str, Any]:
    """:func:`run_record` from the contents of those files, wherever they lie (a seed kept apart from its run)."""
    final = history[-1]
    return {
        "test_accuracy": final["test_acc"],
        "train_accuracy": final["train_acc"],
        "epochs": len(history),
        "recipe": recipe_options(config) | {"precision": environment["precision"]},
        "seed": config["seed"],
        "subset": config.get("subset"),  # images per split, when the run trained on a subset of them
        "wall_time_s": sum(record["seconds"] for record in history),
        "hardware": describe_hardware(environment),
        "torch": environment["torch"],
        "commit": environment.get("git_commit"),
    }


def seed_fields(record: dict[str, Any]) -> dict[str, Any]:
    """What ``summary.json`` keeps of each seed, from a run's record or from a summary."""
    return {key: record[key] for key in SEED_FIELDS} | {"precision": record["recipe"]["precision"]}


def summary_seeds(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """The seeds a summary lists; a summary older than the list has one, the published run's."""
    return summary.get("seeds") or [seed_fields(summary)]


def _confirming_records(
    seed_runs: tuple[Path, ...],
    reference: str,
    recipe: dict[str, Any],
    images: dict[str, Any],
    images_of: Callable[[dict[str, Any]], dict[str, Any]],
    seeds: set[int],
) -> list[dict[str, Any]]:
    """The records of ``seed_runs``, each checked to confirm the recipe of ``reference``.

    A run confirms it only if it trained the same recipe (precision aside: a seed may train on other hardware)
    for as many epochs on the same images (``images_of`` its config matches ``images``), with a seed of its own.
    """
    records = []
    for other in seed_runs:
        _check_finished(other, weights=False)
        record = run_record(other)
        differ = [key for key, value in record["recipe"].items() if key != "precision" and recipe[key] != value]
        differ += ["epochs"] if record["epochs"] != recipe["epochs"] else []
        differ += [key for key, value in images_of(read_json(other / CONFIG)).items() if images[key] != value]
        if differ:
            raise RunDirError(
                f"{other} did not train the recipe of {reference} ({', '.join(differ)} differ), so it cannot "
                "confirm it; give --seed-run only runs of the same recipe with another --seed."
            )
        if record["seed"] in seeds:
            raise RunDirError(
                f"{other} trained seed {record['seed']}, which {reference} or another run given already has; "
                "each run that confirms a recipe needs a seed of its own ('erav1 train --seed N')."
            )
        seeds.add(record["seed"])
        records.append(seed_fields(record))
    return records


def seed_records(run_dir: Path, seed_runs: tuple[Path, ...] = ()) -> list[dict[str, Any]]:
    """The published run and other seeds of its recipe: what each one's final epoch scored on test."""
    published = run_record(run_dir)

    def images_of(config: dict[str, Any]) -> dict[str, Any]:
        return {key: config.get(key) for key in DATA_KEYS}

    recipe = published["recipe"] | {"epochs": published["epochs"]}
    others = _confirming_records(
        seed_runs, str(run_dir), recipe, images_of(read_json(run_dir / CONFIG)), images_of, {published["seed"]}
    )
    return [seed_fields(published), *others]


def with_seeds(summary: dict[str, Any], seeds: list[dict[str, Any]]) -> dict[str, Any]:
    """The summary listing ``seeds`` in order, with their spread once there are two or more."""
    summary = summary | {"seeds": sorted(seeds, key=lambda r: r["seed"])}
    summary.pop("seed_spread", None)
    if len(seeds) > 1:
        accuracies = [record["test_accuracy"] for record in seeds]
        summary["seed_spread"] = max(accuracies) - min(accuracies)
    return summary


def add_seed_runs(out_dir: str | os.PathLike, seed_runs: tuple[str | os.PathLike, ...]) -> dict[str, Any]:
    """Add finished runs of the published recipe with other seeds to ``out_dir``'s ``summary.json``; return it.

    The published run's own directory need not be here: a seed on a CPU trains for hours and may finish in
    another session or on another machine. The summary holds what each seed is checked against, and the
    pixels are compared by their fingerprint, so each seed's images are loaded once. The weights stay as
    they are.
    """
    from erav1.utils.data import load_data

    summary_file = Path(out_dir) / SUMMARY
    if not summary_file.is_file():
        raise RunDirError(
            f"{summary_file} does not exist: publish a run first ('erav1 publish RUN_DIR "
            f"--out {out_dir}'), then add other seeds of its recipe to it."
        )
    summary = read_json(summary_file)
    seeds = summary_seeds(summary)

    def images_of(config: dict[str, Any]) -> dict[str, Any]:
        splits = load_data(config["data"], config["data_dir"], resize=config.get("resize", True), verbose=False)
        return {
            "subset": config.get("subset"),
            "val_fraction": config.get("val_fraction", 0.0),
            "data_fingerprint": splits.fingerprints,
        }

    images = {"subset": summary.get("subset"), "val_fraction": 0.0, "data_fingerprint": summary["data_fingerprint"]}
    recipe = recipe_options(summary["recipe"]) | {"epochs": summary["epochs"]}
    others = _confirming_records(
        tuple(Path(other).expanduser() for other in seed_runs),
        f"the published run in {summary_file}",
        recipe,
        images,
        images_of,
        {record["seed"] for record in seeds},
    )
    summary = with_seeds(summary, seeds + others)
    atomic_write_json(summary, summary_file)
    return summary


def earlier_seeds(summary_file: Path, summary: dict[str, Any], given: set[int]) -> list[dict[str, Any]]:
    """The seeds that an earlier summary.json lists for the same recipe, epochs and images, but not ``given``.

    Publishing again (``make book`` does, with the published run alone) keeps the confirmation: the other
    seeds' runs need not be on this machine. Another recipe starts its list afresh.
    """
    if not summary_file.is_file():
        return []
    earlier = read_json(summary_file)
    same = recipe_options(earlier.get("recipe", {})) == recipe_options(summary["recipe"]) and all(
        earlier.get(key) == summary.get(key) for key in ("epochs", "data_fingerprint", "subset")
    )
    return [record for record in earlier.get("seeds", []) if same and record["seed"] not in given]


def keep_replaced_recipe(summary_file: Path, summary: dict[str, Any]) -> None:
    """Keep the ``summary.json`` that ``summary`` replaces as ``previous-recipe.json`` if it had another recipe.

    A new recipe is published because it beat the old one; chapter 3 shows by how much, seed for seed, and the
    JPEG copy's run of the old recipe keeps its twin on the official pixels.
    """
    if summary_file.is_file():
        replaced = read_json(summary_file)
        if recipe_options(replaced.get("recipe", {})) != recipe_options(summary["recipe"]):
            atomic_write_json(replaced, summary_file.with_name(PREVIOUS_RECIPE))


def summarize_run(run_dir: Path, metrics: dict[str, Any]) -> dict[str, Any]:
    """The published record of a finished run; ``metrics`` is ``erav1 analyze``'s for the same run."""
    return run_record(run_dir) | {
        "test_accuracy_flip_tta": metrics["flip_tta_accuracy"],  # re-scored here, with mirrored copies averaged in
        "class_accuracy": metrics["class_accuracy"],
        "data": metrics["data"],  # what the pixels are and where they were read from, no folder of this machine
        "data_fingerprint": metrics["data_fingerprint"],
    }


def publish_run(
    run_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    device: str = "auto",
    seed_runs: tuple[str | os.PathLike, ...] = (),
) -> dict[str, Any]:
    """Write ``summary.json`` and the fp16 weights of a finished run into ``out_dir``; return the summary.

    ``seed_runs`` are finished runs of the same recipe with other seeds; the summary lists every seed.
    """
    run_dir, out_dir = Path(run_dir).expanduser(), Path(out_dir)
    _check_finished(run_dir)
    seeds = seed_records(run_dir, tuple(Path(other).expanduser() for other in seed_runs))  # refuses before the work
    summary = summarize_run(run_dir, analyze_run(run_dir, device=device, faithfulness_n=0))  # no ROAD: not published
    summary = with_seeds(summary, seeds + earlier_seeds(out_dir / SUMMARY, summary, {r["seed"] for r in seeds}))
    keep_replaced_recipe(out_dir / SUMMARY, summary)
    summary["weights_sha256"] = save_fp16_weights(load_checkpoint(run_dir / WEIGHTS), out_dir / PUBLISHED_WEIGHTS)
    atomic_write_json(summary, out_dir / SUMMARY)  # written last: it names the weights that are already in place
    return summary
