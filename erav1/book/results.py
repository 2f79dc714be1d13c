"""The published results table, generated from ``book/results/summary.json``.

The landing page (and later the README) carries a block between two markers::

    <!-- results:start -->
    ...generated...
    <!-- results:end -->

:func:`refresh_results` rewrites that block from ``summary.json``, so no result
is ever typed by hand. Without a summary the block says plainly that no full
run has been published yet.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from erav1.book.layout import BookError
from erav1.published import JPEG_COPY
from erav1.utils.text import refresh_block

SUMMARY_FILE = "summary.json"

START, END = "<!-- results:start -->", "<!-- results:end -->"
REQUIRED = ("test_accuracy", "epochs", "wall_time_s", "hardware")
NOT_PUBLISHED = (
    "No full run has been published yet. These chapters have not been executed with the full profile; "
    "run `make book` to train for the full number of epochs and fill in this table."
)


def read_summary(path: Path) -> dict[str, Any] | None:
    if not path.exists():
        return None
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise BookError(f"{path} is not valid JSON ({exc})") from None
    missing = [key for key in REQUIRED if key not in summary]
    if missing:
        raise BookError(f"{path} lacks {', '.join(missing)}")
    return summary


def format_duration(seconds: float) -> str:
    minutes = round(seconds / 60)
    return f"{minutes // 60} h {minutes % 60:02d} min" if minutes >= 60 else f"{minutes} min"


def same_recipe(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Two published runs trained the same recipe (precision aside) with the same seed for as many epochs."""
    from erav1.publish import recipe_options  # an option that one summary predates counts at its default

    same = recipe_options(a.get("recipe", {})) == recipe_options(b.get("recipe", {}))
    return same and a.get("seed") == b.get("seed") and a.get("epochs") == b.get("epochs")


def results_markdown(summary: dict[str, Any] | None, jpeg_copy: dict[str, Any] | None = None) -> str:
    """The table (or the not-yet-published sentence) that goes between the markers.

    ``jpeg_copy`` is the same recipe's run on the lossy JPEG copy; it gets a column beside the result only when
    it really is the same recipe, seed and number of epochs.
    """
    if summary is None:
        return NOT_PUBLISHED
    flip = summary.get("test_accuracy_flip_tta")
    header = ["Test accuracy (final epoch)", "With flip TTA (separate)"]
    row = [f"{100 * summary['test_accuracy']:.2f}%", f"{100 * flip:.2f}%" if flip is not None else "-"]
    if jpeg_copy is not None and same_recipe(summary, jpeg_copy):
        header.append("Same recipe on the JPEG copy")
        row.append(f"{100 * jpeg_copy['test_accuracy']:.2f}%")
    seeds = summary.get("seeds", [])
    if len(seeds) > 1:  # the other seeds of the recipe, trained to confirm it
        header.append("Every seed (final epoch)")
        row.append(", ".join(f"{100 * r['test_accuracy']:.2f}% (seed {r['seed']})" for r in seeds))
    header += ["Epochs", "Wall time", "Hardware", "Data"]
    row += [
        str(summary["epochs"]),
        format_duration(summary["wall_time_s"]),
        str(summary["hardware"]),
        str(summary.get("data", "")),
    ]
    return "\n".join(["| " + " | ".join(header) + " |", "|" + "---|" * len(header), "| " + " | ".join(row) + " |"])


def refresh_results(markdown: Path, summary_file: Path) -> bool:
    """Rewrite the results block of ``markdown`` from ``summary_file`` and the JPEG run beside it; True if changed."""
    table = results_markdown(read_summary(summary_file), read_summary(summary_file.with_name(JPEG_COPY)))
    try:
        return refresh_block(markdown, START, END, table)
    except LookupError:
        raise BookError(f"{markdown} has no {START} ... {END} block") from None


BOOK_PAGES = ("README.md", "book/intro.md")  # the pages of a clone that show the published results


def refresh_book_pages(root: Path, summary_file: Path) -> list[Path]:
    """Rewrite the results block of each of ``root``'s pages that exists; the pages that changed."""
    pages = [root / page for page in BOOK_PAGES if (root / page).is_file()]
    return [page for page in pages if refresh_results(page, summary_file)]
