"""The record of the recipe search's first rounds: the recipe they chose, and chapter 3's table of them."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

from erav1.main import Config
from erav1.recipe_search import REFERENCE, SEARCH_DIR, chosen_candidate, describe_recipe_search, load_rounds

ROOT = Path(__file__).resolve().parents[1]


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


def test_the_book_table_says_so_without_published_rounds(tmp_path):
    assert "No rounds of the recipe search are published" in describe_recipe_search(tmp_path / "absent")
