"""Regions, jurisdictions, the areas each region serves, and failover order.

This is the single source of truth for where speech traffic and data may go. DNS, the Cloudflare load balancer,
model-store replication, IAM and the serving container's bucket check all ask this module; none of them lists
regions or jurisdictions itself. It imports nothing from Pulumi so the serving container and plain tests use it.

Data-residency model:

* A *jurisdiction* is a legal area (``eu``, ``us``, ``jp``). A *strict-residency* jurisdiction's user audio and
  data may only be processed and stored by regions of that same jurisdiction.
* A jurisdiction claims *user areas*: Route 53 continent codes, Cloudflare region codes and ISO countries whose
  users it protects. Users of an unclaimed area are unrestricted (they may be served by any region).
* Every region names the areas it serves first and a preference-ordered failover list. The failover chain for an
  area is the primary region followed by that list, filtered so that it never leaves a strict jurisdiction.

Adding a region means adding a :class:`Region` to ``REGIONS`` (and a ``Pulumi.<key>.yaml``); every consumer
derives its records, pools, replication rules and policies from here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# Route 53 geolocation continent codes (the `continent` of a geolocation routing policy).
CONTINENTS: dict[str, str] = {
    "AF": "Africa",
    "AN": "Antarctica",
    "AS": "Asia",
    "EU": "Europe",
    "NA": "North America",
    "OC": "Oceania",
    "SA": "South America",
}

# Cloudflare load-balancer region codes (keys of `region_pools`).
CLOUDFLARE_REGIONS: dict[str, str] = {
    "WNAM": "Western North America",
    "ENAM": "Eastern North America",
    "WEU": "Western Europe",
    "EEU": "Eastern Europe",
    "NSAM": "Northern South America",
    "SSAM": "Southern South America",
    "OC": "Oceania",
    "ME": "Middle East",
    "NAF": "Northern Africa",
    "SAF": "Southern Africa",
    "SAS": "Southern Asia",
    "SEAS": "South East Asia",
    "NEAS": "North East Asia",
}

# EU member states plus the EEA states that apply the GDPR (ISO 3166-1 alpha-2).
EU_EEA_COUNTRIES: tuple[str, ...] = (
    "AT", "BE", "BG", "CY", "CZ", "DE", "DK", "EE", "ES", "FI", "FR", "GR", "HR", "HU", "IE", "IT", "LT", "LU",
    "LV", "MT", "NL", "PL", "PT", "RO", "SE", "SI", "SK", "IS", "LI", "NO",
)  # fmt: skip

# GDPR territories that geolocation databases place outside the European continent (Cyprus is listed under Asia
# by some databases; the French outermost regions sit in the Americas, Africa and the Indian Ocean). Their users
# get country-level records and pools so that continent routing never sends them outside the EU.
EU_OUTLYING_COUNTRIES: tuple[str, ...] = ("CY", "GF", "GP", "MF", "MQ", "RE", "YT")


@dataclass(frozen=True)
class Jurisdiction:
    """A legal area for user data, and the user areas whose residents it protects."""

    code: str
    name: str
    is_strict_residency: bool
    continents: tuple[str, ...] = ()
    cloudflare_regions: tuple[str, ...] = ()
    countries: tuple[str, ...] = ()
    outlying_countries: tuple[str, ...] = ()


@dataclass(frozen=True)
class Region:
    """One regional deployment: a stack, an AWS region, and the users it serves first."""

    key: str  # the stack name, e.g. "eu-west"
    aws_region: str
    jurisdiction: str
    timezone: str  # IANA zone of the region's users, for night scale-down
    continents: tuple[str, ...]  # Route 53 continents whose primary this region is
    cloudflare_regions: tuple[str, ...]  # Cloudflare region codes whose primary pool this region is
    failover: tuple[str, ...] = ()  # other region keys, most preferred first
    peak_hours: tuple[int, int] = (7, 23)  # local [start, end) hours at full GPU capacity
    countries: tuple[str, ...] = field(default=())  # countries routed here regardless of continent


JURISDICTIONS: dict[str, Jurisdiction] = {
    j.code: j
    for j in (
        Jurisdiction(
            code="eu",
            name="European Union / EEA (GDPR)",
            is_strict_residency=True,
            continents=("EU",),
            cloudflare_regions=("WEU", "EEU"),
            countries=EU_EEA_COUNTRIES + tuple(c for c in EU_OUTLYING_COUNTRIES if c not in EU_EEA_COUNTRIES),
            outlying_countries=EU_OUTLYING_COUNTRIES,
        ),
        Jurisdiction(code="us", name="United States", is_strict_residency=False),
        Jurisdiction(code="jp", name="Japan (APPI)", is_strict_residency=False),
    )
}

REGIONS: tuple[Region, ...] = (
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
)

# Users matched by no continent, country or Cloudflare region are sent here (Route 53 `*`, Cloudflare default).
DEFAULT_REGION = "us-west"


class TopologyError(ValueError):
    """The topology itself is inconsistent, or a lookup names something it does not contain."""


def region(key: str) -> Region:
    """The region whose stack is named ``key``."""
    for r in REGIONS:
        if r.key == key:
            return r
    raise TopologyError(f"unknown region {key!r}; known regions: {', '.join(r.key for r in REGIONS)}")


def region_for_aws(aws_region: str) -> Region:
    """The region deployed to the AWS region ``aws_region`` (e.g. ``eu-west-1``)."""
    for r in REGIONS:
        if r.aws_region == aws_region:
            return r
    known = ", ".join(r.aws_region for r in REGIONS)
    raise TopologyError(f"no region is deployed to AWS region {aws_region!r}; known: {known}")


def jurisdiction(code: str) -> Jurisdiction:
    try:
        return JURISDICTIONS[code]
    except KeyError:
        raise TopologyError(f"unknown jurisdiction {code!r}; known: {', '.join(JURISDICTIONS)}") from None


def jurisdiction_of(r: Region | str) -> Jurisdiction:
    """The jurisdiction a region (or a region key) belongs to."""
    return jurisdiction((region(r) if isinstance(r, str) else r).jurisdiction)


def regions_in(code: str) -> tuple[Region, ...]:
    """Every region of jurisdiction ``code``, in topology order."""
    jurisdiction(code)
    return tuple(r for r in REGIONS if r.jurisdiction == code)


def may_hold_data_of(data_jurisdiction: str | None, r: Region) -> bool:
    """Whether region ``r`` may process or store data governed by ``data_jurisdiction``.

    The one residency rule: data of a strict-residency jurisdiction stays in regions of that jurisdiction.
    ``None`` means data of no strict jurisdiction (unrestricted users), which any region may hold.
    """
    if data_jurisdiction is None:
        return True
    return not jurisdiction(data_jurisdiction).is_strict_residency or r.jurisdiction == data_jurisdiction


def _strict_claimant(attribute: str, code: str) -> str | None:
    for j in JURISDICTIONS.values():
        if j.is_strict_residency and code in getattr(j, attribute):
            return j.code
    return None


def user_jurisdiction_of_continent(continent: str) -> str | None:
    """The strict jurisdiction protecting users on ``continent``, or None when they are unrestricted."""
    if continent not in CONTINENTS:
        raise TopologyError(f"unknown continent code {continent!r}; known: {', '.join(CONTINENTS)}")
    return _strict_claimant("continents", continent)


def user_jurisdiction_of_cloudflare_region(code: str) -> str | None:
    """The strict jurisdiction protecting users in Cloudflare region ``code``, or None."""
    if code not in CLOUDFLARE_REGIONS:
        raise TopologyError(f"unknown Cloudflare region {code!r}; known: {', '.join(CLOUDFLARE_REGIONS)}")
    return _strict_claimant("cloudflare_regions", code)


def user_jurisdiction_of_country(country: str) -> str | None:
    """The strict jurisdiction protecting users in ISO country ``country``, or None."""
    return _strict_claimant("countries", country.upper())


def _primary(attribute: str, code: str) -> Region:
    for r in REGIONS:
        if code in getattr(r, attribute):
            return r
    return region(DEFAULT_REGION)


def primary_for_continent(continent: str) -> Region:
    """The region that serves users on ``continent`` first (the default region when none claims it)."""
    user_jurisdiction_of_continent(continent)
    return _primary("continents", continent)


def primary_for_cloudflare_region(code: str) -> Region:
    """The region whose pool serves Cloudflare region ``code`` first."""
    user_jurisdiction_of_cloudflare_region(code)
    return _primary("cloudflare_regions", code)


def primary_for_country(country: str) -> Region | None:
    """The region a country is pinned to regardless of its continent, or None when continent routing applies."""
    for r in REGIONS:
        if country.upper() in r.countries:
            return r
    return None


def failover_chain(primary: Region, user_jurisdiction: str | None) -> tuple[Region, ...]:
    """Regions to try, in order, for users of ``user_jurisdiction`` whose primary is ``primary``.

    The chain never contains a region that may not hold those users' data, so EU users fail over only to EU
    regions even when the EU region's own failover list names others (those serve its unrestricted users).
    """
    if not may_hold_data_of(user_jurisdiction, primary):
        raise TopologyError(
            f"region {primary.key!r} ({primary.jurisdiction}) may not serve users of jurisdiction {user_jurisdiction!r}"
        )
    candidates = (primary, *(region(k) for k in primary.failover))
    return tuple(r for r in candidates if may_hold_data_of(user_jurisdiction, r))


def continent_chain(continent: str) -> tuple[Region, ...]:
    """The failover chain for Route 53 continent ``continent``."""
    return failover_chain(primary_for_continent(continent), user_jurisdiction_of_continent(continent))


def cloudflare_region_chain(code: str) -> tuple[Region, ...]:
    """The failover chain (pool order) for Cloudflare region ``code``."""
    return failover_chain(primary_for_cloudflare_region(code), user_jurisdiction_of_cloudflare_region(code))


def country_chain(country: str) -> tuple[Region, ...] | None:
    """The failover chain for a country that needs its own record, or None when continent routing suffices."""
    primary = primary_for_country(country)
    if primary is None:
        return None
    return failover_chain(primary, user_jurisdiction_of_country(country))


def default_chain() -> tuple[Region, ...]:
    """The chain for users matched by nothing else (Route 53 ``*``): unrestricted users."""
    return failover_chain(region(DEFAULT_REGION), None)


def replication_targets(source: Region) -> tuple[Region, ...]:
    """Regions whose model stores receive models published in ``source``'s jurisdiction.

    Models published in a strict jurisdiction replicate only inside it; nothing replicates from a strict
    jurisdiction's store to a region outside it.
    """
    return tuple(r for r in REGIONS if r != source and may_hold_data_of(source.jurisdiction, r))


def validate() -> None:
    """Check the topology's own consistency; raised at import so a bad edit fails before any consumer runs."""
    keys = [r.key for r in REGIONS]
    if len(set(keys)) != len(keys):
        raise TopologyError(f"duplicate region keys in {keys}")
    aws_regions = [r.aws_region for r in REGIONS]
    if len(set(aws_regions)) != len(aws_regions):
        raise TopologyError(f"two regions deploy to the same AWS region: {aws_regions}")
    if DEFAULT_REGION not in keys:
        raise TopologyError(f"DEFAULT_REGION {DEFAULT_REGION!r} is not a region")
    if jurisdiction_of(DEFAULT_REGION).is_strict_residency:
        raise TopologyError(f"DEFAULT_REGION {DEFAULT_REGION!r} serves unmatched users and must not be strict")
    for r in REGIONS:
        jurisdiction(r.jurisdiction)
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
    for attribute, codes in (("continents", CONTINENTS), ("cloudflare_regions", CLOUDFLARE_REGIONS)):
        for code in codes:
            owners = [r.key for r in REGIONS if code in getattr(r, attribute)]
            if len(owners) > 1:
                raise TopologyError(f"{attribute} code {code!r} has several primaries: {owners}")
    for j in JURISDICTIONS.values():
        if j.is_strict_residency and not regions_in(j.code):
            raise TopologyError(f"strict jurisdiction {j.code!r} has users but no region to serve them")
    # Every area a strict jurisdiction claims must have a primary inside that jurisdiction.
    for c in CONTINENTS:
        continent_chain(c)
    for c in CLOUDFLARE_REGIONS:
        cloudflare_region_chain(c)
    for j in JURISDICTIONS.values():
        for country in j.outlying_countries:
            if country_chain(country) is None:
                raise TopologyError(f"outlying country {country!r} of {j.code!r} is pinned to no region")


validate()
