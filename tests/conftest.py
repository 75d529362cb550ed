"""Shared test harness.

`program(stack)` runs the real program (`infra.program.build` with `DEFAULT_TOPOLOGY`, as `__main__.py` does) for
a stack under Pulumi mocks, with the config from `Pulumi.<stack>.yaml`, and returns the resource graph
(infra/offline.py): every registration with its type, logical name, camelCase inputs and parent URN, plus the
stack's exports. Results are cached per session because a program run is deterministic.
"""

from __future__ import annotations

import ast
import gc
import json
import os
import statistics
import tomllib
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Protocol, TypeVar

import pytest

from contract.topology import DEFAULT_TOPOLOGY
from infra import offline

REGIONAL_STACKS = DEFAULT_TOPOLOGY.keys
STACKS = (*REGIONAL_STACKS, "global")


@pytest.fixture(scope="session")
def program() -> Callable[[str], offline.Graph]:
    cache: dict[str, offline.Graph] = {}

    def run(stack: str) -> offline.Graph:
        if stack not in cache:
            # The global stack reads the regional stacks' exports from this cache instead of planning them again.
            cache[stack] = offline.run_stack(stack, DEFAULT_TOPOLOGY, regional=run)
        return cache[stack]

    return run


@pytest.hookimpl(wrapper=True)
def pytest_collection() -> Iterator[None]:
    """Collect with the cyclic garbage collector paused: importing the test modules (the provider SDKs above all)
    creates objects that all stay alive, so its passes found nothing to free and took about a quarter of each
    worker's collection CPU. It is on again, as it was, before the first test.

    What collection leaves (the imported modules, their classes and functions) then lives until the worker exits,
    so it is frozen out of the collector's reach, and the collector runs on every 7000 new container objects
    instead of 700. Measured over the whole suite (thread CPU in the collector's callbacks, all workers): 16 CPU-s
    with neither, 11.5 with the freeze alone (the full passes then come sooner: they wait for the unfrozen old
    objects to grow by a quarter), 7.9 with both. Reference counting still frees everything acyclic at once."""
    with offline.collector_paused():
        result = yield
    gc.collect()
    gc.freeze()
    gc.set_threshold(7000, *gc.get_threshold()[1:])
    return result


def pytest_sessionfinish() -> None:
    """One full collection, then every object left is frozen out of the collector's reach: pytest's unraisable-
    exception check collects five times more at exit to surface the finalizers' warnings, and each of those passes
    scanned the whole heap of a worker that held the session's stack graphs and models (about 3 CPU-s per worker).
    The garbage there is to find is found by this first pass, whose warnings pytest still reports."""
    gc.collect()
    gc.freeze()


def parse_python(path: Path) -> ast.Module:
    """``path``'s syntax tree. CPython 3.11 counts the AST constructor's recursion depth per interpreter, not per
    thread, so a parse while another thread of this worker builds a tree (say, a server left by an earlier test) can
    fail with "AST constructor recursion depth mismatch" (python/cpython#106905; seen once here in 3.11.7). The
    source is not at fault, so the parse is tried again, up to three times in all."""
    source = path.read_text()
    for _ in range(2):
        try:
            return ast.parse(source)
        except SystemError:
            pass
    return ast.parse(source)


DURATIONS = Path(__file__).with_name("durations.json")


class _Item(Protocol):
    """What the ordering reads of a collected test."""

    @property
    def path(self) -> Path: ...

    @property
    def nodeid(self) -> str: ...


_ItemT = TypeVar("_ItemT", bound=_Item)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--store-durations",
        action="store_true",
        help=f"write each test's seconds (set-up, call and tear-down) into {DURATIONS.name}, which orders the files",
    )


# mypy's run (tests/test_code_quality.py) with no cache yet (the first on a machine): it analyses the libraries' type
# stubs first, about 27 CPU-s where durations.json records the 3.5 s of a run on its cache.
MYPY_TEST = "tests/test_code_quality.py::test_mypy_finds_nothing"
COLD_MYPY_S = 30.0


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """With ``--dist loadfile`` the workers take files in the order the items are in (``--no-loadscope-reorder`` in
    pytest.ini): ``longest_files_first``, by ``durations.json`` (``expected_durations``)."""
    mypy_cached = mypy_cache_dir(offline.ROOT).is_dir()
    items[:] = longest_files_first(items, expected_durations(_recorded_durations(), mypy_cached=mypy_cached))


def mypy_cache_dir(root: Path) -> Path:
    """Where mypy keeps its cache for ``root``'s checks, found as mypy finds it: ``MYPY_CACHE_DIR``, else
    ``[tool.mypy]``'s ``cache_dir`` with ``~`` and variables expanded; relative paths from ``root``."""
    environ = os.environ.get("MYPY_CACHE_DIR", "")
    if environ.strip():
        return root / os.path.expanduser(environ)
    configured = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["mypy"].get("cache_dir", ".mypy_cache")
    return root / os.path.expandvars(os.path.expanduser(configured))


def expected_durations(recorded: Mapping[str, float], *, mypy_cached: bool) -> dict[str, float]:
    """``recorded``, with mypy's test as long as a cold run when there is no cache: it would otherwise be ordered by
    its warm seconds, start among the last files and run on alone for half a minute (the test phase of `.ci/run`
    measured 10-15 s longer than a warm run)."""
    expected = dict(recorded)
    if not mypy_cached:
        expected[MYPY_TEST] = max(expected.get(MYPY_TEST, 0.0), COLD_MYPY_S)
    return expected


def _recorded_durations() -> dict[str, float]:
    return json.loads(DURATIONS.read_text()) if DURATIONS.exists() else {}


def longest_files_first(items: Sequence[_ItemT], recorded: Mapping[str, float]) -> list[_ItemT]:
    """``items`` with their files in the order of their ``recorded`` seconds, the longest first, and files with no
    test on record before those (a new file may be long). A test not on record counts as the median of those that
    are. A stable sort keeps each file's tests together and in pytest-randomly's shuffled order. Longest-first list
    scheduling: the last files to start are short, so no worker runs on alone while the others wait."""
    typical = statistics.median(recorded.values()) if recorded else 0.0
    seconds: defaultdict[Path, float] = defaultdict(float)
    known: set[Path] = set()
    for item in items:
        seconds[item.path] += recorded.get(item.nodeid, typical)
        if item.nodeid in recorded:
            known.add(item.path)
    return sorted(items, key=lambda item: (item.path in known, -seconds[item.path]))


def merged_durations(recorded: Mapping[str, float], measured: Mapping[str, float], root: Path) -> dict[str, float]:
    """``recorded`` updated with this run's ``measured`` seconds (tests that did not run keep theirs), without the
    tests whose file is gone, sorted by node id."""
    merged = {**recorded, **{nodeid: round(value, 2) for nodeid, value in measured.items()}}
    return {nodeid: value for nodeid, value in sorted(merged.items()) if (root / nodeid.split("::")[0]).exists()}


class _DurationRecorder:
    """``--store-durations``: each report's seconds, summed per test, merged into ``durations.json`` at the end. With
    xdist the reports reach this process from the workers, so only the process that ran pytest writes."""

    def __init__(self) -> None:
        self.seconds: defaultdict[str, float] = defaultdict(float)

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        self.seconds[report.nodeid] += report.duration

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        merged = merged_durations(_recorded_durations(), self.seconds, Path(session.config.rootpath))
        DURATIONS.write_text(json.dumps(merged, indent=0) + "\n")


def pytest_configure(config: pytest.Config) -> None:
    if config.getoption("store_durations") and not hasattr(config, "workerinput"):
        config.pluginmanager.register(_DurationRecorder(), "durations-recorder")
