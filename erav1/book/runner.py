"""``erav1 book``: execute every chapter with a profile, then build the HTML book.

Chapters always execute into a staging folder first. Only when every chapter
succeeded does the ``full`` profile copy them back into ``book/`` (the
committed chapters that Colab badges open) and build from the repository root;
any other profile builds from the staging folder, so smoke outputs can never
reach a committed chapter. A failing chapter stops the run, names the chapter
and the cell, and nothing is built or copied.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from erav1.book.layout import Book, BookError
from erav1.published import RESULTS_DIR
from erav1.utils.checkpoint import atomic_write_text

PUBLISHING_PROFILE = "full"
STAGE_MARKER = ".erav1-stage"
STAGED_FILES = ("_config.yml", "_toc.yml", "_static", "book")
NOT_STAGED = ("*.ipynb", "*.pt", "profiles", "_build", ".ipynb_checkpoints", "__pycache__")
INTRO = "book/intro.md"


@dataclass
class BookRun:
    """What a run produced: the folder holding the executed chapters, and the built site."""

    executed: Path
    html: Path | None


def default_stage(book: Book, profile: str) -> Path:
    return book.root / "build" / f"book-{Path(profile).stem}"


def prepare_stage(book: Book, stage: Path) -> Book:
    """An empty staging folder holding a copy of the book without its chapters."""
    stage = stage.resolve()
    if stage == book.root or book.root.is_relative_to(stage):
        raise BookError(f"the staging folder {stage} must not contain the book itself")
    if stage.exists() and any(stage.iterdir()) and not (stage / STAGE_MARKER).exists():
        raise BookError(f"{stage} is not empty and is not a staging folder; choose another --stage")
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir(parents=True)
    (stage / STAGE_MARKER).write_text("written by 'erav1 book'; deleted and rewritten by every run\n", encoding="utf-8")
    for name in STAGED_FILES:
        source = book.root / name
        if source.is_dir():
            shutil.copytree(source, stage / name, ignore=shutil.ignore_patterns(*NOT_STAGED))
        elif source.exists():
            shutil.copy2(source, stage / name)
    return Book(stage)


def resolve_parameters(book: Book, profile: str, overrides: list[str]) -> tuple[dict[str, dict[str, Any]], dict]:
    """Per-chapter declarations and the merged profile + overrides, every name checked."""
    from erav1.book.parameters import check_known, declared_parameters, load_profile, parse_override

    declared = {chapter.name: declared_parameters(chapter) for chapter in book.chapters()}
    profile_path = book.profile_path(profile)
    values = load_profile(profile_path)
    check_known(values, declared, f"profile {profile_path}")
    overridden = dict(parse_override(text) for text in overrides)
    check_known(overridden, declared, "the -p overrides")
    return declared, {**values, **overridden}


def trained_run_dir(declared: dict[str, dict[str, Any]]) -> str | None:
    """The run directory that the training chapter (the one declaring ``epochs``) writes by default."""
    return next((d["run_dir"] for d in declared.values() if "epochs" in d and "run_dir" in d), None)


def run_book(
    book: Book,
    profile: str,
    overrides: list[str] | None = None,
    stage: Path | None = None,
    build: bool = True,
    log_output: bool = False,
    echo: Callable[[str], None] = print,
) -> BookRun:
    """Execute every chapter with ``profile`` (plus ``overrides``), then build; see the module docstring."""
    import nbformat

    from erav1.book.build import build_html
    from erav1.book.execute import execute_chapter
    from erav1.book.parameters import for_chapter, load_profile
    from erav1.book.results import SUMMARY_FILE, refresh_results
    from erav1.book.tidy import tidy_notebook
    from erav1.publish import publish_run

    overrides = list(overrides or [])
    declared, values = resolve_parameters(book, profile, overrides)
    name = Path(profile).stem
    publishes = name == PUBLISHING_PROFILE and stage is None
    if publishes:
        changed = sorted(
            {o.partition("=")[0].strip() for o in overrides}
            | {
                k
                for k, v in load_profile(book.profile_path(profile)).items()
                if any(k in d and d[k] != v for d in declared.values())
            }
        )
        if changed:
            raise BookError(
                f"the {name} profile publishes into book/ the chapters exactly as a reader runs them, with their own "
                f"defaults, so it cannot set {', '.join(changed)}; pass --stage DIR to run a variant elsewhere"
            )
    staged = prepare_stage(book, stage or default_stage(book, profile))
    chapters = book.chapters()
    for number, chapter in enumerate(chapters, start=1):
        relative = chapter.relative_to(book.root)
        output = staged.root / relative
        started = time.perf_counter()
        echo(f"[{number}/{len(chapters)}] executing {relative} ({name} profile)")
        chapter_values = for_chapter(values, declared[chapter.name])
        execute_chapter(chapter, output, chapter_values, cwd=book.root, package_root=book.root, log_output=log_output)
        executed = tidy_notebook(nbformat.read(output, as_version=4), name, values, relative.as_posix())
        nbformat.write(executed, output)
        echo(f"      done in {time.perf_counter() - started:.0f} s")

    target = staged
    if publishes:
        for chapter in chapters:
            atomic_write_text((staged.root / chapter.relative_to(book.root)).read_text(encoding="utf-8"), chapter)
        target = book
        echo(f"wrote the executed chapters into {book.root / 'book'}")
        run_dir = trained_run_dir(declared)
        if run_dir is not None:  # the run the chapters trained: publish its results
            summary = publish_run(book.root / run_dir, book.root / RESULTS_DIR, values.get("device", "auto"))
            echo(
                f"published the run: final test accuracy {100 * summary['test_accuracy']:.2f}% "
                f"-> {RESULTS_DIR}/{SUMMARY_FILE}"
            )
            refresh_results(book.root / "README.md", book.root / RESULTS_DIR / SUMMARY_FILE)
    refresh_results(target.root / INTRO, book.root / RESULTS_DIR / SUMMARY_FILE)
    if not build:
        return BookRun(target.root, None)
    echo(f"building the book from {target.root}")
    html = build_html(target.root)
    echo(f"the book is in {html}/index.html")
    return BookRun(target.root, html)


def build_committed(book: Book, echo: Callable[[str], None] = print) -> Path:
    """Build the book from the committed chapters as they are, executing nothing."""
    from erav1.book.build import build_html
    from erav1.book.results import SUMMARY_FILE, refresh_results

    refresh_results(book.root / INTRO, book.root / RESULTS_DIR / SUMMARY_FILE)
    html = build_html(book.root)
    echo(f"the book is in {html}/index.html")
    return html


def run_book_command(args: argparse.Namespace) -> int:
    book = Book.at(args.root)
    if args.build_only or args.results_only:
        flag = "--build-only" if args.build_only else "--results-only"
        if args.build_only and args.results_only:
            raise BookError("--build-only executes nothing and --results-only re-executes some cells: give one")
        if args.params or args.stage:
            raise BookError(
                f"{flag} works on the committed chapters, executed as they are, so it takes no -p or --stage"
            )
        if args.results_only:
            from erav1.book.refresh import refresh_published

            refresh_published(book.root)
        if not args.no_build:
            build_committed(book)
        return 0
    if args.verbose:
        logging.basicConfig(level=logging.INFO, format="%(message)s")  # papermill logs cell outputs at INFO
    run_book(
        book,
        args.profile,
        args.params,
        Path(args.stage) if args.stage else None,
        build=not args.no_build,
        log_output=args.verbose,
    )
    return 0


def add_book_parser(commands: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``erav1 book`` (also ``scripts/run_book.py``)."""
    parser = commands.add_parser(
        "book",
        help="execute the chapters with papermill and build the Jupyter Book",
        description="Execute every chapter with a profile (book/profiles/NAME.yml), then build the book with "
        "jupyter-book. The full profile writes the executed chapters into book/; any other profile "
        "writes them into a staging folder and builds the book there.",
    )
    parser.add_argument(
        "--profile",
        default=PUBLISHING_PROFILE,
        help="profile name in book/profiles/ or a .yml path (default: %(default)s)",
    )
    parser.add_argument(
        "-p",
        dest="params",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="override one chapter parameter (repeatable); the value is read as YAML",
    )
    parser.add_argument(
        "--stage",
        metavar="DIR",
        help="execute and build into DIR (default: build/book-PROFILE; the full profile publishes "
        "into book/ unless --stage is given)",
    )
    parser.add_argument("--no-build", action="store_true", help="execute the chapters, do not build the book")
    parser.add_argument("--build-only", action="store_true", help="build the committed chapters, execute nothing")
    parser.add_argument(
        "--results-only",
        action="store_true",
        help="re-execute only the committed chapters' cells tagged published-results (they read book/results), "
        "refresh the README and landing-page tables, then build",
    )
    parser.add_argument("--root", default=".", help="the repository root holding _config.yml (default: .)")
    parser.add_argument("--verbose", action="store_true", help="stream every cell's output while executing")
    parser.set_defaults(handler=run_book_command)
    return parser
