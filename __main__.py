"""The Pulumi program: this repository's three regions (`DEFAULT_TOPOLOGY`), built by `infra/program.py`.

A platform team with regions of its own writes the same two lines with its own `Topology`, or builds the components
(`infra/`) one by one in a program of its own.
"""

from contract.topology import DEFAULT_TOPOLOGY
from infra.program import build

build(DEFAULT_TOPOLOGY)
