"""IAM policy documents, trust policies and service roles, written one way for every component.

Components describe *what* a role may do with :func:`statement`; this module owns the document format, so every
policy the package writes has the same shape and a reviewer (or `parliament`) reads them all alike.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import pulumi
import pulumi_aws as aws

from contract.topology import Region

POLICY_VERSION = "2012-10-17"

Actions = str | Sequence[str]


def statement(
    effect: Literal["Allow", "Deny"],
    action: Actions,
    resource: str | Sequence[str] | None = None,
    *,
    sid: str | None = None,
    principal: str | Mapping[str, Any] | None = None,
    condition: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """One policy statement; keys in IAM's customary order, unset ones left out."""
    entries: dict[str, Any] = {
        "Sid": sid,
        "Effect": effect,
        "Principal": principal,
        "Action": action if isinstance(action, str) else list(action),
        "Resource": resource if resource is None or isinstance(resource, str) else list(resource),
        "Condition": condition,
    }
    return {key: value for key, value in entries.items() if value is not None}


def policy_document(statements: Iterable[Mapping[str, Any]]) -> str:
    """An identity, resource or trust policy document as the IAM and S3 APIs take it (JSON)."""
    return json.dumps({"Version": POLICY_VERSION, "Statement": list(statements)})


def trust_policy(service: str, action: Actions = "sts:AssumeRole", source_account: str | None = None) -> str:
    """The assume-role policy that lets the AWS service ``service`` (e.g. ``eks.amazonaws.com``) use a role.

    ``source_account`` admits the service only on behalf of that account's resources (no confused deputy).
    """
    condition = {"StringEquals": {"aws:SourceAccount": source_account}} if source_account else None
    return policy_document([statement("Allow", action, principal={"Service": service}, condition=condition)])


@dataclass(frozen=True)
class ServiceRole:
    role: aws.iam.Role
    attachments: tuple[aws.iam.RolePolicyAttachment, ...]  # depend on these before the service uses the role


def service_role(
    name: str,
    service: str,
    *,
    managed_policy_arns: Sequence[str] = (),
    action: Actions = "sts:AssumeRole",
    role_name: str | None = None,
    source_account: str | None = None,
    tags: Mapping[str, str] | None = None,
    opts: pulumi.ResourceOptions | None = None,
) -> ServiceRole:
    """A role ``service`` may assume, with AWS managed policies attached.

    Each attachment is named ``<name>-<policy name>``, so adding or removing a policy never renames the others.
    ``role_name`` fixes the role's AWS name where other policies must refer to it before it exists.
    """
    role = aws.iam.Role(
        name,
        name=role_name,
        assume_role_policy=trust_policy(service, action, source_account),
        tags=dict(tags) if tags is not None else None,
        opts=opts,
    )
    attachments = tuple(
        aws.iam.RolePolicyAttachment(f"{name}-{arn.rsplit('/', 1)[1]}", role=role.name, policy_arn=arn, opts=opts)
        for arn in managed_policy_arns
    )
    return ServiceRole(role, attachments)


# Deterministic role names: key and bucket policies of one stack name the roles of another (the global stack's
# publishers and replication roles) before those exist, so the names must be derivable from the topology alone.


def role_arn(account_id: str, role_name: str) -> str:
    return f"arn:aws:iam::{account_id}:role/{role_name}"


def serving_role_name(project: str, region: Region) -> str:
    """The serving pods' role in ``region`` (EKS Pod Identity)."""
    return f"{project}-serving-{region.key}"


def publisher_role_name(project: str, jurisdiction: str) -> str:
    """The release pipeline's role for every model store of ``jurisdiction``."""
    return f"{project}-publisher-{jurisdiction}"


def replication_role_name(project: str, region: Region) -> str:
    """The role S3 uses to replicate out of ``region``'s store."""
    return f"{project}-model-replication-{region.key}"


def cluster_role_name(cluster_name: str) -> str:
    """The EKS control plane's role; the region's key policy names it to allow envelope encryption of Secrets."""
    return f"{cluster_name}-control-plane"


def deny_outside_regions(aws_regions: Iterable[str], actions: Actions = ("s3:*", "kms:*")) -> dict[str, Any]:
    """An explicit Deny of ``actions`` in every AWS region but ``aws_regions``.

    It outranks any Allow a role is ever given (by mistake, or by a managed policy attached later), so a role of a
    strict jurisdiction cannot reach a store or a key in another jurisdiction's region even if granted.
    """
    return statement(
        "Deny",
        actions,
        "*",
        sid="DenyOutsideJurisdictionRegions",
        condition={"StringNotEquals": {"aws:RequestedRegion": sorted(set(aws_regions))}},
    )


def pod_identity_trust(account_id: str, cluster_name: str, namespace: str, service_account: str) -> str:
    """The trust policy of a role for EKS Pod Identity, limited to one service account of one cluster.

    EKS Pod Identity tags every session with the cluster, namespace and service account, so the role can refuse
    every other association in the account (which IRSA expressed through the OIDC subject instead).
    """
    return policy_document(
        [
            statement(
                "Allow",
                ["sts:AssumeRole", "sts:TagSession"],
                sid="EksPodIdentity",
                principal={"Service": "pods.eks.amazonaws.com"},
                condition={
                    "StringEquals": {
                        "aws:SourceAccount": account_id,
                        "aws:RequestTag/eks-cluster-name": cluster_name,
                        "aws:RequestTag/kubernetes-namespace": namespace,
                        "aws:RequestTag/kubernetes-service-account": service_account,
                    }
                },
            )
        ]
    )


def account_trust(principal_arns: Sequence[str]) -> str:
    """The trust policy of a role that the named IAM principals (e.g. a CI system's OIDC role) may assume."""
    return policy_document(
        [statement("Allow", "sts:AssumeRole", sid="NamedPrincipals", principal={"AWS": sorted(principal_arns)})]
    )
