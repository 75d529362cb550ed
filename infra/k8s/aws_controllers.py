"""The add-ons that call AWS: the AWS Load Balancer Controller and cluster-autoscaler, each on its own role.

Both policies are written for what this platform uses them for, not copied wide open:

* The load balancer controller only keeps the regional NLB's target group (created by `infra.ingress`) filled
  with the ingress gateway's pod IPs through one TargetGroupBinding. It may describe load balancing and network
  resources and register or deregister targets in that one target group, and nothing else: it cannot create,
  modify or delete load balancers, listeners, target groups or security groups, so an Ingress or a Service of type
  LoadBalancer that someone applies to the cluster cannot open a new door to the internet.
* cluster-autoscaler may change the size of, and terminate instances in, only the Auto Scaling groups EKS tagged
  as this cluster's own; reading is unrestricted because the describe calls accept no resource scoping.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import pulumi

from infra import iam
from infra.versions import CLUSTER_AUTOSCALER_IMAGE_TAGS

KUBE_SYSTEM = "kube-system"
LB_CONTROLLER_SERVICE_ACCOUNT = "aws-load-balancer-controller"
AUTOSCALER_SERVICE_ACCOUNT = "cluster-autoscaler"

_LB_CONTROLLER_READS = (
    "ec2:DescribeAvailabilityZones",
    "ec2:DescribeInstances",
    "ec2:DescribeNetworkInterfaces",
    "ec2:DescribeSecurityGroups",
    "ec2:DescribeSubnets",
    "ec2:DescribeVpcs",
    "elasticloadbalancing:DescribeListeners",
    "elasticloadbalancing:DescribeLoadBalancers",
    "elasticloadbalancing:DescribeTags",
    "elasticloadbalancing:DescribeTargetGroupAttributes",
    "elasticloadbalancing:DescribeTargetGroups",
    "elasticloadbalancing:DescribeTargetHealth",
)
_AUTOSCALER_READS = (
    "autoscaling:DescribeAutoScalingGroups",
    "autoscaling:DescribeAutoScalingInstances",
    "autoscaling:DescribeLaunchConfigurations",
    "autoscaling:DescribeScalingActivities",
    "autoscaling:DescribeTags",
    "ec2:DescribeImages",
    "ec2:DescribeInstanceTypes",
    "ec2:DescribeLaunchTemplateVersions",
    "ec2:GetInstanceTypesFromInstanceRequirements",
)
# The priority expander tries the spot pool first for pods that tolerate it, then everything else.
SPOT_PRIORITY, DEFAULT_PRIORITY = 50, 10


def lb_controller_policy(target_group_arn: str) -> str:
    """Read the network, and move targets in and out of ``target_group_arn`` only."""
    return iam.policy_document(
        [
            iam.statement("Allow", _LB_CONTROLLER_READS, "*", sid="DescribeOnly"),
            iam.statement(
                "Allow",
                ["elasticloadbalancing:RegisterTargets", "elasticloadbalancing:DeregisterTargets"],
                target_group_arn,
                sid="BindGatewayPodsToTheRegionalTargetGroup",
            ),
        ]
    )


def autoscaler_policy(cluster_name: str) -> str:
    """Scale and terminate only in the Auto Scaling groups EKS tagged as owned by ``cluster_name``."""
    owned = {"StringEquals": {f"aws:ResourceTag/k8s.io/cluster-autoscaler/{cluster_name}": "owned"}}
    return iam.policy_document(
        [
            iam.statement("Allow", _AUTOSCALER_READS, "*", sid="DescribeOnly"),
            # Labels and taints of managed node groups, for scaling a group up from zero nodes: this cluster's only.
            iam.statement(
                "Allow", "eks:DescribeNodegroup", f"arn:aws:eks:*:*:nodegroup/{cluster_name}/*", sid="OwnNodeGroups"
            ),
            iam.statement(
                "Allow",
                ["autoscaling:SetDesiredCapacity", "autoscaling:TerminateInstanceInAutoScalingGroup"],
                # Any group by ARN form (their names are EKS's), narrowed to this cluster's by the owned tag.
                "arn:aws:autoscaling:*:*:autoScalingGroup:*:autoScalingGroupName/*",
                sid="ScaleOnlyThisClustersGroups",
                condition=owned,
            ),
        ]
    )


def lb_controller_values(cluster_name: pulumi.Input[str], aws_region: str, vpc_id: pulumi.Input[str]) -> dict:
    return {
        "clusterName": cluster_name,
        "region": aws_region,
        "vpcId": vpc_id,
        "replicaCount": 2,
        "serviceAccount": {"create": True, "name": LB_CONTROLLER_SERVICE_ACCOUNT},
        # The controller only binds pods to a target group made elsewhere; it takes over no Service and no Ingress.
        "enableServiceMutatorWebhook": False,
        "createIngressClassResource": False,
    }


def autoscaler_values(
    cluster_name: pulumi.Input[str],
    aws_region: str,
    kubernetes_version: str,
    spot_group: pulumi.Input[str] | None,
) -> dict[str, Any]:
    """cluster-autoscaler on the cluster's own Kubernetes minor version, discovering the EKS-tagged groups."""
    priorities: Mapping[str, Any] = {str(DEFAULT_PRIORITY): [".*"]}
    if spot_group is not None:
        exact = pulumi.Output.from_input(spot_group).apply(lambda group: [f"^{re.escape(group)}$"])
        priorities = {str(SPOT_PRIORITY): exact, **priorities}
    return {
        "cloudProvider": "aws",
        "awsRegion": aws_region,
        "autoDiscovery": {"clusterName": cluster_name},
        "image": {"tag": CLUSTER_AUTOSCALER_IMAGE_TAGS[kubernetes_version]},
        "rbac": {"serviceAccount": {"create": True, "name": AUTOSCALER_SERVICE_ACCOUNT}},
        "expanderPriorities": priorities,
        "extraArgs": {
            "expander": "priority",
            "balance-similar-node-groups": True,
            # The model cache is an emptyDir; it must not pin an idle GPU node forever.
            "skip-nodes-with-local-storage": False,
            # Give up on spot capacity that does not arrive and fall back to the next group sooner than 15 min.
            "max-node-provision-time": "5m",
        },
    }
