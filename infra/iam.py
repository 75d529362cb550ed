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


def trust_policy(service: str, action: Actions = "sts:AssumeRole") -> str:
    """The assume-role policy that lets the AWS service ``service`` (e.g. ``eks.amazonaws.com``) use a role."""
    return policy_document([statement("Allow", action, principal={"Service": service})])


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
        assume_role_policy=trust_policy(service, action),
        tags=dict(tags) if tags is not None else None,
        opts=opts,
    )
    attachments = tuple(
        aws.iam.RolePolicyAttachment(f"{name}-{arn.rsplit('/', 1)[1]}", role=role.name, policy_arn=arn, opts=opts)
        for arn in managed_policy_arns
    )
    return ServiceRole(role, attachments)
