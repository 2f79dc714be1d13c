"""The published run outside a clone: downloaded once over real HTTP, hash-checked, cached, never half-loaded."""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from loopback import Server

from erav1 import published
from erav1.errors import DataError
from erav1.utils.evaluation import load_model

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / published.RESULTS_DIR


@pytest.fixture
def served(tmp_path, monkeypatch) -> Iterator[tuple[Server, Path]]:
    """The repository's published files on a loopback server, with erav1 acting as if pip-installed (no clone)."""
    folder = tmp_path / "served"
    folder.mkdir()
    for name in (published.SUMMARY, published.PUBLISHED_WEIGHTS, published.JPEG_COPY):
        shutil.copy2(RESULTS / name, folder / name)
    server = Server(folder)
    monkeypatch.setenv(published.URL_VARIABLE, server.url)
    monkeypatch.setattr(published, "clone_results", lambda: None)
    yield server, folder
    server.close()


def cached_files(data_dir: Path) -> list[str]:
    folder = data_dir / published.CACHE_FOLDER
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_the_published_weights_download_once_check_their_hash_and_load(served, tmp_path, capsys):
    server, folder = served
    data_dir = tmp_path / "data"
    choice = published.choose_model("runs/nothing-here", None, data_dir)
    assert choice.kind == "published"
    sha256 = json.loads((folder / published.SUMMARY).read_text())["weights_sha256"]
    assert hashlib.sha256(choice.path.read_bytes()).hexdigest() == sha256
    assert choice.path.parent == data_dir / published.CACHE_FOLDER and sha256[:12] in choice.path.name
    assert load_model(choice.path, device="cpu", precision="fp32").model is not None
    assert f"final-epoch test accuracy **{100 * choice.summary['test_accuracy']:.2f}%**" in choice.describe()
    assert "the published run" in choice.describe()

    server.close()  # offline now: the cached files serve, and the summary says where it came from
    again = published.choose_model(None, None, data_dir)
    assert again.path == choice.path and again.summary == choice.summary
    assert "cached" in capsys.readouterr().out
    assert server.requests.count("/" + published.PUBLISHED_WEIGHTS) == 1, "the weights are downloaded once"


def test_weights_that_fail_the_hash_are_deleted_and_reported(served, tmp_path):
    _, folder = served
    summary = json.loads((folder / published.SUMMARY).read_text())
    summary["weights_sha256"] = "0" * 64
    (folder / published.SUMMARY).write_text(json.dumps(summary))
    with pytest.raises(DataError, match="does not match the sha256 that summary.json.*deleted, nothing was loaded"):
        published.choose_model(None, None, tmp_path / "data")
    assert cached_files(tmp_path / "data") == [published.SUMMARY], "no weights, no partial file"


def test_a_dropped_connection_leaves_nothing_behind(served, tmp_path):
    server, _ = served
    server.drop.add(published.PUBLISHED_WEIGHTS)
    # http.client may see the short body as an error, or torch's reader as the end of the file: either way the
    # download is refused, by the connection error or by the sha256 check, and nothing is kept
    with pytest.raises(
        DataError,
        match="(could not download the published resnet18_cifar10.pt.*nothing was kept)|"
        "(transfer broke off.*nothing was loaded)",
    ):
        published.choose_model(None, None, tmp_path / "data")
    assert cached_files(tmp_path / "data") == [published.SUMMARY]
    server.drop.clear()  # the next try downloads it whole
    assert published.choose_model(None, None, tmp_path / "data").kind == "published"


def test_no_server_and_no_cache_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv(published.URL_VARIABLE, "http://127.0.0.1:9/")  # the discard port: nothing listens
    monkeypatch.setattr(published, "clone_results", lambda: None)
    with pytest.raises(DataError, match="could not download the published summary.json .*train your own run"):
        published.choose_model(None, None, tmp_path / "data")


def test_a_run_directory_or_a_weights_file_comes_before_the_published_run(tiny_run, tmp_path):
    run = published.choose_model(tiny_run.run_dir, None, tmp_path)
    assert run.kind == "run" and run.path == tiny_run.run_dir
    assert f"final test accuracy {100 * tiny_run.final['test_acc']:.2f}%" in run.describe()
    weights = published.choose_model(tiny_run.run_dir, tiny_run.run_dir / "model.pt", tmp_path)
    assert weights.kind == "weights" and "model.pt" in weights.describe()


def test_a_run_is_named_by_the_path_the_chapter_gave_never_by_this_machines(tiny_run, tmp_path, monkeypatch):
    monkeypatch.chdir(tiny_run.run_dir.parent.parent)
    relative = Path(tiny_run.run_dir.parent.name) / tiny_run.run_dir.name
    assert f"the run in `{relative.as_posix()}/` after 3 of 3 epochs" in published.choose_model(relative).describe()
    absolute = published.choose_model(tiny_run.run_dir).describe()
    assert f"the run in `{tiny_run.run_dir.name}/`" in absolute and str(tiny_run.run_dir.parent) not in absolute


def test_in_a_clone_the_published_files_are_the_repositorys(tmp_path):
    assert published.clone_results() == RESULTS
    choice = published.choose_model(tmp_path / "no-run", None, tmp_path / "data")
    assert choice.path == RESULTS / published.PUBLISHED_WEIGHTS and not (tmp_path / "data").exists()


def test_the_download_address_is_the_repository_and_branch_of_config_yml(monkeypatch):
    monkeypatch.delenv(published.URL_VARIABLE, raising=False)
    repository = yaml.safe_load((ROOT / "_config.yml").read_text())["repository"]
    assert (repository["url"], repository["branch"]) == (published.REPOSITORY, published.BRANCH)
    owner_repo = repository["url"].removeprefix("https://github.com/")
    assert published.results_url() == (
        f"https://raw.githubusercontent.com/{owner_repo}/{repository['branch']}/book/results/"
    )


def test_the_jpeg_copy_comparison_names_the_gap_only_for_the_same_recipe_on_all_official_images(
    tiny_run, tmp_path, monkeypatch
):
    from erav1.book.results import same_recipe

    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run.run_dir, run_dir)
    jpeg = json.loads((RESULTS / published.JPEG_COPY).read_text())
    # A 3-epoch run on a subset: the gap shown is the published run's of the JPEG run's recipe, where there is one
    twin = next((s for s in published.published_summaries() if same_recipe(s, jpeg)), None)
    text = published.describe_jpeg_copy(run_dir)
    if twin is None:
        assert "did not train the same recipe" in text and "points" not in text
    else:
        gap = 100 * (twin["test_accuracy"] - jpeg["test_accuracy"])
        assert f"| published, the JPEG run's recipe | {twin['data']} | {100 * twin['test_accuracy']:.2f}% |" in text
        assert f"{abs(gap):.2f} points {'higher' if gap > 0 else 'lower'} than on the JPEG copy" in text
        assert "This run trained another recipe or other images" in text

    # Published files without a run of the JPEG run's recipe on the official pixels: no gap at all
    results = tmp_path / "results"
    results.mkdir()
    shutil.copy2(RESULTS / published.JPEG_COPY, results / published.JPEG_COPY)
    (results / published.SUMMARY).write_text(json.dumps(jpeg | {"recipe": jpeg["recipe"] | {"lr": 0.123}}))
    monkeypatch.setattr(published, "clone_results", lambda: results)
    text = published.describe_jpeg_copy(run_dir)
    assert "did not train the same recipe" in text and "points" not in text
    (results / published.PREVIOUS_RECIPE).write_text(json.dumps(jpeg | {"test_accuracy": 0.9}))  # the replaced one
    text = published.describe_jpeg_copy(run_dir)
    assert "| published, the JPEG run's recipe |" in text and "than on the JPEG copy" in text

    # The same run's files, told they trained the JPEG run's recipe on all of the official train set:
    config = json.loads((run_dir / "config.json").read_text())
    config |= {key: jpeg["recipe"][key] for key in jpeg["recipe"] if key != "precision"}
    config |= {"data": "cifar10", "subset": None, "val_fraction": 0.0, "seed": jpeg["seed"]}
    (run_dir / "config.json").write_text(json.dumps(config))
    history = json.loads((run_dir / "history.json").read_text())
    (run_dir / "history.json").write_text(json.dumps(history[-1:] * jpeg["epochs"]))
    text = published.describe_jpeg_copy(run_dir)
    gap = 100 * (history[-1]["test_acc"] - jpeg["test_accuracy"])
    assert f"{abs(gap):.2f} points {'higher' if gap > 0 else 'lower'} than on the JPEG copy" in text
    assert f"{100 * jpeg['test_accuracy']:.2f}%" in text and "CIFAR-10 (official pixels)" in text
    assert "published, the JPEG run's recipe" not in text and "another recipe" not in text, "this run is the twin"

    config["subset"] = 500
    (run_dir / "config.json").write_text(json.dumps(config))
    assert "| published, the JPEG run's recipe |" in published.describe_jpeg_copy(run_dir), "a subset is not the twin"


def publish_study(folder: Path, written: Path, lr: float, value: float) -> None:
    """A study of one complete trial, which changed ``lr``, published into the served ``folder``."""
    import sqlite3

    import optuna
    from optuna.distributions import FloatDistribution

    from erav1.recipe_study import open_study
    from erav1.study_report import PUBLISHED_STUDY

    study = open_study(f"sqlite:///{written}")
    study.add_trial(
        optuna.trial.create_trial(
            params={"lr": lr},
            distributions={"lr": FloatDistribution(0.01, 0.8)},
            value=value,
            intermediate_values={20: value},
        )
    )
    with sqlite3.connect(written) as db:  # the study's log folded into the file, as it is committed
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    (folder / PUBLISHED_STUDY).parent.mkdir(parents=True)
    shutil.copy(written, folder / PUBLISHED_STUDY)


def test_the_recipe_study_is_downloaded_where_there_is_no_clone_and_absent_until_one_is_published(served, tmp_path):
    from erav1.study_report import NO_STUDY, PUBLISHED_STUDY, describe_study

    server, folder = served
    data_dir = tmp_path / "data"
    assert describe_study(data_dir=data_dir) == NO_STUDY  # the server has none: HTTP 404, not an error
    publish_study(folder, tmp_path / "written" / "study.db", lr=0.4, value=0.9123)

    table = describe_study(data_dir=data_dir)
    assert "1 trials of the study `recipe`" in table and "91.23%" in table
    assert f"/{PUBLISHED_STUDY}" in server.requests
    server.close()  # offline now: the copy the last download cached stands in
    assert describe_study(data_dir=data_dir) == table


def test_the_confirmation_seeds_are_downloaded_as_they_land_where_there_is_no_clone(served, tiny_run, tmp_path):
    from erav1.recipe_study import KEPT_SEEDS
    from erav1.study_report import describe_confirmation

    server, folder = served
    data_dir = tmp_path / "data"
    assert "no recipe is being confirmed yet" in describe_confirmation(data_dir=data_dir)
    trained = json.loads((tiny_run.run_dir / "config.json").read_text())
    publish_study(folder, tmp_path / "written" / "study.db", lr=trained["lr"], value=0.5)  # its best: tiny_run's
    assert describe_confirmation(data_dir=data_dir).endswith("No seed has ended yet.")  # HTTP 404: none kept

    (folder / KEPT_SEEDS).mkdir()
    for part in ("config", "environment", "history"):  # seed 0 of the best trial's recipe has ended
        shutil.copy(tiny_run.run_dir / f"{part}.json", folder / KEPT_SEEDS / f"seed0.{part}.json")
    shown = describe_confirmation(data_dir=data_dir)
    assert "1 of the 3 seeds has ended" in shown
    assert f"| **0** (to publish) | {100 * tiny_run.history[-1]['test_acc']:.2f}% |" in shown
    assert f"/{KEPT_SEEDS}/seed0.history.json" in server.requests
    server.close()  # offline, seed 1 was never cached (none had landed): one clear error, not a shorter table
    with pytest.raises(DataError, match=r"seed1\.config\.json .* Check the connection"):
        describe_confirmation(data_dir=data_dir)


def test_the_recipe_search_rounds_are_downloaded_where_there_is_no_clone(served, tmp_path):
    from erav1.recipe_search import PUBLISHED_SEARCH, SEARCH_DIR, describe_recipe_search

    server, folder = served
    in_clone = describe_recipe_search(ROOT / SEARCH_DIR)
    assert "No rounds of the recipe search are published" in describe_recipe_search(data_dir=tmp_path / "data")
    shutil.copytree(ROOT / SEARCH_DIR, folder / PUBLISHED_SEARCH)  # the committed rounds and seeds, served
    assert describe_recipe_search(data_dir=tmp_path / "data") == in_clone
    assert f"/{PUBLISHED_SEARCH}/seeds/seed2.environment.json" in server.requests


def test_once_all_seeds_have_ended_they_are_compared_with_the_published_recipe_they_replace(served, tiny_run, tmp_path):
    from erav1.recipe_study import KEPT_SEEDS
    from erav1.study_report import describe_confirmation

    server, folder = served
    data_dir = tmp_path / "data"
    trained = json.loads((tiny_run.run_dir / "config.json").read_text())
    publish_study(folder, tmp_path / "written" / "study.db", lr=trained["lr"], value=0.5)  # its best: tiny_run's
    (folder / KEPT_SEEDS).mkdir()
    for seed in range(3):
        for part in ("environment", "history"):
            shutil.copy(tiny_run.run_dir / f"{part}.json", folder / KEPT_SEEDS / f"seed{seed}.{part}.json")
        (folder / KEPT_SEEDS / f"seed{seed}.config.json").write_text(json.dumps(trained | {"seed": seed}))
    summary = json.loads((folder / published.SUMMARY).read_text())
    old_seeds = [summary["seeds"][0] | {"seed": seed, "test_accuracy": acc} for seed, acc in ((0, 0.01), (1, 0.03))]
    replaced = summary | {"recipe": summary["recipe"] | {"lr": trained["lr"] / 2}, "seeds": old_seeds}
    accuracy = tiny_run.history[-1]["test_acc"]
    sentence = (
        f"The published recipe it replaces (`lr={trained['lr'] / 2}`) ended at a mean of 2.00% over its 2 seeds: "
        f"this one's mean is {100 * accuracy - 2:.2f} points higher, "
        "and its lowest seed is above that recipe's highest."
    )

    (folder / published.SUMMARY).write_text(json.dumps(replaced))  # confirmed, not yet published
    shown = describe_confirmation(data_dir=data_dir)
    assert sentence in shown and "| **0** (to publish) |" in shown
    (folder / published.SUMMARY).write_text(json.dumps(summary | {"recipe": summary["recipe"] | {"lr": trained["lr"]}}))
    (folder / published.PREVIOUS_RECIPE).write_text(json.dumps(replaced))  # published: the replaced one kept beside it
    shown = describe_confirmation(data_dir=data_dir)
    assert sentence in shown and "| **0** (published) |" in shown
    (folder / published.PREVIOUS_RECIPE).unlink()  # nothing to compare with: the table and the spread alone
    shown = describe_confirmation(data_dir=data_dir)
    assert "All of them have ended" in shown and "replaces" not in shown
