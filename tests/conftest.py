"""Shared test harness.

`program(stack)` runs the real program (`infra.program.build` with `DEFAULT_TOPOLOGY`, as `__main__.py` does) for
a stack under Pulumi mocks, with the config from `Pulumi.<stack>.yaml`, and returns the resource graph
(infra/offline.py): every registration with its type, logical name, camelCase inputs and parent URN, plus the
stack's exports. Results are cached per session because a program run is deterministic.
"""

from __future__ import annotations

from collections.abc import Callable

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
            cache[stack] = offline.run_stack(stack, DEFAULT_TOPOLOGY)
        return cache[stack]

    return run
