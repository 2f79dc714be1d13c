"""The published run: its ``summary.json`` and fp16 weights, from a clone or downloaded once.

Chapters 4 to 7 show the reader's own run when chapter 3 has written one, and
the published run otherwise. In a clone of the repository the published files
are right there, in ``book/results/``. After ``pip install git+...`` (Colab,
where every notebook runs in a fresh runtime) they are not, so they are
downloaded from the repository that ``_config.yml`` names, at its branch, with
``torch.hub``'s download helper, and cached in ``data_dir``. The weights are
checked against the sha256 that ``summary.json`` records: a file that fails is
deleted and reported, and nothing half-downloaded is ever loaded.
"""

from __future__ import annotations

import http.client
import json
import os
import tempfile
import urllib.error
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from erav1.errors import DataError
from erav1.utils.rundir import CONFIG, HISTORY, holds_run, read_json
from erav1.utils.text import Markdown, markdown_table, percent

# Stamped from _config.yml's repository.url and branch (scripts/stamp_chapters.py; a test keeps them equal).
REPOSITORY = "https://github.com/erav1-book/erav1"
BRANCH = "main"
RESULTS_DIR = "book/results"
SUMMARY, PUBLISHED_WEIGHTS = "summary.json", "resnet18_cifar10.pt"
JPEG_COPY = "jpeg-copy.json"  # the summary of the earlier run of the same recipe on the lossy JPEG copy
PREVIOUS_RECIPE = "previous-recipe.json"  # the summary.json that a run of another recipe replaced
# Another place to download the published files from: a mirror, a fork's raw files, a test's server.
URL_VARIABLE = "ERAV1_RESULTS_URL"
CACHE_FOLDER = "published"


def results_url() -> str:
    """Where the published files are downloaded from: ``ERAV1_RESULTS_URL``, else the raw files on GitHub."""
    override = os.environ.get(URL_VARIABLE, "").strip()
    if override:
        return override.rstrip("/") + "/"
    owner_repo = REPOSITORY.removeprefix("https://github.com/")
    return f"https://raw.githubusercontent.com/{owner_repo}/{BRANCH}/{RESULTS_DIR}/"


def clone_results() -> Path | None:
    """``book/results`` of the clone this package runs from, if it does (an editable or PYTHONPATH install)."""
    root = Path(__file__).resolve().parents[1]
    results = root / RESULTS_DIR
    return results if (root / "_config.yml").is_file() and (results / SUMMARY).is_file() else None


def _download(name: str, destination: Path, sha256: str | None, missing_ok: bool = False) -> Path | None:
    """Download one published file to ``destination`` (atomically, hash-checked when ``sha256`` is given).

    With ``missing_ok``, a file the server does not have (HTTP 404: nothing of that kind is published) is None.
    """
    from torch.hub import download_url_to_file

    url = results_url() + name
    destination.parent.mkdir(parents=True, exist_ok=True)
    try:
        download_url_to_file(url, str(destination), hash_prefix=sha256, progress=False)
    except urllib.error.HTTPError as exc:
        if missing_ok and exc.code == 404:
            return None
        raise _unreachable(name, url, exc) from None
    except RuntimeError as exc:
        if "invalid hash value" in str(exc):
            raise DataError(
                f"the published {name} downloaded from {url} does not match the sha256 that {SUMMARY} records "
                f"({sha256}): the transfer broke off, or the file is not the one {SUMMARY} names. It was deleted, "
                f"nothing was loaded. Run again to download it afresh; if it keeps failing, the repository's {name} "
                f"and {SUMMARY} are out of step."
            ) from None
        raise
    except (OSError, http.client.HTTPException) as exc:  # URLError, a refused or a dropped connection ...
        raise _unreachable(name, url, exc) from None
    return destination


def _unreachable(name: str, url: str, exc: Exception) -> DataError:
    return DataError(
        f"could not download the published {name} from {url} ({type(exc).__name__}: {exc}); nothing was kept. "
        f"Check the connection and run again, or train your own run with chapter 3 (erav1 train)."
    )


def published_json(name: str, data_dir: str | os.PathLike = "~/.cache/erav1") -> Any:
    """A small published file (``summary.json``, say): the clone's, else a fresh download (the cached copy offline)."""
    path = published_file(name, data_dir, check=_read_json)
    if path is None:
        raise DataError(f"there is no published {name} ({results_url()}); 'erav1 publish' writes the published files")
    return _read_json(path)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DataError(f"the published {path.name} is not valid JSON ({exc})") from None


def published_file(
    name: str, data_dir: str | os.PathLike = "~/.cache/erav1", check: Callable[[Path], Any] | None = None
) -> Path | None:
    """A published file: the clone's, else a fresh download (offline, the copy cached by the last one); None if none.

    ``check`` reads a download before it replaces the cached copy and raises :class:`DataError` if it is unusable.
    """
    local = clone_results()
    if local is not None:
        return local / name if (local / name).is_file() else None
    cached = Path(data_dir).expanduser() / CACHE_FOLDER / name
    cached.parent.mkdir(parents=True, exist_ok=True)
    try:
        with tempfile.TemporaryDirectory(dir=cached.parent) as tmp:
            fresh = _download(name, Path(tmp) / cached.name, None, missing_ok=True)
            if fresh is None:  # not published (any more): show none rather than an old copy
                cached.unlink(missing_ok=True)
                return None
            if check is not None:
                check(fresh)
            fresh.replace(cached)
    except DataError:
        if not cached.is_file():
            raise
        print(f"note: using the published {name} cached in {cached.parent}; the download failed")
    return cached


def published_summary(data_dir: str | os.PathLike = "~/.cache/erav1") -> dict[str, Any]:
    """The published run's ``summary.json``."""
    return published_json(SUMMARY, data_dir)


def published_weights(data_dir: str | os.PathLike = "~/.cache/erav1", summary: dict[str, Any] | None = None) -> Path:
    """The published fp16 weights: the clone's file, else downloaded once into ``data_dir`` and hash-checked.

    ``summary`` is the published summary.json when the caller already has it (it holds the weights' sha256).
    """
    local = clone_results()
    if local is not None:
        return local / PUBLISHED_WEIGHTS
    sha256 = (summary or published_summary(data_dir)).get("weights_sha256")
    if not sha256:
        raise DataError(f"the published {SUMMARY} records no weights_sha256, so the weights cannot be checked")
    stem, suffix = PUBLISHED_WEIGHTS.rsplit(".", 1)
    cached = Path(data_dir).expanduser() / CACHE_FOLDER / f"{stem}-{sha256[:12]}.{suffix}"
    if cached.is_file():  # named by its hash, and only ever written whole after the check
        return cached
    return _download(PUBLISHED_WEIGHTS, cached, sha256)


@dataclass(frozen=True)
class ModelChoice:
    """Which model a chapter shows: the reader's own run, a weights file, or the published run."""

    path: Path  # a run directory or a weights file, for erav1.utils.evaluation.load_model
    kind: str  # "run", "weights" or "published"
    summary: dict[str, Any] | None = None  # the published run's summary.json

    def describe(self) -> Markdown:
        """One sentence saying which model the chapter shows, with its numbers from its own files."""
        if self.kind == "published":
            s = self.summary or {}
            recipe = s.get("recipe", {})
            return Markdown(
                f"This chapter shows **the published run**: {recipe.get('model', 'resnet18')} trained for "
                f"{s.get('epochs')} epochs on {s.get('data')} with batch {recipe.get('batch_size')} and a peak lr of "
                f"{recipe.get('lr')} (the whole recipe is in chapter 3), final-epoch test accuracy "
                f"**{percent(s['test_accuracy'], 2)}**. Once chapter 3 has trained your own run into the run "
                "directory, this chapter shows that one instead."
            )
        if self.kind == "weights":
            return Markdown(f"This chapter shows the weights in `{self.path.name}`.")
        history = read_json(self.path / HISTORY) if (self.path / HISTORY).is_file() else []
        config = read_json(self.path / CONFIG) if (self.path / CONFIG).is_file() else {}
        done = (
            f" after {len(history)} of {config.get('epochs', len(history))} epochs, final test accuracy "
            f"{percent(history[-1]['test_acc'], 2)}"
            if history and "test_acc" in history[-1]
            else ""
        )
        shown = self.path.name if self.path.is_absolute() else self.path.as_posix()  # never this machine's path
        return Markdown(f"This chapter shows the run in `{shown}/`{done}.")

    def _repr_markdown_(self) -> str:
        return str(self.describe())


def choose_model(
    run_dir: str | os.PathLike | None,
    weights: str | os.PathLike | None = None,
    data_dir: str | os.PathLike = "~/.cache/erav1",
) -> ModelChoice:
    """``weights`` when given; else ``run_dir`` when it holds a run; else the published run."""
    if weights:
        return ModelChoice(Path(weights).expanduser(), "weights")
    if run_dir and holds_run(Path(run_dir).expanduser()):
        return ModelChoice(Path(run_dir).expanduser(), "run")
    summary = published_summary(data_dir)
    return ModelChoice(published_weights(data_dir, summary), "published", summary)


def published_summaries(data_dir: str | os.PathLike = "~/.cache/erav1") -> list[dict[str, Any]]:
    """The published ``summary.json`` and the one of the recipe it replaced, those that exist, newest first."""
    paths = (published_file(name, data_dir, check=_read_json) for name in (SUMMARY, PREVIOUS_RECIPE))
    return [_read_json(path) for path in paths if path is not None]


def describe_jpeg_copy(run_dir: str | os.PathLike, data_dir: str | os.PathLike = "~/.cache/erav1") -> Markdown:
    """The run in ``run_dir`` beside the earlier run on the lossy JPEG copy: what the copy cost.

    The cost is the gap between the JPEG run and a run of its recipe and seed on the official pixels: this run
    if it is one, else the published run of that recipe (the one a later recipe replaced, say).
    """
    from erav1.book.results import same_recipe
    from erav1.publish import run_record

    run_dir = Path(run_dir).expanduser()
    config = read_json(run_dir / CONFIG)
    official = config["data"] == "cifar10" and not config.get("subset") and not config.get("val_fraction")
    run, jpeg = run_record(run_dir), published_json(JPEG_COPY, data_dir)
    runs = [
        ("this run", "CIFAR-10 (official pixels)" if official else f"{config['data']} (a subset or a split of it)", run)
    ]
    twin = run if official and same_recipe(run, jpeg) else None
    if twin is None:
        twin = next((s for s in published_summaries(data_dir) if same_recipe(s, jpeg) and not s.get("subset")), None)
        if twin is not None:
            runs.append(("published, the JPEG run's recipe", twin["data"], twin))
    runs.append(("published earlier", jpeg["data"], jpeg))
    table = markdown_table(
        ["run", "data", "test acc (final epoch)", "train acc", "hardware", "precision"],
        [
            [
                name,
                data,
                percent(s["test_accuracy"], 2),
                percent(s["train_accuracy"], 2),
                s["hardware"],
                s["recipe"]["precision"],
            ]
            for name, data, s in runs
        ],
    )
    if twin is None:
        return Markdown(
            table + "\n\nThe two runs did not train the same recipe, seed and number of epochs on the "
            "whole official training set, so the difference is not the data's alone."
        )
    gap = twin["test_accuracy"] - jpeg["test_accuracy"]
    which = "" if twin is run else " (the published run of the JPEG run's recipe)"
    caveat = (
        "" if twin is run else " This run trained another recipe or other images, so its own gap is not the data's."
    )
    return Markdown(
        table + f"\n\nThe same recipe and seed for {twin['epochs']} epochs{which}: on the official pixels the final "
        f"test accuracy is {abs(100 * gap):.2f} points {'higher' if gap > 0 else 'lower'} than on the JPEG copy "
        "(quality 75, 4:2:0 chroma). Results are only comparable on the same pixels, which is why this book "
        "reports the official ones." + caveat
    )


def describe_seeds(data_dir: str | os.PathLike = "~/.cache/erav1", summary: dict[str, Any] | None = None) -> Markdown:
    """The published recipe with every seed it trained on all of train: how much of its number is the seed's."""
    from erav1.publish import summary_seeds

    summary = summary or published_summary(data_dir)
    seeds = summary_seeds(summary)
    return Markdown(
        seeds_table(seeds, summary["seed"], "published") + "\n\n" + seeds_verdict(seeds) + published_seed(summary)
    )


def seeds_verdict(seeds: list[dict[str, Any]]) -> str:
    """How far apart the seeds land, once all that confirm a recipe have trained; else how to train the rest."""
    from erav1.publish import CONFIRMATION_SEEDS

    if len(seeds) >= CONFIRMATION_SEEDS:
        return seeds_spread(seeds)
    return (
        f"So far the recipe has trained with {len(seeds)} of the {CONFIRMATION_SEEDS} seeds that confirm "
        "it. Another seed is `erav1 train --seed N --run-dir runs/seedN`; "
        "`erav1 publish --seed-run runs/seedN` then adds it to this table."
    )


def published_seed(summary: dict[str, Any]) -> str:
    """Which seed of the table is published, and why that is not the test set's choice."""
    return (
        f" The published run is seed {summary['seed']}, the seed the book fixed (`Config.seed`) before any of "
        "these runs trained: the test set did not pick it among them."
    )


def seeds_table(seeds: list[dict[str, Any]], marked: int, mark: str) -> str:
    """One row per seed as ``summary.json`` lists it; seed ``marked`` in bold, followed by ``mark`` (published, say)."""
    from erav1.book.results import format_duration

    rows = [
        [
            f"**{r['seed']}** ({mark})" if r["seed"] == marked else r["seed"],
            percent(r["test_accuracy"], 2),
            percent(r["train_accuracy"], 2),
            r["hardware"],
            r["precision"],
            format_duration(r["wall_time_s"]),
        ]
        for r in seeds
    ]
    return markdown_table(["seed", "test acc (final epoch)", "train acc", "hardware", "precision", "wall time"], rows)


def seeds_spread(seeds: list[dict[str, Any]]) -> str:
    """Where the seeds' final test accuracies lie: the range, its width in points, and the mean."""
    accuracies = [r["test_accuracy"] for r in seeds]
    return (
        f"With {len(seeds)} seeds the final test accuracy lies between {percent(min(accuracies), 2)} and "
        f"{percent(max(accuracies), 2)}: a spread of {100 * (max(accuracies) - min(accuracies)):.2f} "
        f"points, mean {percent(sum(accuracies) / len(accuracies), 2)}."
    )
