"""Build the HTML book with jupyter-book 1.

``--all`` matters: without it ``-W`` only re-checks changed pages. ``-n`` reports
broken references, and ``--keep-going`` lists every warning before failing.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from erav1.book.layout import BookError

BUILD_FLAGS = ("--all", "-W", "-n", "--keep-going")
HTML_DIR = Path("_build") / "html"


def jupyter_book_command() -> str:
    """The jupyter-book beside this interpreter (a venv's), else the one on PATH."""
    beside = Path(sys.executable).parent / "jupyter-book"
    found = str(beside) if beside.exists() else shutil.which("jupyter-book")
    if not found:
        raise BookError("jupyter-book is not installed; install the book extras: pip install -e '.[book]'")
    return found


def build_html(root: Path, quiet: bool = True) -> Path:
    """Build ``root`` into ``root/_build/html``; any warning fails the build."""
    command = [jupyter_book_command(), "build", str(root), *BUILD_FLAGS]
    done = subprocess.run(command, capture_output=quiet, text=True)
    if done.returncode != 0:
        detail = (done.stdout or "")[-4000:] + (done.stderr or "")[-4000:] if quiet else ""
        raise BookError(f"the book build failed ({' '.join(command)}):\n{detail}")
    return root / HTML_DIR
