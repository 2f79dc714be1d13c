"""The committed chapters: no logic, one parameters cell, badge and install cell from _config.yml, no smoke outputs."""

from __future__ import annotations

import ast
import shutil

import nbformat
import pytest
import yaml
from book_checks import CHAPTERS, COLAB_BADGE, ROOT, expected_colab_url, python_source, read, repository

from erav1.book.layout import Book, write_chapter
from erav1.book.parameters import declared_parameters
from erav1.book.stamp import INSTALL_TAG, stamp_chapters

LOGIC = (
    ast.FunctionDef,
    ast.AsyncFunctionDef,
    ast.ClassDef,
    ast.Lambda,
    ast.For,
    ast.AsyncFor,
    ast.While,
    ast.ListComp,
    ast.SetComp,
    ast.DictComp,
    ast.GeneratorExp,
)
IDS = [path.stem for path in CHAPTERS]


def test_the_toc_lists_the_seven_chapters_in_order():
    assert [p.name for p in Book.at(ROOT).chapters()] == [p.name for p in CHAPTERS]
    assert len(CHAPTERS) == 7


@pytest.mark.parametrize("path", CHAPTERS, ids=IDS)
def test_code_cells_only_import_erav1_and_call_it(path):
    for cell in read(path).cells:
        if cell.cell_type != "code" or INSTALL_TAG in cell.metadata.get("tags", []):
            continue
        for node in ast.walk(python_source(cell.source)):
            assert not isinstance(node, LOGIC), f"{path.name}: {type(node).__name__} in a code cell:\n{cell.source}"
            if isinstance(node, ast.Import):
                assert all(a.name.split(".")[0] == "erav1" for a in node.names), f"{path.name}: {cell.source}"
            if isinstance(node, ast.ImportFrom):
                assert (node.module or "").split(".")[0] == "erav1", f"{path.name} imports {node.module}"


@pytest.mark.parametrize("path", CHAPTERS, ids=IDS)
def test_one_parameters_cell_with_full_run_defaults(path):
    tagged = [c for c in read(path).cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1
    declared = declared_parameters(path)
    if "data" in declared:
        assert declared["data"] == "cifar10", "Colab readers get the official download"
        assert declared["subset"] is None
    if "epochs" in declared:
        assert declared["epochs"] == 20
    if path.stem >= "04":
        assert declared["weights"] is None
        assert declared["run_dir"] == declared_parameters(ROOT / "book" / "03_training.ipynb")["run_dir"]


@pytest.mark.parametrize("path", CHAPTERS, ids=IDS)
def test_header_has_the_title_and_the_colab_badge_from_config(path):
    header = read(path).cells[0]
    assert header.cell_type == "markdown" and header.source.startswith("# ")
    assert f"[![Open In Colab]({COLAB_BADGE})]({expected_colab_url(path.stem)})" in header.source


@pytest.mark.parametrize("path", CHAPTERS, ids=IDS)
def test_first_code_cell_installs_erav1_from_config_only_in_colab(path):
    cell = next(c for c in read(path).cells if c.cell_type == "code")
    owner, repo, branch = repository()
    assert INSTALL_TAG in cell.metadata["tags"]
    assert 'if "google.colab" in sys.modules:' in cell.source
    assert f'pip install -q "erav1 @ git+https://github.com/{owner}/{repo}@{branch}"' in cell.source
    python_source(cell.source)  # valid once the %pip magic is transformed


def test_committed_chapters_are_stamped():
    assert stamp_chapters(Book.at(ROOT), check=True) == []


def test_stamping_is_idempotent_and_follows_config(tmp_path):
    for name in ("_config.yml", "_toc.yml"):
        shutil.copy(ROOT / name, tmp_path / name)
    shutil.copytree(ROOT / "book", tmp_path / "book", ignore=shutil.ignore_patterns("_extra", "results"))
    config = yaml.safe_load((tmp_path / "_config.yml").read_text())
    config["repository"] = {"url": "https://github.com/someone/fork", "branch": "dev"}
    (tmp_path / "_config.yml").write_text(yaml.safe_dump(config))
    book = Book.at(tmp_path)

    assert len(stamp_chapters(book)) == len(CHAPTERS)
    snapshot = [p.read_text() for p in book.chapters()]
    assert stamp_chapters(book) == []
    assert [p.read_text() for p in book.chapters()] == snapshot
    nb = read(tmp_path / "book" / "04_evaluation.ipynb")
    url = "https://colab.research.google.com/github/someone/fork/blob/dev/book/04_evaluation.ipynb"
    assert f"]({url})" in nb.cells[0].source
    install = [c for c in nb.cells if INSTALL_TAG in c.metadata.get("tags", [])]
    assert len(install) == 1 and "git+https://github.com/someone/fork@dev" in install[0].source


def test_rewriting_a_chapter_is_byte_for_byte_nbformat_and_an_interrupted_rewrite_keeps_it_whole(tmp_path, monkeypatch):
    """Stamping and refreshing rewrite committed chapters; a crash mid-write must not leave half of one."""
    for path in CHAPTERS:
        copy = tmp_path / path.name
        write_chapter(read(path), copy)
        assert copy.read_bytes() == path.read_bytes(), f"{path.name} would change by being rewritten unchanged"

    chapter = tmp_path / CHAPTERS[0].name
    before = chapter.read_bytes()
    nb = read(chapter)
    nb.cells[0].source += "\nnew text"

    def crash(*_):
        raise KeyboardInterrupt  # the moment between writing the temp file and renaming it

    monkeypatch.setattr("os.replace", crash)
    with pytest.raises(KeyboardInterrupt):
        write_chapter(nb, chapter)
    assert chapter.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in CHAPTERS), "no temp file is left"


@pytest.mark.parametrize("path", CHAPTERS, ids=IDS)
def test_committed_chapters_hold_no_outputs_or_full_profile_outputs(path):
    """The full profile executes a chapter exactly as a reader runs it: nothing injected, nothing of our machine."""
    nb = read(path)
    code = [c for c in nb.cells if c.cell_type == "code"]
    if not any(c.outputs or c.execution_count for c in code):
        return
    run = nb.metadata.get("erav1", {})
    assert run.get("profile") == "full", f"{path.name} holds outputs of the {run.get('profile')!r} profile"
    assert run["parameters"] == {} and nb.metadata["papermill"]["parameters"] == {}
    assert not [c for c in code if "injected-parameters" in c.metadata.get("tags", [])], "no injected cell"
    assert nb.metadata["papermill"]["input_path"] == f"book/{path.name}"


@pytest.mark.parametrize("path", CHAPTERS, ids=IDS)
def test_chapters_are_valid_notebooks_with_the_python3_kernel(path):
    nb = read(path)
    nbformat.validate(nb)
    assert nb.metadata["kernelspec"]["name"] == "python3"
