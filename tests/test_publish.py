import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from erav1.book.results import refresh_results
from erav1.errors import RunDirError
from erav1.main import Config
from erav1.publish import (
    PREVIOUS_RECIPE,
    PUBLISHED_WEIGHTS,
    RECIPE_KEYS,
    SUMMARY,
    add_seed_runs,
    publish_run,
    recipe_changes,
    run_record,
)
from erav1.utils.evaluation import evaluate_model, load_model
from erav1.utils.policies import Runtime
from erav1.utils.rundir import CONFIG, HISTORY
from tests.conftest import tiny_config, write_image_zip

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def published(tiny_run, tmp_path_factory):
    """Publish a copy: publishing writes RUN_DIR/report/, which must not leak into the shared tiny run."""
    run_dir = tmp_path_factory.mktemp("published") / "run"
    shutil.copytree(tiny_run.run_dir, run_dir)
    out = tmp_path_factory.mktemp("results")
    return publish_run(run_dir, out, device="cpu"), out


def test_summary_holds_the_final_epoch_the_recipe_and_the_environment(published, tiny_run, small_splits):
    summary, out = published
    assert json.loads((out / SUMMARY).read_text()) == summary
    final = tiny_run.history[-1]
    assert summary["test_accuracy"] == final["test_acc"] and summary["train_accuracy"] == final["train_acc"]
    # publish re-scores on the CPU with the precision auto picks there (bf16 on AMX CPUs), so must this check.
    # In bf16 the kernels oneDNN picks (by thread count, memory format) may round a borderline image either way.
    flip = evaluate_model(tiny_run.model, small_splits.test, Runtime.create("cpu", "auto"), flip=True)
    assert summary["test_accuracy_flip_tta"] == pytest.approx(flip.accuracy, abs=2 / len(small_splits.test))
    assert summary["epochs"] == len(tiny_run.history) == 3
    assert summary["wall_time_s"] == pytest.approx(sum(r["seconds"] for r in tiny_run.history))
    assert set(summary["class_accuracy"]) == set(tiny_run.classes)
    assert summary["recipe"]["optimizer"] == "sgd" and summary["recipe"]["precision"] == "fp32"
    assert summary["recipe"]["cutout_size"] == 0 and summary["seed"] == 0
    assert {key: summary["recipe"][key] for key in ("cutout_fill", "zero_init_residual", "ema_decay")} == {
        "cutout_fill": "zero",
        "zero_init_residual": False,
        "ema_decay": 0.0,
    }  # the levers, at tiny_run's values
    assert summary["torch"] == torch.__version__ and summary["hardware"]
    assert summary["data"] == small_splits.source and "/" not in summary["data"]  # no folder of this machine
    assert summary["data_fingerprint"] == small_splits.fingerprints
    # the class-wise accuracies, weighted by class size (50 each), give back the final test accuracy; they are
    # re-scored in the precision auto picks (bf16 on a CPU with avx512_bf16), the run scored itself in fp32
    mean = sum(summary["class_accuracy"].values()) / len(summary["class_accuracy"])
    assert mean == pytest.approx(summary["test_accuracy"], abs=2 / len(small_splits.test))


def test_published_fp16_weights_load_and_predict_like_the_run(published, tiny_run, small_splits):
    summary, out = published
    assert summary["weights_sha256"] == hashlib.sha256((out / PUBLISHED_WEIGHTS).read_bytes()).hexdigest()
    weights = torch.load(out / PUBLISHED_WEIGHTS, weights_only=True)
    assert all(v.dtype == torch.float16 for k, v in weights.items() if "num_batches" not in k)
    from_file = load_model(out / PUBLISHED_WEIGHTS, device="cpu", precision="fp32")
    from_run = load_model(tiny_run.run_dir, device="cpu", precision="fp32")
    a = evaluate_model(from_file.model, small_splits.test, from_file.runtime)
    b = evaluate_model(from_run.model, small_splits.test, from_run.runtime)
    agree = (a.predictions.preds == b.predictions.preds).float().mean().item()
    assert agree > 0.98 and abs(a.accuracy - b.accuracy) < 0.02


def test_the_results_table_is_generated_from_the_summary(published, tmp_path):
    summary, out = published
    page = tmp_path / "page.md"
    page.write_text("# Results\n<!-- results:start -->\nold\n<!-- results:end -->\n")
    assert refresh_results(page, out / SUMMARY)
    assert f"{100 * summary['test_accuracy']:.2f}%" in page.read_text() and "old" not in page.read_text()
    assert f"{100 * summary['test_accuracy_flip_tta']:.2f}%" in page.read_text()  # beside it, not instead
    readme = (ROOT / "README.md").read_text()
    assert "<!-- results:start -->" in readme and "<!-- results:end -->" in readme


def test_the_results_table_is_refreshed_under_a_locale_that_cannot_decode_the_readme(tmp_path):
    """The README is UTF-8 with an em dash; a locale's ASCII (or Latin-1) decoding must not read it."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert not readme.isascii(), "the check needs a page with non-ASCII text"
    page = tmp_path / "README.md"
    page.write_text(readme.replace("| 20 |", "| 19 |"), encoding="utf-8")  # a stale table, to be rewritten
    env = {**os.environ, "PYTHONPATH": str(ROOT), "LC_ALL": "C", "PYTHONUTF8": "0", "PYTHONCOERCECLOCALE": "0"}
    script = (
        "import locale, sys; from pathlib import Path; from erav1.book.results import refresh_results; "
        "print(locale.getpreferredencoding(False)); "
        "print(refresh_results(Path(sys.argv[1]), Path(sys.argv[2])))"
    )
    summary = ROOT / "book" / "results" / SUMMARY
    out = subprocess.run(
        [sys.executable, "-c", script, str(page), str(summary)], capture_output=True, text=True, env=env, timeout=300
    )
    assert out.returncode == 0, out.stderr
    encoding, changed = out.stdout.split()
    assert encoding == "ANSI_X3.4-1968", "the child did not run under an ASCII locale"
    assert changed == "True" and page.read_text(encoding="utf-8") == readme


def test_an_unfinished_run_is_not_published(tiny_run, tmp_path):
    import shutil

    run_dir = tmp_path / "unfinished"
    shutil.copytree(tiny_run.run_dir, run_dir)
    history = json.loads((run_dir / HISTORY).read_text())
    (run_dir / HISTORY).write_text(json.dumps(history[:1]))
    with pytest.raises(RunDirError, match="finished 1 of 3 epochs"):
        publish_run(run_dir, tmp_path / "out", device="cpu")
    assert not (tmp_path / "out").exists()


def test_publish_cli_reports_the_number_and_every_seed(published, tiny_run, seed1_run, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run.run_dir, run_dir)
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "erav1",
            "publish",
            str(run_dir),
            "--out",
            str(tmp_path),
            "--device",
            "cpu",
            "--seed-run",
            str(seed1_run.run_dir),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr
    summary = json.loads((tmp_path / SUMMARY).read_text())
    assert f"final test accuracy {100 * summary['test_accuracy']:.2f}%" in out.stdout
    assert f"seed 1 {100 * seed1_run.history[-1]['test_acc']:.2f}%" in out.stdout
    assert f"spread {100 * summary['seed_spread']:.2f} points" in out.stdout


@pytest.fixture(scope="module")
def seed1_run(cifar_zip, cache_dir, tmp_path_factory):
    """tiny_run's recipe again with seed 1: a real run that confirms it."""
    from erav1.main import fit

    return fit(tiny_config(cifar_zip, cache_dir, tmp_path_factory.mktemp("seed1"), seed=1), progress=False)


def test_other_seeds_of_the_recipe_are_listed_with_their_spread_and_the_book_seed_stays_published(
    published, tiny_run, seed1_run, tmp_path
):
    from erav1.published import describe_seeds

    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run.run_dir, run_dir)
    summary = publish_run(run_dir, tmp_path / "out", device="cpu", seed_runs=(seed1_run.run_dir,))
    assert [r["seed"] for r in summary["seeds"]] == [0, 1] and summary["seed"] == 0
    accuracies = [tiny_run.history[-1]["test_acc"], seed1_run.history[-1]["test_acc"]]
    assert [r["test_accuracy"] for r in summary["seeds"]] == accuracies
    assert summary["seed_spread"] == pytest.approx(abs(accuracies[0] - accuracies[1]))
    assert summary["test_accuracy"] == accuracies[0]  # seed 0 is published whichever seed scored higher
    assert published[0]["seeds"] == [summary["seeds"][0]] and "seed_spread" not in published[0]  # alone: no spread
    text = str(describe_seeds(summary=summary))
    assert "**0** (published)" in text and "2 of the 3 seeds" in text
    page = tmp_path / "page.md"
    page.write_text("<!-- results:start -->\n<!-- results:end -->\n")
    refresh_results(page, tmp_path / "out" / SUMMARY)
    assert f"{100 * accuracies[1]:.2f}% (seed 1)" in page.read_text()

    # publishing the run again alone (as make book does) keeps seed 1; a summary of another recipe does not
    assert publish_run(run_dir, tmp_path / "out", device="cpu")["seeds"] == summary["seeds"]
    other = json.loads((tmp_path / "out" / SUMMARY).read_text())
    (tmp_path / "out" / SUMMARY).write_text(json.dumps(other | {"recipe": other["recipe"] | {"lr": 0.5}}))
    assert not (tmp_path / "out" / PREVIOUS_RECIPE).exists(), "the same recipe published again replaces no recipe"
    assert [r["seed"] for r in publish_run(run_dir, tmp_path / "out", device="cpu")["seeds"]] == [0]
    kept = json.loads((tmp_path / "out" / PREVIOUS_RECIPE).read_text())
    assert kept["recipe"]["lr"] == 0.5 and kept["seeds"] == summary["seeds"], (
        "the replaced recipe is kept, seeds and all"
    )


def test_a_run_of_another_recipe_or_the_same_seed_does_not_confirm_and_nothing_is_written(tiny_run, tmp_path):
    other = tmp_path / "other-lr"
    shutil.copytree(tiny_run.run_dir, other)
    config = json.loads((other / CONFIG).read_text())
    (other / CONFIG).write_text(json.dumps(config | {"lr": 0.1, "seed": 1}))
    with pytest.raises(RunDirError, match=r"did not train the recipe .*\(lr differ\)"):
        publish_run(tiny_run.run_dir, tmp_path / "out", device="cpu", seed_runs=(other,))
    (other / CONFIG).write_text(json.dumps(config))  # the recipe, and seed 0 again
    with pytest.raises(RunDirError, match="trained seed 0, which .* already has"):
        publish_run(tiny_run.run_dir, tmp_path / "out", device="cpu", seed_runs=(other,))
    assert not (tmp_path / "out").exists()


def test_a_seed_that_finishes_later_joins_the_published_summary_without_the_published_run(
    published, seed1_run, small_splits, tmp_path
):
    """A CPU seed trains for hours, in a later session: the summary alone is what it is checked against."""
    out = tmp_path / "results"
    shutil.copytree(published[1], out)
    older = json.loads((out / SUMMARY).read_text())
    (out / SUMMARY).write_text(json.dumps({k: v for k, v in older.items() if k != "subset"}))
    with pytest.raises(RunDirError, match=r"\(subset differ\)"):  # a summary older than "subset": all images
        add_seed_runs(out, (seed1_run.run_dir,))
    for key in ("seeds", "seed_spread"):  # as the committed summary was written: one seed
        older.pop(key, None)
    (out / SUMMARY).write_text(json.dumps(older))
    weights = (out / PUBLISHED_WEIGHTS).read_bytes()

    summary = add_seed_runs(out, (seed1_run.run_dir,))
    accuracies = [older["test_accuracy"], seed1_run.history[-1]["test_acc"]]
    assert [(r["seed"], r["test_accuracy"]) for r in summary["seeds"]] == list(enumerate(accuracies))
    assert summary["seed_spread"] == pytest.approx(abs(accuracies[0] - accuracies[1]))
    assert {k: v for k, v in summary.items() if k not in ("seeds", "seed_spread")} == older  # the run stays published
    assert json.loads((out / SUMMARY).read_text()) == summary
    assert (out / PUBLISHED_WEIGHTS).read_bytes() == weights

    # refused, with summary.json as it was: the same seed again, another recipe, other images, no summary
    other = tmp_path / "other"
    shutil.copytree(seed1_run.run_dir, other)
    config = json.loads((other / CONFIG).read_text())
    with pytest.raises(RunDirError, match=r"trained seed 1, which the published run in .* already has"):
        add_seed_runs(out, (other,))
    (other / CONFIG).write_text(json.dumps(config | {"seed": 2, "cutout_size": 8}))
    with pytest.raises(RunDirError, match=r"did not train the recipe of the published run .*\(cutout_size differ\)"):
        add_seed_runs(out, (other,))
    changed = small_splits.train.images.clone()
    changed[0] = 255 - changed[0]  # one training image differs: the same count, other pixels
    zip_path = write_image_zip(
        tmp_path / "other-pixels.zip",
        {
            "train": type(small_splits.train)(changed, small_splits.train.labels, small_splits.train.classes),
            "test": small_splits.test,
        },
    )
    (other / CONFIG).write_text(json.dumps(config | {"seed": 2, "data": str(zip_path)}))
    with pytest.raises(RunDirError, match=r"\(data_fingerprint differ\)"):
        add_seed_runs(out, (other,))
    assert json.loads((out / SUMMARY).read_text()) == summary
    with pytest.raises(RunDirError, match="does not exist: publish a run first"):
        add_seed_runs(tmp_path / "nothing-published", (seed1_run.run_dir,))


def test_publish_cli_without_a_run_adds_seeds_to_the_published_summary_and_its_pages(published, seed1_run, tmp_path):
    """Run in a clone's root with the default --out: the README and the landing page show the new seed."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    shutil.copytree(published[1], tmp_path / "book" / "results")
    for page in ("README.md", "book/intro.md"):
        (tmp_path / page).write_text("# page\n<!-- results:start -->\n<!-- results:end -->\n")
    command = [sys.executable, "-m", "erav1", "publish"]
    out = subprocess.run(
        command + ["--seed-run", str(seed1_run.run_dir)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr
    seed1 = f"{100 * seed1_run.history[-1]['test_acc']:.2f}%"
    assert "added 1 seed(s)" in out.stdout and f"seed 1 {seed1}" in out.stdout
    for page in ("README.md", "book/intro.md"):
        assert f"{seed1} (seed 1)" in (tmp_path / page).read_text() and f"results table in {page}" in out.stdout
    out = subprocess.run(command, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    assert out.returncode != 0 and "give RUN_DIR to publish a run, or --seed-run" in out.stderr


def test_a_run_older_than_a_recipe_option_publishes_the_default_it_trained_with(tiny_run, tmp_path):
    run_dir = tmp_path / "old-run"
    shutil.copytree(tiny_run.run_dir, run_dir)
    config = json.loads((run_dir / CONFIG).read_text())
    del config["ema_decay"], config["cutout_fill"], config["cutout_p"]  # written before these options existed
    (run_dir / CONFIG).write_text(json.dumps(config))
    recipe = run_record(run_dir)["recipe"]
    assert recipe["ema_decay"] == 0.0 and recipe["cutout_fill"] == "zero"
    assert recipe["cutout_p"] == 1.0 != Config().cutout_p, "the default it trained with, not today's"
    assert set(recipe) == set(RECIPE_KEYS) | {"precision"}


def test_a_summary_older_than_a_lever_is_the_same_recipe_only_while_the_lever_is_at_its_default():
    from erav1.book.results import same_recipe

    old = json.loads((Path(__file__).resolve().parents[1] / "book" / "results" / SUMMARY).read_text())
    old["recipe"] = {k: v for k, v in old["recipe"].items() if k not in ("cutout_fill", "ema_decay")}
    new = json.loads(json.dumps(old))
    new["recipe"] |= {"cutout_fill": "zero", "zero_init_residual": False, "ema_decay": 0.0}
    assert same_recipe(old, new)
    new["recipe"]["ema_decay"] = 0.998
    assert not same_recipe(old, new)


def test_recipe_changes_name_what_differs_from_configs_defaults_and_nothing_else():
    """What chapter 3 must train to show a run: the recipe options off Config's defaults, not where it ran."""

    config = Config(lr=0.2, batch_size=256, ema_decay=0.995, device="cuda", run_dir="elsewhere").to_saved_dict()
    assert recipe_changes(config) == {"lr": 0.2, "batch_size": 256, "ema_decay": 0.995}
    assert recipe_changes(Config().to_saved_dict()) == {}
    older = {"lr": 0.2}  # a config older than every option trained each one's first default
    assert recipe_changes(older) == {"lr": 0.2, "cutout_p": 1.0}, "Cutout was on every image until trial 9 won"


def test_without_a_study_the_published_run_is_confirmed_with_the_seeds_its_summary_lacks_each_joining_when_it_ends(
    published, cifar_zip, cache_dir, tmp_path
):
    """The path without a GPU: scripts/confirm_recipe.py --published trains the missing seeds and adds them.

    A CPU seed trains for hours and sessions end, so a seed joins summary.json as soon as it ends: here seed 2's
    folder holds another run, seed 2 fails, and seed 1 is published all the same; the next call trains seed 2.
    """
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    shutil.copytree(published[1], tmp_path / "out")
    command = [
        sys.executable,
        str(ROOT / "scripts" / "confirm_recipe.py"),
        "--published",
        "--data",
        str(cifar_zip),
        "--data-dir",
        str(cache_dir),
        "--runs",
        str(tmp_path / "runs"),
        "--out",
        str(tmp_path / "out"),
        "--device",
        "cpu",
        "--jobs",
        "1",
        "--precision",
        "fp32",
    ]
    (tmp_path / "runs" / "seed2").mkdir(parents=True)
    (tmp_path / "runs" / "seed2" / CONFIG).write_text(json.dumps({"seed": 2, "lr": 9.9}))
    first = subprocess.run(command, capture_output=True, text=True, env=env, timeout=900)
    assert first.returncode != 0 and "seed2 holds a run with other" in first.stderr, first.stdout + first.stderr
    assert "with seeds 1 2: " in first.stdout and "subset=500" in first.stdout  # the summary's subset, epochs, recipe
    summary = json.loads((tmp_path / "out" / SUMMARY).read_text())
    assert [r["seed"] for r in summary["seeds"]] == [0, 1], "seed 1 ended, so it joined before seed 2 failed"

    shutil.rmtree(tmp_path / "runs" / "seed2")
    second = subprocess.run(command, capture_output=True, text=True, env=env, timeout=900)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "with seeds 2: " in second.stdout
    summary = json.loads((tmp_path / "out" / SUMMARY).read_text())
    histories = [json.loads((tmp_path / "runs" / f"seed{seed}" / HISTORY).read_text()) for seed in (1, 2)]
    assert [len(history) for history in histories] == [published[0]["epochs"]] * 2
    finals = [history[-1]["test_acc"] for history in histories]
    assert [(r["seed"], r["test_accuracy"]) for r in summary["seeds"]] == [
        (0, published[0]["test_accuracy"]),
        (1, finals[0]),
        (2, finals[1]),
    ]
    assert (tmp_path / "out" / PUBLISHED_WEIGHTS).read_bytes() == (published[1] / PUBLISHED_WEIGHTS).read_bytes()

    again = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert again.returncode != 0 and "already has seeds [0, 1, 2]" in again.stderr


def test_the_studys_best_recipe_keeps_each_seed_as_it_ends_and_a_new_machine_trains_only_the_rest(
    cifar_zip, cache_dir, tmp_path
):
    """scripts/confirm_recipe.py on a study: a seed that ended is kept in the committed results, and restored there.

    Run directories go with their machine (a CPU seed takes a session). Here seed 0 ends and is kept (its record
    and, as the seed to publish, its fp16 weights) before seed 1 fails; then the machine is gone (every run
    directory deleted), and the next call restores seed 0 without training it, trains seed 1 and publishes.
    """
    import optuna

    from erav1.recipe_study import SPACE, open_study, reference_recipe
    from erav1.study_report import describe_confirmation, describe_published_seeds

    storage = f"sqlite:///{tmp_path / 'study.db'}"
    study = open_study(storage)
    study.add_trial(optuna.create_trial(params=reference_recipe(), distributions=SPACE, value=0.5))
    runs, out = tmp_path / "runs", tmp_path / "out"
    kept = out / "recipe_search" / "confirm"
    command = [sys.executable, str(ROOT / "scripts" / "confirm_recipe.py"), "--data", str(cifar_zip)]
    command += ["--data-dir", str(cache_dir), "--storage", storage, "--seeds", "0", "1", "--epochs", "1"]
    command += ["--runs", str(runs), "--out", str(out), "--device", "cpu", "--subset", "500", "--precision", "fp32"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    (runs / "seed1").mkdir(parents=True)
    (runs / "seed1" / CONFIG).write_text(json.dumps({"seed": 1, "lr": 9.9}))

    first = subprocess.run(command, capture_output=True, text=True, env=env, timeout=900)
    assert first.returncode != 0 and "seed1 holds a run with other" in first.stderr, first.stdout + first.stderr
    assert "seed0: finished, kept in" in first.stdout and not (out / SUMMARY).exists()
    assert sorted(p.name for p in kept.iterdir()) == [
        "seed0.config.json",
        "seed0.environment.json",
        "seed0.history.json",
        "seed0.model.pt",
    ]
    history = json.loads((runs / "seed0" / HISTORY).read_text())
    assert json.loads((kept / "seed0.history.json").read_text()) == history
    kept_config = json.loads((kept / "seed0.config.json").read_text())
    assert kept_config == json.loads((runs / "seed0" / CONFIG).read_text()) | {"data_dir": "~/.cache/erav1"}
    assert str(cache_dir) not in (kept / "seed0.config.json").read_text(), "no path of the machine is committed"
    weights = torch.load(kept / "seed0.model.pt", weights_only=True)
    assert all(v.dtype == torch.float16 for k, v in weights.items() if "num_batches" not in k)
    kept_sha = hashlib.sha256((kept / "seed0.model.pt").read_bytes()).hexdigest()
    shown = describe_confirmation(storage, kept=kept)  # chapter 3 shows each seed as it lands
    assert "1 of the 3 seeds has ended" in shown
    assert f"| **0** (to publish) | {100 * history[-1]['test_acc']:.2f}% |" in shown

    shutil.rmtree(runs)  # a new machine: the runs are gone, the committed results are not
    kept_record = (kept / "seed0.history.json").stat().st_ino
    second = subprocess.run(command, capture_output=True, text=True, env=env, timeout=900)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "seed0: restored from" in second.stdout and "seed1: finished, kept in" in second.stdout
    assert not (runs / "seed0" / "train.log").exists(), "seed 0 was restored, not trained again"
    assert json.loads((runs / "seed0" / CONFIG).read_text())["data_dir"] == str(cache_dir), "published from here"
    assert (kept / "seed0.history.json").stat().st_ino == kept_record, "a restored seed is not kept again"
    summary = json.loads((out / SUMMARY).read_text())
    seed1 = json.loads((runs / "seed1" / HISTORY).read_text())
    assert [(r["seed"], r["test_accuracy"]) for r in summary["seeds"]] == [
        (0, history[-1]["test_acc"]),
        (1, seed1[-1]["test_acc"]),
    ]
    assert summary["weights_sha256"] == kept_sha, "the kept weights are the published ones, byte for byte"
    shown = describe_published_seeds(storage, summary=summary)  # chapter 3 does not repeat the table above
    assert "trial 0's" in shown and "| seed |" not in shown and "The published run is seed 0" in shown
    other = describe_published_seeds(storage, summary=summary | {"recipe": summary["recipe"] | {"lr": 9.9}})
    assert "| **0** (published) |" in other, "a recipe the study did not confirm shows its own seeds"
    assert sorted(p.name for p in kept.iterdir()) == [
        "seed0.config.json",
        "seed0.environment.json",
        "seed0.history.json",
        "seed1.config.json",
        "seed1.environment.json",
        "seed1.history.json",
    ], "published, seed 0's weights are the published file, so they are not kept twice"
    for part in ("config", "environment", "history"):  # a seed of another recipe (an earlier best) is not shown
        shutil.copy(kept / f"seed1.{part}.json", kept / f"seed2.{part}.json")
    config = json.loads((kept / "seed2.config.json").read_text())
    (kept / "seed2.config.json").write_text(json.dumps(config | {"seed": 2, "lr": 9.9}))
    shown = describe_confirmation(storage, kept=kept)
    assert "2 of the 3 seeds have ended" in shown and f"| 1 | {100 * seed1[-1]['test_acc']:.2f}% |" in shown
    assert "| 2 |" not in shown
