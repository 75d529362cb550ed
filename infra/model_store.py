"""Per-region S3 model store and its replication, both derived from the topology.

Each regional stack owns its region's store. The store is also where that region publishes models: the stack
owns the replication rules *from* its store to every store ``Topology.replication_targets`` names, and nothing
else. This module lists no regions: a new region in the topology gets rules and residency guards from here.
The key layout inside the store (``models/<name>/<version>/``) is the serving container's, from
:mod:`contract.service`.

Names are deterministic so that a stack can address another region's store and key without reading its state:
the bucket is ``<project>-models-<region key>-<account id>`` (the account id keeps the globally unique S3 name
from colliding with another account deploying this project) and the key is ``alias/<project>-<region key>``.
The serving container is given the bucket name through the stack output ``modelBucketName``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_aws as aws

from contract.service import MODELS_PREFIX
from contract.topology import Region, Topology
from infra import iam, kms
from infra.tags import region_tags

REPLICATION_TIME_MINUTES = 15  # S3 Replication Time Control: the only value S3 offers, with an SLA
NONCURRENT_VERSION_DAYS = 30  # how long a replaced model version stays restorable
NONCURRENT_VERSIONS_KEPT = 3  # ...and how many replaced versions are kept regardless of age, for rollbacks
_BUCKET_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$")
_REPLICATION_WRITES = [
    "s3:ReplicateObject",
    "s3:ReplicateDelete",
    "s3:ReplicateTags",
    "s3:ObjectOwnerOverrideToBucketOwner",
]


def bucket_name(project: str, region: Region, account_id: str) -> str:
    """The model store's bucket name for ``region``."""
    name = f"{project}-models-{region.key}-{account_id}"
    if not _BUCKET_NAME.match(name):
        raise pulumi.RunError(
            f"model bucket name {name!r} (from project {project!r}) is not a valid S3 bucket name: use a project name "
            "of lower-case letters, digits and hyphens that keeps the name within 63 characters (Pulumi.yaml)"
        )
    return name


def bucket_arn(name: str) -> str:
    return f"arn:aws:s3:::{name}"


def replication_role_name(project: str, region: Region) -> str:
    """The IAM role that replicates out of ``region``'s store; fixed so that other stores can refuse it by name."""
    return f"{project}-model-replication-{region.key}"


def forbidden_sources(topology: Topology, region: Region) -> tuple[Region, ...]:
    """Regions whose stores must never replicate into ``region``'s store (e.g. an EU store into a US one)."""
    return tuple(r for r in topology.regions if r != region and region not in topology.replication_targets(r))


def replication_rules(
    topology: Topology, project: str, source: Region, account_id: str
) -> list[aws.s3.BucketReplicationConfigRuleArgs]:
    """One rule per replication target: models/ to that store, re-encrypted with that region's key, within 15 min."""
    rules = []
    for priority, target in enumerate(topology.replication_targets(source), start=1):
        minutes = REPLICATION_TIME_MINUTES
        rules.append(
            aws.s3.BucketReplicationConfigRuleArgs(
                id=f"models-to-{target.key}",
                status="Enabled",
                priority=priority,
                filter=aws.s3.BucketReplicationConfigRuleFilterArgs(prefix=MODELS_PREFIX),
                # A withdrawn model (deleted version) must disappear everywhere it was served from.
                delete_marker_replication=aws.s3.BucketReplicationConfigRuleDeleteMarkerReplicationArgs(
                    status="Enabled"
                ),
                # S3 skips SSE-KMS objects unless a rule opts in; every object in the store is SSE-KMS.
                source_selection_criteria=aws.s3.BucketReplicationConfigRuleSourceSelectionCriteriaArgs(
                    sse_kms_encrypted_objects=aws.s3.BucketReplicationConfigRuleSourceSelectionCriteriaSseKmsEncryptedObjectsArgs(
                        status="Enabled"
                    )
                ),
                destination=aws.s3.BucketReplicationConfigRuleDestinationArgs(
                    bucket=bucket_arn(bucket_name(project, target, account_id)),
                    encryption_configuration=aws.s3.BucketReplicationConfigRuleDestinationEncryptionConfigurationArgs(
                        replica_kms_key_id=kms.alias_arn(project, target, account_id)
                    ),
                    replication_time=aws.s3.BucketReplicationConfigRuleDestinationReplicationTimeArgs(
                        status="Enabled",
                        time=aws.s3.BucketReplicationConfigRuleDestinationReplicationTimeTimeArgs(minutes=minutes),
                    ),
                    metrics=aws.s3.BucketReplicationConfigRuleDestinationMetricsArgs(
                        status="Enabled",
                        event_threshold=aws.s3.BucketReplicationConfigRuleDestinationMetricsEventThresholdArgs(
                            minutes=minutes
                        ),
                    ),
                ),
            )
        )
    return rules


def _replication_policy(topology: Topology, project: str, source: Region, account_id: str, source_key_arn: str) -> str:
    """Least privilege for S3 replication: read versions here, write replicas only into the topology's targets.

    Destination keys are matched by alias (their ids live in other stacks) and only when S3 in that region uses them.
    """
    source_arn = bucket_arn(bucket_name(project, source, account_id))
    statements: list[dict[str, Any]] = [
        iam.statement("Allow", ["s3:GetReplicationConfiguration", "s3:ListBucket"], source_arn),
        iam.statement(
            "Allow",
            ["s3:GetObjectVersionForReplication", "s3:GetObjectVersionAcl", "s3:GetObjectVersionTagging"],
            f"{source_arn}/*",
        ),
        iam.statement(
            "Allow",
            "kms:Decrypt",
            source_key_arn,
            condition={"StringEquals": {"kms:ViaService": f"s3.{source.aws_region}.amazonaws.com"}},
        ),
    ]
    for target in topology.replication_targets(source):
        statements += [
            iam.statement(
                "Allow",
                ["s3:ReplicateObject", "s3:ReplicateDelete", "s3:ReplicateTags"],
                f"{bucket_arn(bucket_name(project, target, account_id))}/*",
            ),
            iam.statement(
                "Allow",
                ["kms:Encrypt", "kms:GenerateDataKey"],
                f"arn:aws:kms:{target.aws_region}:{account_id}:key/*",
                condition={
                    "StringEquals": {"kms:ViaService": f"s3.{target.aws_region}.amazonaws.com"},
                    "ForAnyValue:StringEquals": {"kms:ResourceAliases": kms.alias_name(project, target)},
                },
            ),
        ]
    return iam.policy_document(statements)


def bucket_policy(topology: Topology, project: str, region: Region, account_id: str) -> str:
    """TLS-only access, and a residency guard: replication roles of forbidden source regions may not write here.

    The guard repeats, on the receiving side, what the source stack's rules already respect, so a hand-made
    replication rule in an EU stack cannot copy EU models into this store either.
    """
    arn = bucket_arn(bucket_name(project, region, account_id))
    statements: list[dict[str, Any]] = [
        iam.statement(
            "Deny",
            "s3:*",
            [arn, f"{arn}/*"],
            sid="DenyInsecureTransport",
            principal="*",
            condition={"Bool": {"aws:SecureTransport": "false"}},
        )
    ]
    forbidden = forbidden_sources(topology, region)
    if forbidden:
        refused = [f"arn:aws:iam::{account_id}:role/{replication_role_name(project, r)}" for r in forbidden]
        statements.append(
            iam.statement(
                "Deny",
                _REPLICATION_WRITES,
                f"{arn}/*",
                sid="DenyReplicationFromOtherJurisdictions",
                principal="*",
                condition={"ArnLike": {"aws:PrincipalArn": refused}},
            )
        )
    return iam.policy_document(statements)


@dataclass(frozen=True)
class ModelStoreArgs:
    topology: Topology  # decides where this store's models replicate, and whose replicas it refuses
    region: Region
    project: str
    account_id: str
    kms_key_arn: pulumi.Input[str]  # this region's key (infra.kms.RegionKey)


class ModelStore(pulumi.ComponentResource):
    """Versioned, KMS-encrypted, private, TLS-only model bucket for one region, replicated only where allowed.

    Versioning is on because S3 replication refuses unversioned buckets on either side, and because a model
    overwritten by mistake must be restorable. Replicas are re-encrypted with the destination region's key.
    """

    bucket_name: pulumi.Output[str]
    bucket_arn: pulumi.Output[str]
    replication_targets: pulumi.Output[list[str]]

    def __init__(self, name: str, args: ModelStoreArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("speech:infra:ModelStore", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        region = args.region.aws_region
        tags = region_tags(args.region)

        bucket = aws.s3.Bucket(
            f"{name}-bucket",
            region=region,
            bucket=bucket_name(args.project, args.region, args.account_id),
            tags=tags,
            opts=child,
        )
        versioning = aws.s3.BucketVersioning(
            f"{name}-versioning",
            region=region,
            bucket=bucket.bucket,
            versioning_configuration=aws.s3.BucketVersioningVersioningConfigurationArgs(status="Enabled"),
            opts=child,
        )
        aws.s3.BucketServerSideEncryptionConfiguration(
            f"{name}-encryption",
            region=region,
            bucket=bucket.bucket,
            rules=[
                aws.s3.BucketServerSideEncryptionConfigurationRuleArgs(
                    apply_server_side_encryption_by_default=aws.s3.BucketServerSideEncryptionConfigurationRuleApplyServerSideEncryptionByDefaultArgs(
                        sse_algorithm="aws:kms", kms_master_key_id=args.kms_key_arn
                    ),
                    # One data key per bucket instead of one KMS call per object: pulls stay cheap and unthrottled.
                    bucket_key_enabled=True,
                )
            ],
            opts=child,
        )
        public_access = aws.s3.BucketPublicAccessBlock(
            f"{name}-public-access",
            region=region,
            bucket=bucket.bucket,
            block_public_acls=True,
            block_public_policy=True,
            ignore_public_acls=True,
            restrict_public_buckets=True,
            opts=child,
        )
        aws.s3.BucketPolicy(
            f"{name}-policy",
            region=region,
            bucket=bucket.bucket,
            policy=bucket_policy(args.topology, args.project, args.region, args.account_id),
            # S3 rejects concurrent bucket-policy and public-access-block writes on the same bucket.
            opts=pulumi.ResourceOptions(parent=self, depends_on=[public_access]),
        )
        aws.s3.BucketLifecycleConfiguration(
            f"{name}-lifecycle",
            region=region,
            bucket=bucket.bucket,
            rules=[
                aws.s3.BucketLifecycleConfigurationRuleArgs(
                    id="expire-replaced-model-versions",
                    status="Enabled",
                    filter=aws.s3.BucketLifecycleConfigurationRuleFilterArgs(prefix=MODELS_PREFIX),
                    noncurrent_version_expiration=aws.s3.BucketLifecycleConfigurationRuleNoncurrentVersionExpirationArgs(
                        noncurrent_days=NONCURRENT_VERSION_DAYS, newer_noncurrent_versions=NONCURRENT_VERSIONS_KEPT
                    ),
                    expiration=aws.s3.BucketLifecycleConfigurationRuleExpirationArgs(expired_object_delete_marker=True),
                    abort_incomplete_multipart_upload=aws.s3.BucketLifecycleConfigurationRuleAbortIncompleteMultipartUploadArgs(
                        days_after_initiation=7
                    ),
                )
            ],
            opts=pulumi.ResourceOptions(parent=self, depends_on=[versioning]),
        )

        targets = args.topology.replication_targets(args.region)
        if targets:
            role = iam.service_role(
                f"{name}-replication-role",
                "s3.amazonaws.com",
                role_name=replication_role_name(args.project, args.region),
                tags=tags,
                opts=child,
            ).role
            role_policy = aws.iam.RolePolicy(
                f"{name}-replication-policy",
                role=role.id,
                policy=pulumi.Output.from_input(args.kms_key_arn).apply(
                    lambda key_arn: _replication_policy(
                        args.topology, args.project, args.region, args.account_id, key_arn
                    )
                ),
                opts=child,
            )
            # The destination stores are versioned by their own stacks, which must be deployed first (S3 checks).
            aws.s3.BucketReplicationConfig(
                f"{name}-replication",
                region=region,
                bucket=bucket.bucket,
                role=role.arn,
                rules=replication_rules(args.topology, args.project, args.region, args.account_id),
                opts=pulumi.ResourceOptions(parent=self, depends_on=[versioning, role_policy]),
            )

        self.bucket_name = bucket.bucket
        self.bucket_arn = bucket.arn
        self.replication_targets = pulumi.Output.from_input([t.key for t in targets])
        self.register_outputs(
            {
                "bucket_name": self.bucket_name,
                "bucket_arn": self.bucket_arn,
                "replication_targets": self.replication_targets,
            }
        )
