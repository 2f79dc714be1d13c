"""What the book tests share: the chapters, their expected figures, and reading notebooks and built pages."""

from __future__ import annotations

import ast
from html.parser import HTMLParser
from pathlib import Path

import nbformat
import yaml

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = sorted((ROOT / "book").glob("[0-9][0-9]_*.ipynb"))
# Figures each chapter must show, in order of appearance.
EXPECTED_FIGURES = {
    "01_data": 3,  # samples per class, augmentations, the two Cutout fills
    "02_model": 1,  # feature-map sizes
    "03_training": 4,  # LR range test, loss, accuracy, learning rate; and study_figures()
    "04_evaluation": 2,  # class accuracy, confusion matrix
    "05_misclassified": 1,  # the gallery
    "06_gradcam": 1,  # the CAM grid
    "07_trust": 5,  # layers, methods, ROAD curves, rank correlations, randomised maps
}


def study_figures() -> int:
    """How many plots chapter 3 shows of the committed study: Optuna's, once it has a trial, and the lever bars."""
    import matplotlib.pyplot as plt

    from erav1.study_report import draw_lever_effects, draw_study

    drawn, _ = draw_study()
    plt.close("all")
    return len(drawn) + (draw_lever_effects() is not None)


COLAB_BADGE = "images/colab-badge.svg"  # vendored beside the chapters


def read(path: Path) -> nbformat.NotebookNode:
    return nbformat.read(path, as_version=4)


def repository() -> tuple[str, str, str]:
    """(owner, repo, branch) read straight from _config.yml, independently of erav1.book."""
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    url = config["repository"]["url"].rstrip("/").removesuffix(".git")
    owner, repo = url.split("/")[-2:]
    return owner, repo, config["repository"].get("branch", "main")


def expected_colab_url(chapter: str) -> str:
    owner, repo, branch = repository()
    return f"https://colab.research.google.com/github/{owner}/{repo}/blob/{branch}/book/{chapter}.ipynb"


def python_source(cell_source: str) -> ast.Module:
    """A code cell as Python: IPython magics become the calls IPython would make."""
    from IPython.core.inputtransformer2 import TransformerManager

    return ast.parse(TransformerManager().transform_cell(cell_source))


class PageParser(HTMLParser):
    """The <img> sources, the links and the class names of a built page."""

    def __init__(self) -> None:
        super().__init__()
        self.images: list[str] = []
        self.links: list[str] = []
        self.classes: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "img" and values.get("src"):
            self.images.append(values["src"])
        if tag == "a" and values.get("href"):
            self.links.append(values["href"])
        self.classes.update((values.get("class") or "").split())


def parse_page(path: Path) -> PageParser:
    parser = PageParser()
    parser.feed(path.read_text(encoding="utf-8"))
    return parser
