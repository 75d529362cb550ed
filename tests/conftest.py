"""Shared test harness.

`program(stack)` runs the real program (`infra.program.build` with `DEFAULT_TOPOLOGY`, as `__main__.py` does) for
a stack under Pulumi mocks, with the config from `Pulumi.<stack>.yaml`, and returns the resource graph
(infra/offline.py): every registration with its type, logical name, camelCase inputs and parent URN, plus the
stack's exports. Results are cached per session because a program run is deterministic.
"""

from __future__ import annotations

import gc
from collections import Counter
from collections.abc import Callable, Iterator

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
    worker's collection CPU. It is on again, as it was, before the first test."""
    with offline.collector_paused():
        return (yield)


def pytest_sessionfinish() -> None:
    """One full collection, then every object left is frozen out of the collector's reach: pytest's unraisable-
    exception check collects five times more at exit to surface the finalizers' warnings, and each of those passes
    scanned the whole heap of a worker that held the session's stack graphs and models (about 3 CPU-s per worker).
    The garbage there is to find is found by this first pass, whose warnings pytest still reports."""
    gc.collect()
    gc.freeze()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Files with the most ``slow`` tests first, the rest in pytest-randomly's order (a stable sort keeps each file's
    tests together and in their shuffled order). With ``--dist loadfile`` the workers take files in this order
    (``--no-loadscope-reorder`` in pytest.ini), so a file of minute-long tests never starts last while the other
    workers sit idle."""
    slow = Counter(item.path for item in items if item.get_closest_marker("slow"))
    items.sort(key=lambda item: -slow[item.path])
