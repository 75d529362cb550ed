"""Which regions a caller may use, in which order: the topology's failover chain for the caller's area.

The chain comes from :mod:`contract.topology`, the value the DNS records and the Cloudflare pools are generated from,
so the client fails over exactly as the global routing does. The residency rule is enforced here again, in the client:
a caller bound to a strict jurisdiction (an EU user, or a tenant whose key belongs to the EU) gets a chain of that
jurisdiction's regions only, the chain is checked region by region before any request, and an answer from a region
outside it (which a wrong endpoint map would cause) is refused rather than returned.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from contract.service import regional_hostname
from contract.topology import Region, Topology, TopologyError
from speech_client.errors import ConfigurationError, ResidencyError


@dataclass(frozen=True)
class Caller:
    """Where the caller is, and whose data it sends.

    ``continent`` is a Route 53 continent code (``EU``, ``NA``...), ``country`` an ISO 3166 code (a country the
    topology pins to a region, such as ``CY``, takes precedence over the continent), ``jurisdiction`` the tenant's
    home jurisdiction when its data must stay there wherever the caller happens to be (``eu``). With none of them
    the caller is routed like Route 53's ``*`` record: the default region's chain.
    """

    continent: str | None = None
    country: str | None = None
    jurisdiction: str | None = None


def bound_jurisdiction(topology: Topology, caller: Caller) -> str | None:
    """The strict jurisdiction the caller's data is bound to, or None for an unrestricted caller."""
    try:
        bound = {
            code
            for code in (
                topology.user_jurisdiction_of_continent(caller.continent) if caller.continent else None,
                topology.user_jurisdiction_of_country(caller.country) if caller.country else None,
                caller.jurisdiction if caller.jurisdiction and topology.jurisdiction(caller.jurisdiction) else None,
            )
            if code is not None and topology.jurisdiction(code).is_strict_residency
        }
    except TopologyError as exc:
        raise ConfigurationError(f"caller {caller}: {exc}") from exc
    if len(bound) > 1:
        raise ConfigurationError(
            f"caller {caller} is bound to several strict jurisdictions ({', '.join(sorted(bound))}); no region may "
            "serve it"
        )
    return next(iter(bound), None)


def chain_for(topology: Topology, caller: Caller) -> tuple[Region, ...]:
    """The regions to try for ``caller``, most preferred first; checked to stay in its jurisdiction."""
    jurisdiction = bound_jurisdiction(topology, caller)
    pinned = topology.primary_for_country(caller.country) if caller.country else None
    if pinned is not None:
        primary = pinned
    elif caller.continent:
        primary = topology.primary_for_continent(caller.continent)
    else:
        primary = topology.region(topology.default_region)
    if not topology.may_hold_data_of(jurisdiction, primary):
        # A tenant bound elsewhere than where it calls from starts at its own jurisdiction's first region.
        primary = topology.regions_in(jurisdiction or "")[0]
    chain = topology.failover_chain(primary, jurisdiction)
    check_chain(topology, chain, jurisdiction)
    return chain


def check_chain(topology: Topology, chain: tuple[Region, ...], jurisdiction: str | None) -> None:
    """Refuse a chain that holds a region the caller's data may not reach."""
    outside = [r.key for r in chain if not topology.may_hold_data_of(jurisdiction, r)]
    if outside:
        raise ResidencyError(f"the chain for data of {jurisdiction} holds {', '.join(outside)}, outside it; refusing")
    if not chain:
        raise ResidencyError(f"no region may serve data of {jurisdiction}")


def check_served_by(topology: Topology, jurisdiction: str | None, sent_to: Region, answered: str | None) -> None:
    """Refuse an answer from a region the caller's data may not reach, as the server names itself.

    A caller bound to a strict jurisdiction needs the server to say where it runs; an unrestricted one does not.
    """
    if jurisdiction is None:
        return
    if answered is None:
        raise ResidencyError(
            f"the endpoint of {sent_to.key} did not name its region; data of {jurisdiction} is sent only to servers "
            "that prove where they run"
        )
    try:
        region = topology.region(answered)
    except TopologyError:
        region = None
    if region is None or not topology.may_hold_data_of(jurisdiction, region):
        raise ResidencyError(
            f"the endpoint configured for {sent_to.key} is served by {answered!r}, where data of {jurisdiction} may "
            "not go; check the client's endpoints"
        )


def endpoints_for(
    topology: Topology, chain: tuple[Region, ...], endpoints: Mapping[str, str] | None, domain: str | None
) -> dict[str, str]:
    """Base URL per region of the chain: ``endpoints`` as given, else ``https://<region key>.<domain>``."""
    if endpoints is not None:
        unknown = sorted(set(endpoints) - set(topology.keys))
        if unknown:
            raise ConfigurationError(f"endpoints for unknown regions {unknown}; the topology has {list(topology.keys)}")
        missing = [r.key for r in chain if r.key not in endpoints]
        if missing:
            raise ConfigurationError(
                f"no endpoint for {', '.join(missing)}, which the caller's chain "
                f"{' -> '.join(r.key for r in chain)} needs"
            )
        return {r.key: endpoints[r.key].rstrip("/") for r in chain}
    if domain is None:
        raise ConfigurationError("give endpoints (region key -> base URL) or the public domain (speech.example.com)")
    return {r.key: f"https://{regional_hostname(r.key, domain)}" for r in chain}
