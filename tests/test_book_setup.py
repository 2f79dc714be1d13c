"""The machinery around the book: workflows, make targets, profiles, CI, and the CLI entry points."""

from __future__ import annotations

import re
import subprocess
import sys

import yaml
from book_checks import ROOT

WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))


def make_targets() -> set[str]:
    return set(re.findall(r"^([\w.-]+):", (ROOT / "Makefile").read_text(), flags=re.MULTILINE))


def load(path):
    workflow = yaml.safe_load(path.read_text())
    workflow["on"] = workflow.pop(True, workflow.get("on"))  # YAML 1.1 reads a bare `on` as True
    return workflow


def run_steps(workflow) -> list[str]:
    return [step["run"] for job in workflow["jobs"].values() for step in job.get("steps", []) if "run" in step]


def test_workflows_are_valid_yaml_and_only_call_existing_make_targets():
    assert {p.name for p in WORKFLOWS} == {"publish-book.yml", "run-book-gpu.yml", "test.yml"}
    targets = make_targets()
    for path in WORKFLOWS:
        workflow = load(path)
        assert workflow["jobs"] and workflow["on"], path.name
        called = [t for command in run_steps(workflow) for t in re.findall(r"\bmake\s+([\w.-]+)", command)]
        assert called, f"{path.name} calls no make target"
        assert set(called) <= targets, f"{path.name} calls missing targets {set(called) - targets}"


def test_publishing_builds_committed_outputs_on_push_and_deploys_pages():
    workflow = load(ROOT / ".github" / "workflows" / "publish-book.yml")
    assert "push" in workflow["on"]
    steps = [s for job in workflow["jobs"].values() for s in job["steps"]]
    assert any(s.get("uses", "").startswith("actions/deploy-pages") for s in steps)
    assert "make book-html" in run_steps(workflow)


def test_the_gpu_run_is_manual_self_hosted_and_opens_a_pull_request():
    workflow = load(ROOT / ".github" / "workflows" / "run-book-gpu.yml")
    assert set(workflow["on"]) == {"workflow_dispatch"}
    job = workflow["jobs"]["run"]
    assert "self-hosted" in job["runs-on"] and "gpu" in job["runs-on"]
    assert any("make book" in command for command in run_steps(workflow))
    assert any("create-pull-request" in s.get("uses", "") for s in job["steps"])


def test_tests_run_on_every_push_with_make_test():
    workflow = load(ROOT / ".github" / "workflows" / "test.yml")
    assert {"push", "pull_request"} <= set(workflow["on"])
    assert run_steps(workflow) == ["make test"]


def test_make_targets_for_the_book_exist_and_name_the_official_copy():
    """The book runs the chapters as stored, so no target passes data; `cifar10` resolves to the local PNG copy."""
    makefile = (ROOT / "Makefile").read_text()
    assert {"book", "smoke-book", "book-html", "test", "venv"} <= make_targets()
    assert re.search(r"^book: venv\n\t.*erav1 book --profile full$", makefile, re.MULTILINE)
    assert re.search(r"^smoke-book: venv\n\t.*erav1 book --profile smoke$", makefile, re.MULTILINE)
    assert re.search(r"^ERAV1_CIFAR10 \?= .*\.\./shared/data/cifar10-png\.zip", makefile, re.MULTILINE)
    assert re.search(r"^export ERAV1_CIFAR10$", makefile, re.MULTILINE)


def test_profiles():
    full = yaml.safe_load((ROOT / "book" / "profiles" / "full.yml").read_text())
    smoke = yaml.safe_load((ROOT / "book" / "profiles" / "smoke.yml").read_text())
    assert full == {}, "the full profile executes the chapters as stored"
    assert smoke["epochs"] == 1 and smoke["device"] == "cpu" and smoke["subset"] <= 1000


def test_the_test_command_installs_chromium_and_ci_calls_it():
    makefile = (ROOT / "Makefile").read_text()
    browser = makefile[makefile.index("\nbrowser:") : makefile.index("\ntest:")]
    assert "apt-get update" in browser and "apt-get install -y -qq chromium chromium-driver" in browser
    assert re.search(r"^test: .*\bbrowser\b", makefile, re.M)
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_run_book_script_and_cli_share_one_parser():
    for command in ([sys.executable, "scripts/run_book.py", "--help"], [sys.executable, "-m", "erav1", "book", "-h"]):
        done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=120)
        assert done.returncode == 0 and "--profile" in done.stdout and "NAME=VALUE" in done.stdout
