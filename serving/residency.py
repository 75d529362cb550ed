"""Tenant residency: a replica refuses a tenant whose home jurisdiction may not be served here, before any audio.

Routing already sends EU users to EU regions, but routing alone cannot promise it: a resolver outside the EU without
client-subnet data sends an EU user to the ``*`` record, and Cloudflare steers by the data centre that took the
request. An API key can therefore carry its tenant's home jurisdiction (``<sha256> jurisdiction=eu`` in the keys
file), and this replica asks the topology's one residency rule (`Topology.may_hold_data_of`) whether it may process
that tenant's data. If not, the request is answered with where to go instead: every region of the tenant's
jurisdiction, as ``https://<region key>.<public domain>`` (`contract.service.regional_hostname`), the hostnames
that reach exactly one region whatever the client's location.
"""

from __future__ import annotations

from dataclasses import dataclass

from contract.service import ENV_PUBLIC_DOMAIN, ENV_REGION, regional_hostname
from contract.topology import Region, Topology, TopologyError
from serving.settings import ConfigError, Settings

MISDIRECTED = 421  # RFC 9110: the request reached a server that will not produce a response for it


@dataclass(frozen=True)
class Misdirected:
    """Why a tenant was refused here, and where its data may be processed."""

    jurisdiction: str
    region: str  # this replica's region key
    endpoints: tuple[str, ...]  # the tenant's regional endpoints, preferred first

    @property
    def detail(self) -> str:
        return (
            f"this key's data must stay in jurisdiction {self.jurisdiction}, and this replica ({self.region}) is "
            f"outside it; send the request to {self.endpoints[0]}"
        )

    @property
    def reason(self) -> str:
        """A WebSocket close reason: it must fit in 123 bytes, so it names the endpoint and little else."""
        return f"data of {self.jurisdiction} stays there; use {self.endpoints[0]}"

    def body(self) -> dict[str, object]:
        return {
            "detail": self.detail,
            "jurisdiction": self.jurisdiction,
            "endpoint": self.endpoints[0],
            "endpoints": list(self.endpoints),
        }


class ResidencyGuard:
    """Decides, per tenant jurisdiction, whether this replica may serve it; a local run (no region) serves all."""

    def __init__(self, topology: Topology, region: Region | None, public_domain: str | None) -> None:
        self._topology = topology
        self._region = region
        self._domain = public_domain

    @classmethod
    def from_settings(cls, settings: Settings, key_jurisdictions: set[str]) -> ResidencyGuard:
        """The guard for ``settings``; every jurisdiction a key names must be the topology's, and a deployed replica
        needs the public domain to tell a refused tenant where to go."""
        topology = settings.topology
        for code in sorted(key_jurisdictions):
            try:
                topology.jurisdiction(code)
            except TopologyError as exc:
                raise ConfigError(
                    f"an API key's jurisdiction={code}: {exc} (SPEECH_AUTH__API_KEY_HASHES[_FILE])"
                ) from None
        region = topology.region_for_aws(settings.region) if settings.region else None
        if region is not None and key_jurisdictions and settings.public_domain is None:
            raise ConfigError(
                f"API keys carry home jurisdictions ({', '.join(sorted(key_jurisdictions))}) and {ENV_REGION} is set, "
                f"so a refused tenant must be told its regional endpoint: set {ENV_PUBLIC_DOMAIN} (e.g. "
                "speech.example.com)"
            )
        return cls(topology, region, settings.public_domain)

    def refusal(self, jurisdiction: str | None) -> Misdirected | None:
        """Why a tenant of ``jurisdiction`` may not be served here, or None when it may (or has no home)."""
        if jurisdiction is None or self._region is None:
            return None
        if self._topology.may_hold_data_of(jurisdiction, self._region):
            return None
        homes = self._topology.regions_in(jurisdiction)
        domain = self._domain
        endpoints = tuple(f"https://{regional_hostname(r.key, domain)}" if domain else r.key for r in homes)
        return Misdirected(jurisdiction, self._region.key, endpoints)
