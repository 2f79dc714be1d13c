"""The committed chapters, run as a reader runs them; and no committed chapter names a path of our machines.

A Colab runtime is fresh for every notebook: an empty working folder, erav1 installed by the install cell (no
clone, so no ``book/results`` beside it), and whatever the chapter downloads. Here each committed chapter is
copied into an empty folder and executed exactly as stored: no parameter injected (chapter 3 only gets a
smaller ``epochs`` and ``subset``), erav1 pip-installed from a copy of the sources, ``cifar10`` resolved to a
stratified subset of the official pixels, the published run served over 127.0.0.1, and a fresh ``$HOME``.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from book_checks import CHAPTERS, ROOT
from loopback import Server

from erav1 import published
from erav1.book.parameters import declared_parameters
from erav1.utils import cifar10

# Only chapter 3 trains; a reader's "Run all" would take hours on this CPU, so its size alone is overridden
# (with its LR range test's); chapter 7's Score-CAM and ROAD sample is sized down for the same reason.
SIZE_ONLY = {"03_training": {"epochs": 1, "subset": 200, "lr_finder_iterations": 12}, "07_trust": {"sample_size": 4}}
IMAGE_MIME = re.compile(r"^image/")
# An absolute path (/work/..., /home/..., C:\...) or one that leaves the repository (../).
MACHINE_PATH = re.compile(r"(?<![\w.:/~-])/(?:[\w.+-]+/)+[\w.+-]*|\b[A-Za-z]:\\|\.\./")


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """erav1 pip-installed (not editable) from a copy of its sources, as Colab's install cell installs it."""
    sources = tmp_path_factory.mktemp("sources")
    shutil.copytree(ROOT / "erav1", sources / "erav1", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, sources / name)
    site = tmp_path_factory.mktemp("site-packages")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(site),
            str(sources),
        ],
        check=True,
        capture_output=True,
    )
    assert (site / "erav1" / "utils" / "cifar10_digests.npz").is_file(), "the package data travels with it"
    return site


@pytest.fixture(scope="module")
def results_server() -> Server:
    """The repository's published files over HTTP on 127.0.0.1, standing in for the raw files on GitHub."""
    server = Server(ROOT / published.RESULTS_DIR)
    yield server
    server.close()


@pytest.mark.parametrize("chapter", CHAPTERS, ids=[p.stem for p in CHAPTERS])
def test_a_committed_chapter_runs_as_stored_in_an_empty_folder(
    chapter, installed, results_server, official_subset_zip, tmp_path, monkeypatch
):
    import papermill

    from erav1.book.execute import KERNEL, kernel_environment

    runtime = tmp_path / "colab"
    runtime.mkdir()
    notebook = shutil.copy2(chapter, runtime / chapter.name)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # a fresh runtime: no cache, no earlier download
    monkeypatch.setenv(cifar10.ENV_VAR, str(official_subset_zip))
    monkeypatch.setenv(published.URL_VARIABLE, results_server.url)
    with kernel_environment(installed):
        executed = papermill.execute_notebook(
            str(notebook),
            str(runtime / "executed.ipynb"),
            parameters=SIZE_ONLY.get(chapter.stem, {}),
            kernel_name=KERNEL,
            cwd=str(runtime),
            progress_bar=False,
        )
    assert not [o for c in executed.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    text = json.dumps([c.get("outputs", []) for c in executed.cells])
    assert str(ROOT) not in text, "the kernel imported the clone's erav1, not the installed one"
    declared = declared_parameters(chapter)
    if "weights" in declared:  # a chapter that shows a trained model, without chapter 3's run: the published one
        assert "the published run" in text
        assert (tmp_path / "home" / ".cache" / "erav1" / published.CACHE_FOLDER).is_dir(), "downloaded, not a clone's"


def _strings(node, path=()):
    """Every string in a notebook, with where it sits, except the base64 data of images."""
    if isinstance(node, dict):
        for key, value in node.items():
            if not IMAGE_MIME.match(str(key)):
                yield from _strings(value, (*path, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _strings(value, (*path, i))
    elif isinstance(node, str):
        yield "/".join(map(str, path)), node


@pytest.mark.parametrize("chapter", CHAPTERS, ids=[p.stem for p in CHAPTERS])
def test_no_committed_chapter_holds_a_path_of_a_machine(chapter):
    """Cells, outputs and metadata alike: a reader's machine has none of our folders."""
    found = [
        (where, match.group())
        for where, text in _strings(json.loads(chapter.read_text()))
        for match in MACHINE_PATH.finditer(text)
    ]
    assert found == [], f"{chapter.name}: paths of a machine: {found[:5]}"


def test_the_path_check_finds_what_it_must():
    nb = nbformat.v4.new_notebook(metadata={"papermill": {"input_path": "/work/main/book/01_data.ipynb"}})
    nb.cells = [nbformat.v4.new_code_cell('data = "../shared/data/cifar10-jpeg.zip"')]
    found = [m.group() for _, text in _strings(nb) for m in MACHINE_PATH.finditer(text)]
    assert found == ["/work/main/book/01_data.ipynb", "../"]
    clean = [
        "https://github.com/erav1-book/erav1",
        "train/<class>/<image>",
        "epoch 3/20",
        "runs/book",
        "~/.cache/erav1",
        "1/2 of the batch",
    ]
    assert [m.group() for text in clean for m in MACHINE_PATH.finditer(text)] == []
