"""`speech:region`, `aws:region` and `speech:jurisdiction`: which topology region a regional stack deploys."""

from __future__ import annotations

from contract.topology import Region, Topology, TopologyError
from infra.config.reader import NAMESPACE, Reader


def read_region(reader: Reader, topology: Topology) -> Region:
    """The stack's region; its AWS region and jurisdiction must repeat the topology's, as a deliberate check."""
    known = ", ".join(topology.keys)
    key = reader.require("region", f"one of {known}")
    try:
        region = topology.region(key)
    except TopologyError:
        raise reader.fail(f"{NAMESPACE}:region", key, f"is not a region of the topology; use one of {known}") from None
    aws_region = reader.raw.get("aws:region")
    if aws_region != region.aws_region:
        raise reader.fail("aws:region", aws_region, f"must be {region.aws_region!r}, the AWS region of {region.key!r}")
    jurisdiction = reader.require("jurisdiction", f"{region.jurisdiction!r} for {region.key}")
    if jurisdiction != region.jurisdiction:
        raise reader.fail(
            f"{NAMESPACE}:jurisdiction",
            jurisdiction,
            f"must be {region.jurisdiction!r}: the topology puts {region.key} there",
        )
    return region
