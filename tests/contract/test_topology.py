"""The topology's residency rules, proven for every area it routes (plain asserts, no Pulumi)."""

from __future__ import annotations

import dataclasses
import json

import pytest

from contract.topology import (
    CLOUDFLARE_REGIONS,
    CONTINENTS,
    DEFAULT_TOPOLOGY,
    EU_OUTLYING_COUNTRIES,
    Region,
    Topology,
    TopologyError,
    load,
)

EU = "eu"
T = DEFAULT_TOPOLOGY


def all_area_chains(topology: Topology = T) -> list[tuple[str, str | None, tuple[Region, ...] | None]]:
    """(area, protecting jurisdiction, chain) for every continent, Cloudflare region and pinned country."""
    areas: list[tuple[str, str | None, tuple[Region, ...] | None]] = [
        (f"continent {c}", topology.user_jurisdiction_of_continent(c), topology.continent_chain(c)) for c in CONTINENTS
    ]
    areas += [
        (f"cloudflare {c}", topology.user_jurisdiction_of_cloudflare_region(c), topology.cloudflare_region_chain(c))
        for c in CLOUDFLARE_REGIONS
    ]
    for j in topology.jurisdictions:
        for country in j.outlying_countries:
            areas.append(
                (f"country {country}", topology.user_jurisdiction_of_country(country), topology.country_chain(country))
            )
    return areas


def with_regions(topology: Topology, changes: dict[str, dict]) -> Topology:
    """``topology`` with regions changed by key; constructing it runs every consistency check."""
    regions = tuple(dataclasses.replace(r, **changes.get(r.key, {})) for r in topology.regions)
    return dataclasses.replace(topology, regions=regions)


@pytest.mark.parametrize(
    "area, jurisdiction, chain", all_area_chains(), ids=lambda v: v if isinstance(v, str) else None
)
def test_no_failover_chain_leaves_a_strict_jurisdiction(area, jurisdiction, chain):
    assert chain, f"{area} has no region"
    if jurisdiction is not None and T.jurisdiction(jurisdiction).is_strict_residency:
        assert {r.jurisdiction for r in chain} == {jurisdiction}, f"{area} chain {[r.key for r in chain]}"


def test_european_users_fail_over_only_to_eu_regions():
    for chain in (T.continent_chain("EU"), T.cloudflare_region_chain("WEU"), T.cloudflare_region_chain("EEU")):
        assert [r.jurisdiction for r in chain] == [EU] * len(chain)
    for country in EU_OUTLYING_COUNTRIES:
        assert {r.jurisdiction for r in T.country_chain(country) or ()} == {EU}, country


def test_eu_regions_own_failover_list_still_serves_unrestricted_users_elsewhere():
    # eu-west's own list names non-EU regions: those back up its African users, who are not GDPR-protected.
    africa = T.continent_chain("AF")
    assert africa[0].key == "eu-west"
    assert any(r.jurisdiction != EU for r in africa[1:])


def test_every_area_has_exactly_one_primary_and_a_chain_starting_there():
    for c in CONTINENTS:
        assert T.continent_chain(c)[0] == T.primary_for_continent(c)
    for c in CLOUDFLARE_REGIONS:
        assert T.cloudflare_region_chain(c)[0] == T.primary_for_cloudflare_region(c)


def test_chains_have_no_repeated_region():
    for area, _, chain in all_area_chains():
        assert chain is not None
        assert len({r.key for r in chain}) == len(chain), area


def test_default_region_is_not_strict_so_unmatched_users_never_land_in_a_strict_region_first():
    assert not T.jurisdiction_of(T.default_region).is_strict_residency
    assert T.default_chain()[0].key == T.default_region


def test_eu_models_replicate_only_to_eu_stores_and_eu_stores_receive_only_eu_models():
    for source in T.regions:
        for target in T.replication_targets(source):
            if T.jurisdiction_of(source).is_strict_residency or T.jurisdiction_of(target).is_strict_residency:
                assert target.jurisdiction == source.jurisdiction, f"{source.key} -> {target.key}"
    assert T.replication_targets(T.region("eu-west")) == ()
    assert [r.key for r in T.replication_targets(T.region("us-west"))] == ["ap-northeast"]


def test_may_hold_data_of_is_the_one_residency_rule():
    eu_west, us_west = T.region("eu-west"), T.region("us-west")
    assert T.may_hold_data_of("eu", eu_west)
    assert not T.may_hold_data_of("eu", us_west)
    assert T.may_hold_data_of("us", eu_west)
    assert T.may_hold_data_of(None, us_west)


def test_lookups_name_what_is_known_when_they_fail():
    with pytest.raises(TopologyError, match=r"unknown region 'mars-1'.*us-west"):
        T.region("mars-1")
    with pytest.raises(TopologyError, match="no region is deployed to AWS region 'sa-east-1'"):
        T.region_for_aws("sa-east-1")
    with pytest.raises(TopologyError, match="unknown continent code 'XX'"):
        T.continent_chain("XX")


def test_region_lookup_by_aws_region_round_trips():
    for r in T.regions:
        assert T.region_for_aws(r.aws_region) is r
        assert T.regions_in(r.jurisdiction)


def test_a_second_eu_region_joins_the_eu_chain_and_stays_out_of_nothing():
    eu_central = Region(
        key="eu-central", aws_region="eu-central-1", jurisdiction="eu", timezone="Europe/Berlin",
        continents=(), cloudflare_regions=(), failover=("eu-west",),
    )  # fmt: skip
    eu_west = dataclasses.replace(T.region("eu-west"), failover=("eu-central", "us-west", "ap-northeast"))
    regions = tuple(eu_west if r.key == "eu-west" else r for r in T.regions)
    four = dataclasses.replace(T, regions=(*regions, eu_central))
    assert [r.key for r in four.continent_chain("EU")] == ["eu-west", "eu-central"]
    assert [r.key for r in four.continent_chain("AF")] == ["eu-west", "eu-central", "us-west", "ap-northeast"]
    assert [r.key for r in four.replication_targets(four.region("eu-west"))] == ["eu-central"]
    assert [r.key for r in T.continent_chain("EU")] == ["eu-west"], "the default topology is a value, unchanged"


@pytest.mark.parametrize(
    "change, message",
    [
        ({"failover": ("eu-west",)}, "fails over to 'eu-west'"),
        ({"failover": ("nowhere",)}, "fails over to 'nowhere'"),
        ({"continents": ("EU", "AF", "NA")}, "continents code 'NA' has several primaries"),
        ({"cloudflare_regions": ("WEU", "XXX")}, "unknown Cloudflare region 'XXX'"),
        ({"peak_hours": (22, 6)}, "peak_hours"),
        ({"jurisdiction": "fr"}, "unknown jurisdiction 'fr'"),
        ({"aws_region": "us-west-2"}, "two regions deploy to the same AWS region"),
    ],
)
def test_an_inconsistent_topology_is_refused(change, message):
    with pytest.raises(TopologyError, match=message):
        with_regions(T, {"eu-west": change})


def test_a_strict_area_whose_primary_is_outside_its_jurisdiction_is_refused():
    with pytest.raises(TopologyError, match="may not serve users of jurisdiction 'eu'"):
        with_regions(T, {"us-west": {"continents": ("NA", "SA", "AN", "EU")}, "eu-west": {"continents": ("AF",)}})


def test_a_strict_default_region_is_refused():
    with pytest.raises(TopologyError, match="default region 'eu-west' serves unmatched users and must not be strict"):
        dataclasses.replace(T, default_region="eu-west")


def test_the_json_form_round_trips_to_an_equal_topology(tmp_path):
    path = tmp_path / "topology.json"
    path.write_text(json.dumps(T.to_dict()))
    assert load(path) == T
    assert Topology.from_dict(json.loads(path.read_text())) == T


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda d: d.pop("default_region"), "topology is missing default_region"),
        (lambda d: d.update(zones=[]), "topology has unknown keys \\['zones'\\]"),
        (lambda d: d["regions"][0].update(failover="eu-west"),
         r"topology.regions\[0\].failover must be a list of strings"),
        (lambda d: d["regions"][1].update(peak_hours=[7]), r"regions\[1\].peak_hours must be two whole hours"),
        (lambda d: d["regions"][0].pop("aws_region"), r"topology.regions\[0\] is missing aws_region"),
        (lambda d: d["jurisdictions"][0].update(is_strict_residency="yes"),
         "is_strict_residency must be true or false"),
        (lambda d: d["regions"][1].update(jurisdiction="us"), "strict jurisdiction 'eu' has users but no region"),
    ],
)  # fmt: skip
def test_a_bad_topology_file_names_the_file_the_field_and_what_is_accepted(tmp_path, edit, message):
    data = T.to_dict()
    edit(data)
    path = tmp_path / "topology.json"
    path.write_text(json.dumps(data))
    with pytest.raises(TopologyError, match=message) as caught:
        load(path)
    assert str(path) in str(caught.value)


def test_an_unreadable_topology_file_is_refused_with_its_path(tmp_path):
    path = tmp_path / "topology.json"
    path.write_text("{not json")
    with pytest.raises(TopologyError, match=f"cannot read a topology from '{path}'"):
        load(path)
