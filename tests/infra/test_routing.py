"""The routing table (README), and that a new region reaches DNS and Cloudflare from the topology alone."""

from __future__ import annotations

import dataclasses

import pytest

from contract.topology import CLOUDFLARE_REGIONS, CONTINENTS, DEFAULT_TOPOLOGY, EU_OUTLYING_COUNTRIES, Region, Topology
from infra import offline, routing

README = offline.ROOT / "README.md"


def test_readme_shows_exactly_the_routing_table_the_topology_generates():
    assert routing.table_in(README.read_text()) == routing.render_markdown(DEFAULT_TOPOLOGY), (
        "README routing table is stale: run python -m infra.routing --write README.md"
    )


def test_routing_table_names_every_continent_cloudflare_region_and_pinned_country():
    table = routing.render_markdown(DEFAULT_TOPOLOGY)
    for code, name in [*CONTINENTS.items(), *CLOUDFLARE_REGIONS.items()]:
        assert f"| {code} ({name}) |" in table
    for area in routing.pinned_country_areas(DEFAULT_TOPOLOGY):
        assert f"| country {area.code} |" in table
    assert "| `*` (everyone else) |" in table


def test_strict_areas_are_marked_and_list_only_their_jurisdiction():
    for area in (
        routing.route53_areas(DEFAULT_TOPOLOGY)
        + routing.cloudflare_region_areas(DEFAULT_TOPOLOGY)
        + routing.cloudflare_country_areas(DEFAULT_TOPOLOGY)
    ):
        if area.is_strict:
            assert {r.jurisdiction for r in area.chain} == {area.user_jurisdiction}, area.code


def test_replace_table_rewrites_only_between_the_markers():
    text = f"intro\n{routing.TABLE_START}\nold\n{routing.TABLE_END}\noutro\n"
    replaced = routing.replace_table(text, "new")
    assert replaced == f"intro\n{routing.TABLE_START}\nnew\n{routing.TABLE_END}\noutro\n"
    assert routing.table_in(replaced) == "new"


def test_a_file_without_markers_is_refused_with_the_markers_named(tmp_path, capsys):
    target = tmp_path / "NOTES.md"
    target.write_text("no table here\n")
    assert routing.main(["--write", str(target)]) == 2
    assert routing.TABLE_START in capsys.readouterr().err
    assert target.read_text() == "no table here\n"


def test_cli_writes_the_table_between_the_markers(tmp_path):
    target = tmp_path / "README.md"
    target.write_text(f"{routing.TABLE_START}\n{routing.TABLE_END}\n")
    assert routing.main(["--write", str(target)]) == 0
    assert routing.table_in(target.read_text()) == routing.render_markdown(DEFAULT_TOPOLOGY)


def test_global_stack_reads_every_regional_stack_of_the_topology_by_its_qualified_name(program):
    prefix = offline.stack_config("global")["speech:stackPrefix"]
    missing = DEFAULT_TOPOLOGY.regions[-1]
    outputs = {f"{prefix}/{r.key}": program(r.key).exports for r in DEFAULT_TOPOLOGY.regions if r != missing}
    with pytest.raises(KeyError, match=f"{prefix}/{missing.key}"):
        offline.run("global", DEFAULT_TOPOLOGY, stack_outputs=outputs)


# A fourth region: a second EU region in Frankfurt that takes over Eastern Europe. Only the topology and a stack
# config change; no module of infra/ is touched.


def _with_eu_central() -> Topology:
    eu_central = Region(
        key="eu-central",
        aws_region="eu-central-1",
        jurisdiction="eu",
        timezone="Europe/Berlin",
        continents=(),
        cloudflare_regions=("EEU",),
        failover=("eu-west", "us-west", "ap-northeast"),
    )
    regions = []
    for r in DEFAULT_TOPOLOGY.regions:
        if r.key == "eu-west":
            r = dataclasses.replace(
                r,
                cloudflare_regions=tuple(c for c in r.cloudflare_regions if c != "EEU"),
                failover=("eu-central", *r.failover),
            )
        regions.append(r)
    return dataclasses.replace(DEFAULT_TOPOLOGY, regions=(*regions, eu_central))


def _eu_central_stack_config() -> dict:
    raw = offline.stack_config("eu-west")
    return {**raw, "aws:region": "eu-central-1", "speech:region": "eu-central", "speech:vpcCidr": "10.40.0.0/16"}


@pytest.fixture(scope="module")
def four_regions() -> tuple[offline.Graph, offline.Graph, str]:
    """The global stack, the new regional stack and the routing table, built for a four-region topology."""
    topology = _with_eu_central()
    global_config = offline.stack_config("global")
    global_config["speech:deployOrder"] = [*global_config["speech:deployOrder"], "eu-central"]
    regional = offline.run("eu-central", topology, config=_eu_central_stack_config())
    # As `offline.run_stack` runs the global stack (every regional stack first, their exports through its
    # StackReferences), with the eu-central stack run above instead of a second run of it.
    prefix = global_config["speech:stackPrefix"]
    outputs = {
        f"{prefix}/{r.key}": offline.run(r.key, topology).exports for r in topology.regions if r.key != "eu-central"
    }
    outputs[f"{prefix}/eu-central"] = regional.exports
    graph = offline.run("global", topology, config=global_config, stack_outputs=outputs)
    return graph, regional, routing.render_markdown(topology)


def test_a_fourth_region_gets_its_own_endpoint_from_its_stack_config(four_regions):
    _, regional, _ = four_regions
    assert regional.exports["endpointHostname"] == "eu-central.speech.example.com"
    assert regional.exports["cloudflarePoolId"]
    (nlb,) = regional.of_type("aws:lb/loadBalancer:LoadBalancer")
    assert nlb.inputs["region"] == "eu-central-1"


def test_a_second_eu_region_joins_every_eu_route53_chain_and_no_other_jurisdiction_does(four_regions):
    graph, _, _ = four_regions
    chains = graph.exports["routing"]
    assert chains["continent-EU"] == ["eu-west", "eu-central"]
    for country in EU_OUTLYING_COUNTRIES:
        assert chains[f"country-{country}"] == ["eu-west", "eu-central"]
    assert chains["continent-AF"] == ["eu-west", "eu-central", "us-west", "ap-northeast"]
    names = {r.inputs["name"] for r in graph.of_type("aws:route53/record:Record")}
    assert "eu-west.eu-central.chain.speech.example.com" in names


def test_a_fourth_region_takes_over_its_cloudflare_codes_with_eu_only_pools(four_regions):
    graph, regional, _ = four_regions
    assert graph.exports["cloudflareRegionPools"]["EEU"] == ["eu-central", "eu-west"]
    assert graph.exports["cloudflareRegionPools"]["WEU"] == ["eu-west", "eu-central"]
    (lb,) = graph.of_type("cloudflare:index/loadBalancer:LoadBalancer")
    eu_central_pool = regional.exports["cloudflarePoolId"]
    assert lb.inputs["regionPools"]["EEU"][0] == eu_central_pool
    (eeu_rule,) = [r for r in lb.inputs["rules"] if '"EEU"' in r["condition"]]
    assert eeu_rule["overrides"]["fallbackPool"] == eu_central_pool


def test_a_fourth_region_appears_in_the_routing_table(four_regions):
    _, _, table = four_regions
    assert "| EU (Europe) | eu only | eu-west | eu-west → eu-central |" in table
    assert "| EEU (Eastern Europe) | eu only | eu-central | eu-central → eu-west |" in table
