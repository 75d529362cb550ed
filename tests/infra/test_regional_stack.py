"""Whole-stack properties of a regional stack: where its resources live, how they are grouped, what it exports."""

from __future__ import annotations

import runpy

import pytest

from contract.topology import DEFAULT_TOPOLOGY
from infra import offline, plan
from tests.conftest import REGIONAL_STACKS

# IAM (roles, policies, OIDC providers) and Route 53 are global services: their resources take no region.
GLOBAL_AWS_SERVICES = ("aws:iam/", "aws:route53/")
REGIONAL_COMPONENTS = {
    "speech:infra:Network",
    "speech:infra:RegionKey",
    "speech:infra:Cluster",
    "speech:infra:ModelStore",
    "speech:infra:ClusterAddons",
    "speech:infra:Mesh",
    "speech:infra:ServingWorkload",
    "speech:infra:PublicEntry",
}
EXPORTS = {
    "region", "jurisdiction", "clusterName", "clusterEndpoint", "kubeconfig", "nodePools", "modelBucketName",
    "modelBucketArn", "kmsKeyArn", "vpcId", "publicSubnetIds", "privateSubnetIds", "servingNamespace",
}  # fmt: skip


@pytest.mark.parametrize("stack", REGIONAL_STACKS)
def test_every_regional_resource_is_pinned_to_the_stacks_aws_region(program, stack):
    expected = DEFAULT_TOPOLOGY.region(stack).aws_region
    regional = [
        r for r in program(stack).resources if r.type.startswith("aws:") and not r.type.startswith(GLOBAL_AWS_SERVICES)
    ]
    assert regional
    for resource in regional:
        assert resource.inputs.get("region") == expected, (
            f"{resource.type} {resource.name} is in {resource.inputs.get('region')}"
        )


@pytest.mark.parametrize("stack", REGIONAL_STACKS)
def test_every_cloud_resource_belongs_to_a_component_that_it_is_named_after(program, stack):
    graph = program(stack)
    top_level = {r.type for r in graph.resources if r.parent is None}
    assert top_level >= REGIONAL_COMPONENTS
    for resource in (r for r in graph.resources if r.is_custom and not r.type.startswith("pulumi:")):
        ancestors = list(graph.ancestors(resource))
        assert ancestors, f"{resource.name} is not parented to a component"
        assert ancestors[-1].type.startswith("speech:infra:"), f"{resource.name} hangs under {ancestors[-1].type}"
        assert resource.name.startswith(f"{ancestors[0].name}-"), (
            f"{resource.name} is not named after {ancestors[0].name}"
        )


@pytest.mark.parametrize("stack", REGIONAL_STACKS)
def test_stack_exports_what_operators_and_the_global_stack_need(program, stack):
    graph = program(stack)
    assert set(graph.exports) >= EXPORTS
    assert graph.exports["region"] == DEFAULT_TOPOLOGY.region(stack).aws_region
    assert graph.exports["jurisdiction"] == DEFAULT_TOPOLOGY.region(stack).jurisdiction
    assert graph.exports["kmsKeyArn"].startswith(f"arn:aws:kms:{DEFAULT_TOPOLOGY.region(stack).aws_region}:")
    assert "kubeconfig" in graph.secret_exports


def test_the_program_file_pulumi_runs_builds_exactly_the_default_topologys_stack(program):
    """`__main__.py` (what `pulumi up` executes) and the harness's `infra.program.build(DEFAULT_TOPOLOGY)` agree."""
    graph = offline.run_program("eu-west", lambda: runpy.run_path(str(offline.PROGRAM), run_name="__main__"))
    expected = program("eu-west")
    assert sorted((r.type, r.name) for r in graph.resources) == sorted((r.type, r.name) for r in expected.resources)
    assert graph.exports == expected.exports


def test_the_offline_plan_shows_the_kubernetes_layer_with_its_key_properties(program):
    tree = plan.render_tree(program("eu-west"))
    for expected in (
        'kubernetes:helm.sh/v3:Release  speech-eu-west-mesh-istiod  {"name": "istiod", "chart": "istiod"',
        'kubernetes:argoproj.io/v1alpha1:Rollout  speech-eu-west-serving-realtime  {"name": "speech-serving"',
        '"terminationGracePeriodSeconds": 35',
        'kubernetes:elbv2.k8s.aws/v1beta1:TargetGroupBinding  speech-eu-west-entry-binding  {"name": "speech-public"',
        '"routes": [["grpc", [{"uri": {"prefix": "/speech.v1.Speech/"}}]], ["stream"',
    ):
        assert expected in tree
