"""examples/eu-central: a platform team's program with a fourth region, eu-central-1, built from the public API alone
and run through the offline harness stack by stack, as `pulumi up` would run it. EU data stays in the EU: EU users
fail over only between eu-west and eu-central, and the EU stores replicate only to each other."""

from __future__ import annotations

import ast
import json
import re
import runpy

import pytest

from contract.topology import EU_OUTLYING_COUNTRIES, Topology
from infra import offline, plan, plan_report
from infra.project import Project
from tests.conftest import parse_python

EXAMPLE = Project(offline.ROOT / "examples" / "eu-central")
TOPOLOGY: Topology = runpy.run_path(str(EXAMPLE.program))["TOPOLOGY"]
EU_REGIONS = ["eu-west", "eu-central"]


@pytest.fixture(scope="module")
def stacks() -> dict[str, offline.Graph]:
    """Every stack of the example: the regional ones, then global reading their exports."""
    graphs = {s: offline.run_project(EXAMPLE, s) for s in EXAMPLE.stacks() if not EXAMPLE.is_global(s)}
    prefix = EXAMPLE.stack_config("global")["speech:stackPrefix"]
    references = {f"{prefix}/{s}": g.exports for s, g in graphs.items()}
    graphs["global"] = offline.run_project(EXAMPLE, "global", stack_outputs=references)
    return graphs


def test_the_example_imports_only_public_names_of_the_package():
    tree = parse_python(EXAMPLE.program)
    imported = [
        (node.module, alias.name)
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in ("contract", "infra")
        for alias in node.names
    ]
    assert imported and all(not name.startswith("_") for _, name in imported), imported
    assert {module for module, _ in imported} == {"contract.topology", "infra.program"}


def test_the_example_has_a_stack_file_for_every_region_of_its_topology_and_a_global_one():
    assert set(EXAMPLE.stacks()) == {*TOPOLOGY.keys, "global"}
    assert TOPOLOGY.region("eu-central").aws_region == "eu-central-1"


def test_its_topology_file_is_the_one_the_program_builds():
    assert json.loads((EXAMPLE.root / "topology.json").read_text()) == TOPOLOGY.to_dict(), (
        "examples/eu-central/topology.json is stale; regenerate it as its README says"
    )


def test_the_fourth_region_is_built_in_frankfurt_with_its_own_network_and_strict_store(stacks):
    graph = stacks["eu-central"]
    regions = {r.inputs["region"] for r in graph.resources if "region" in r.inputs}
    assert regions == {"eu-central-1"}
    (vpc,) = graph.of_type("aws:ec2/vpc:Vpc")
    assert vpc.inputs["cidrBlock"] == "10.40.0.0/16"
    policy = json.loads(graph.named("speech-eu-central-store-policy").inputs["policy"])
    assert "DenyDataOutsideTheVpcEndpoint" in {s["Sid"] for s in policy["Statement"]}
    assert graph.exports["jurisdiction"] == "eu"


def test_eu_users_fail_over_between_the_two_eu_regions_and_nowhere_else(stacks):
    routing = stacks["global"].exports["routing"]
    assert routing["continent-EU"] == EU_REGIONS
    for country in EU_OUTLYING_COUNTRIES:
        assert routing[f"country-{country}"] == EU_REGIONS, country
    assert routing["continent-AF"] == [*EU_REGIONS, "us-west", "ap-northeast"], "unrestricted users still may leave"
    pools = stacks["global"].exports["cloudflareRegionPools"]
    assert (pools["WEU"], pools["EEU"]) == (EU_REGIONS, EU_REGIONS[::-1])


def test_eu_stores_replicate_only_to_each_other_and_no_other_store_replicates_into_them(stacks):
    routes = stacks["global"].exports["replication"]
    assert routes["eu-west"] == ["eu-central"] and routes["eu-central"] == ["eu-west"]
    for source, targets in routes.items():
        if source not in EU_REGIONS:
            assert not set(targets) & set(EU_REGIONS), f"{source} replicates into the EU"
    for config in stacks["global"].of_type("aws:s3/bucketReplicationConfig:BucketReplicationConfig"):
        source = "eu" if "-models-eu-" in config.inputs["bucket"] else "other"
        for rule in config.inputs["rules"]:
            target = "eu" if "-models-eu-" in rule["destination"]["bucket"] else "other"
            assert source == target, (config.name, rule["id"])


def test_the_eu_keys_admit_each_others_replication_role_and_no_role_from_outside_the_eu(stacks):
    for key in EU_REGIONS:
        text = stacks[key].named(f"speech-{key}-key-key").inputs["policy"]
        other = next(k for k in EU_REGIONS if k != key)
        assert f"acme-speech-model-replication-{other}" in text
        for outside in ("us-west", "ap-northeast"):
            assert f"model-replication-{outside}" not in text and "publisher-us" not in text, (key, outside)


def test_every_stack_of_the_example_passes_the_policy_pack_under_its_own_topology(stacks, monkeypatch):
    monkeypatch.setenv("SPEECH_TOPOLOGY_FILE", str(EXAMPLE.root / "topology.json"))
    for name, graph in stacks.items():
        failing = [v for v in plan_report.resource_verdicts(graph) if not v.passed]
        assert failing == [], name


@pytest.mark.slow
def test_the_offline_plan_cli_plans_the_example_project(monkeypatch, capsys):
    # The CLI's own `main`, in this process (where the provider SDKs are already imported).
    monkeypatch.setenv("SPEECH_TOPOLOGY_FILE", str(EXAMPLE.root / "topology.json"))
    returncode = plan.main(["--project", str(EXAMPLE.root), "eu-central", "--policy"])
    out = capsys.readouterr()
    assert returncode == 0, out.out + out.err
    assert re.search(r"^resources: [1-9][0-9]* pass every policy, 0 fail$", out.out, re.MULTILINE)
