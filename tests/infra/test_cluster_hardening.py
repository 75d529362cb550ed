"""What a platform team expects of a production cluster: who reaches the API, upgrades, deletion, repair, CNI role,
and node pools that cluster-autoscaler can grow from zero."""

from __future__ import annotations

import json

import pytest

from contract.topology import DEFAULT_TOPOLOGY
from infra import config, offline
from infra.node_pools import autoscaler_template_tags, gpus_per_node, pool_specs
from tests.conftest import REGIONAL_STACKS

CNI_POLICY = "arn:aws:iam::aws:policy/AmazonEKS_CNI_Policy"


def _cfg(stack: str, raw: dict | None = None) -> config.RegionalConfig:
    cfg = config.load(stack, raw or offline.stack_config(stack), DEFAULT_TOPOLOGY)
    assert isinstance(cfg, config.RegionalConfig)
    return cfg


@pytest.mark.parametrize("stack", REGIONAL_STACKS)
def test_cluster_stays_on_standard_support_and_is_protected_from_deletion(program, stack):
    (cluster,) = program(stack).of_type("aws:eks/cluster:Cluster")
    assert cluster.inputs["upgradePolicy"] == {"supportType": "STANDARD"}
    assert cluster.inputs["deletionProtection"] is _cfg(stack).cluster_access.deletion_protection is True


def test_deletion_protection_can_be_turned_off_for_a_throwaway_stack():
    raw = offline.stack_config("eu-west")
    raw["speech:clusterAccess"] = {**raw["speech:clusterAccess"], "deletionProtection": False}
    (cluster,) = offline.run("eu-west", DEFAULT_TOPOLOGY, config=raw).of_type("aws:eks/cluster:Cluster")
    assert cluster.inputs["deletionProtection"] is False


@pytest.mark.parametrize("stack", REGIONAL_STACKS)
def test_configured_admins_get_cluster_admin_through_access_entries(program, stack):
    graph, admins = program(stack), _cfg(stack).cluster_access.admin_arns
    assert admins
    entries = graph.of_type("aws:eks/accessEntry:AccessEntry")
    assert sorted(e.inputs["principalArn"] for e in entries) == sorted(admins)
    for association in graph.of_type("aws:eks/accessPolicyAssociation:AccessPolicyAssociation"):
        assert association.inputs["policyArn"].endswith("/AmazonEKSClusterAdminPolicy")
        assert association.inputs["accessScope"] == {"type": "cluster"}
        assert association.inputs["principalArn"] in admins


@pytest.mark.parametrize("stack", REGIONAL_STACKS)
def test_every_node_group_is_auto_repaired(program, stack):
    for group in program(stack).of_type("aws:eks/nodeGroup:NodeGroup"):
        assert group.inputs["nodeRepairConfig"] == {"enabled": True}, group.name


@pytest.mark.parametrize("stack", REGIONAL_STACKS)
def test_the_vpc_cni_has_its_own_role_and_enforces_network_policy_and_nodes_lose_its_rights(program, stack):
    graph = program(stack)
    cni = graph.named(f"speech-{stack}-cluster-vpc-cni")
    assert json.loads(cni.inputs["configurationValues"]) == {"enableNetworkPolicy": "true"}
    (association,) = cni.inputs["podIdentityAssociations"]
    assert association["serviceAccount"] == "aws-node"
    (role,) = [r for r in graph.of_type("aws:iam/role:Role") if r.outputs["arn"] == association["roleArn"]]
    trust = json.loads(role.inputs["assumeRolePolicy"])["Statement"][0]
    assert trust["Principal"] == {"Service": "pods.eks.amazonaws.com"}
    # iam.service_role names each attachment after its role, which is how the two are linked here.
    attachments = graph.of_type("aws:iam/rolePolicyAttachment:RolePolicyAttachment")
    cni_policy_holders = {
        a.name.removesuffix("-AmazonEKS_CNI_Policy") for a in attachments if a.inputs["policyArn"] == CNI_POLICY
    }
    assert cni_policy_holders == {role.name}
    assert role.name != f"speech-{stack}-cluster-node-role"


@pytest.mark.parametrize("stack", REGIONAL_STACKS)
def test_spot_and_gpu_groups_carry_the_tags_autoscaler_needs_to_start_their_first_node(program, stack):
    graph = program(stack)
    tags: dict[str, dict[str, str]] = {}
    for tag in graph.of_type("aws:autoscaling/tag:Tag"):
        tags.setdefault(tag.inputs["autoscalingGroupName"], {})[tag.inputs["tag"]["key"]] = tag.inputs["tag"]["value"]
    spot_group = graph.named(f"speech-{stack}-cluster-spot-group")
    spot = tags[spot_group.outputs["resources"][0]["autoscalingGroups"][0]["name"]]
    template = "k8s.io/cluster-autoscaler/node-template"
    assert spot[f"{template}/label/speech.io/pool"] == "spot"
    assert spot[f"{template}/taint/speech.io/spot"] == "true:NoSchedule"
    assert spot[f"{template}/taint/nvidia.com/gpu"] == "true:NoSchedule"
    assert spot[f"{template}/resources/nvidia.com/gpu"] == "1"
    for tag in graph.of_type("aws:autoscaling/tag:Tag"):
        assert tag.inputs["tag"]["propagateAtLaunch"] is False


def test_template_tags_follow_the_pool_table_and_never_promise_more_gpus_than_the_smallest_type():
    specs = {s.role: s for s in pool_specs(_cfg("eu-west"))}
    assert not any("resources" in key for key in autoscaler_template_tags(specs["cpu"]))
    assert gpus_per_node(["g6.xlarge", "g6.12xlarge"]) == 1
    assert gpus_per_node(["g5.12xlarge", "p4d.24xlarge"]) == 4
