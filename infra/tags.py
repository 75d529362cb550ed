"""The tags every regional resource carries, so cost reports and audits can group by region and jurisdiction."""

from __future__ import annotations

from contract.topology import Region

REGION_TAG = "speech.io/region"
JURISDICTION_TAG = "speech.io/jurisdiction"
POOL_TAG = "speech.io/pool"


def region_tags(region: Region) -> dict[str, str]:
    """The region and jurisdiction tags of a resource in ``region``."""
    return {REGION_TAG: region.key, JURISDICTION_TAG: region.jurisdiction}
