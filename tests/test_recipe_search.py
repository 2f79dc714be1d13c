"""The recipe search: its choice rule, its book table, and one real (tiny) round end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest

from erav1.main import Config
from erav1.recipe_search import (
    REFERENCE,
    SEARCH_DIR,
    Run,
    chosen_candidate,
    cli_flags,
    describe_recipe_search,
    load_rounds,
    projected_finish,
    summarize,
)

ROOT = Path(__file__).resolve().parents[1]


def test_cli_flags_spell_booleans_as_erav1_train_does():
    assert cli_flags({"cutout_p": 0.5, "decay_norm_and_bias": False, "flip": True}) == [
        "--cutout-p", "0.5", "--no-decay-norm-and-bias", "--flip"]


def test_the_config_defaults_are_the_recipe_the_validation_split_chose():
    """The book trains with Config's defaults, so they must be the search's winner, not a hand-picked recipe."""
    _, chosen = chosen_candidate(load_rounds(ROOT / SEARCH_DIR))
    defaults = {f.name: f.default for f in fields(Config)}
    for name, value in (REFERENCE | chosen["changes"]).items():
        assert defaults[name] == value, name


def test_the_book_table_lists_every_candidate_and_bolds_the_validation_winner():
    rounds = load_rounds(ROOT / SEARCH_DIR)
    text = describe_recipe_search(ROOT / SEARCH_DIR)
    _, chosen = chosen_candidate(rounds)
    for r in rounds:
        for row in r["candidates"]:
            assert f"| {r['round']} | " in text and row["candidate"] in text
    assert f"**{chosen['candidate']}**" in text
    assert text.count("**") == 6  # the winner's row name, its val accuracy and its name in the last sentence


def test_the_book_table_points_to_the_repository_without_the_results(tmp_path):
    assert "book/results/recipe_search" in describe_recipe_search(tmp_path / "absent")


def fake_run(tmp_path: Path, candidate: str, role: str, accs: list[float], seconds: float = 10.0) -> Run:
    run_dir = tmp_path / f"{candidate}.{role}"
    run_dir.mkdir()
    key = "val_acc" if role == "val" else "test_acc"
    history = [{"epoch": i + 1, "train_acc": 0.5, key: acc, "seconds": seconds} for i, acc in enumerate(accs)]
    (run_dir / "history.json").write_text(json.dumps(history))
    run = Run(candidate, role, run_dir)
    run.process = subprocess.Popen([sys.executable, "-c", "pass"])
    run.process.wait()
    return run


def test_the_winner_is_chosen_on_validation_even_when_test_disagrees(tmp_path):
    runs = [
        fake_run(tmp_path, "a", "val", [0.5, 0.80]), fake_run(tmp_path, "a", "test", [0.5, 0.95]),
        fake_run(tmp_path, "b", "val", [0.5, 0.85]), fake_run(tmp_path, "b", "test", [0.5, 0.90]),
        fake_run(tmp_path, "c", "val", [0.99]), fake_run(tmp_path, "c", "test", [0.99]),  # unfinished
    ]
    summary = summarize(runs, {"a": {}, "b": {"lr": 0.2}, "c": {}}, epochs=2)
    assert summary["winner"] == "b"
    assert summary["published_run"] == str(tmp_path / "b.test")


def test_projected_finish_waits_for_two_epochs_then_extrapolates(tmp_path):
    assert projected_finish(fake_run(tmp_path, "a", "val", [0.1]), epochs=20, now=0) is None
    assert projected_finish(fake_run(tmp_path, "b", "val", [0.1, 0.2], seconds=10), epochs=20, now=30) == 210


@pytest.mark.slow
def test_a_tiny_round_runs_both_twins_and_writes_its_choice(cifar_zip, cache_dir, tmp_path):
    out = tmp_path / "search"
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "search_recipe.py"), "--data", str(cifar_zip), "--out", str(out),
         "--data-dir", str(cache_dir),
         "--round", "1", "--candidates", "1", "--epochs", "1", "--subset", "100", "--deadline", "600"],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    selection = json.loads((out / "selection.json").read_text())
    first = selection["candidates"][0]
    assert first["val"]["finished"] and first["test"]["finished"]
    assert "val_acc" in first["val"]["final"] and "test_acc" in first["test"]["final"]
    assert selection["published_run"] == first["test"]["run_dir"]
    config = json.loads((Path(first["test"]["run_dir"]) / "config.json").read_text())
    assert {k: config[k] for k in REFERENCE} == REFERENCE | first["changes"]
