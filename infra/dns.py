"""Route 53 geolocation records at `<domain>`, each resolving through a health-checked failover chain.

Which areas exist and which regions each chain holds come from `infra/routing.py` (and so from the topology in
`GeoDnsArgs`); this module only turns those chains into record sets. It imports no Cloudflare code.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from contract.topology import Region, Topology
from infra import routing
from infra.endpoints import RegionalEndpoint


def chain_label(chain: tuple[Region, ...]) -> str:
    """A chain's name: its region keys in failover order, e.g. ``us-west.ap-northeast.eu-west``."""
    return ".".join(r.key for r in chain)


def chain_fqdn(chain: tuple[Region, ...], domain: str) -> str:
    return f"{chain_label(chain)}.chain.{domain}"


@dataclass(frozen=True)
class ChainLevel:
    """One failover record set: PRIMARY answers ``primary``; SECONDARY answers a region or the next level."""

    chain: tuple[Region, ...]  # the regions this level still tries, in order
    primary: Region
    secondary_region: Region | None  # the last region of the chain, answered directly
    secondary_chain: tuple[Region, ...] | None  # or the next level (two or more regions left)


def chain_levels(chains: list[tuple[Region, ...]]) -> dict[str, ChainLevel]:
    """The failover record sets that resolve ``chains``, keyed by label, each built once.

    A failover set has only two answers, so a chain of n regions is n - 1 nested sets: level i answers region i
    and fails over to level i + 1, and the last level fails over to the last region. A level is named by the
    regions it still tries, so chains that share a tail (and areas that share a chain) share its records.
    A single-region chain is one PRIMARY record with no SECONDARY.
    """
    levels: dict[str, ChainLevel] = {}
    for chain in chains:
        for i in range(max(len(chain) - 1, 1)):
            rest = chain[i:]
            if len(rest) == 1:
                level = ChainLevel(rest, rest[0], None, None)
            elif len(rest) == 2:
                level = ChainLevel(rest, rest[0], rest[1], None)
            else:
                level = ChainLevel(rest, rest[0], None, rest[1:])
            levels.setdefault(chain_label(rest), level)
    return levels


@dataclass(frozen=True)
class GeoDnsArgs:
    topology: Topology
    domain: str
    hosted_zone_id: pulumi.Input[str]
    endpoints: Mapping[str, RegionalEndpoint]  # by region key: every region of the topology


class GeoDns(pulumi.ComponentResource):
    """Geolocation routing for `<domain>`: each user lands on the nearest healthy region they may use.

    Every continent, every pinned country (`routing.pinned_country_areas`) and the default (``*``) get a
    geolocation record at `<domain>`, an alias to their area's failover chain. Chain leaves are aliases to a
    region's load balancer (effective TTL 60 s, set by AWS for load balancer aliases) carrying that region's
    Route 53 health check, so every answer users can receive is health-checked.

    Residency: Route 53 treats a geolocation record whose alias target is unhealthy as absent and answers from
    the next less specific record (country -> continent -> ``*``). With target health evaluated, an EU record whose
    whole EU chain is down would therefore hand EU users the default record, a US region. Geolocation records of
    strict-residency areas do not evaluate target health: they always answer with their own chain, and a chain
    whose every record is unhealthy still answers (Route 53 treats an all-unhealthy record set as all-healthy), so
    the answer is the chain's primary, in the jurisdiction. Unrestricted areas do evaluate target health and fall
    back to the default chain when their whole chain is down.
    """

    domain: pulumi.Output[str]
    routing: pulumi.Output[dict[str, list[str]]]

    def __init__(self, name: str, args: GeoDnsArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("speech:infra:GeoDns", name, None, opts)
        areas = routing.route53_areas(args.topology)
        missing = sorted({r.key for a in areas for r in a.chain} - set(args.endpoints))
        if missing:
            raise pulumi.RunError(
                f"GeoDns needs the regional endpoint of {', '.join(missing)}; read every regional stack"
            )

        # Shortest tails first: an alias to another record of the zone needs that record to exist.
        records: dict[str, aws.route53.Record] = {}
        for label, level in sorted(chain_levels([a.chain for a in areas]).items(), key=lambda item: len(item[1].chain)):
            records[label] = self._level(name, args, level, records)

        for area in areas:
            identifier = _identifier(area)
            policy = (
                aws.route53.RecordGeolocationRoutingPolicyArgs(continent=area.code)
                if area.kind == "continent"
                else aws.route53.RecordGeolocationRoutingPolicyArgs(country=area.code)
            )
            aws.route53.Record(
                f"{name}-geo-{identifier}",
                zone_id=args.hosted_zone_id,
                name=args.domain,
                type="A",
                set_identifier=identifier,
                geolocation_routing_policies=[policy],
                aliases=[
                    {
                        "name": chain_fqdn(area.chain, args.domain),
                        "zone_id": args.hosted_zone_id,
                        # Never for strict areas: an unhealthy target would send their users to a less specific record.
                        "evaluate_target_health": not area.is_strict,
                    }
                ],
                opts=pulumi.ResourceOptions(parent=self, depends_on=[records[chain_label(area.chain)]]),
            )

        self.domain = pulumi.Output.from_input(args.domain)
        self.routing = pulumi.Output.from_input({_identifier(a): [r.key for r in a.chain] for a in areas})
        self.register_outputs({"domain": self.domain, "routing": self.routing})

    def _level(
        self, name: str, args: GeoDnsArgs, level: ChainLevel, built: Mapping[str, aws.route53.Record]
    ) -> aws.route53.Record:
        """The PRIMARY (and SECONDARY) records of one chain level; returns the PRIMARY."""
        label = chain_label(level.chain)
        fqdn = chain_fqdn(level.chain, args.domain)
        primary = self._leaf(name, label, "PRIMARY", args, args.endpoints[level.primary.key])
        if level.secondary_region is not None:
            self._leaf(name, label, "SECONDARY", args, args.endpoints[level.secondary_region.key])
        elif level.secondary_chain is not None:
            aws.route53.Record(
                f"{name}-chain-{label}-secondary",
                zone_id=args.hosted_zone_id,
                name=fqdn,
                type="A",
                set_identifier=f"{label}-secondary",
                failover_routing_policies=[{"type": "SECONDARY"}],
                # Healthy while any region further down the chain is healthy.
                aliases=[
                    {
                        "name": chain_fqdn(level.secondary_chain, args.domain),
                        "zone_id": args.hosted_zone_id,
                        "evaluate_target_health": True,
                    }
                ],
                opts=pulumi.ResourceOptions(parent=self, depends_on=[built[chain_label(level.secondary_chain)]]),
            )
        return primary

    def _leaf(
        self, name: str, label: str, role: str, args: GeoDnsArgs, endpoint: RegionalEndpoint
    ) -> aws.route53.Record:
        """A failover record answering one region's load balancer, healthy only when its health check passes."""
        return aws.route53.Record(
            f"{name}-chain-{label}-{role.lower()}",
            zone_id=args.hosted_zone_id,
            name=f"{label}.chain.{args.domain}",
            type="A",
            set_identifier=f"{label}-{role.lower()}",
            failover_routing_policies=[{"type": role}],
            health_check_id=endpoint.health_check_id,
            # The health check tests the whole path (TLS, load balancer, pod readiness); target health adds the
            # load balancer's own view, so a region with no healthy target is skipped even between checks.
            aliases=[
                {
                    "name": endpoint.load_balancer_dns_name,
                    "zone_id": endpoint.load_balancer_zone_id,
                    "evaluate_target_health": True,
                }
            ],
            opts=pulumi.ResourceOptions(parent=self),
        )


def _identifier(area: routing.Area) -> str:
    """The geolocation record's set identifier, also its key in the ``routing`` output."""
    return "default" if area.kind == "default" else f"{area.kind}-{area.code}"
