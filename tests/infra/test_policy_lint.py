"""Every IAM policy document the program generates passes `parliament` (the IAM linter).

Identity policies must be clean. Trust, key and bucket policies are resource policies, which parliament reads as if
they were identity policies; the findings that follow from that alone are listed below with the reason, and
anything else fails.
"""

from __future__ import annotations

import json

import pytest

from tests.conftest import STACKS

# (issue, resource type): why it is expected there.
EXPECTED = {
    ("MALFORMED", "aws:iam/role:Role"): "a trust policy has no Resource: the role itself is the resource",
    ("RESOURCE_STAR", "aws:kms/key:Key"): "in a key policy, Resource '*' means this key",
    ("PERMISSIONS_MANAGEMENT_ACTIONS", "aws:kms/key:Key"): "the account administers its keys (and only that)",
    # AWS documents kms:EncryptionContext:aws:logs:arn with ArnLike/ArnEquals; parliament types it as a string.
    ("MISMATCHED_TYPE", "aws:kms/key:Key"): "ArnLike on the CloudWatch Logs encryption context, as AWS documents",
    ("UNKNOWN_CONDITION_FOR_ACTION", "aws:kms/key:Key"): "CloudWatch Logs' Describe* under its context condition",
}


@pytest.fixture(scope="module")
def analyze_policy_string():
    """parliament's `analyze_policy_string`, imported when a test here runs, not when the module is collected: every
    test worker collects it, and only the one that runs it needs parliament's IAM action catalogue loaded."""
    from parliament import analyze_policy_string

    return analyze_policy_string


def _documents(graph):
    for resource in graph.resources:
        for prop in ("policy", "assumeRolePolicy"):
            document = resource.inputs.get(prop)
            if isinstance(document, str) and document.startswith("{"):
                yield resource, document


@pytest.mark.parametrize("stack", STACKS)
def test_every_generated_policy_passes_parliament(program, stack, analyze_policy_string):
    documents = list(_documents(program(stack)))
    assert documents
    for resource, document in documents:
        for finding in analyze_policy_string(document, include_community_auditors=True).findings:
            assert (finding.issue, resource.type) in EXPECTED, (
                f"{resource.name}: {finding.issue} {finding.severity} {finding.detail}"
            )


def test_parliament_flags_an_allow_on_every_resource_so_the_lint_can_fail(analyze_policy_string):
    widened = json.dumps(
        {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "kms:Decrypt", "Resource": "*"}]}
    )
    findings = analyze_policy_string(widened, include_community_auditors=True).findings
    assert findings, "parliament reported nothing for kms:Decrypt on every key"
