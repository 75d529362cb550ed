"""The serving pods' identity in one region: an IAM role bound to the serving service account by EKS Pod Identity.

Nodes keep IMDSv2 with a hop limit of 1, so pods never see node credentials; the serving container gets exactly
this role, through the EKS Pod Identity agent (an add-on of `infra.cluster`), for the namespace and service account
`contract.service` names (the Kubernetes layer creates the ServiceAccount itself).
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from contract.service import KUBERNETES_NAMESPACE, SERVICE_ACCOUNT
from contract.topology import Region, Topology
from infra import access, iam
from infra.tags import region_tags


@dataclass(frozen=True)
class ServingAccessArgs:
    topology: Topology
    region: Region
    project: str
    account_id: str
    cluster_name: pulumi.Input[str]  # the region's EKS cluster (infra.cluster.Cluster.name)
    kms_key_arn: pulumi.Input[str]  # the region's key (infra.kms.RegionKey.key_arn)


class ServingAccess(pulumi.ComponentResource):
    """The serving role: read `models/` of this region's store and decrypt with this region's key, through S3 here.

    Its trust admits only EKS Pod Identity sessions of this account, cluster, namespace and service account; its
    policy (`infra.access.serving_policy`) denies S3 and KMS in every region outside the jurisdiction.
    """

    role_arn: pulumi.Output[str]
    role_name: pulumi.Output[str]

    def __init__(self, name: str, args: ServingAccessArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("speech:infra:ServingAccess", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        role = aws.iam.Role(
            f"{name}-role",
            name=iam.serving_role_name(args.project, args.region),
            assume_role_policy=pulumi.Output.from_input(args.cluster_name).apply(
                lambda cluster: iam.pod_identity_trust(args.account_id, cluster, KUBERNETES_NAMESPACE, SERVICE_ACCOUNT)
            ),
            tags=region_tags(args.region),
            opts=child,
        )
        policy = aws.iam.RolePolicy(
            f"{name}-policy",
            role=role.id,
            policy=pulumi.Output.from_input(args.kms_key_arn).apply(
                lambda key_arn: access.serving_policy(
                    args.topology, args.project, args.account_id, args.region, key_arn
                )
            ),
            opts=child,
        )
        aws.eks.PodIdentityAssociation(
            f"{name}-pod-identity",
            region=args.region.aws_region,
            cluster_name=args.cluster_name,
            namespace=KUBERNETES_NAMESPACE,
            service_account=SERVICE_ACCOUNT,
            role_arn=role.arn,
            tags=region_tags(args.region),
            # A pod that starts before the policy is attached would fail its first model pull.
            opts=pulumi.ResourceOptions(parent=self, depends_on=[policy]),
        )
        self.role_arn = role.arn
        self.role_name = role.name
        self.register_outputs({"role_arn": self.role_arn, "role_name": self.role_name})
