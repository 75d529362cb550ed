"""The Cloudflare load balancer of the global stack: geo steering, residency rules, session affinity."""

from __future__ import annotations

import pytest

from contract.topology import CLOUDFLARE_REGIONS, DEFAULT_TOPOLOGY, EU_OUTLYING_COUNTRIES
from infra import offline, routing
from infra.cloudflare import residency_rule_condition
from tests.conftest import REGIONAL_STACKS

LOAD_BALANCER = "cloudflare:index/loadBalancer:LoadBalancer"


@pytest.fixture(scope="module")
def balancer(program) -> offline.Registration:
    (lb,) = program("global").of_type(LOAD_BALANCER)
    return lb


@pytest.fixture(scope="module")
def pool_region(program) -> dict[str, str]:
    """Cloudflare pool id -> the region whose stack owns the pool."""
    return {program(s).exports["cloudflarePoolId"]: s for s in REGIONAL_STACKS}


def _regions(pool_ids: list[str], pool_region: dict[str, str]) -> list[str]:
    return [pool_region[p] for p in pool_ids]


def test_load_balancer_is_proxied_and_geo_steered_on_its_own_name(balancer, program):
    assert balancer.inputs["steeringPolicy"] == "geo"
    assert balancer.inputs["proxied"] is True
    # Route 53 answers for the domain; the load balancer has its own name in the Cloudflare zone.
    assert balancer.inputs["name"] == program("global").exports["cloudflareHostname"]
    assert balancer.inputs["name"] != program("global").exports["domain"]


def test_every_cloudflare_region_code_has_its_topology_pool_order(balancer, pool_region):
    region_pools = balancer.inputs["regionPools"]
    assert sorted(region_pools) == sorted(CLOUDFLARE_REGIONS)
    for code in CLOUDFLARE_REGIONS:
        assert _regions(region_pools[code], pool_region) == [
            r.key for r in DEFAULT_TOPOLOGY.cloudflare_region_chain(code)
        ], code


def test_every_pinned_country_overrides_its_region_with_its_own_chain(balancer, pool_region):
    country_pools = balancer.inputs["countryPools"]
    assert sorted(country_pools) == sorted(a.code for a in routing.cloudflare_country_areas(DEFAULT_TOPOLOGY))
    assert set(EU_OUTLYING_COUNTRIES) <= set(country_pools)
    for area in routing.cloudflare_country_areas(DEFAULT_TOPOLOGY):
        assert _regions(country_pools[area.code], pool_region) == [r.key for r in area.chain], area.code


def test_default_pools_are_the_default_chain(balancer, pool_region):
    assert _regions(balancer.inputs["defaultPools"], pool_region) == [r.key for r in DEFAULT_TOPOLOGY.default_chain()]


@pytest.mark.parametrize(
    "code", [c for c in CLOUDFLARE_REGIONS if DEFAULT_TOPOLOGY.user_jurisdiction_of_cloudflare_region(c)]
)
def test_strict_region_codes_reach_only_pools_of_their_jurisdiction(balancer, pool_region, code):
    """Every list a request from this code can end up using: its region pools, then the rule's defaults and fallback."""
    jurisdiction = DEFAULT_TOPOLOGY.user_jurisdiction_of_cloudflare_region(code)
    (rule,) = [r for r in balancer.inputs["rules"] if r["condition"] == residency_rule_condition(code)]
    overrides = rule["overrides"]
    reachable = [*balancer.inputs["regionPools"][code], *overrides["defaultPools"], overrides["fallbackPool"]]
    assert {DEFAULT_TOPOLOGY.region(k).jurisdiction for k in _regions(reachable, pool_region)} == {jurisdiction}
    # An affinity cookie picked up outside the jurisdiction would outrank geo steering.
    assert overrides["sessionAffinity"] == "none"
    assert rule["terminates"] is True


def test_eu_region_codes_and_countries_map_only_to_eu_pools(balancer, pool_region):
    eu = {r.key for r in DEFAULT_TOPOLOGY.regions_in("eu")}
    for code in ("WEU", "EEU"):
        assert set(_regions(balancer.inputs["regionPools"][code], pool_region)) <= eu, code
    for country in EU_OUTLYING_COUNTRIES:
        assert set(_regions(balancer.inputs["countryPools"][country], pool_region)) <= eu, country


def test_only_strict_region_codes_have_residency_rules(balancer):
    strict = [c for c in CLOUDFLARE_REGIONS if DEFAULT_TOPOLOGY.user_jurisdiction_of_cloudflare_region(c)]
    assert [r["condition"] for r in balancer.inputs["rules"]] == [residency_rule_condition(c) for c in strict]
    assert len({r["priority"] for r in balancer.inputs["rules"]}) == len(strict)


def test_fallback_pool_may_hold_every_users_data_when_one_jurisdiction_is_strict(balancer, pool_region):
    fallback = DEFAULT_TOPOLOGY.region(pool_region[balancer.inputs["fallbackPool"]])
    assert fallback == routing.fallback_region(DEFAULT_TOPOLOGY)
    strict = [j.code for j in DEFAULT_TOPOLOGY.jurisdictions if j.is_strict_residency]
    if len(strict) == 1:
        assert DEFAULT_TOPOLOGY.may_hold_data_of(strict[0], fallback)


def test_session_affinity_keeps_reconnecting_clients_on_their_region(balancer):
    assert balancer.inputs["sessionAffinity"] == "cookie"
    assert 1800 <= balancer.inputs["sessionAffinityTtl"] <= 604800  # Cloudflare's accepted range for cookies
    attributes = balancer.inputs["sessionAffinityAttributes"]
    assert attributes["secure"] == "Always"
    assert attributes["drainDuration"] > 0


def test_without_cloudflare_config_the_global_stack_creates_no_load_balancer(program):
    raw = {k: v for k, v in offline.stack_config("global").items() if k != "speech:cloudflare"}
    # The regional stacks as deployed (their own stack files), read through the global stack's StackReferences.
    references = {f"{raw['speech:stackPrefix']}/{s}": program(s).exports for s in REGIONAL_STACKS}
    graph = offline.run("global", DEFAULT_TOPOLOGY, config=raw, stack_outputs=references)
    assert not graph.of_type(LOAD_BALANCER)
    assert "cloudflareLoadBalancerId" not in graph.exports
    assert graph.exports["routing"]
