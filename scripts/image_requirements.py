"""Print the pinned requirements of some of pyproject.toml's extras, one a line, for `pip install -r`.

The serving image installs the project with `pip install --no-deps` (its base dependencies are the Pulumi SDK and
providers, hundreds of MB the server never imports) and its extras' pins from here, so versions still come from
pyproject.toml alone:

    python3 scripts/image_requirements.py serving build gpu --without onnxruntime torch
    python3 scripts/image_requirements.py serving --only torch

Extras that name other extras of the project (`speech-platform[serving]`) are followed.
"""

from __future__ import annotations

import argparse
import re
import sys
import tomllib
from pathlib import Path

PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"


def package_name(requirement: str) -> str:
    """The normalized distribution name of a requirement (PEP 503): ``uvicorn[standard]==1`` -> ``uvicorn``."""
    return re.sub(r"[-_.]+", "-", re.split(r"[\s\[=<>!~;@]", requirement, maxsplit=1)[0]).lower()


def requirements(project: dict, extras: list[str]) -> list[str]:
    """The requirements of ``extras``, in order, each once, with the project's own extras expanded."""
    name = package_name(project["name"])
    optional: dict[str, list[str]] = project.get("optional-dependencies", {})
    found: dict[str, None] = {}
    pending, seen = list(extras), set()
    while pending:
        extra = pending.pop(0)
        if extra in seen:
            continue
        if extra not in optional:
            raise SystemExit(f"error: pyproject.toml has no extra {extra!r}; extras: {', '.join(optional)}")
        seen.add(extra)
        for requirement in optional[extra]:
            if package_name(requirement) == name:
                pending += [e.strip() for e in requirement.split("[", 1)[1].rstrip("]").split(",")]
            else:
                found.setdefault(requirement)
    return list(found)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("extras", nargs="+", help="extras of pyproject.toml")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--without", nargs="+", default=[], metavar="PACKAGE", help="leave these packages out")
    group.add_argument("--only", nargs="+", default=[], metavar="PACKAGE", help="print only these packages")
    args = parser.parse_args(argv)
    project = tomllib.loads(PYPROJECT.read_text())["project"]
    without = {package_name(p) for p in args.without}
    only = {package_name(p) for p in args.only}
    for requirement in requirements(project, args.extras):
        name = package_name(requirement)
        if name not in without and (not only or name in only):
            print(requirement)
    return 0


if __name__ == "__main__":
    sys.exit(main())
