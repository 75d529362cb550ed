"""`policy.rules` as pulumi-policy validations: one mandatory `ResourceValidationPolicy` per rule."""

from __future__ import annotations

from pulumi_policy import (
    EnforcementLevel,
    Policy,
    ReportViolation,
    ResourceValidationArgs,
    ResourceValidationPolicy,
)

from policy.rules import RULES, PolicyRule


def stack_of(urn: str) -> str:
    """The stack a resource belongs to: ``urn:pulumi:<stack>::<project>::<type>::<name>``."""
    return urn.split("::", 1)[0].removeprefix("urn:pulumi:")


def _validation(rule: PolicyRule):
    def validate(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
        for violation in rule.check(args.resource_type, args.props, stack_of(args.urn)):
            report_violation(violation, None)

    return validate


def policies() -> list[Policy]:
    return [
        ResourceValidationPolicy(
            name=rule.name,
            description=rule.description,
            validate=_validation(rule),
            enforcement_level=EnforcementLevel.MANDATORY,
        )
        for rule in RULES
    ]
