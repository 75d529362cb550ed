"""Per-region KMS key for the region's data at rest (EKS secrets, control-plane logs, model store).

Each region has its own key so that a region's data is readable only with a key that lives in that region: a
replica in another region is re-encrypted there under that region's key, never under a key it does not own. The key
policy (`infra.access.key_policy`) is explicit: the account administers the key, and only the region's own roles use
it.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from contract.topology import Region, Topology
from infra.access import key_policy
from infra.tags import region_tags


def alias_name(project: str, region: Region) -> str:
    """The region key's alias; deterministic so that other stacks can name the key without reading its state."""
    return f"alias/{project}-{region.key}"


def alias_arn(project: str, region: Region, account_id: str) -> str:
    """The alias ARN of ``region``'s key in ``account_id``.

    S3 replication accepts an alias ARN as the replica key, which lets the source stack re-encrypt replicas with
    the destination region's key while the key's id is only known to the destination stack.
    """
    return f"arn:aws:kms:{region.aws_region}:{account_id}:{alias_name(project, region)}"


@dataclass(frozen=True)
class RegionKeyArgs:
    topology: Topology  # which replication roles may use the key
    region: Region
    project: str
    account_id: str
    # The region's EKS cluster (infra.cluster.cluster_name): its control plane and log groups may use the key.
    cluster_name: str | None = None


class RegionKey(pulumi.ComponentResource):
    """A symmetric KMS key in the region, rotated yearly, reachable by a fixed alias, with an explicit key policy.

    The account root may administer the key but not use it, so no IAM policy in the account can grant its use on
    its own: only the roles the key policy names (this region's serving and cluster roles, its jurisdiction's
    publisher, the replication roles the topology allows) and CloudWatch Logs for the region's log groups can.
    """

    key_arn: pulumi.Output[str]
    key_id: pulumi.Output[str]
    alias_name: pulumi.Output[str]

    def __init__(self, name: str, args: RegionKeyArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("speech:infra:RegionKey", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        region = args.region.aws_region

        key = aws.kms.Key(
            f"{name}-key",
            region=region,
            description=f"{args.project} data at rest in {args.region.key} ({args.region.jurisdiction})",
            enable_key_rotation=True,
            # A deleted key makes every object and secret encrypted with it unreadable: keep the longest window.
            deletion_window_in_days=30,
            policy=key_policy(args.topology, args.project, args.account_id, args.region, args.cluster_name),
            tags=region_tags(args.region),
            opts=child,
        )
        alias = aws.kms.Alias(
            f"{name}-alias",
            region=region,
            name=alias_name(args.project, args.region),
            target_key_id=key.key_id,
            opts=child,
        )

        self.key_arn = key.arn
        self.key_id = key.key_id
        self.alias_name = alias.name
        self.register_outputs({"key_arn": self.key_arn, "key_id": self.key_id, "alias_name": self.alias_name})
