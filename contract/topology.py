"""Regions, jurisdictions, the areas each region serves, and failover order: one validated value.

A :class:`Topology` is the single source of truth for where speech traffic and data may go. DNS, the Cloudflare
load balancer, model-store replication, IAM and the serving container's bucket check all ask it; none of them lists
regions or jurisdictions itself. It is a plain frozen value, imports nothing but the standard library, and is
passed to every component through its Args, so a platform team builds the components for regions of its own by
constructing another ``Topology``. :data:`DEFAULT_TOPOLOGY` is this repository's three regions.

Data-residency model:

* A *jurisdiction* is a legal area (``eu``, ``us``, ``jp``). A *strict-residency* jurisdiction's user audio and
  data may only be processed and stored by regions of that same jurisdiction.
* A jurisdiction claims *user areas*: Route 53 continent codes, Cloudflare region codes and ISO countries whose
  users it protects. Users of an unclaimed area are unrestricted (they may be served by any region).
* Every region names the areas it serves first and a preference-ordered failover list. The failover chain for an
  area is the primary region followed by that list, filtered so that it never leaves a strict jurisdiction.

The serving container is handed the topology the infrastructure used as JSON (:meth:`Topology.to_dict`,
:func:`load`), so both sides answer residency questions from the same value.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from contract import topology_json
from contract.regions import (
    CLOUDFLARE_REGIONS,
    CONTINENTS,
    EU_EEA_COUNTRIES,
    EU_OUTLYING_COUNTRIES,
    EUROPEAN_UNION,
    Jurisdiction,
    Region,
    TopologyError,
)

__all__ = [
    "CLOUDFLARE_REGIONS",
    "CONTINENTS",
    "DEFAULT_TOPOLOGY",
    "EUROPEAN_UNION",
    "EU_EEA_COUNTRIES",
    "EU_OUTLYING_COUNTRIES",
    "Jurisdiction",
    "Region",
    "Topology",
    "TopologyError",
    "load",
]


@dataclass(frozen=True)
class Topology:
    """Regions and jurisdictions, checked for consistency when constructed.

    Construction fails with a :class:`TopologyError` when a region names an unknown jurisdiction or failover
    target, two regions claim the same area, the default region is strict, or an area a strict jurisdiction claims
    would be served first from outside it; so every consumer may trust the chains it is given.
    """

    regions: tuple[Region, ...]
    jurisdictions: tuple[Jurisdiction, ...]
    # Users matched by no continent, country or Cloudflare region are sent here (Route 53 `*`, Cloudflare default).
    default_region: str

    def __post_init__(self) -> None:
        # Lists from callers (or JSON) become tuples, so the value stays hashable and immutable.
        object.__setattr__(self, "regions", tuple(self.regions))
        object.__setattr__(self, "jurisdictions", tuple(self.jurisdictions))
        self._validate()

    # Lookups

    def region(self, key: str) -> Region:
        """The region whose stack is named ``key``."""
        for r in self.regions:
            if r.key == key:
                return r
        raise TopologyError(f"unknown region {key!r}; known regions: {', '.join(self.keys)}")

    @property
    def keys(self) -> tuple[str, ...]:
        """Every region key, in topology order."""
        return tuple(r.key for r in self.regions)

    def region_for_aws(self, aws_region: str) -> Region:
        """The region deployed to the AWS region ``aws_region`` (e.g. ``eu-west-1``)."""
        for r in self.regions:
            if r.aws_region == aws_region:
                return r
        known = ", ".join(r.aws_region for r in self.regions)
        raise TopologyError(f"no region is deployed to AWS region {aws_region!r}; known: {known}")

    def jurisdiction(self, code: str) -> Jurisdiction:
        for j in self.jurisdictions:
            if j.code == code:
                return j
        raise TopologyError(f"unknown jurisdiction {code!r}; known: {', '.join(j.code for j in self.jurisdictions)}")

    def jurisdiction_of(self, r: Region | str) -> Jurisdiction:
        """The jurisdiction a region (or a region key) belongs to."""
        return self.jurisdiction((self.region(r) if isinstance(r, str) else r).jurisdiction)

    def regions_in(self, code: str) -> tuple[Region, ...]:
        """Every region of jurisdiction ``code``, in topology order."""
        self.jurisdiction(code)
        return tuple(r for r in self.regions if r.jurisdiction == code)

    # The residency rule

    def may_hold_data_of(self, data_jurisdiction: str | None, r: Region) -> bool:
        """Whether region ``r`` may process or store data governed by ``data_jurisdiction``.

        The one residency rule: data of a strict-residency jurisdiction stays in regions of that jurisdiction.
        ``None`` means data of no strict jurisdiction (unrestricted users), which any region may hold.
        """
        if data_jurisdiction is None:
            return True
        return not self.jurisdiction(data_jurisdiction).is_strict_residency or r.jurisdiction == data_jurisdiction

    # User areas

    def _strict_claimant(self, attribute: str, code: str) -> str | None:
        for j in self.jurisdictions:
            if j.is_strict_residency and code in getattr(j, attribute):
                return j.code
        return None

    def user_jurisdiction_of_continent(self, continent: str) -> str | None:
        """The strict jurisdiction protecting users on ``continent``, or None when they are unrestricted."""
        if continent not in CONTINENTS:
            raise TopologyError(f"unknown continent code {continent!r}; known: {', '.join(CONTINENTS)}")
        return self._strict_claimant("continents", continent)

    def user_jurisdiction_of_cloudflare_region(self, code: str) -> str | None:
        """The strict jurisdiction protecting users in Cloudflare region ``code``, or None."""
        if code not in CLOUDFLARE_REGIONS:
            raise TopologyError(f"unknown Cloudflare region {code!r}; known: {', '.join(CLOUDFLARE_REGIONS)}")
        return self._strict_claimant("cloudflare_regions", code)

    def user_jurisdiction_of_country(self, country: str) -> str | None:
        """The strict jurisdiction protecting users in ISO country ``country``, or None."""
        return self._strict_claimant("countries", country.upper())

    def _primary(self, attribute: str, code: str) -> Region:
        for r in self.regions:
            if code in getattr(r, attribute):
                return r
        return self.region(self.default_region)

    def primary_for_continent(self, continent: str) -> Region:
        """The region that serves users on ``continent`` first (the default region when none claims it)."""
        self.user_jurisdiction_of_continent(continent)
        return self._primary("continents", continent)

    def primary_for_cloudflare_region(self, code: str) -> Region:
        """The region whose pool serves Cloudflare region ``code`` first."""
        self.user_jurisdiction_of_cloudflare_region(code)
        return self._primary("cloudflare_regions", code)

    def primary_for_country(self, country: str) -> Region | None:
        """The region a country is pinned to regardless of its continent, or None when continent routing applies."""
        for r in self.regions:
            if country.upper() in r.countries:
                return r
        return None

    # Failover and replication

    def failover_chain(self, primary: Region, user_jurisdiction: str | None) -> tuple[Region, ...]:
        """Regions to try, in order, for users of ``user_jurisdiction`` whose primary is ``primary``.

        The chain never contains a region that may not hold those users' data, so EU users fail over only to EU
        regions even when the EU region's own failover list names others (those serve its unrestricted users).
        """
        if not self.may_hold_data_of(user_jurisdiction, primary):
            raise TopologyError(
                f"region {primary.key!r} ({primary.jurisdiction}) may not serve users of jurisdiction "
                f"{user_jurisdiction!r}"
            )
        candidates = (primary, *(self.region(k) for k in primary.failover))
        return tuple(r for r in candidates if self.may_hold_data_of(user_jurisdiction, r))

    def continent_chain(self, continent: str) -> tuple[Region, ...]:
        """The failover chain for Route 53 continent ``continent``."""
        return self.failover_chain(
            self.primary_for_continent(continent), self.user_jurisdiction_of_continent(continent)
        )

    def cloudflare_region_chain(self, code: str) -> tuple[Region, ...]:
        """The failover chain (pool order) for Cloudflare region ``code``."""
        return self.failover_chain(
            self.primary_for_cloudflare_region(code), self.user_jurisdiction_of_cloudflare_region(code)
        )

    def country_chain(self, country: str) -> tuple[Region, ...] | None:
        """The failover chain for a country that needs its own record, or None when continent routing suffices."""
        primary = self.primary_for_country(country)
        if primary is None:
            return None
        return self.failover_chain(primary, self.user_jurisdiction_of_country(country))

    def default_chain(self) -> tuple[Region, ...]:
        """The chain for users matched by nothing else (Route 53 ``*``): unrestricted users."""
        return self.failover_chain(self.region(self.default_region), None)

    def replication_targets(self, source: Region) -> tuple[Region, ...]:
        """Regions whose model stores receive the models published in ``source``'s store.

        Two stores replicate only when each region may hold the other's data: models published in a strict
        jurisdiction replicate only inside it, and a strict jurisdiction's stores receive replicas only from inside
        it too. So a strict store's key and bucket answer to identities of its own jurisdiction alone (no replication
        role from elsewhere ever needs them), and the strict jurisdiction publishes its own models.
        """
        return tuple(
            r
            for r in self.regions
            if r != source
            and self.may_hold_data_of(source.jurisdiction, r)
            and self.may_hold_data_of(r.jurisdiction, source)
        )

    # Validation

    def _validate(self) -> None:
        keys = list(self.keys)
        if not keys:
            raise TopologyError("a topology needs at least one region")
        if len(set(keys)) != len(keys):
            raise TopologyError(f"duplicate region keys in {keys}")
        codes = [j.code for j in self.jurisdictions]
        if len(set(codes)) != len(codes):
            raise TopologyError(f"duplicate jurisdiction codes in {codes}")
        aws_regions = [r.aws_region for r in self.regions]
        if len(set(aws_regions)) != len(aws_regions):
            raise TopologyError(f"two regions deploy to the same AWS region: {aws_regions}")
        if self.default_region not in keys:
            raise TopologyError(f"default region {self.default_region!r} is not a region; use one of {keys}")
        for r in self.regions:
            self.jurisdiction(r.jurisdiction)
            for k in r.failover:
                if k == r.key or k not in keys:
                    raise TopologyError(f"region {r.key!r} fails over to {k!r}; use other known regions: {keys}")
            for c in r.continents:
                if c not in CONTINENTS:
                    raise TopologyError(f"region {r.key!r} serves unknown continent {c!r}")
            for c in r.cloudflare_regions:
                if c not in CLOUDFLARE_REGIONS:
                    raise TopologyError(f"region {r.key!r} serves unknown Cloudflare region {c!r}")
            start, end = r.peak_hours
            if not 0 <= start < end <= 24:
                raise TopologyError(f"region {r.key!r} peak_hours {r.peak_hours} must satisfy 0 <= start < end <= 24")
        if self.jurisdiction_of(self.default_region).is_strict_residency:
            raise TopologyError(f"default region {self.default_region!r} serves unmatched users and must not be strict")
        for attribute, area_codes in (("continents", CONTINENTS), ("cloudflare_regions", CLOUDFLARE_REGIONS)):
            for code in area_codes:
                owners = [r.key for r in self.regions if code in getattr(r, attribute)]
                if len(owners) > 1:
                    raise TopologyError(f"{attribute} code {code!r} has several primaries: {owners}")
        for j in self.jurisdictions:
            if j.is_strict_residency and not self.regions_in(j.code):
                raise TopologyError(f"strict jurisdiction {j.code!r} has users but no region to serve them")
        # Every area a strict jurisdiction claims must have a primary inside that jurisdiction.
        for c in CONTINENTS:
            self.continent_chain(c)
        for c in CLOUDFLARE_REGIONS:
            self.cloudflare_region_chain(c)
        for j in self.jurisdictions:
            for country in j.outlying_countries:
                if self.country_chain(country) is None:
                    raise TopologyError(f"outlying country {country!r} of {j.code!r} is pinned to no region")

    # JSON form, for the serving container

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able form that :meth:`from_dict` turns back into an equal topology."""
        return {
            "regions": topology_json.entries_as_dicts(self.regions),
            "jurisdictions": topology_json.entries_as_dicts(self.jurisdictions),
            "default_region": self.default_region,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Topology:
        """The topology ``data`` describes (as :meth:`to_dict` writes it), checked field by field."""
        regions, jurisdictions, default_region = topology_json.parse(data)
        return cls(regions=regions, jurisdictions=jurisdictions, default_region=default_region)


def load(path: Path) -> Topology:
    """The topology in the JSON file ``path`` (as :meth:`Topology.to_dict` writes it)."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TopologyError(f"cannot read a topology from {str(path)!r}: {exc}") from exc
    try:
        return Topology.from_dict(data)
    except TopologyError as exc:
        raise TopologyError(f"{path}: {exc}") from None


DEFAULT_TOPOLOGY = Topology(
    regions=(
        Region(
            key="us-west",
            aws_region="us-west-2",
            jurisdiction="us",
            timezone="America/Los_Angeles",
            continents=("NA", "SA", "AN"),
            cloudflare_regions=("WNAM", "ENAM", "NSAM", "SSAM"),
            failover=("ap-northeast", "eu-west"),
        ),
        Region(
            key="eu-west",
            aws_region="eu-west-1",
            jurisdiction="eu",
            timezone="Europe/Dublin",
            continents=("EU", "AF"),
            cloudflare_regions=("WEU", "EEU", "NAF", "SAF", "ME"),
            failover=("us-west", "ap-northeast"),
            countries=EU_OUTLYING_COUNTRIES,
        ),
        Region(
            key="ap-northeast",
            aws_region="ap-northeast-1",
            jurisdiction="jp",
            timezone="Asia/Tokyo",
            continents=("AS", "OC"),
            cloudflare_regions=("NEAS", "SEAS", "SAS", "OC"),
            failover=("us-west", "eu-west"),
        ),
    ),
    jurisdictions=(
        EUROPEAN_UNION,
        Jurisdiction(code="us", name="United States", is_strict_residency=False),
        Jurisdiction(code="jp", name="Japan (APPI)", is_strict_residency=False),
    ),
    default_region="us-west",
)
