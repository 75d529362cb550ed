"""Generated blocks of the README: the text between a pair of HTML comment markers, read or replaced.

Each generator (`infra.routing`, `infra.deploy_order`, `infra.reference`) owns one pair, writes its block with
`--write README.md`, and has a test that fails when the README's block differs from what it would write.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path


def _span(text: str, start: str, end: str) -> tuple[int, int]:
    begin, finish = text.find(start), text.find(end)
    if begin < 0 or finish < begin:
        raise ValueError(f"no {start} ... {end} markers, in that order")
    return begin + len(start), finish


def replace_between(text: str, start: str, end: str, block: str) -> str:
    """``text`` with everything between the markers replaced by ``block``."""
    begin, finish = _span(text, start, end)
    return f"{text[:begin]}\n{block}\n{text[finish:]}"


def between(text: str, start: str, end: str) -> str:
    """The text between the markers, without the newlines that frame it."""
    begin, finish = _span(text, start, end)
    return text[begin:finish].strip("\n")


def write_into(path: Path, start: str, end: str, block: str) -> int:
    """A generator's `--write FILE`: replace the block in ``path``; the exit status (2, the reason on stderr, when
    the file cannot be read or written or lacks the markers; the file is then left as it was)."""
    try:
        path.write_text(replace_between(path.read_text(), start, end, block))
    except (OSError, ValueError) as exc:
        print(f"error: {path}: {exc}", file=sys.stderr)
        return 2
    return 0


def block_cli(
    prog: str, description: str, start: str, end: str, render: Callable[[], str], argv: list[str] | None
) -> int:
    """The CLI of a generator that owns one block: print it, or `--write FILE` it between its markers."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--write", metavar="FILE", type=Path, help="replace the block between the markers in FILE")
    args = parser.parse_args(argv)
    if args.write is None:
        print(render())
        return 0
    return write_into(args.write, start, end, render())
