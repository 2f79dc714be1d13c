"""Re-execute the cells that only show published results; keep every other output.

A chapter's outputs come from one execution with the full profile, which trains for hours. A few cells only
read committed files in ``book/results/``: the recipe study, the seeds of the published recipe. When those
files change (a confirmation seed that trained on another day joins ``summary.json``), only those cells need
to run again. They carry the tag ``published-results`` and may use the chapter's parameters, but no other
cell's variables: they run in a fresh kernel after the chapter's parameters cell, with the values the full
profile gives it, and their new outputs replace the old ones. A chapter records which of its cells ran
later than the rest in its metadata (``erav1.refreshed_cells``); the next full execution clears that.
"""

from __future__ import annotations

import copy
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from erav1.book.layout import Book, write_chapter

if TYPE_CHECKING:  # the book extras: imported when a chapter is read, so that `erav1 publish` works without them
    import nbformat

RESULTS_TAG = "published-results"


def result_cells(nb: nbformat.NotebookNode) -> list[nbformat.NotebookNode]:
    return [c for c in nb.cells if c.cell_type == "code" and RESULTS_TAG in c.metadata.get("tags", [])]


def executed_with(nb: nbformat.NotebookNode, profile: str) -> bool:
    return nb.metadata.get("erav1", {}).get("profile") == profile


def run_result_cells(chapter: Path, nb: nbformat.NotebookNode, parameters: dict[str, Any], root: Path) -> dict:
    """``{cell id: executed cell}``: the parameters cell, then the tagged cells, in one fresh kernel."""
    import nbformat

    from erav1.book.execute import execute_chapter
    from erav1.book.parameters import parameters_cell

    cells = [parameters_cell(nb, chapter.name), *result_cells(nb)]
    only = nbformat.v4.new_notebook(cells=copy.deepcopy(cells), metadata={"kernelspec": nb.metadata["kernelspec"]})
    for cell in only.cells:
        cell.outputs, cell.execution_count = [], None
    with tempfile.TemporaryDirectory(prefix="erav1-refresh-") as tmp:
        source, output = Path(tmp) / chapter.name, Path(tmp) / "executed" / chapter.name
        nbformat.write(only, source)
        execute_chapter(source, output, parameters, cwd=root, package_root=root)
        return {cell.get("id"): cell for cell in nbformat.read(output, as_version=4).cells}


def take_outputs(cell: nbformat.NotebookNode, executed: nbformat.NotebookNode) -> bool:
    """Give ``cell`` the outputs of ``executed``, numbered as ``cell`` was in its chapter; True if they changed."""
    from erav1.book.tidy import tidy_outputs

    outputs = tidy_outputs(executed.outputs)
    for out in outputs:
        if "execution_count" in out:
            out.execution_count = cell.execution_count
    if outputs == cell.outputs:
        return False
    cell.outputs = outputs
    for key in ("execution", "papermill"):
        if key in executed.metadata:
            cell.metadata[key] = executed.metadata[key]
    return True


def refresh_result_cells(
    book: Book, profile: str, check: bool = False, echo: Callable[[str], None] = print
) -> list[Path]:
    """Re-execute the ``published-results`` cells of every chapter executed with ``profile``; the chapters changed.

    A chapter that was never executed with ``profile`` is left alone: half of it would be executed. With
    ``check``, no chapter is written: the list names those that are stale.
    """
    import nbformat

    from erav1.book.parameters import for_chapter
    from erav1.book.runner import resolve_parameters

    declared, values = resolve_parameters(book, profile, [])
    changed = []
    for chapter in book.chapters():
        nb = nbformat.read(chapter, as_version=4)
        cells = result_cells(nb)
        if not cells or not executed_with(nb, profile):
            continue
        executed = run_result_cells(chapter, nb, for_chapter(values, declared[chapter.name]), book.root)
        refreshed = [cell.id for cell in cells if take_outputs(cell, executed[cell.id])]
        if not refreshed:
            continue
        changed.append(chapter)
        if not check:
            record = nb.metadata["erav1"]
            record["refreshed_cells"] = sorted(set(record.get("refreshed_cells", [])) | set(refreshed))
            write_chapter(nb, chapter)
            echo(f"re-executed {len(refreshed)} published-results cell(s) of {chapter.relative_to(book.root)}")
    return changed


def refresh_published(root: Path, echo: Callable[[str], None] = print) -> list[Path]:
    """Everything in the clone at ``root`` that shows ``book/results``, regenerated from it; the files changed.

    The results tables of the README and the landing page, then, in a book, its ``published-results`` cells.
    """
    from erav1.book.layout import CONFIG_FILE
    from erav1.book.results import SUMMARY_FILE, refresh_book_pages
    from erav1.book.runner import PUBLISHING_PROFILE
    from erav1.published import RESULTS_DIR

    pages = refresh_book_pages(root, root / RESULTS_DIR / SUMMARY_FILE)
    for page in pages:
        echo(f"refreshed the results table in {page.relative_to(root)}")
    if not (root / CONFIG_FILE).is_file():
        return pages
    return pages + refresh_result_cells(Book.at(root), PUBLISHING_PROFILE, echo=echo)


def refresh_if_published(out_dir: str | Path, echo: Callable[[str], None] = print) -> list[Path]:
    """:func:`refresh_published` for the working directory, when ``out_dir`` is its ``book/results``."""
    from erav1.published import RESULTS_DIR

    root = Path.cwd()
    return refresh_published(root, echo) if Path(out_dir).resolve() == (root / RESULTS_DIR).resolve() else []
