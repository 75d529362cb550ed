"""Which user areas get their own route, and the region chain each one fails over along (plain Python).

Route 53 (`infra/dns.py`), the Cloudflare load balancer (`infra/cloudflare.py`) and the README's routing table all
read the areas from here, and this module reads everything from the `Topology` it is given (`contract/topology.py`):
no area, region or jurisdiction is written out by hand, so a region added to the topology shows up in DNS, in
Cloudflare and in the README table together. The CLI renders this repository's `DEFAULT_TOPOLOGY`.

    python -m infra.routing                 # print the routing table (markdown)
    python -m infra.routing --write README.md   # replace the table between the routing-table markers
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

from contract.topology import CLOUDFLARE_REGIONS, CONTINENTS, DEFAULT_TOPOLOGY, Region, Topology
from infra import markers

TABLE_START = "<!-- routing-table:start -->"
TABLE_END = "<!-- routing-table:end -->"


@dataclass(frozen=True)
class Area:
    """One user area with its own route: a continent, a pinned country, a Cloudflare region code, or the default."""

    kind: str  # "continent", "country", "cloudflare-region" or "default"
    code: str  # Route 53 continent code, ISO country, Cloudflare region code, or "*" for the default
    name: str
    user_jurisdiction: str | None  # the strict jurisdiction protecting these users, None when unrestricted
    chain: tuple[Region, ...]  # primary first, then failover order

    @property
    def is_strict(self) -> bool:
        return self.user_jurisdiction is not None

    @property
    def primary(self) -> Region:
        return self.chain[0]


def pinned_country_areas(topology: Topology) -> list[Area]:
    """Countries routed by their own record or pool instead of their continent, in topology order.

    These are the countries a region pins (``Region.countries``) and the outlying territories of every
    jurisdiction: geolocation databases put them on another continent, so continent routing alone would send
    their users to that continent's region.
    """
    candidates: dict[str, None] = {}
    for r in topology.regions:
        candidates.update(dict.fromkeys(r.countries))
    for j in topology.jurisdictions:
        candidates.update(dict.fromkeys(j.outlying_countries))
    areas = []
    for country in candidates:
        chain = topology.country_chain(country)
        if chain is not None:
            areas.append(Area("country", country, country, topology.user_jurisdiction_of_country(country), chain))
    return areas


def route53_areas(topology: Topology) -> list[Area]:
    """Every Route 53 geolocation area: each continent, each pinned country, then the default (``*``)."""
    areas = [
        Area("continent", c, name, topology.user_jurisdiction_of_continent(c), topology.continent_chain(c))
        for c, name in CONTINENTS.items()
    ]
    areas += pinned_country_areas(topology)
    areas.append(Area("default", "*", "everyone else", None, topology.default_chain()))
    return areas


def cloudflare_region_areas(topology: Topology) -> list[Area]:
    """Every Cloudflare load-balancer region code, with its pool order."""
    return [
        Area(
            "cloudflare-region",
            c,
            name,
            topology.user_jurisdiction_of_cloudflare_region(c),
            topology.cloudflare_region_chain(c),
        )
        for c, name in CLOUDFLARE_REGIONS.items()
    ]


def cloudflare_country_areas(topology: Topology) -> list[Area]:
    """Countries that override their Cloudflare region's pools (the same pinned countries as in Route 53)."""
    return pinned_country_areas(topology)


def fallback_region(topology: Topology) -> Region:
    """The region behind Cloudflare's fallback pool: the answer when every pool of a request's list is down.

    Cloudflare sends a request to the fallback pool without looking at which user it is, so the only residency-safe
    choice is a region that may hold every user's data. With exactly one strict jurisdiction that is its first
    region: unrestricted users may be served anywhere, and the strict users stay home. With several strict
    jurisdictions no single region qualifies; the default region is used and the per-region residency rules of the
    load balancer (``infra/cloudflare.py``) carry the guarantee alone.
    """
    strict = [j for j in topology.jurisdictions if j.is_strict_residency and topology.regions_in(j.code)]
    if len(strict) == 1:
        return topology.regions_in(strict[0].code)[0]
    return topology.region(topology.default_region)


def _residency(area: Area) -> str:
    return f"{area.user_jurisdiction} only" if area.is_strict else "any"


def _chain(area: Area) -> str:
    return " → ".join(r.key for r in area.chain)


def render_markdown(topology: Topology) -> str:
    """The README's routing table: every area, its primary region and its failover chain."""
    lines = [
        (
            "Generated from `DEFAULT_TOPOLOGY` (`contract/topology.py`) by `python -m infra.routing`; "
            "a test fails when it drifts."
        ),
        "",
        "Route 53 geolocation records (TTL 60 s at the leaves, every region health-checked):",
        "",
        "| Users | Residency | Primary | Failover chain |",
        "| --- | --- | --- | --- |",
    ]
    for area in route53_areas(topology):
        label = {
            "continent": f"{area.code} ({area.name})",
            "country": f"country {area.code}",
            "default": "`*` (everyone else)",
        }[area.kind]
        lines.append(f"| {label} | {_residency(area)} | {area.primary.key} | {_chain(area)} |")
    lines += [
        "",
        "Cloudflare geo steering (`region_pools`, `country_pools`; pools in failover order):",
        "",
        "| Cloudflare region / country | Residency | Primary pool | Pool order |",
        "| --- | --- | --- | --- |",
    ]
    for area in cloudflare_region_areas(topology) + cloudflare_country_areas(topology):
        label = f"{area.code} ({area.name})" if area.kind == "cloudflare-region" else f"country {area.code}"
        lines.append(f"| {label} | {_residency(area)} | {area.primary.key} | {_chain(area)} |")
    default = " → ".join(r.key for r in topology.default_chain())
    lines += ["", f"Default pools: {default}; fallback pool: {fallback_region(topology).key}."]
    return "\n".join(lines)


def replace_table(text: str, table: str) -> str:
    """``text`` with everything between the routing-table markers replaced by ``table``."""
    return markers.replace_between(text, TABLE_START, TABLE_END, table)


def table_in(text: str) -> str:
    """The text between the routing-table markers, without the newlines that frame it."""
    return markers.between(text, TABLE_START, TABLE_END)


def main(argv: list[str] | None = None) -> int:
    description = (__doc__ or "").split("\n\n")[0]
    return markers.block_cli(
        "python -m infra.routing", description, TABLE_START, TABLE_END, lambda: render_markdown(DEFAULT_TOPOLOGY), argv
    )


if __name__ == "__main__":
    sys.exit(main())
