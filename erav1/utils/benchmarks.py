"""The README's speed table, generated from the benchmark files in ``book/results/bench/``.

``scripts/bench_train.py --json book/results/bench/NAME.json`` measures erav1's
training loop against kuangliu/pytorch-cifar's in one process and writes one
such file; ``scripts/bench_train.py --refresh-readme`` rewrites the block
between ``<!-- bench:start -->`` and ``<!-- bench:end -->`` from all of them, so
no speed in the README is typed by hand (a test keeps the two in sync).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from erav1.errors import Erav1Error
from erav1.utils.rundir import describe_hardware
from erav1.utils.text import markdown_table, refresh_block

BENCH_DIR = Path("book") / "results" / "bench"
BENCH_FORMAT = "erav1-bench-1"
START, END = "<!-- bench:start -->", "<!-- bench:end -->"
NO_RESULTS = "No benchmark has been committed yet: run `scripts/bench_train.py --json book/results/bench/NAME.json`."


def read_benchmarks(folder: Path) -> list[tuple[str, dict[str, Any]]]:
    """Every ``*.json`` benchmark in ``folder``, by file name."""
    results = []
    for path in sorted(Path(folder).glob("*.json")):
        try:
            result = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise Erav1Error(f"{path} is not valid JSON ({exc})") from None
        if not isinstance(result, dict) or result.get("format") != BENCH_FORMAT:
            raise Erav1Error(f"{path} is not an erav1 benchmark ({BENCH_FORMAT}); write it with scripts/bench_train.py")
        results.append((path.name, result))
    return results


def _minutes(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min"


def _compiled(mode: bool | str | None) -> str:
    """How erav1's model was compiled: not at all (False, or absent in older files), or in which mode."""
    if not mode:
        return ""
    return ", compiled" if mode is True or mode == "default" else f", compiled ({mode})"


def bench_table(results: list[tuple[str, dict[str, Any]]]) -> str:
    """One row per benchmark file: the machine, both loops' images/s, their ratio and a 20-epoch run."""
    if not results:
        return NO_RESULTS
    rows = []
    for name, r in results:
        env, settings, full = r["environment"], r["settings"], r["full_run"]
        rows.append(
            [
                describe_hardware(env),
                f"{env['device']}, {env['precision']}" + _compiled(settings.get("compile")),
                settings["batch_size"],
                f"{r['erav1']['images_per_s']:.1f}",
                f"{r['baseline']['images_per_s']:.1f}",
                f"{r['ratio']:.2f}",
                _minutes(full["estimated_s"]),
                _minutes(full.get("measured_s")),
                "{before:.1f} / {after:.1f}".format(**r["load_average_1min"]),
                f"[{name}]({BENCH_DIR.as_posix()}/{name})",
            ]
        )
    header = [
        "machine",
        "erav1 device, precision",
        "batch",
        "erav1 img/s",
        "kuangliu img/s",
        "ratio",
        "erav1 20 epochs (estimated)",
        "(measured)",
        "load before / after",
        "file",
    ]
    return markdown_table(header, rows)


def refresh_bench_table(markdown: Path, folder: Path) -> bool:
    """Rewrite the bench block of ``markdown`` from the files in ``folder``; True when it changed."""
    try:
        return refresh_block(markdown, START, END, bench_table(read_benchmarks(folder)))
    except LookupError:
        raise Erav1Error(f"{markdown} has no {START} ... {END} block for the benchmark table") from None
