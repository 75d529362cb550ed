"""Model replication between regional stores, owned by the `global` stack.

S3 refuses a replication rule until its destination bucket exists and is versioned, and two regions may replicate to
each other, so no order of regional `pulumi up`s could create every rule on a new account. The `global` stack runs
after every regional one and reads their stores through `StackReference`s, so one pass of the documented deploy
order (regional stacks, then `global`) creates every store first and every rule after. The rules follow
`Topology.replication_targets`: a region taken out of the topology loses every rule that points at it on the next
`pulumi up` of `global`, before its own stack is destroyed, so no rule ever points at a deleted bucket whose name
someone else could claim.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from contract.service import MODELS_PREFIX
from contract.topology import Region, Topology
from infra import access, iam
from infra.tags import region_tags

REPLICATION_TIME_MINUTES = 15  # S3 Replication Time Control: the only value S3 offers, with an SLA
# Regional stack outputs the global stack reads (written by infra/program.py's regional build).
OUTPUT_BUCKET_NAME = "modelBucketName"
OUTPUT_KEY_ARN = "kmsKeyArn"


@dataclass(frozen=True)
class RegionalStore:
    """What the global stack knows about one region's model store, read from its stack outputs."""

    region: Region
    bucket_name: pulumi.Input[str]
    key_arn: pulumi.Input[str]

    @classmethod
    def from_stack(cls, stack: pulumi.StackReference, region: Region) -> RegionalStore:
        """A deployed regional stack's store; a missing output fails the global stack with the output's name."""
        return cls(region, stack.require_output(OUTPUT_BUCKET_NAME), stack.require_output(OUTPUT_KEY_ARN))


def replication_rule_id(target: Region) -> str:
    """The id of the rule that replicates to ``target``: S3's replication metrics carry it as `RuleId`."""
    return f"models-to-{target.key}"


def key_arns(stores: Mapping[str, RegionalStore], regions: tuple[Region, ...]) -> pulumi.Output[dict[str, str]]:
    """{region key: key ARN} for ``regions``, resolved together for one policy document."""
    return pulumi.Output.all(**{r.key: stores[r.key].key_arn for r in regions})


def replication_rules(
    topology: Topology, source: Region, stores: Mapping[str, RegionalStore]
) -> list[aws.s3.BucketReplicationConfigRuleArgs]:
    """One rule per replication target: models/ to that store, re-encrypted with that region's key, within 15 min."""
    rules = []
    for priority, target in enumerate(topology.replication_targets(source), start=1):
        minutes = REPLICATION_TIME_MINUTES
        rules.append(
            aws.s3.BucketReplicationConfigRuleArgs(
                id=replication_rule_id(target),
                status="Enabled",
                priority=priority,
                filter=aws.s3.BucketReplicationConfigRuleFilterArgs(prefix=MODELS_PREFIX),
                # A plain DELETE (a delete marker) replicates; deleting versions does not, which is why
                # `python -m serving.publish withdraw` visits every store of the jurisdiction itself.
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
                    bucket=pulumi.Output.concat("arn:aws:s3:::", stores[target.key].bucket_name),
                    encryption_configuration=aws.s3.BucketReplicationConfigRuleDestinationEncryptionConfigurationArgs(
                        replica_kms_key_id=stores[target.key].key_arn
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


@dataclass(frozen=True)
class ModelReplicationArgs:
    topology: Topology
    project: str
    account_id: str
    stores: Mapping[str, RegionalStore]  # every region of the topology, by region key


class ModelReplication(pulumi.ComponentResource):
    """Every replication rule of the topology, each with its own least-privilege role.

    Replicas are re-encrypted with the destination region's key; nothing replicates out of a strict jurisdiction,
    nor into one from outside it (`Topology.replication_targets`).
    """

    routes: pulumi.Output[dict[str, list[str]]]

    def __init__(self, name: str, args: ModelReplicationArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("speech:infra:ModelReplication", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        topology = args.topology
        routes: dict[str, list[str]] = {}
        for source in topology.regions:
            targets = topology.replication_targets(source)
            if not targets:
                continue
            routes[source.key] = [t.key for t in targets]
            role = iam.service_role(
                f"{name}-{source.key}-role",
                "s3.amazonaws.com",
                role_name=iam.replication_role_name(args.project, source),
                source_account=args.account_id,
                tags=region_tags(source),
                opts=child,
            ).role
            policy = aws.iam.RolePolicy(
                f"{name}-{source.key}-policy",
                role=role.id,
                policy=key_arns(args.stores, (source, *targets)).apply(
                    functools.partial(access.replication_policy, topology, args.project, args.account_id, source)
                ),
                opts=child,
            )
            aws.s3.BucketReplicationConfig(
                f"{name}-{source.key}",
                region=source.aws_region,
                bucket=args.stores[source.key].bucket_name,
                role=role.arn,
                rules=replication_rules(topology, source, args.stores),
                opts=pulumi.ResourceOptions(parent=self, depends_on=[policy]),
            )
        self.routes = pulumi.Output.from_input(routes)
        self.register_outputs({"routes": self.routes})
