"""Make executed outputs fit to publish.

* A progress bar redraws its line with ``\\r``. A terminal shows only the last
  state; a notebook stores every state. Collapse each line to what a terminal
  would show, and drop the lines a closed bar left blank.
* Papermill's injected-parameters cell is tagged ``remove-cell`` so the book
  hides it (the ``parameters`` cell above it stays visible); the values are
  recorded in the notebook's metadata instead, with the profile's name.
* Papermill records the absolute input and output paths of the machine that
  executed the chapter; they become the chapter's path in the repository.
"""

from __future__ import annotations

from typing import Any

import nbformat

INJECTED_TAG = "injected-parameters"
HIDDEN_TAG = "remove-cell"


def collapse_carriage_returns(text: str) -> str:
    """What a terminal shows: per line, the text after the last ``\\r``; lines a bar blanked are dropped."""
    lines = []
    for line in text.split("\n"):
        shown = line.rsplit("\r", 1)[-1]
        if "\r" in line and not shown.strip():
            continue
        lines.append(shown.rstrip() if "\r" in line else shown)
    return "\n".join(lines)


def merge_streams(outputs: list[nbformat.NotebookNode]) -> list[nbformat.NotebookNode]:
    """Join consecutive writes to the same stream: a redraw can span two messages."""
    merged: list[nbformat.NotebookNode] = []
    for out in outputs:
        if (
            merged
            and out.output_type == "stream"
            and merged[-1].output_type == "stream"
            and merged[-1].name == out.name
        ):
            merged[-1].text += out.text
        else:
            merged.append(out)
    return merged


def tidy_outputs(outputs: list[nbformat.NotebookNode]) -> list[nbformat.NotebookNode]:
    tidied = []
    for out in merge_streams(outputs):
        if out.output_type == "stream":
            out.text = collapse_carriage_returns(out.text)
            if not out.text.strip():
                continue
        tidied.append(out)
    return tidied


def tidy_notebook(
    nb: nbformat.NotebookNode, profile: str, parameters: dict[str, Any], chapter: str
) -> nbformat.NotebookNode:
    """Tidy an executed chapter in memory and record how it was executed; ``chapter`` is its path in the repo."""
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        cell.outputs = tidy_outputs(cell.outputs)
        tags = cell.metadata.setdefault("tags", [])
        if INJECTED_TAG in tags and HIDDEN_TAG not in tags:
            tags.append(HIDDEN_TAG)
    nb.metadata.pop("widgets", None)
    papermill = nb.metadata.get("papermill")
    if papermill is not None:
        papermill["input_path"] = papermill["output_path"] = chapter
    nb.metadata["erav1"] = {"profile": profile, "parameters": parameters}
    return nb
