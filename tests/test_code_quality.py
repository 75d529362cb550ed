"""The code-quality gates run with the tests: ruff's lint rules, ruff's formatting and mypy.

The tools and their settings are pyproject.toml's (`[tool.ruff]`, `[tool.mypy]`, pinned in the `test` extra).
CHECKED is every Python file git tracks; the gRPC modules generated from serving/grpc_api/speech.proto (untracked)
are left out by the tools' settings.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CHECKED = (
    "contract",
    "infra",
    "__main__.py",
    "bench",
    "speech_client",
    "tests/client",
    "tests/bench",
    "scripts",
    "tests/conftest.py",
    "tests/contract",
    "tests/infra",
    "tests/ci",
    "examples/eu-central/__main__.py",
    "policy",
    "tests/policy",
    "tests/test_code_quality.py",
    "tests/test_packaging.py",
    "serving",
    "tests/serving",
    "tests/__init__.py",
    "tests/prometheus.py",
    "tests/test_runbooks.py",
    "tests/test_suite_order.py",
)

# Pulumi programs of examples/ (each its own `__main__`), kept apart from the package's own __main__.py for mypy.
PROGRAMS = ("examples/eu-central/__main__.py",)


def _run(*command: str, timeout: int) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *command], cwd=REPO, capture_output=True, text=True, timeout=timeout, check=False
    )


def test_every_tracked_python_file_is_checked():
    tracked = subprocess.run(
        ["git", "ls-files", "*.py"], cwd=REPO, capture_output=True, text=True, timeout=60, check=True
    ).stdout.split()
    unchecked = [f for f in tracked if not any(f == p or f.startswith(f"{p}/") for p in CHECKED)]
    assert not unchecked, f"add these to CHECKED (and fix what ruff and mypy find): {unchecked}"


def test_ruff_finds_nothing():
    result = _run("ruff", "check", "--no-cache", *CHECKED, timeout=120)
    assert result.returncode == 0, f"ruff check {' '.join(CHECKED)}:\n{result.stdout}{result.stderr}"


def test_ruff_format_would_change_nothing():
    result = _run("ruff", "format", "--check", "--no-cache", *CHECKED, timeout=120)
    assert result.returncode == 0, f"run ruff format {' '.join(CHECKED)}:\n{result.stdout}{result.stderr}"


def test_mypy_finds_nothing():
    # The first run on a machine analyses the libraries' type stubs (about 27 CPU-s: only the provider modules the code
    # uses); later runs, from any clone, reuse the cache in ~/.cache/mypy (pyproject.toml's [tool.mypy]).
    result = _run("mypy", *(p for p in CHECKED if p not in PROGRAMS), timeout=900)
    assert result.returncode == 0, f"mypy:\n{result.stdout}{result.stderr}"
    for program in PROGRAMS:
        # Every Pulumi program is a module named __main__, which mypy checks one at a time.
        result = _run("mypy", program, timeout=900)
        assert result.returncode == 0, f"mypy {program}:\n{result.stdout}{result.stderr}"
