"""Execute one chapter with papermill, and turn a failure into one message naming the chapter and cell."""

from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nbformat

from erav1.book.layout import BookError
from erav1.book.tidy import INJECTED_TAG

KERNEL = "python3"  # always named: a notebook naming an uninstalled kernel fails with NoSuchKernel


class ChapterFailed(BookError):
    """A chapter raised while executing; the message names the chapter, the cell and the error."""


@contextlib.contextmanager
def kernel_environment(package_root: Path) -> Iterator[None]:
    """Make the kernel this interpreter, importing this checkout's erav1 first, with notebook-native figures.

    * A ``python3`` kernelspec in a temporary ``JUPYTER_PATH`` entry (searched before any user or system
      kernelspec) runs ``sys.executable``, so the chapters see the same packages as the runner.
    * ``PYTHONPATH`` starts with ``package_root``, so ``import erav1`` finds the checkout being built.
    * ``MPLBACKEND`` (test harnesses set it to Agg) is not inherited: figures must be embedded as images.
    """
    names = ("PYTHONPATH", "MPLBACKEND", "JUPYTER_PATH")
    saved = {name: os.environ.get(name) for name in names}
    with tempfile.TemporaryDirectory(prefix="erav1-kernel-") as jupyter_dir:
        spec = Path(jupyter_dir) / "kernels" / KERNEL / "kernel.json"
        spec.parent.mkdir(parents=True)
        spec.write_text(
            json.dumps(
                {
                    "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                    "display_name": f"Python 3 ({sys.executable})",
                    "language": "python",
                }
            ),
            encoding="utf-8",
        )
        os.environ["PYTHONPATH"] = os.pathsep.join([str(package_root)] + [saved["PYTHONPATH"] or ""]).rstrip(os.pathsep)
        os.environ["JUPYTER_PATH"] = os.pathsep.join([jupyter_dir] + [saved["JUPYTER_PATH"] or ""]).rstrip(os.pathsep)
        os.environ.pop("MPLBACKEND", None)
        try:
            yield
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value


def describe_cell(source_nb: Path, executed: nbformat.NotebookNode, failed_source: str) -> str:
    """'cell 8 (`from erav1.utils.plots import ...`)', counted from 1 as in the chapter the reader edits."""
    failed = next(
        (c for c in executed.cells if any(o.get("output_type") == "error" for o in c.get("outputs", []))), None
    )
    original = nbformat.read(source_nb, as_version=4)
    ids = [c.get("id") for c in original.cells]
    sources = [c.source for c in original.cells]
    if failed is not None and failed.get("id") in ids:
        position = ids.index(failed.get("id")) + 1
    elif failed_source in sources:
        position = sources.index(failed_source) + 1
    else:
        position = None  # the injected-parameters cell, which the chapter does not have
    first_line = next((line.strip() for line in failed_source.splitlines() if line.strip()), "")
    where = f"cell {position}" if position else "the injected-parameters cell"
    return f"{where} (`{first_line}`)"


def drop_injected_cells(nb: nbformat.NotebookNode) -> None:
    """Remove the injected-parameters cells an earlier execution left in ``nb``.

    Papermill replaces such a cell only when it is given parameters. Given none (the full profile),
    it would run the stale cell, and the previous execution's values would override the chapter's.
    """
    nb.cells = [c for c in nb.cells if INJECTED_TAG not in c.metadata.get("tags", [])]


def execute_chapter(
    source: Path, output: Path, parameters: dict[str, Any], cwd: Path, package_root: Path, log_output: bool = False
) -> None:
    """Run ``source`` with ``parameters`` into ``output``; raise :class:`ChapterFailed` on the first error."""
    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="erav1-chapter-") as clean_dir:
        clean = Path(clean_dir) / source.name
        nb = nbformat.read(source, as_version=4)
        drop_injected_cells(nb)
        nbformat.write(nb, clean)
        _execute(clean, output, parameters, cwd, package_root, log_output)


def _execute(
    source: Path, output: Path, parameters: dict[str, Any], cwd: Path, package_root: Path, log_output: bool
) -> None:
    import papermill
    from papermill.exceptions import PapermillExecutionError

    name = source.name
    try:
        with kernel_environment(package_root):
            papermill.execute_notebook(
                str(source),
                str(output),
                parameters=parameters,
                kernel_name=KERNEL,
                cwd=str(cwd),
                progress_bar=False,
                log_output=log_output,
            )
    except PapermillExecutionError as exc:
        executed = nbformat.read(output, as_version=4)
        where = describe_cell(source, executed, exc.source)
        raise ChapterFailed(
            f"chapter {name} failed in {where}: {exc.ename}: {exc.evalue}. "
            f"The executed notebook, with the traceback, is {output}"
        ) from None
    except Exception as exc:  # a dead kernel, a timeout, an unreadable notebook
        raise ChapterFailed(f"chapter {name} could not be executed: {type(exc).__name__}: {exc}") from None
