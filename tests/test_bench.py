"""scripts/bench_train.py: it runs, writes its JSON, and README's speed table is generated from the committed ones."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from erav1.errors import Erav1Error
from erav1.utils.benchmarks import BENCH_DIR, END, START, bench_table, read_benchmarks, refresh_bench_table
from tests.test_faults import cli_env

ROOT = Path(__file__).resolve().parents[1]


def test_readme_speed_table_is_generated_from_the_committed_benchmarks():
    results = read_benchmarks(ROOT / BENCH_DIR)
    assert results, f"no benchmark JSON in {BENCH_DIR}"
    block = f"{START}\n{bench_table(results)}\n{END}"
    assert block in (ROOT / "README.md").read_text(), "run: python scripts/bench_train.py --refresh-readme"


def test_bench_script_measures_both_loops_and_writes_its_json(cifar_zip, cache_dir, tmp_path):
    out = tmp_path / "bench.json"
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "bench_train.py"),
            "--data",
            str(cifar_zip),
            "--data-dir",
            str(cache_dir),
            "--device",
            "cpu",
            "--images",
            "32",
            "--batch-size",
            "16",
            "--rounds",
            "1",
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env=cli_env(),
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    bench = json.loads(out.read_text())
    erav1, baseline = bench["erav1"]["images_per_s"], bench["baseline"]["images_per_s"]
    assert len(bench["erav1"]["rounds"]) == len(bench["baseline"]["rounds"]) == 1
    assert bench["ratio"] == pytest.approx(erav1 / baseline)
    assert result.stdout.strip().splitlines()[-2] == f"ratio: {bench['ratio']:.2f}"
    assert bench["settings"]["batch_size"] == 16 and bench["environment"]["device"] == "cpu"
    assert bench["settings"]["compile"] is False and bench["full_run"]["final_test_acc"] is None
    estimate = 20 * (50_000 / erav1 + 10_000 / bench["erav1"]["eval_images_per_s"])
    assert bench["full_run"]["estimated_s"] == pytest.approx(estimate) and bench["full_run"]["measured_s"] is None

    readme = tmp_path / "README.md"
    readme.write_text(f"# speed\n{START}\nold\n{END}\n")
    assert refresh_bench_table(readme, tmp_path)
    assert f"| {erav1:.1f} | {baseline:.1f} | {bench['ratio']:.2f} |" in readme.read_text()
    assert not refresh_bench_table(readme, tmp_path), "refreshing twice changes nothing"


def test_a_foreign_json_in_the_bench_folder_is_refused(tmp_path):
    (tmp_path / "notes.json").write_text('{"ratio": 9}')
    with pytest.raises(Erav1Error, match="notes.json is not an erav1 benchmark"):
        read_benchmarks(tmp_path)
