"""The topology's residency rules, proven for every area it routes (plain asserts, no Pulumi)."""

from __future__ import annotations

import dataclasses

import pytest

from infra import topology

EU = "eu"


def all_area_chains() -> list[tuple[str, str | None, tuple[topology.Region, ...]]]:
    """(area, protecting jurisdiction, chain) for every continent, Cloudflare region and pinned country."""
    areas = [
        (f"continent {c}", topology.user_jurisdiction_of_continent(c), topology.continent_chain(c))
        for c in topology.CONTINENTS
    ]
    areas += [
        (f"cloudflare {c}", topology.user_jurisdiction_of_cloudflare_region(c), topology.cloudflare_region_chain(c))
        for c in topology.CLOUDFLARE_REGIONS
    ]
    for j in topology.JURISDICTIONS.values():
        for country in j.outlying_countries:
            areas.append(
                (f"country {country}", topology.user_jurisdiction_of_country(country), topology.country_chain(country))
            )
    return areas


@pytest.mark.parametrize(
    "area, jurisdiction, chain", all_area_chains(), ids=lambda v: v if isinstance(v, str) else None
)
def test_no_failover_chain_leaves_a_strict_jurisdiction(area, jurisdiction, chain):
    assert chain, f"{area} has no region"
    if jurisdiction is not None and topology.jurisdiction(jurisdiction).is_strict_residency:
        assert {r.jurisdiction for r in chain} == {jurisdiction}, f"{area} chain {[r.key for r in chain]}"


def test_european_users_fail_over_only_to_eu_regions():
    for chain in (
        topology.continent_chain("EU"),
        topology.cloudflare_region_chain("WEU"),
        topology.cloudflare_region_chain("EEU"),
    ):
        assert [r.jurisdiction for r in chain] == [EU] * len(chain)
    for country in topology.EU_OUTLYING_COUNTRIES:
        assert {r.jurisdiction for r in topology.country_chain(country)} == {EU}, country


def test_eu_regions_own_failover_list_still_serves_unrestricted_users_elsewhere():
    # eu-west's own list names non-EU regions: those back up its African users, who are not GDPR-protected.
    africa = topology.continent_chain("AF")
    assert africa[0].key == "eu-west"
    assert any(r.jurisdiction != EU for r in africa[1:])


def test_every_area_has_exactly_one_primary_and_a_chain_starting_there():
    for c in topology.CONTINENTS:
        assert topology.continent_chain(c)[0] == topology.primary_for_continent(c)
    for c in topology.CLOUDFLARE_REGIONS:
        assert topology.cloudflare_region_chain(c)[0] == topology.primary_for_cloudflare_region(c)


def test_chains_have_no_repeated_region():
    for area, _, chain in all_area_chains():
        assert len({r.key for r in chain}) == len(chain), area


def test_default_region_is_not_strict_so_unmatched_users_never_land_in_a_strict_region_first():
    assert not topology.jurisdiction_of(topology.DEFAULT_REGION).is_strict_residency
    assert topology.default_chain()[0].key == topology.DEFAULT_REGION


def test_eu_models_replicate_only_to_eu_stores():
    for source in topology.REGIONS:
        for target in topology.replication_targets(source):
            if topology.jurisdiction_of(source).is_strict_residency:
                assert target.jurisdiction == source.jurisdiction, f"{source.key} -> {target.key}"
    eu_west = topology.region("eu-west")
    assert all(t.jurisdiction == EU for t in topology.replication_targets(eu_west))


def test_may_hold_data_of_is_the_one_residency_rule():
    eu_west, us_west = topology.region("eu-west"), topology.region("us-west")
    assert topology.may_hold_data_of("eu", eu_west)
    assert not topology.may_hold_data_of("eu", us_west)
    assert topology.may_hold_data_of("us", eu_west)
    assert topology.may_hold_data_of(None, us_west)


def test_lookups_name_what_is_known_when_they_fail():
    with pytest.raises(topology.TopologyError, match="unknown region 'mars-1'.*us-west"):
        topology.region("mars-1")
    with pytest.raises(topology.TopologyError, match="no region is deployed to AWS region 'sa-east-1'"):
        topology.region_for_aws("sa-east-1")
    with pytest.raises(topology.TopologyError, match="unknown continent code 'XX'"):
        topology.continent_chain("XX")


def test_region_lookup_by_aws_region_round_trips():
    for r in topology.REGIONS:
        assert topology.region_for_aws(r.aws_region) is r
        assert topology.regions_in(r.jurisdiction)


def test_a_second_eu_region_joins_the_eu_chain_and_stays_out_of_nothing(monkeypatch):
    eu_central = topology.Region(
        key="eu-central", aws_region="eu-central-1", jurisdiction="eu", timezone="Europe/Berlin",
        continents=(), cloudflare_regions=(), failover=("eu-west",),
    )  # fmt: skip
    eu_west = dataclasses.replace(topology.region("eu-west"), failover=("eu-central", "us-west", "ap-northeast"))
    regions = tuple(eu_west if r.key == "eu-west" else r for r in topology.REGIONS) + (eu_central,)
    monkeypatch.setattr(topology, "REGIONS", regions)
    topology.validate()
    assert [r.key for r in topology.continent_chain("EU")] == ["eu-west", "eu-central"]
    assert [r.key for r in topology.continent_chain("AF")] == ["eu-west", "eu-central", "us-west", "ap-northeast"]
    assert [r.key for r in topology.replication_targets(eu_west)] == ["eu-central"]


@pytest.mark.parametrize(
    "change, message",
    [
        ({"failover": ("eu-west",)}, "fails over to 'eu-west'"),
        ({"failover": ("nowhere",)}, "fails over to 'nowhere'"),
        ({"continents": ("EU", "AF", "NA")}, "continents code 'NA' has several primaries"),
        ({"cloudflare_regions": ("WEU", "XXX")}, "unknown Cloudflare region 'XXX'"),
        ({"peak_hours": (22, 6)}, "peak_hours"),
    ],
)
def test_an_inconsistent_topology_is_refused(monkeypatch, change, message):
    eu_west = dataclasses.replace(topology.region("eu-west"), **change)
    monkeypatch.setattr(topology, "REGIONS", tuple(eu_west if r.key == "eu-west" else r for r in topology.REGIONS))
    with pytest.raises(topology.TopologyError, match=message):
        topology.validate()


def test_a_strict_area_whose_primary_is_outside_its_jurisdiction_is_refused(monkeypatch):
    us_west = dataclasses.replace(topology.region("us-west"), continents=("NA", "SA", "AN", "EU"))
    eu_west = dataclasses.replace(topology.region("eu-west"), continents=("AF",))
    regions = {"us-west": us_west, "eu-west": eu_west}
    monkeypatch.setattr(topology, "REGIONS", tuple(regions.get(r.key, r) for r in topology.REGIONS))
    with pytest.raises(topology.TopologyError, match="may not serve users of jurisdiction 'eu'"):
        topology.validate()
