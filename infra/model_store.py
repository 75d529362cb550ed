"""Per-region S3 model store: versioned, encrypted with the region's key, private, TLS-only, its data fenced.

Each regional stack owns its region's store; the `global` stack owns replication between stores
(`infra/replication.py`), because S3 refuses a replication rule until its destination exists and only the stack that
runs after every regional one can promise that. This module lists no regions. The key layout inside the store
(``models/<name>/<version>/``) is the serving container's, from :mod:`contract.service`; who may read and write it is
`infra/access.py`'s bucket policy.

Names are deterministic so that a stack can address another region's store and key without reading its state:
the bucket is ``<project>-models-<region key>-<account id>`` (`contract.service.model_bucket_name`) and the key is
``alias/<project>-<region key>``. The serving container is given the bucket name through the stack output
``modelBucketName``.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from contract.service import MODELS_PREFIX
from contract.topology import Region, Topology
from infra.access import bucket_arn, bucket_name, bucket_policy
from infra.tags import region_tags

__all__ = ["ModelStore", "ModelStoreArgs", "bucket_arn", "bucket_name"]

NONCURRENT_VERSION_DAYS = 30  # how long a replaced model version stays restorable
NONCURRENT_VERSIONS_KEPT = 3  # ...and how many replaced versions are kept regardless of age, for rollbacks


@dataclass(frozen=True)
class ModelStoreArgs:
    topology: Topology  # decides which replication roles may write here
    region: Region
    project: str
    account_id: str
    kms_key_arn: pulumi.Input[str]  # this region's key (infra.kms.RegionKey)
    # The region's S3 gateway endpoint (infra.network.Network.s3_endpoint_id); required in a strict jurisdiction,
    # where the serving role may read only through it.
    s3_vpc_endpoint_id: pulumi.Input[str] | None = None


class ModelStore(pulumi.ComponentResource):
    """Versioned, KMS-encrypted, private, TLS-only model bucket for one region, readable only by named roles.

    Versioning is on because S3 replication refuses unversioned buckets on either side, and because a model
    overwritten by mistake must be restorable.
    """

    bucket_name: pulumi.Output[str]
    bucket_arn: pulumi.Output[str]

    def __init__(self, name: str, args: ModelStoreArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("speech:infra:ModelStore", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        region = args.region.aws_region
        tags = region_tags(args.region)
        if args.s3_vpc_endpoint_id is None and args.topology.jurisdiction_of(args.region).is_strict_residency:
            raise pulumi.RunError(
                f"ModelStore {name}: {args.region.key} is in strict-residency jurisdiction {args.region.jurisdiction}, "
                "so its store needs s3_vpc_endpoint_id (the region's S3 gateway endpoint, Network.s3_endpoint_id)"
            )

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
            policy=pulumi.Output.from_input(args.s3_vpc_endpoint_id).apply(
                lambda endpoint: bucket_policy(args.topology, args.project, args.account_id, args.region, endpoint)
            ),
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

        self.bucket_name = bucket.bucket
        self.bucket_arn = bucket.arn
        self.register_outputs({"bucket_name": self.bucket_name, "bucket_arn": self.bucket_arn})
