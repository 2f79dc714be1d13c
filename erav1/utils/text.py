"""Text that notebooks render as Markdown: the sentences and tables that quote measured numbers.

The book's chapters never type a number into their prose. Helpers next to the
code that measures something return a :class:`Markdown` string instead; a
notebook displays it as formatted text, a terminal prints it as plain text.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path


class Markdown(str):
    """A ``str`` that Jupyter displays as Markdown."""

    def _repr_markdown_(self) -> str:
        return str(self)


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """A pipe table; cells are formatted with ``str``."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def percent(fraction: float, digits: int = 1) -> str:
    return f"{100 * fraction:.{digits}f}%"


def recipe_settings(recipe: Mapping[str, object]) -> str:
    """``{"lr": 0.4, "nesterov": True}`` -> ```lr=0.4`, `nesterov=True``: a recipe as a table cell or a sentence."""
    return ", ".join(f"`{name}={value}`" for name, value in recipe.items())


def recipe_changes(recipe: Mapping[str, object], reference: Mapping[str, object], same: str) -> str:
    """The settings of ``recipe`` that differ from ``reference``, or ``same`` where none does."""
    return recipe_settings({k: v for k, v in recipe.items() if reference.get(k) != v}) or same


def refresh_block(path: Path, start: str, end: str, body: str) -> bool:
    """Rewrite what stands between the ``start`` and ``end`` markers of file ``path`` with ``body``.

    Returns True when the file changed. Generated blocks keep README numbers out of anyone's hands;
    a file without the markers raises LookupError, for the caller to say what the block is for.
    """
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.DOTALL)
    text = path.read_text(encoding="utf-8")
    if not pattern.search(text):
        raise LookupError(f"{path} has no {start} ... {end} block")
    updated = pattern.sub(lambda _: f"{start}\n{body}\n{end}", text, count=1)
    if updated != text:
        from erav1.utils.checkpoint import atomic_write_text

        atomic_write_text(updated, path)
    return updated != text
