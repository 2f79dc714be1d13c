"""The record of the recipe search's first rounds: the recipe they chose, and chapter 3's table of them."""

from __future__ import annotations

import json
from pathlib import Path

from erav1.recipe_search import REFERENCE, SEARCH_DIR, chosen_candidate, describe_recipe_search, load_rounds

ROOT = Path(__file__).resolve().parents[1]


def test_the_config_defaults_are_the_recipe_the_validation_split_chose():
    """The book trains with Config's defaults, so they must be a search's winner, not a hand-picked recipe.

    The rounds chose the recipe the Optuna study began from (Config's defaults with the superseded ones at their
    first values); the published run, whose recipe the defaults are now, trained a complete trial of that study.
    """
    from optuna.trial import TrialState

    from erav1.main import first_defaults
    from erav1.publish import recipe_changes, recipe_options
    from erav1.recipe_study import changed_options
    from erav1.study_report import load_existing_study

    _, chosen = chosen_candidate(load_rounds(ROOT / SEARCH_DIR))
    before_the_study = first_defaults()
    for name, value in (REFERENCE | chosen["changes"]).items():
        assert before_the_study[name] == value, name

    published = json.loads((ROOT / "book" / "results" / "summary.json").read_text())
    assert recipe_changes(published["recipe"]) == {}, "chapter 3 trains the published recipe"
    options = recipe_options(published["recipe"])
    complete = load_existing_study().get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    assert any(not changed_options(options, trial.params) for trial in complete), "a study's validation winner"


def test_the_book_table_lists_every_candidate_and_bolds_the_validation_winner():
    rounds = load_rounds(ROOT / SEARCH_DIR)
    text = describe_recipe_search(ROOT / SEARCH_DIR)
    _, chosen = chosen_candidate(rounds)
    for r in rounds:
        for row in r["candidates"]:
            assert f"| {r['round']} | " in text and row["candidate"] in text
    assert f"**{chosen['candidate']}**" in text
    assert text.count("**") == 6  # the winner's row name, its val accuracy and its name in the last sentence


def test_the_book_table_says_so_without_published_rounds(tmp_path):
    assert "No rounds of the recipe search are published" in describe_recipe_search(tmp_path / "absent")
