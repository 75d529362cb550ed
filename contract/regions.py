"""The entries a topology is built of: jurisdictions, regions, and the user areas they name.

Route 53 continent codes, Cloudflare region codes and the EU/EEA country lists are fixed tables; a `Region` names
the areas it serves first, a `Jurisdiction` the areas whose users it protects. `contract.topology` re-exports
everything here, so consumers import from there.
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


class TopologyError(ValueError):
    """The topology itself is inconsistent, or a lookup names something it does not contain."""


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


# The GDPR jurisdiction, with every area whose users it protects; a platform team reuses it as it is.
EUROPEAN_UNION = Jurisdiction(
    code="eu",
    name="European Union / EEA (GDPR)",
    is_strict_residency=True,
    continents=("EU",),
    cloudflare_regions=("WEU", "EEU"),
    countries=EU_EEA_COUNTRIES + tuple(c for c in EU_OUTLYING_COUNTRIES if c not in EU_EEA_COUNTRIES),
    outlying_countries=EU_OUTLYING_COUNTRIES,
)
