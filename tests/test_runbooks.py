"""Every alert links a runbook that exists, and every command a runbook tells an operator to paste exists.

Commands are read from the runbooks' fenced code blocks: each `python -m <module>` must be a module of this
repository whose `--help` (or its subcommand's) lists every `--flag` the runbook passes it, and each `scripts/...`
must be a file. An operator under pressure gets no second chance at a command that is not there.
"""

from __future__ import annotations

import functools
import re
import subprocess
import sys
from pathlib import Path

import pytest

from infra.k8s import alerts

REPO = Path(__file__).resolve().parents[1]
RUNBOOKS = REPO / "docs" / "runbooks"
_FENCED = re.compile(r"^ *```[\w-]*\n(.*?)^ *```", re.S | re.M)
_PYTHON_M = re.compile(r"\bpython3? -m ([\w.]+)([^|;&\n]*)")
_SCRIPT = re.compile(r"(?<![\w/])(scripts/[\w./-]+)")


def _pages() -> list[Path]:
    return sorted(p for p in RUNBOOKS.glob("*.md") if p.name != "README.md")


def _code_lines(page: Path) -> list[str]:
    """The lines of the page's code blocks, continuation lines joined."""
    return [line for block in _FENCED.findall(page.read_text()) for line in re.sub(r"\\\n\s*", " ", block).splitlines()]


def _commands() -> list[tuple[str, str, str]]:
    """(page, module, the rest of the command line) for every `python -m` in a code block."""
    return [
        (page.name, found.group(1), found.group(2))
        for page in _pages()
        for line in _code_lines(page)
        for found in _PYTHON_M.finditer(line)
    ]


@functools.cache  # one run per command: each pays for importing the Pulumi providers (about 3 s)
def _help(*command: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", *command, "--help"], cwd=REPO, capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, f"python -m {' '.join(command)} --help failed:\n{result.stderr[-2000:]}"
    return result.stdout


def test_every_alert_has_a_runbook_page():
    found = alerts.alerts(
        declared_version="1.0.0",
        drift_after_minutes=60,
        health_check_id="health-check",
        source_bucket="source",
        replications=[alerts.Replication("destination", "rule")],
    )
    assert found, "no alerts to check"
    for alert in found:
        assert (REPO / alert.runbook_url).is_file(), f"{alert.name} links {alert.runbook_url}, which does not exist"


def test_the_runbook_index_lists_every_page_and_only_pages_that_exist():
    index = (RUNBOOKS / "README.md").read_text()
    linked = set(re.findall(r"\]\(([\w-]+\.md)\)", index))
    assert linked == {p.name for p in _pages()}


def test_runbooks_name_commands():
    assert {module for _, module, _ in _commands()} >= {"infra.rollback", "serving.publish", "infra.plan"}


@pytest.mark.parametrize(("page", "module", "rest"), _commands(), ids=lambda v: str(v)[:40])
def test_every_python_command_in_a_runbook_exists_with_the_flags_it_is_given(page, module, rest):
    path = REPO / Path(*module.split("."))
    assert path.with_suffix(".py").is_file() or (path / "__main__.py").is_file(), (
        f"{page}: python -m {module} is not a module of this repository"
    )
    words = rest.split()
    usage = _help(module)
    subcommands = re.search(r"\{([\w,-]+)\}", usage)
    if words and subcommands and words[0] in subcommands.group(1).split(","):
        usage = _help(module, words[0])
    for flag in re.findall(r"(?<!\S)(--[\w-]+)", rest):
        assert flag in usage, f"{page}: python -m {module} has no {flag}"


def test_every_script_a_runbook_names_exists():
    for page in _pages():
        for line in _code_lines(page):
            for script in _SCRIPT.findall(line):
                assert (REPO / script).is_file(), f"{page.name}: {script} does not exist"
