"""A platform team's program: this repository's three regions plus eu-central-1, a second EU region.

With one EU region, EU users have nowhere to fail over and EU models live in one store. Frankfurt changes that, from
the public API alone: a `Topology` of the team's own, extending `DEFAULT_TOPOLOGY`, built by `infra.program.build`
like this repository's own program. Nothing of `contract/` or `infra/` is edited or patched; the topology decides
everything that follows:

* Route 53: EU users fail over from eu-west to eu-central, and to nothing outside the EU.
* Cloudflare: eu-central serves Eastern Europe first (pool order eu-central, eu-west), Western Europe the reverse.
* Models published in the EU replicate between the two EU stores only; no other store replicates into them.
* Keys, bucket policies and the publisher role of the EU now name both EU regions, and only them.
"""

from __future__ import annotations

import dataclasses

from contract.topology import DEFAULT_TOPOLOGY, Region, Topology
from infra.program import build

EU_CENTRAL = Region(
    key="eu-central",
    aws_region="eu-central-1",
    jurisdiction="eu",
    timezone="Europe/Berlin",
    continents=(),  # Route 53's Europe stays with eu-west, which now fails over here
    cloudflare_regions=("EEU",),
    failover=("eu-west", "us-west", "ap-northeast"),  # EU users are cut to eu-west by the residency rule
)


def with_eu_central(base: Topology) -> Topology:
    """``base`` plus eu-central: it takes Eastern Europe from eu-west, and eu-west fails over to it first."""
    regions = []
    for region in base.regions:
        if region.key == "eu-west":
            region = dataclasses.replace(
                region,
                cloudflare_regions=tuple(
                    c for c in region.cloudflare_regions if c not in EU_CENTRAL.cloudflare_regions
                ),
                failover=(EU_CENTRAL.key, *region.failover),
            )
        regions.append(region)
    return dataclasses.replace(base, regions=(*regions, EU_CENTRAL))


TOPOLOGY = with_eu_central(DEFAULT_TOPOLOGY)

if __name__ == "__main__":  # as `pulumi up` runs it; importing the module only reads TOPOLOGY
    build(TOPOLOGY)
