"""Chapter parameters: the ``parameters`` cells, the profiles and ``-p name=value`` overrides.

A profile (``book/profiles/NAME.yml``) maps parameter names to values. Every
name must be declared by at least one chapter's ``parameters`` cell: a typo
such as ``epoch: 1`` is an error, never a silently ignored setting. Each
chapter then receives only the parameters it declares.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import nbformat
import yaml

from erav1.book.layout import BookError

PARAMETERS_TAG = "parameters"


def parameters_cell(nb: nbformat.NotebookNode, name: str) -> nbformat.NotebookNode:
    """The one code cell tagged ``parameters``."""
    cells = [c for c in nb.cells if c.cell_type == "code" and PARAMETERS_TAG in c.metadata.get("tags", [])]
    if len(cells) != 1:
        raise BookError(f"{name} has {len(cells)} cells tagged {PARAMETERS_TAG!r}; it needs exactly one")
    return cells[0]


def declared_parameters(path: Path) -> dict[str, Any]:
    """``{name: default}`` from a chapter's parameters cell (plain ``name = literal`` lines)."""
    cell = parameters_cell(nbformat.read(path, as_version=4), path.name)
    declared: dict[str, Any] = {}
    for node in ast.parse(cell.source).body:
        if not (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)):
            raise BookError(f"{path.name}: the parameters cell may only hold 'name = value' lines")
        try:
            declared[node.targets[0].id] = ast.literal_eval(node.value)
        except ValueError:
            raise BookError(f"{path.name}: parameter {node.targets[0].id} must have a literal default") from None
    return declared


def load_profile(path: Path) -> dict[str, Any]:
    try:
        values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise BookError(f"cannot read profile {path}: {exc}") from None
    if not isinstance(values, dict) or not all(isinstance(k, str) for k in values):
        raise BookError(f"profile {path} must map parameter names to values")
    return values


def parse_override(text: str) -> tuple[str, Any]:
    """``name=value``; the value is read as YAML, so ``1`` is an int and ``null`` is None."""
    name, sep, value = text.partition("=")
    if not sep or not name.strip():
        raise BookError(f"-p expects name=value, got {text!r}")
    try:
        return name.strip(), yaml.safe_load(value) if value.strip() else ""
    except yaml.YAMLError:
        return name.strip(), value


def check_known(values: dict[str, Any], declared: dict[str, dict[str, Any]], origin: str) -> None:
    """Refuse any name that no chapter declares."""
    known = set().union(*declared.values()) if declared else set()
    unknown = sorted(set(values) - known)
    if unknown:
        raise BookError(
            f"unknown parameter(s) {', '.join(unknown)} in {origin}; the chapters declare: {', '.join(sorted(known))}"
        )


def for_chapter(values: dict[str, Any], declared: dict[str, Any]) -> dict[str, Any]:
    """What papermill injects into a chapter: the values it declares and that differ from its own defaults.

    A value equal to the default changes nothing when executed, but an injected cell would still override the
    chapter's parameters for anyone who opens the executed notebook; so none is injected.
    """
    return {name: values[name] for name in declared if name in values and values[name] != declared[name]}
