"""Publisher roles, one per jurisdiction, for the release pipeline (`python -m serving.publish`), owned by `global`.

A publisher may write, read and withdraw `models/` in every store of its own jurisdiction and nowhere else; the
identities that may assume it (typically a CI system's OIDC role) come from `speech:publishers` in the global stack's
config. Its name is deterministic (`infra.iam.publisher_role_name`), so the regional key and bucket policies admit
it before it exists.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from contract.topology import Topology
from infra import access, iam
from infra.replication import RegionalStore, key_arns
from infra.tags import JURISDICTION_TAG


@dataclass(frozen=True)
class PublishersArgs:
    topology: Topology
    project: str
    account_id: str
    stores: Mapping[str, RegionalStore]  # every region of the topology, by region key
    principals: Mapping[str, Sequence[str]]  # jurisdiction code -> IAM principal ARNs that may assume its publisher


class Publishers(pulumi.ComponentResource):
    """One publisher role per jurisdiction that has regions, confined to that jurisdiction's stores and keys."""

    role_arns: pulumi.Output[dict[str, str]]

    def __init__(self, name: str, args: PublishersArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("speech:infra:Publishers", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        arns: dict[str, pulumi.Output[str]] = {}
        for jurisdiction in args.topology.jurisdictions:
            regions = args.topology.regions_in(jurisdiction.code)
            if not regions:
                continue
            code = jurisdiction.code
            role = aws.iam.Role(
                f"{name}-{code}",
                name=iam.publisher_role_name(args.project, code),
                assume_role_policy=iam.account_trust(args.principals[code]),
                tags={JURISDICTION_TAG: code},
                opts=child,
            )
            aws.iam.RolePolicy(
                f"{name}-{code}-policy",
                role=role.id,
                policy=key_arns(args.stores, regions).apply(
                    functools.partial(access.publisher_policy, args.topology, args.project, args.account_id, code)
                ),
                opts=child,
            )
            arns[code] = role.arn
        self.role_arns = pulumi.Output.all(**arns) if arns else pulumi.Output.from_input({})
        self.register_outputs({"role_arns": self.role_arns})
