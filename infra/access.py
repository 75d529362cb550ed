"""Who may touch model data, as policy documents: identity policies, key policies and bucket policies.

Pure functions of the topology and deterministic names (`infra.iam`'s role names, `infra.model_store`'s bucket
names), so the regional stacks, the global stack and the tests derive the same documents, and a key policy in one
stack can name a role that another stack creates later. Each principal a key or bucket policy admits is named in
an ``aws:PrincipalArn`` condition under the account's root principal rather than as the principal itself: KMS and
S3 refuse a policy whose principal does not exist yet, and the publisher and replication roles are created by the
`global` stack, which runs after the regional ones.

Layers, each enough on its own to stop a cross-jurisdiction read:

* identity policies allow only the role's own region's (or jurisdiction's) stores and keys, and deny S3 and KMS in
  every AWS region outside its jurisdiction;
* key policies let only the region's own roles (and the replication roles the topology allows) use the key;
* bucket policies deny object access to every other principal, and for a strict jurisdiction require the serving
  role to come through the region's S3 VPC endpoint.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import pulumi

from contract.service import MODELS_PREFIX, model_bucket_name
from contract.topology import Region, Topology
from infra import iam

# What the account root may do with a key: administer it, never use it. Use is granted per role below.
KEY_ADMIN_ACTIONS = (
    "kms:Create*", "kms:Describe*", "kms:Enable*", "kms:List*", "kms:Put*", "kms:Update*", "kms:Revoke*",
    "kms:Disable*", "kms:Get*", "kms:Delete*", "kms:TagResource", "kms:UntagResource", "kms:ScheduleKeyDeletion",
    "kms:CancelKeyDeletion",
)  # fmt: skip
# Object data: reading, writing, deleting or replicating a model, and listing what a store holds.
DATA_OBJECT_ACTIONS = (
    "s3:GetObject*", "s3:PutObject*", "s3:DeleteObject*", "s3:Replicate*", "s3:RestoreObject",
    "s3:AbortMultipartUpload", "s3:ListMultipartUploadParts",
)  # fmt: skip
DATA_BUCKET_ACTIONS = ("s3:ListBucket", "s3:ListBucketVersions", "s3:ListBucketMultipartUploads")
PUBLISH_OBJECT_ACTIONS = (
    "s3:PutObject", "s3:GetObject", "s3:GetObjectVersion", "s3:DeleteObject", "s3:DeleteObjectVersion",
    "s3:AbortMultipartUpload",
)  # fmt: skip
_ROOT = "arn:aws:iam::{account}:root"
_BUCKET_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$")


def bucket_name(project: str, region: Region, account_id: str) -> str:
    """The model store's bucket name for ``region`` (`contract.service.model_bucket_name`, checked for S3)."""
    name = model_bucket_name(project, region.key, account_id)
    if not _BUCKET_NAME.match(name):
        raise pulumi.RunError(
            f"model bucket name {name!r} (from project {project!r}) is not a valid S3 bucket name: use a project name "
            "of lower-case letters, digits and hyphens that keeps the name within 63 characters (Pulumi.yaml)"
        )
    return name


def bucket_arn(name: str) -> str:
    return f"arn:aws:s3:::{name}"


def store_arn(project: str, region: Region, account_id: str) -> str:
    return bucket_arn(bucket_name(project, region, account_id))


def via_s3(region: Region) -> dict[str, Any]:
    """KMS use only on behalf of S3 in ``region``: a role's key rights never work through another service."""
    return {"StringEquals": {"kms:ViaService": f"s3.{region.aws_region}.amazonaws.com"}}


def inbound_sources(topology: Topology, region: Region) -> tuple[Region, ...]:
    """Regions whose stores replicate into ``region``'s store."""
    return tuple(r for r in topology.regions if region in topology.replication_targets(r))


def jurisdiction_aws_regions(topology: Topology, jurisdiction: str) -> list[str]:
    return [r.aws_region for r in topology.regions_in(jurisdiction)]


def _models_listing(arn: str, actions: tuple[str, ...] = ("s3:ListBucket",)) -> dict[str, Any]:
    return iam.statement(
        "Allow", list(actions), arn, condition={"StringLike": {"s3:prefix": [MODELS_PREFIX, f"{MODELS_PREFIX}*"]}}
    )


def serving_policy(topology: Topology, project: str, account_id: str, region: Region, key_arn: str) -> str:
    """The serving role: read `models/` of its own region's store, decrypt with its own key via S3, nothing else."""
    arn = store_arn(project, region, account_id)
    return iam.policy_document(
        [
            iam.statement(
                "Allow", ["s3:GetObject", "s3:GetObjectVersion"], f"{arn}/{MODELS_PREFIX}*", sid="ReadModels"
            ),
            {**_models_listing(arn), "Sid": "ListModels"},
            # serving/model_store.py checks the bucket's region against the topology before pulling anything.
            iam.statement("Allow", "s3:GetBucketLocation", arn, sid="CheckStoreRegion"),
            iam.statement("Allow", "kms:Decrypt", key_arn, sid="DecryptModels", condition=via_s3(region)),
            iam.deny_outside_regions(jurisdiction_aws_regions(topology, region.jurisdiction)),
        ]
    )


def publisher_policy(
    topology: Topology, project: str, account_id: str, jurisdiction: str, key_arns: Mapping[str, str]
) -> str:
    """A jurisdiction's publisher: write, read and withdraw `models/` in every store of that jurisdiction only.

    ``key_arns`` maps each of the jurisdiction's region keys to its KMS key ARN.
    """
    statements: list[dict[str, Any]] = []
    for region in topology.regions_in(jurisdiction):
        arn = store_arn(project, region, account_id)
        sid = "".join(part.capitalize() for part in region.key.split("-"))
        statements += [
            iam.statement("Allow", list(PUBLISH_OBJECT_ACTIONS), f"{arn}/{MODELS_PREFIX}*", sid=f"Publish{sid}"),
            {**_models_listing(arn, ("s3:ListBucket", "s3:ListBucketVersions")), "Sid": f"List{sid}"},
            iam.statement("Allow", "s3:GetBucketLocation", arn, sid=f"Locate{sid}"),
            iam.statement(
                "Allow",
                ["kms:GenerateDataKey", "kms:Decrypt"],
                key_arns[region.key],
                sid=f"Key{sid}",
                condition=via_s3(region),
            ),
        ]
    statements.append(iam.deny_outside_regions(jurisdiction_aws_regions(topology, jurisdiction)))
    return iam.policy_document(statements)


def replication_policy(
    topology: Topology, project: str, account_id: str, source: Region, key_arns: Mapping[str, str]
) -> str:
    """Least privilege for S3 replication out of ``source``: read versions there, write only into its targets.

    ``key_arns`` maps region keys (the source and every target) to their KMS key ARNs.
    """
    source_arn = store_arn(project, source, account_id)
    targets = topology.replication_targets(source)
    statements: list[dict[str, Any]] = [
        iam.statement("Allow", ["s3:GetReplicationConfiguration", "s3:ListBucket"], source_arn, sid="ReadConfig"),
        iam.statement(
            "Allow",
            ["s3:GetObjectVersionForReplication", "s3:GetObjectVersionAcl", "s3:GetObjectVersionTagging"],
            f"{source_arn}/{MODELS_PREFIX}*",
            sid="ReadVersions",
        ),
        iam.statement("Allow", "kms:Decrypt", key_arns[source.key], sid="DecryptSource", condition=via_s3(source)),
    ]
    for target in targets:
        sid = "".join(part.capitalize() for part in target.key.split("-"))
        statements += [
            iam.statement(
                "Allow",
                ["s3:ReplicateObject", "s3:ReplicateDelete", "s3:ReplicateTags"],
                f"{store_arn(project, target, account_id)}/{MODELS_PREFIX}*",
                sid=f"WriteTo{sid}",
            ),
            iam.statement(
                "Allow",
                ["kms:Encrypt", "kms:GenerateDataKey"],
                key_arns[target.key],
                sid=f"EncryptFor{sid}",
                condition=via_s3(target),
            ),
        ]
    statements.append(iam.deny_outside_regions([source.aws_region, *(t.aws_region for t in targets)]))
    return iam.policy_document(statements)


def key_policy(topology: Topology, project: str, account_id: str, region: Region, cluster_name: str | None) -> str:
    """The region's key: administered by the account, used only by the region's roles and its replication peers.

    ``cluster_name`` adds the EKS control plane (Secrets envelope encryption) and its log groups; leave it out for a
    key that only protects a model store.
    """
    root = {"AWS": _ROOT.format(account=account_id)}
    publisher = iam.role_arn(account_id, iam.publisher_role_name(project, region.jurisdiction))
    serving = iam.role_arn(account_id, iam.serving_role_name(project, region))
    own_replication = (
        [iam.role_arn(account_id, iam.replication_role_name(project, region))]
        if topology.replication_targets(region)
        else []
    )
    inbound = [
        iam.role_arn(account_id, iam.replication_role_name(project, r)) for r in inbound_sources(topology, region)
    ]
    statements: list[dict[str, Any]] = [
        iam.statement("Allow", list(KEY_ADMIN_ACTIONS), "*", sid="AccountAdministersOnly", principal=root),
        iam.statement(
            "Allow",
            ["kms:Decrypt", "kms:DescribeKey"],
            "*",
            sid="DecryptModelsViaS3",
            principal=root,
            condition={**via_s3(region), "ArnEquals": {"aws:PrincipalArn": [serving, publisher, *own_replication]}},
        ),
        iam.statement(
            "Allow",
            ["kms:Encrypt", "kms:GenerateDataKey"],
            "*",
            sid="EncryptModelsViaS3",
            principal=root,
            condition={**via_s3(region), "ArnEquals": {"aws:PrincipalArn": [publisher, *inbound]}},
        ),
    ]
    if cluster_name is not None:
        logs = f"arn:aws:logs:{region.aws_region}:{account_id}:log-group:"
        statements += [
            iam.statement(
                "Allow",
                ["kms:Encrypt", "kms:Decrypt", "kms:DescribeKey", "kms:ListGrants", "kms:CreateGrant"],
                "*",
                sid="ClusterSecrets",
                principal=root,
                condition={
                    "ArnEquals": {"aws:PrincipalArn": iam.role_arn(account_id, iam.cluster_role_name(cluster_name))}
                },
            ),
            iam.statement(
                "Allow",
                ["kms:Encrypt*", "kms:Decrypt*", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:Describe*"],
                "*",
                sid="RegionalLogGroups",
                principal={"Service": f"logs.{region.aws_region}.amazonaws.com"},
                condition={
                    "ArnLike": {
                        "kms:EncryptionContext:aws:logs:arn": [
                            f"{logs}/aws/eks/{cluster_name}/*",
                            f"{logs}/{project}/{region.key}/*",
                        ]
                    }
                },
            ),
        ]
    return iam.policy_document(statements)


def bucket_policy(
    topology: Topology, project: str, account_id: str, region: Region, vpc_endpoint_id: str | None
) -> str:
    """TLS only; object data only for the jurisdiction's named roles; in a strict jurisdiction, the serving role
    only through the region's S3 VPC endpoint.

    No administrator is admitted to object data: an operator who must read a model changes this policy (bucket
    configuration stays with the account), which CloudTrail records and the next `pulumi up` reverts.
    """
    arn = store_arn(project, region, account_id)
    publisher = iam.role_arn(account_id, iam.publisher_role_name(project, region.jurisdiction))
    serving = iam.role_arn(account_id, iam.serving_role_name(project, region))
    replication = [
        iam.role_arn(account_id, iam.replication_role_name(project, r))
        for r in (*((region,) if topology.replication_targets(region) else ()), *inbound_sources(topology, region))
    ]
    admitted = [serving, publisher, *replication]
    statements: list[dict[str, Any]] = [
        iam.statement(
            "Deny",
            "s3:*",
            [arn, f"{arn}/*"],
            sid="DenyInsecureTransport",
            principal="*",
            condition={"Bool": {"aws:SecureTransport": "false"}},
        ),
        iam.statement(
            "Deny",
            [*DATA_OBJECT_ACTIONS, *DATA_BUCKET_ACTIONS],
            [arn, f"{arn}/*"],
            sid="DenyDataToOtherPrincipals",
            principal="*",
            condition={"ArnNotEquals": {"aws:PrincipalArn": admitted}},
        ),
    ]
    if topology.jurisdiction_of(region).is_strict_residency:
        if vpc_endpoint_id is None:
            raise ValueError(
                f"the model store of {region.key} ({region.jurisdiction}, strict residency) needs the region's S3 "
                "VPC endpoint id (ModelStoreArgs.s3_vpc_endpoint_id, e.g. Network.s3_endpoint_id)"
            )
        statements.append(
            iam.statement(
                "Deny",
                [*DATA_OBJECT_ACTIONS, *DATA_BUCKET_ACTIONS],
                [arn, f"{arn}/*"],
                sid="DenyDataOutsideTheVpcEndpoint",
                principal="*",
                condition={
                    "StringNotEquals": {"aws:SourceVpce": vpc_endpoint_id},
                    "ArnNotEquals": {"aws:PrincipalArn": [publisher, *replication]},
                },
            )
        )
    return iam.policy_document(statements)
