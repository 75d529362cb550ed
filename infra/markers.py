"""Generated blocks of the README: the text between a pair of HTML comment markers, read or replaced.

Each generator (`infra.routing`, `infra.deploy_order`, `infra.reference`) owns one pair, writes its block with
`--write README.md`, and has a test that fails when the README's block differs from what it would write.
"""

from __future__ import annotations


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
