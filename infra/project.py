"""A Pulumi project on disk: its name, its program and its stack files, read without Pulumi.

This repository is one (`REPOSITORY`); a platform team's program is another (`examples/`). The offline harness,
the offline plan and the deploy order read stack files through here, so each works on either.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

GLOBAL_SCOPE = "global"


@dataclass(frozen=True)
class Project:
    """The directory that holds `Pulumi.yaml`, the program it names, and one `Pulumi.<stack>.yaml` per stack."""

    root: Path

    def _settings(self) -> dict[str, Any]:
        path = self.root / "Pulumi.yaml"
        if not path.exists():
            raise FileNotFoundError(f"{self.root} holds no Pulumi.yaml; a Pulumi project directory does")
        return dict(yaml.safe_load(path.read_text()) or {})

    @property
    def name(self) -> str:
        return str(self._settings()["name"])

    @property
    def program(self) -> Path:
        """The file `pulumi up` runs: `main` of Pulumi.yaml (a file or a directory), else `__main__.py`."""
        main = self.root / str(self._settings().get("main", "."))
        return main / "__main__.py" if main.is_dir() else main

    def stack_file(self, stack: str) -> Path:
        return self.root / f"Pulumi.{stack}.yaml"

    def stacks(self) -> tuple[str, ...]:
        """Every stack with a stack file, sorted by name."""
        return tuple(sorted(p.name[len("Pulumi.") : -len(".yaml")] for p in self.root.glob("Pulumi.*.yaml")))

    def stack_config(self, stack: str) -> dict[str, Any]:
        """The `config:` block of `Pulumi.<stack>.yaml`, keys fully qualified (`speech:domain`, `aws:region`)."""
        path = self.stack_file(stack)
        if not path.exists():
            known = ", ".join(self.stacks())
            raise FileNotFoundError(f"no stack file {path.name} in {self.root}; known stacks: {known}")
        return dict((yaml.safe_load(path.read_text()) or {}).get("config") or {})

    def is_global(self, stack: str) -> bool:
        return self.stack_config(stack).get("speech:scope") == GLOBAL_SCOPE


REPOSITORY = Project(Path(__file__).resolve().parent.parent)
