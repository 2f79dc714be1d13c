"""erav1 book on a tiny two-chapter book: profiles, overrides, failures, and where the chapters are written."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from book_checks import ROOT
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from erav1.book.layout import Book, BookError
from erav1.book.parameters import parse_override
from erav1.book.refresh import RESULTS_TAG, refresh_if_published, refresh_result_cells
from erav1.book.results import NOT_PUBLISHED, refresh_results, results_markdown
from erav1.book.runner import run_book
from erav1.book.tidy import collapse_carriage_returns, tidy_notebook

CONFIG = """title: tiny
execute:
  execute_notebooks: "off"
only_build_toc_files: true
repository:
  url: https://github.com/someone/tiny
  branch: main
launch_buttons:
  colab_url: "https://colab.research.google.com"
"""
TOC = "format: jb-book\nroot: book/intro\nchapters:\n  - file: book/01_first\n  - file: book/02_second\n"
INTRO = "# Tiny\n\n<!-- results:start -->\n<!-- results:end -->\n"


def chapter(title: str, parameters: str, body: str) -> nbformat.NotebookNode:
    params = new_code_cell(parameters)
    params.metadata["tags"] = ["parameters"]
    nb = new_notebook(cells=[new_markdown_cell(f"# {title}"), params, new_code_cell(body)])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return nb


def make_book(root: Path, second_body: str = "print(epochs * 2)") -> Book:
    (root / "book" / "profiles").mkdir(parents=True)
    (root / "_config.yml").write_text(CONFIG)
    (root / "_toc.yml").write_text(TOC)
    (root / "book" / "intro.md").write_text(INTRO)
    (root / "book" / "profiles" / "full.yml").write_text("{}\n")
    (root / "book" / "profiles" / "smoke.yml").write_text("epochs: 1\nlabel: smoke\n")
    first = chapter("First", 'label = "default"', "print(label)")
    first.cells.append(new_code_cell("import sys\nimport erav1\nprint(sys.executable)\nprint(erav1.__file__)"))
    nbformat.write(first, root / "book" / "01_first.ipynb")
    nbformat.write(chapter("Second", "epochs = 20", second_body), root / "book" / "02_second.ipynb")
    return Book.at(root)


def digests(book: Book) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in (book.root / "book").glob("*.ipynb")}


def run_cli(root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "erav1", "book", "--root", str(root), *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )


def test_a_failing_chapter_stops_the_run_names_chapter_and_cell_and_builds_nothing(tmp_path):
    book = make_book(tmp_path / "repo", second_body='raise ValueError("boom in chapter two")')
    before = digests(book)
    done = run_cli(book.root, "--profile", "full")
    assert done.returncode != 0
    assert "02_second.ipynb" in done.stderr and "cell 3" in done.stderr
    assert "ValueError: boom in chapter two" in done.stderr
    assert digests(book) == before, "the committed chapters must stay untouched, chapter 1 included"
    assert not (book.root / "_build").exists()
    assert not list(book.root.glob("build/*/_build"))


def test_unknown_parameter_names_are_errors(tmp_path):
    book = make_book(tmp_path / "repo")
    with pytest.raises(BookError, match="unknown parameter.*epoch\\b.*-p"):
        run_book(book, "smoke", ["epoch=3"], build=False)
    (book.root / "book" / "profiles" / "typo.yml").write_text("epochs: 1\nbatchsize: 8\n")
    done = run_cli(book.root, "--profile", "typo")
    assert done.returncode == 2
    assert "unknown parameter(s) batchsize in profile" in done.stderr
    assert not (book.root / "build").exists(), "nothing is executed before the names are checked"


def test_the_full_profile_runs_the_chapters_as_stored_and_takes_no_changes(tmp_path):
    book = make_book(tmp_path / "repo")
    with pytest.raises(BookError, match="as a reader runs them.*cannot set epochs"):
        run_book(book, "full", ["epochs=2"], build=False)
    (book.root / "book" / "profiles" / "full.yml").write_text("epochs: 3\n")
    with pytest.raises(BookError, match="cannot set epochs"):
        run_book(book, "full", build=False)
    (book.root / "book" / "profiles" / "full.yml").write_text("epochs: 20\n")  # the chapter's own default
    run_book(book, "full", build=False, echo=lambda _: None)
    for path in (book.root / "book").glob("*.ipynb"):
        nb = nbformat.read(path, as_version=4)
        assert not [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])], path.name
        assert nb.metadata["papermill"]["parameters"] == {}
        assert nb.metadata["papermill"]["input_path"] == nb.metadata["papermill"]["output_path"] == f"book/{path.name}"


def test_a_stale_injected_cell_from_an_earlier_execution_is_not_run(tmp_path):
    """Papermill keeps an old injected-parameters cell when given no parameters; the runner drops it."""
    book = make_book(tmp_path / "repo")
    path = book.root / "book" / "02_second.ipynb"
    nb = nbformat.read(path, as_version=4)
    stale = new_code_cell("epochs = 1")
    stale.metadata["tags"] = ["injected-parameters", "remove-cell"]
    nb.cells.insert(2, stale)
    nbformat.write(nb, path)
    run_book(book, "full", build=False, echo=lambda _: None)
    executed = nbformat.read(path, as_version=4)
    assert executed.cells[-1].outputs[0].text == "40\n", "the chapter's own epochs = 20, not the stale 1"
    assert not [c for c in executed.cells if "injected-parameters" in c.metadata.get("tags", [])]


def test_smoke_profile_stages_and_full_profile_publishes(tmp_path):
    book = make_book(tmp_path / "repo")
    before = digests(book)
    staged = run_book(book, "smoke", ["label=hello"], stage=tmp_path / "stage", build=False, echo=lambda _: None)
    assert staged.executed == (tmp_path / "stage").resolve()
    assert digests(book) == before
    first = nbformat.read(staged.executed / "book" / "01_first.ipynb", as_version=4)
    assert first.cells[-2].outputs[0].text == "hello\n"
    executable, package = first.cells[-1].outputs[0].text.splitlines()
    assert executable == sys.executable, "the kernel runs the runner's interpreter"
    assert Path(package) == Path(__file__).resolve().parents[1] / "erav1" / "__init__.py", "and this checkout's erav1"
    assert first.metadata["erav1"] == {"profile": "smoke", "parameters": {"epochs": 1, "label": "hello"}}
    injected = [c for c in first.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert "remove-cell" in injected[0].metadata["tags"]
    assert "epochs" not in injected[0].source, "a chapter only receives the parameters it declares"

    published = run_book(book, "full", build=False, echo=lambda _: None)
    assert published.executed == book.root
    second = nbformat.read(book.root / "book" / "02_second.ipynb", as_version=4)
    assert second.cells[-1].outputs[0].text == "40\n"
    assert second.metadata["erav1"]["profile"] == "full"


def test_a_staging_folder_that_holds_other_files_is_refused(tmp_path):
    book = make_book(tmp_path / "repo")
    (tmp_path / "precious").mkdir()
    (tmp_path / "precious" / "notes.txt").write_text("keep me")
    with pytest.raises(BookError, match="not a staging folder"):
        run_book(book, "smoke", stage=tmp_path / "precious", build=False)
    assert (tmp_path / "precious" / "notes.txt").read_text() == "keep me"


def test_overrides_are_read_as_yaml():
    assert parse_override("epochs=3") == ("epochs", 3)
    assert parse_override("weights=null") == ("weights", None)
    assert parse_override("data=../shared/data/cifar10-jpeg.zip") == ("data", "../shared/data/cifar10-jpeg.zip")
    with pytest.raises(BookError):
        parse_override("epochs")


def test_progress_bars_collapse_to_what_a_terminal_shows():
    text = (
        "training on 500 images\n"
        "epoch 1:  10%|#         | 50/500\repoch 1:  90%|######### | 450/500\r                          \r"
        "epoch   1/1  train loss 2.3\n"
    )
    assert collapse_carriage_returns(text) == "training on 500 images\nepoch   1/1  train loss 2.3\n"


def test_tidy_merges_split_stream_writes_and_hides_the_injected_cell():
    cell = new_code_cell("fit()")
    cell.outputs = [
        nbformat.v4.new_output("stream", name="stdout", text="a 10%\r"),
        nbformat.v4.new_output("stream", name="stdout", text="a 100%\r   \rdone\n"),
    ]
    injected = new_code_cell("epochs = 1")
    injected.metadata["tags"] = ["injected-parameters"]
    nb = new_notebook(
        cells=[injected, cell],
        metadata={"papermill": {"input_path": "/home/me/repo/book/x.ipynb", "output_path": "/tmp/stage/book/x.ipynb"}},
    )
    nb = tidy_notebook(nb, "smoke", {"epochs": 1}, "book/x.ipynb")
    assert nb.metadata["papermill"] == {"input_path": "book/x.ipynb", "output_path": "book/x.ipynb"}
    assert [o.text for o in nb.cells[1].outputs] == ["done\n"]
    assert nb.cells[0].metadata["tags"] == ["injected-parameters", "remove-cell"]


def test_results_table_is_generated_or_says_nothing_is_published(tmp_path):
    intro = tmp_path / "intro.md"
    intro.write_text(INTRO)
    assert refresh_results(intro, tmp_path / "missing.json")
    assert NOT_PUBLISHED in intro.read_text()
    assert not refresh_results(intro, tmp_path / "missing.json"), "refreshing twice changes nothing"
    summary = tmp_path / "summary.json"
    summary.write_text('{"test_accuracy": 0.9234, "epochs": 20, "wall_time_s": 5250, "hardware": "one GPU"}')
    refresh_results(intro, summary)
    assert "| 92.34% | - | 20 | 1 h 28 min | one GPU |" in intro.read_text()  # no flip-TTA number: a dash
    summary.write_text(
        '{"test_accuracy": 0.9234, "test_accuracy_flip_tta": 0.9301, "epochs": 20, '
        '"wall_time_s": 5250, "hardware": "one GPU"}'
    )
    refresh_results(intro, summary)
    assert "| 92.34% | 93.01% | 20 | 1 h 28 min | one GPU |" in intro.read_text()
    assert results_markdown(None) == NOT_PUBLISHED


@pytest.mark.parametrize("page", ["book/intro.md", "README.md"])
def test_the_committed_results_blocks_are_up_to_date(page, tmp_path):
    copy = tmp_path / Path(page).name
    copy.write_text((ROOT / page).read_text())
    assert not refresh_results(copy, ROOT / "book" / "results" / "summary.json"), f"{page} is stale"


def test_the_committed_chapters_show_the_committed_results():
    """Every published-results cell, executed now, shows what its chapter holds: none is stale."""
    stale = refresh_result_cells(Book.at(ROOT), "full", check=True, echo=lambda _: None)
    assert not stale, f"run 'erav1 book --results-only' to refresh {[path.name for path in stale]}"


def test_build_only_builds_the_committed_chapters_as_they_are(tmp_path):
    book = make_book(tmp_path / "repo")
    before = digests(book)
    done = run_cli(book.root, "--build-only")
    assert done.returncode == 0, done.stderr
    html = (book.root / "_build" / "html" / "book" / "01_first.html").read_text()
    assert "https://colab.research.google.com/github/someone/tiny/blob/main/book/01_first.ipynb" in html
    assert digests(book) == before
    assert NOT_PUBLISHED in (book.root / "book" / "intro.md").read_text()


def test_the_full_profile_publishes_the_run_its_chapters_trained(tiny_run, tmp_path):
    import shutil

    book = make_book(tmp_path / "repo")
    shutil.copytree(tiny_run.run_dir, tmp_path / "repo" / "runs" / "book")
    nbformat.write(
        chapter("Third", 'run_dir = "runs/book"\nepochs = 20', "print(run_dir)"), book.root / "book" / "03_third.ipynb"
    )  # the training chapter names its run directory
    (book.root / "_toc.yml").write_text(TOC + "  - file: book/03_third\n")
    (book.root / "README.md").write_text("# tiny\n\n<!-- results:start -->\n<!-- results:end -->\n")

    run_book(Book.at(book.root), "full", build=False, echo=lambda _: None)
    summary = book.root / "book" / "results" / "summary.json"
    assert summary.is_file() and (book.root / "book" / "results" / "resnet18_cifar10.pt").is_file()
    accuracy = f"{100 * tiny_run.final['test_acc']:.2f}%"
    for page in (book.root / "README.md", book.root / "book" / "intro.md"):
        assert accuracy in page.read_text(), page


def results_chapter(book: Book) -> Path:
    """A third chapter: one cell shows a committed result (tagged), one uses it in the chapter's own work."""
    results = book.root / "book" / "results"
    results.mkdir(parents=True, exist_ok=True)
    (results / "seeds.txt").write_text("seed 0\n")
    nb = chapter("Third", 'label = "default"', 'print("the chapter starts")')
    shown = new_code_cell('open("book/results/seeds.txt").read().strip() + " " + label')
    shown.metadata["tags"] = [RESULTS_TAG]
    nb.cells += [shown, new_code_cell('print("trained with", open("book/results/seeds.txt").read().strip())')]
    path = book.root / "book" / "03_third.ipynb"
    nbformat.write(nb, path)
    (book.root / "_toc.yml").write_text(TOC + "  - file: book/03_third\n")
    return path


def test_results_only_re_executes_the_tagged_cells_and_keeps_every_other_output(tmp_path):
    book = make_book(tmp_path / "repo")
    path = results_chapter(book)
    book = Book.at(book.root)
    run_book(book, "full", build=False, echo=lambda _: None)
    executed = nbformat.read(path, as_version=4)
    shown, trained = executed.cells[-2], executed.cells[-1]
    assert shown.outputs[0].data["text/plain"] == "'seed 0 default'"
    assert trained.outputs[0].text == "trained with seed 0\n"
    before = digests(book)
    assert refresh_result_cells(book, "full", echo=lambda _: None) == []
    assert digests(book) == before, "nothing changed, so no chapter is rewritten"

    (book.root / "book" / "results" / "seeds.txt").write_text("seed 0, seed 1\n")
    done = run_cli(book.root, "--results-only", "--no-build")
    assert done.returncode == 0, done.stderr
    assert "re-executed 1 published-results cell(s) of book/03_third.ipynb" in done.stdout
    refreshed = nbformat.read(path, as_version=4)
    result = refreshed.cells[-2].outputs[0]
    assert result.data["text/plain"] == "'seed 0, seed 1 default'", "with the chapter's parameters"
    assert result.execution_count == refreshed.cells[-2].execution_count == 3, "numbered as in the full execution"
    assert refreshed.cells[-1].outputs == trained.outputs, "an untagged cell keeps the output of the full execution"
    assert refreshed.metadata["erav1"]["refreshed_cells"] == [shown.id]
    others = {name: digest for name, digest in digests(book).items() if name != path.name}
    assert others == {name: digest for name, digest in before.items() if name != path.name}


def test_results_only_leaves_a_chapter_that_the_full_profile_never_executed(tmp_path):
    book = make_book(tmp_path / "repo")
    path = results_chapter(book)
    book = Book.at(book.root)
    run_book(book, "smoke", stage=tmp_path / "stage", build=False, echo=lambda _: None)
    before = digests(book)
    assert refresh_result_cells(book, "full", echo=lambda _: None) == []
    assert digests(book) == before, "half of a chapter would be executed"
    for flags in (["--results-only", "--build-only"], ["--results-only", "-p", "label=x"]):
        done = run_cli(book.root, *flags)
        assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert not nbformat.read(path, as_version=4).cells[-2].outputs


def test_refresh_if_published_touches_only_the_results_of_the_clone_it_runs_in(tmp_path, monkeypatch):
    book = make_book(tmp_path / "repo")
    monkeypatch.chdir(book.root)
    (book.root / "book" / "results").mkdir()
    assert refresh_if_published(tmp_path / "elsewhere") == []
    summary = '{"test_accuracy": 0.9234, "epochs": 20, "wall_time_s": 5250, "hardware": "one GPU"}'
    (book.root / "book" / "results" / "summary.json").write_text(summary)
    assert refresh_if_published("book/results", echo=lambda _: None) == [book.root / "book" / "intro.md"]
    assert "| 92.34% |" in (book.root / "book" / "intro.md").read_text()
    monkeypatch.chdir(tmp_path)
    assert refresh_if_published(book.root / "book" / "results") == [], "not in a clone: no page of its own"
