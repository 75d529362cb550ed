"""Route 53 geolocation and failover records of the global stack, walked as Route 53 would answer them."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import pytest

from contract.topology import CONTINENTS, DEFAULT_TOPOLOGY, EU_OUTLYING_COUNTRIES
from infra import offline, routing
from infra.dns import ChainLevel, chain_levels
from tests.conftest import REGIONAL_STACKS

RECORD = "aws:route53/record:Record"


@dataclass
class Zone:
    """The global stack's records by DNS name, plus which region each load balancer and health check belongs to."""

    domain: str
    records: dict[str, list[offline.Registration]]
    lb_region: dict[str, str]  # load balancer DNS name -> region key
    health_check_region: dict[str, str]  # health check id -> region key
    evaluate_override: dict[str, bool] = field(default_factory=dict)  # set identifier -> forced evaluateTargetHealth

    @classmethod
    def of(cls, graph: offline.Graph, regional: dict[str, offline.Graph]) -> Zone:
        records: dict[str, list[offline.Registration]] = {}
        for r in graph.of_type(RECORD):
            records.setdefault(r.inputs["name"], []).append(r)
        return cls(
            domain=graph.exports["domain"],
            records=records,
            lb_region={g.exports["loadBalancerDnsName"]: key for key, g in regional.items()},
            health_check_region={g.exports["healthCheckId"]: key for key, g in regional.items()},
        )

    def geolocation(self, identifier: str) -> offline.Registration:
        (record,) = [r for r in self.records[self.domain] if r.inputs["setIdentifier"] == identifier]
        return record

    def alias(self, record: offline.Registration) -> dict:
        (alias,) = record.inputs["aliases"]
        return alias

    def leaves(self, name: str) -> set[str]:
        """Every region any record under ``name`` can answer with."""
        regions: set[str] = set()
        for record in self.records[name]:
            target = self.alias(record)["name"]
            regions |= {self.lb_region[target]} if target in self.lb_region else self.leaves(target)
        return regions

    def order(self, name: str) -> list[str]:
        """The regions a failover chain answers with, in the order it tries them."""
        by_role = {r.inputs["failoverRoutingPolicies"][0]["type"]: r for r in self.records[name]}
        result = []
        for role in ("PRIMARY", "SECONDARY"):
            if role in by_role:
                target = self.alias(by_role[role])["name"]
                result += [self.lb_region[target]] if target in self.lb_region else self.order(target)
        return result

    # A small model of how Route 53 answers, to prove what happens when regions are down.

    def _record_healthy(self, record: offline.Registration, down: set[str]) -> bool:
        check = record.inputs.get("healthCheckId")
        if check is not None and self.health_check_region[check] in down:
            return False
        alias = self.alias(record)
        evaluate = self.evaluate_override.get(record.inputs["setIdentifier"], alias["evaluateTargetHealth"])
        if not evaluate:
            return True
        if alias["name"] in self.lb_region:
            return self.lb_region[alias["name"]] not in down
        return any(self._record_healthy(r, down) for r in self.records[alias["name"]])

    def _resolve(self, record: offline.Registration, down: set[str]) -> str:
        target = self.alias(record)["name"]
        return self.lb_region[target] if target in self.lb_region else self.answer_failover(target, down)

    def answer_failover(self, name: str, down: set[str]) -> str:
        by_role = {r.inputs["failoverRoutingPolicies"][0]["type"]: r for r in self.records[name]}
        for role in ("PRIMARY", "SECONDARY"):
            if role in by_role and self._record_healthy(by_role[role], down):
                return self._resolve(by_role[role], down)
        return self._resolve(by_role["PRIMARY"], down)  # all unhealthy: Route 53 treats them all as healthy

    def answer_user(self, candidates: list[str], down: set[str]) -> str:
        """Most specific matching geolocation record first; an unhealthy one hands over to the next one."""
        records = [self.geolocation(i) for i in candidates]
        for record in records:
            if self._record_healthy(record, down):
                return self._resolve(record, down)
        return self._resolve(records[-1], down)


@pytest.fixture(scope="module")
def zone(program) -> Zone:
    return Zone.of(program("global"), {s: program(s) for s in REGIONAL_STACKS})


def _identifier(area: routing.Area) -> str:
    return "default" if area.kind == "default" else f"{area.kind}-{area.code}"


def _strict_areas() -> list[routing.Area]:
    return [a for a in routing.route53_areas(DEFAULT_TOPOLOGY) if a.is_strict]


def test_every_continent_pinned_country_and_the_default_has_a_geolocation_record(zone):
    policies = [r.inputs["geolocationRoutingPolicies"][0] for r in zone.records[zone.domain]]
    assert sorted(p["continent"] for p in policies if "continent" in p) == sorted(CONTINENTS)
    countries = [p["country"] for p in policies if "country" in p]
    assert sorted(countries) == sorted(["*", *(a.code for a in routing.pinned_country_areas(DEFAULT_TOPOLOGY))])
    assert set(EU_OUTLYING_COUNTRIES) <= set(countries)


@pytest.mark.parametrize("area", routing.route53_areas(DEFAULT_TOPOLOGY), ids=_identifier)
def test_each_area_resolves_through_its_topology_chain_in_failover_order(zone, area):
    record = zone.geolocation(_identifier(area))
    assert record.inputs["type"] == "A"
    assert zone.order(zone.alias(record)["name"]) == [r.key for r in area.chain]


def test_every_answer_is_health_checked_and_every_other_record_aliases_a_chain(zone):
    for records in zone.records.values():
        for record in records:
            target = zone.alias(record)["name"]
            if target in zone.lb_region:
                region = zone.lb_region[target]
                assert zone.health_check_region[record.inputs["healthCheckId"]] == region, record.name
                assert zone.alias(record)["evaluateTargetHealth"] is True
            else:
                assert target in zone.records, f"{record.name} aliases {target}, which has no records"


def test_effective_ttl_is_at_most_60_seconds(zone, program):
    """Aliases carry no TTL of their own; every chain leaf aliases a load balancer, which AWS answers with 60 s."""
    graphs = [program("global"), *(program(s) for s in REGIONAL_STACKS)]
    assert all(r.inputs.get("ttl", 0) <= 60 for g in graphs for r in g.of_type(RECORD))
    leaf_targets = {zone.alias(r)["name"] for rs in zone.records.values() for r in rs}
    assert {t for t in leaf_targets if t not in zone.records} <= set(zone.lb_region)
    assert all(t.endswith(".amazonaws.com") for t in zone.lb_region)


@pytest.mark.parametrize("area", _strict_areas(), ids=_identifier)
def test_no_path_of_a_strict_area_reaches_a_region_outside_its_jurisdiction(zone, area):
    record = zone.geolocation(_identifier(area))
    reachable = zone.leaves(zone.alias(record)["name"])
    assert {DEFAULT_TOPOLOGY.region(k).jurisdiction for k in reachable} == {area.user_jurisdiction}, reachable


def test_european_records_are_among_the_strict_ones():
    assert {"continent-EU", *(f"country-{c}" for c in EU_OUTLYING_COUNTRIES)} <= {
        _identifier(a) for a in _strict_areas()
    }


def test_strict_geolocation_aliases_never_evaluate_target_health_and_the_others_do(zone):
    for area in routing.route53_areas(DEFAULT_TOPOLOGY):
        alias = zone.alias(zone.geolocation(_identifier(area)))
        assert alias["evaluateTargetHealth"] is (not area.is_strict), _identifier(area)


def _outages() -> list[set[str]]:
    keys = [r.key for r in DEFAULT_TOPOLOGY.regions]
    return [set(c) for n in range(len(keys) + 1) for c in itertools.combinations(keys, n)]


@pytest.mark.parametrize("down", _outages(), ids=lambda d: "+".join(sorted(d)) or "none")
def test_european_users_get_an_eu_region_whatever_is_down(zone, down):
    """Germany matches only the EU record; Cyprus its country record, then Asia (where some databases put it)."""
    for candidates in (["continent-EU", "default"], ["country-CY", "continent-AS", "default"]):
        answer = zone.answer_user(candidates, down)
        assert DEFAULT_TOPOLOGY.region(answer).jurisdiction == "eu", (candidates, down, answer)


@pytest.mark.parametrize("down", _outages(), ids=lambda d: "+".join(sorted(d)) or "none")
def test_unrestricted_users_get_a_healthy_region_whenever_one_is_up(zone, down):
    for area in routing.route53_areas(DEFAULT_TOPOLOGY):
        if area.is_strict:
            continue
        candidates = [_identifier(area), "default"] if area.kind != "default" else ["default"]
        answer = zone.answer_user(candidates, down)
        if len(down) < len(DEFAULT_TOPOLOGY.regions):
            assert answer not in down, (area.code, down, answer)


def test_evaluating_target_health_on_the_eu_record_would_leak_eu_users_to_the_default_region(zone):
    """The trap the strict records avoid: with target health on, a down EU chain hands EU users to ``*``."""
    leaky = Zone(zone.domain, zone.records, zone.lb_region, zone.health_check_region, {"continent-EU": True})
    answer = leaky.answer_user(["continent-EU", "default"], {r.key for r in DEFAULT_TOPOLOGY.regions_in("eu")})
    assert DEFAULT_TOPOLOGY.region(answer).jurisdiction != "eu"


def test_chains_sharing_a_tail_share_its_records():
    us, ap, eu = (DEFAULT_TOPOLOGY.region(k) for k in ("us-west", "ap-northeast", "eu-west"))
    levels = chain_levels([(us, ap, eu), (ap, eu), (eu,)])
    assert set(levels) == {"us-west.ap-northeast.eu-west", "ap-northeast.eu-west", "eu-west"}
    assert levels["us-west.ap-northeast.eu-west"] == ChainLevel((us, ap, eu), us, None, (ap, eu))
    assert levels["ap-northeast.eu-west"] == ChainLevel((ap, eu), ap, eu, None)
    assert levels["eu-west"] == ChainLevel((eu,), eu, None, None)


def test_no_two_records_share_a_name_and_set_identifier(zone):
    keys = [(name, r.inputs["setIdentifier"]) for name, rs in zone.records.items() for r in rs]
    assert len(keys) == len(set(keys))


def test_a_single_region_chain_is_one_health_checked_primary(zone):
    singles = {a.chain for a in routing.route53_areas(DEFAULT_TOPOLOGY) if len(a.chain) == 1}
    if not singles:
        pytest.skip("every chain of this topology has two regions or more")
    for (region,) in singles:
        (record,) = zone.records[f"{region.key}.chain.{zone.domain}"]
        assert record.inputs["failoverRoutingPolicies"] == [{"type": "PRIMARY"}]
        assert zone.health_check_region[record.inputs["healthCheckId"]] == region.key
