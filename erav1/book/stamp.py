"""Stamp every chapter with its "Open in Colab" badge and its Colab-only install cell.

Both are derived from ``_config.yml`` (see :mod:`erav1.book.layout`), so
changing the repository or branch there and re-stamping updates every chapter,
and the repository and branch that :mod:`erav1.published` downloads the
published run from. Stamping twice gives the same files as stamping once.
"""

from __future__ import annotations

import re
from pathlib import Path

import nbformat

from erav1.book.layout import Book, BookError, Repository, write_chapter
from erav1.utils.checkpoint import atomic_write_text

# Vendored (book/images/), so the offline site shows the badge; the path is relative to the chapter.
BADGE_IMAGE = "images/colab-badge.svg"
BADGE_LINE = re.compile(r"^\[!\[Open In Colab\]\([^)]*\)\]\([^)]*\)\s*$", re.MULTILINE)
INSTALL_TAG = "colab-install"
INSTALL_TAGS = [INSTALL_TAG, "remove-cell"]  # the book page explains installing; Colab runs the cell


def badge(colab_url: str) -> str:
    return f"[![Open In Colab]({BADGE_IMAGE})]({colab_url})"


def install_source(repository: Repository) -> str:
    return (
        "# Colab only: install erav1 from the book's repository. Elsewhere erav1 is already installed.\n"
        "import sys\n"
        "\n"
        'if "google.colab" in sys.modules:\n'
        f'    %pip install -q "erav1 @ {repository.pip_spec}"'
    )


def header_source(source: str, colab_url: str) -> str:
    """The title line, the badge, then the rest of the header cell without any old badge."""
    lines = source.strip().splitlines()
    if not lines or not lines[0].startswith("# "):
        raise BookError("a chapter's first cell must be markdown starting with '# Title'")
    rest = BADGE_LINE.sub("", "\n".join(lines[1:])).strip()
    return "\n\n".join(part for part in (lines[0], badge(colab_url), rest) if part)


def stamp_notebook(nb: nbformat.NotebookNode, colab_url: str, repository: Repository) -> bool:
    """Stamp one notebook in memory; True when anything changed."""
    if not nb.cells or nb.cells[0].cell_type != "markdown":
        raise BookError("a chapter's first cell must be its markdown title")
    changed = False
    header = header_source(nb.cells[0].source, colab_url)
    if nb.cells[0].source != header:
        nb.cells[0].source, changed = header, True

    install = [i for i, c in enumerate(nb.cells) if INSTALL_TAG in c.metadata.get("tags", [])]
    first_code = next((i for i, c in enumerate(nb.cells) if c.cell_type == "code"), len(nb.cells))
    if install and install[0] != first_code:
        raise BookError(f"the cell tagged {INSTALL_TAG!r} must be the first code cell")
    if not install:
        cell = nbformat.v4.new_code_cell(install_source(repository), id="colab-install")
        nb.cells.insert(first_code, cell)
        changed = True
    cell = nb.cells[first_code]
    wanted = install_source(repository)
    if cell.source != wanted or cell.metadata.get("tags") != INSTALL_TAGS:
        cell.source, cell.metadata["tags"], changed = wanted, list(INSTALL_TAGS), True
    return changed


def stamp_package(source: str, repository: Repository) -> str:
    """erav1/published.py's ``REPOSITORY`` and ``BRANCH`` lines set to ``repository``."""
    source = re.sub(r'^REPOSITORY = ".*"$', f'REPOSITORY = "{repository.url}"', source, count=1, flags=re.MULTILINE)
    return re.sub(r'^BRANCH = ".*"$', f'BRANCH = "{repository.branch}"', source, count=1, flags=re.MULTILINE)


def stamp_chapters(book: Book, check: bool = False) -> list[Path]:
    """Stamp every chapter of ``book`` and erav1/published.py in place; return the files that changed (or would)."""
    repository = book.repository
    changed = []
    package = book.root / "erav1" / "published.py"
    if package.is_file():
        source = package.read_text(encoding="utf-8")
        stamped = stamp_package(source, repository)
        if stamped != source:
            changed.append(package)
            if not check:
                atomic_write_text(stamped, package)
    for path in book.chapters():
        nb = nbformat.read(path, as_version=4)
        if stamp_notebook(nb, book.colab_url(path), repository):
            changed.append(path)
            if not check:
                write_chapter(nb, path)
    return changed
