"""The policy pack: `pulumi preview --policy-pack policy` (or `pulumi up --policy-pack policy`) runs this file."""

from pulumi_policy import EnforcementLevel, PolicyPack

from policy.pack import policies

PolicyPack(name="speech-platform", enforcement_level=EnforcementLevel.MANDATORY, policies=policies())
