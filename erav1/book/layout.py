"""Where the book lives and what ``_config.yml`` says about it.

``_config.yml``'s ``repository: url/branch`` is the single source of truth for
every URL the book prints: the Colab badges, the launch buttons and the
``pip install git+...`` line of the install cells are all derived here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from erav1.errors import Erav1Error

CONFIG_FILE = "_config.yml"
TOC_FILE = "_toc.yml"
CHAPTER_DIR = "book"
PROFILE_DIR = "book/profiles"
DEFAULT_COLAB = "https://colab.research.google.com"
GITHUB = re.compile(r"^https://github\.com/(?P<owner>[\w.-]+)/(?P<repo>[\w.-]+?)(?:\.git)?/?$")


class BookError(Erav1Error):
    """The book cannot be run or built: a bad profile, parameter, chapter or layout."""


@dataclass(frozen=True)
class Repository:
    """A GitHub repository and the branch the book's links point at."""

    owner: str
    name: str
    branch: str

    @classmethod
    def from_url(cls, url: str, branch: str) -> Repository:
        match = GITHUB.match(url.strip())
        if not match:
            raise BookError(f"{CONFIG_FILE}: repository.url must look like https://github.com/OWNER/REPO, got {url!r}")
        return cls(match["owner"], match["repo"], branch)

    @property
    def url(self) -> str:
        return f"https://github.com/{self.owner}/{self.name}"

    @property
    def pip_spec(self) -> str:
        """What ``pip install`` takes to install erav1 from this branch."""
        return f"git+{self.url}@{self.branch}"


@dataclass(frozen=True)
class Book:
    """A book root: the folder holding ``_config.yml``, ``_toc.yml`` and ``book/``."""

    root: Path

    @classmethod
    def at(cls, root: str | Path) -> Book:
        root = Path(root).resolve()
        if not (root / CONFIG_FILE).is_file():
            raise BookError(f"{root} holds no {CONFIG_FILE}; run from the repository root or pass --root")
        return cls(root)

    def _yaml(self, name: str) -> dict:
        try:
            return yaml.safe_load((self.root / name).read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise BookError(f"cannot read {self.root / name}: {exc}") from None

    @property
    def config(self) -> dict:
        return self._yaml(CONFIG_FILE)

    @property
    def repository(self) -> Repository:
        repo = self.config.get("repository") or {}
        if "url" not in repo:
            raise BookError(f"{self.root / CONFIG_FILE} has no repository.url")
        return Repository.from_url(repo["url"], repo.get("branch", "main"))

    @property
    def colab_base(self) -> str:
        buttons = self.config.get("launch_buttons") or {}
        return str(buttons.get("colab_url", DEFAULT_COLAB)).rstrip("/")

    def colab_url(self, chapter: Path) -> str:
        """The link Colab opens for a chapter: the committed notebook on the configured branch."""
        repo = self.repository
        relative = Path(chapter).resolve().relative_to(self.root).as_posix()
        return f"{self.colab_base}/github/{repo.owner}/{repo.name}/blob/{repo.branch}/{relative}"

    def chapters(self) -> list[Path]:
        """The notebooks listed in ``_toc.yml``, in reading order."""
        toc = self._yaml(TOC_FILE)
        files = [toc.get("root", "")] + [
            entry["file"] for part in toc.get("parts", [toc]) for entry in part.get("chapters", []) if "file" in entry
        ]
        notebooks = [self.root / f"{name}.ipynb" for name in files if (self.root / f"{name}.ipynb").exists()]
        if not notebooks:
            raise BookError(f"{self.root / TOC_FILE} lists no notebooks")
        return notebooks

    def profile_path(self, profile: str) -> Path:
        """A profile by name (``book/profiles/NAME.yml``) or by path."""
        named = self.root / PROFILE_DIR / f"{profile}.yml"
        path = named if named.exists() else Path(profile)
        if not path.is_file():
            known = sorted(p.stem for p in (self.root / PROFILE_DIR).glob("*.yml"))
            raise BookError(f"no profile {profile!r}; known profiles: {', '.join(known)} (or give a .yml path)")
        return path


def write_chapter(nb: Any, path: Path) -> None:
    """``nbformat.write`` through a temp file: an interrupted rewrite leaves the committed chapter whole."""
    import nbformat

    from erav1.utils.checkpoint import atomic_write_text

    text = nbformat.writes(nb)
    atomic_write_text(text if text.endswith("\n") else text + "\n", path)
