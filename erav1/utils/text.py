"""Text that notebooks render as Markdown: the sentences and tables that quote measured numbers.

The book's chapters never type a number into their prose. Helpers next to the
code that measures something return a :class:`Markdown` string instead; a
notebook displays it as formatted text, a terminal prints it as plain text.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence


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
