"""An IAM role a Kubernetes service account uses through EKS Pod Identity."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from infra import iam

POD_IDENTITY_SERVICE = "pods.eks.amazonaws.com"
# Pod Identity tags the session with the cluster, namespace and service account; TagSession must be allowed.
_ACTIONS = ("sts:AssumeRole", "sts:TagSession")


@dataclass(frozen=True)
class PodRole:
    role: aws.iam.Role
    association: aws.eks.PodIdentityAssociation


def pod_identity_role(
    name: str,
    *,
    aws_region: str,
    cluster_name: pulumi.Input[str],
    namespace: str,
    service_account: str,
    policy: pulumi.Input[str],
    tags: Mapping[str, str],
    opts: pulumi.ResourceOptions,
) -> PodRole:
    """A role with inline ``policy`` that only ``namespace/service_account`` of ``cluster_name`` receives.

    Pod Identity instead of IRSA: the trust policy names the EKS service, and the binding to one service account
    is the association, an AWS resource that cannot be widened by editing the role's trust policy.
    """
    role = aws.iam.Role(
        name, assume_role_policy=iam.trust_policy(POD_IDENTITY_SERVICE, _ACTIONS), tags=dict(tags), opts=opts
    )
    aws.iam.RolePolicy(f"{name}-policy", role=role.id, policy=policy, opts=opts)
    association = aws.eks.PodIdentityAssociation(
        f"{name}-association",
        region=aws_region,
        cluster_name=cluster_name,
        namespace=namespace,
        service_account=service_account,
        role_arn=role.arn,
        tags=dict(tags),
        opts=opts,
    )
    return PodRole(role, association)
