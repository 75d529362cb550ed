"""Cloudflare load balancer on its own hostname: geo steering over the regional pools, with residency rules.

The pools and their monitors belong to the regional stacks (`infra/ingress.py`); this component only orders their
ids per area, as `infra/routing.py` (and so the topology) says.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import pulumi
import pulumi_cloudflare as cloudflare

from contract.topology import Region, Topology
from infra import routing

# A client keeps its region for reconnects during a long session (a meeting transcribed over several WebSocket
# connections), yet returns to its nearest region within two hours of a failover.
SESSION_AFFINITY_TTL_S = 2 * 60 * 60
# When a region is drained (its origin disabled), sessions already pinned to it keep going this long.
DRAIN_DURATION_S = 600


@dataclass(frozen=True)
class GeoLoadBalancerArgs:
    topology: Topology
    zone_id: str
    hostname: str  # the load-balanced name users call
    pool_ids: Mapping[str, pulumi.Input[str]]  # by region key: every region of the topology


def residency_rule_condition(code: str) -> str:
    """The rule expression matching requests whose Cloudflare data center is in region ``code``."""
    return f'cf.load_balancer.region == "{code}"'


class GeoLoadBalancer(pulumi.ComponentResource):
    """A proxied, geo-steered load balancer in which users of a strict jurisdiction reach only its pools.

    * `region_pools` for every Cloudflare region code and `country_pools` for every pinned country list pools in
      the topology's failover order; the lists of strict areas hold only pools of their jurisdiction.
    * `default_pools` is the default chain; the `fallback_pool` (used when every pool of a request's list is
      down) is `routing.fallback_region()`, which may hold every user's data when one jurisdiction is strict.
    * Two Cloudflare behaviours could still carry a request handled in a strict region code elsewhere, and one
      rule per strict region code (matched on `cf.load_balancer.region`) overrides both. Once the code's list is
      exhausted Cloudflare answers from the default or fallback pools, so the rule sets both to the code's own
      chain. A session-affinity cookie outranks geo steering (a cookie picked up on a trip to the US would pin the
      traveller to the US region), so the rule turns affinity off for that code.
    * Session affinity (cookie, `SESSION_AFFINITY_TTL_S`) keeps reconnecting clients on the region that serves
      them; a WebSocket stream itself is one connection and never moves while it is open.

    What remains a risk: users of a pinned country whose request is handled by a data center of a region code
    outside their jurisdiction (e.g. Réunion served from Johannesburg, `SAF`) match no residency rule. Their
    `country_pools` hold only their jurisdiction's pools, but if all of those are down they get the fallback pool,
    and an affinity cookie they picked up elsewhere still applies. With a single EU region that happens exactly
    when eu-west is down; a second EU region in the topology puts a second EU pool into every EU list and makes it
    a two-region outage.
    """

    load_balancer_id: pulumi.Output[str]
    hostname: pulumi.Output[str]
    region_pools: pulumi.Output[dict[str, list[str]]]
    country_pools: pulumi.Output[dict[str, list[str]]]

    def __init__(self, name: str, args: GeoLoadBalancerArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("speech:infra:GeoLoadBalancer", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        region_areas = routing.cloudflare_region_areas(args.topology)
        country_areas = routing.cloudflare_country_areas(args.topology)
        default_chain = args.topology.default_chain()
        fallback = routing.fallback_region(args.topology)
        needed = (
            {r.key for a in region_areas + country_areas for r in a.chain}
            | {r.key for r in default_chain}
            | {fallback.key}
        )
        missing = sorted(needed - set(args.pool_ids))
        if missing:
            raise pulumi.RunError(
                f"GeoLoadBalancer needs the Cloudflare pool of {', '.join(missing)}; read every regional stack"
            )

        def pools(chain: tuple[Region, ...]) -> list[pulumi.Input[str]]:
            return [args.pool_ids[r.key] for r in chain]

        rules = [
            cloudflare.LoadBalancerRuleArgs(
                name=f"residency-{area.code}",
                condition=residency_rule_condition(area.code),
                priority=priority,
                terminates=True,
                overrides=cloudflare.LoadBalancerRuleOverridesArgs(
                    default_pools=pools(area.chain),
                    fallback_pool=args.pool_ids[area.primary.key],
                    session_affinity="none",
                ),
            )
            for priority, area in enumerate(a for a in region_areas if a.is_strict)
        ]

        load_balancer = cloudflare.LoadBalancer(
            f"{name}-lb",
            zone_id=args.zone_id,
            name=args.hostname,
            description="speech: nearest healthy region; strict-residency users stay in their jurisdiction",
            proxied=True,
            steering_policy="geo",
            region_pools={a.code: pools(a.chain) for a in region_areas},
            country_pools={a.code: pools(a.chain) for a in country_areas},
            default_pools=pools(default_chain),
            fallback_pool=args.pool_ids[fallback.key],
            rules=rules,
            session_affinity="cookie",
            session_affinity_ttl=SESSION_AFFINITY_TTL_S,
            session_affinity_attributes=cloudflare.LoadBalancerSessionAffinityAttributesArgs(
                secure="Always",
                samesite="Lax",
                drain_duration=DRAIN_DURATION_S,
                # Pools hold one origin each, so there is no other origin in the pool to fail over to mid-request;
                # failover between regions is the monitors' job, on the next connection.
                zero_downtime_failover="none",
            ),
            opts=child,
        )

        self.load_balancer_id = load_balancer.id
        self.hostname = pulumi.Output.from_input(args.hostname)
        self.region_pools = pulumi.Output.from_input({a.code: [r.key for r in a.chain] for a in region_areas})
        self.country_pools = pulumi.Output.from_input({a.code: [r.key for r in a.chain] for a in country_areas})
        self.register_outputs(
            {
                "load_balancer_id": self.load_balancer_id,
                "hostname": self.hostname,
                "region_pools": self.region_pools,
                "country_pools": self.country_pools,
            }
        )
