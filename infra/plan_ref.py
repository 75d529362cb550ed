"""The offline plan of a stack as another git ref of the repository would make it: the base of a pull request.

The ref's tree is exported with `git archive` into a temporary directory (the working tree, its branch and the
repository's worktree list stay untouched) and its own `python -m infra.plan <stack> --json` runs there, in a
subprocess whose working directory and import path are that tree. So the base side is the base's program, config
and topology, whatever the working tree has changed since.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

# A regional stack takes seconds offline and the global stack runs every regional one first.
_PLAN_TIMEOUT_S = 600


class RefError(RuntimeError):
    """The ref cannot be read, or the program at the ref does not plan."""


def _git(repo: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["git", *args], cwd=repo, capture_output=True, timeout=120, check=False)


def repository_of(path: Path) -> tuple[Path, Path]:
    """(the git working tree holding ``path``, ``path`` relative to it)."""
    found = _git(path, "rev-parse", "--show-toplevel")
    if found.returncode != 0:
        raise RefError(f"{path} is not inside a git repository: {found.stderr.decode().strip()}")
    top = Path(found.stdout.decode().strip()).resolve()
    return top, path.resolve().relative_to(top)


def plans_at_ref(ref: str, stacks: Sequence[str], project_dir: Path) -> dict[str, dict[str, Any] | None]:
    """{stack: plan in `--json` form at ``ref``}, None for a stack that has no stack file there (a new stack)."""
    repo, relative = repository_of(project_dir)
    commit = _git(repo, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}")
    if commit.returncode != 0:
        raise RefError(f"unknown git ref {ref!r} in {repo}; fetch it first (e.g. git fetch origin main)")
    sha = commit.stdout.decode().strip()
    with tempfile.TemporaryDirectory(prefix="plan-ref-") as tmp:
        tree = Path(tmp)
        _export(repo, sha, tree)
        project = tree / relative
        return {stack: _plan(tree, project, stack, ref) for stack in stacks}


def _export(repo: Path, sha: str, into: Path) -> None:
    archive = _git(repo, "archive", "--format=tar", sha)
    if archive.returncode != 0:
        raise RefError(f"git archive {sha} failed: {archive.stderr.decode().strip()}")
    with tempfile.TemporaryFile() as buffer:
        buffer.write(archive.stdout)
        buffer.seek(0)
        with tarfile.open(fileobj=buffer) as tar:
            tar.extractall(into, filter="data")  # no links or paths that leave the directory


def _plan(tree: Path, project: Path, stack: str, ref: str) -> dict[str, Any] | None:
    if not (project / f"Pulumi.{stack}.yaml").exists():
        return None
    command = [sys.executable, "-m", "infra.plan", stack, "--json"]
    if project != tree:
        command += ["--project", str(project)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(tree), os.environ.get("PYTHONPATH")]))}
    result = subprocess.run(
        command, cwd=tree, env=env, capture_output=True, text=True, timeout=_PLAN_TIMEOUT_S, check=False
    )
    if result.returncode != 0:
        raise RefError(f"the program at {ref} does not plan stack {stack!r}: {result.stderr.strip()[-2000:]}")
    try:
        return dict(json.loads(result.stdout))
    except json.JSONDecodeError as exc:
        raise RefError(f"the plan of {stack!r} at {ref} is not JSON ({exc})") from exc
