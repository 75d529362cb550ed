"""The isolation proof: requests across the residency boundary, decided by an IAM policy evaluation engine over the
policy documents the program itself generates (read from the offline graph, never retyped).

The engine is `@cloud-copilot/iam-simulate` (Node.js, `tests/infra/iam_simulator`), which evaluates identity,
resource (bucket) and KMS key policies with every condition operator and request context key, as AWS does; moto
evaluates identity policies only and ignores most conditions (`test_isolation_moto.py` uses it for what it can).

Each denial is proven layer by layer: the identity policy alone (no resource policy), the resource policy alone
(under an identity that may do anything), and both together, so a guarantee never rests on one policy.
"""

from __future__ import annotations

import copy
import json
import subprocess
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from contract.topology import DEFAULT_TOPOLOGY
from infra import offline

SIMULATOR = Path(__file__).parent / "iam_simulator"
ACCOUNT = offline.MOCK_ACCOUNT_ID
ALLOW_EVERYTHING = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
Layer = Literal["identity", "resource", "both"]


@dataclass
class Documents:
    """Every data-path policy of the default topology's stacks, as the program generated them."""

    identity: dict[str, dict]  # role name -> its inline policy
    buckets: dict[str, dict]  # region key -> bucket policy
    keys: dict[str, dict]  # region key -> key policy
    bucket_arns: dict[str, str]
    key_arns: dict[str, str]
    vpc_endpoints: dict[str, str]

    def copy(self) -> Documents:
        return copy.deepcopy(self)


def collect(program: Callable[[str], offline.Graph]) -> Documents:
    """The documents of every stack, taken from the registrations of the real program under mocks."""
    identity: dict[str, dict] = {}
    docs = Documents(identity, {}, {}, {}, {}, {})
    for stack in (*DEFAULT_TOPOLOGY.keys, "global"):
        graph = program(stack)
        roles = {r.urn: r.inputs["name"] for r in graph.of_type("aws:iam/role:Role") if r.inputs.get("name")}
        for policy in graph.of_type("aws:iam/rolePolicy:RolePolicy"):
            role = next((name for urn, name in roles.items() if urn in policy.dependencies), None)
            if role is not None:
                identity[role] = json.loads(policy.inputs["policy"])
        if stack == "global":
            continue
        docs.buckets[stack] = json.loads(graph.of_type("aws:s3/bucketPolicy:BucketPolicy")[0].inputs["policy"])
        docs.keys[stack] = json.loads(graph.of_type("aws:kms/key:Key")[0].inputs["policy"])
        docs.bucket_arns[stack] = graph.exports["modelBucketArn"]
        docs.key_arns[stack] = graph.exports["kmsKeyArn"]
        (endpoint,) = [r for r in graph.of_type("aws:ec2/vpcEndpoint:VpcEndpoint") if r.name.endswith("-s3")]
        docs.vpc_endpoints[stack] = str(endpoint.id)
    return docs


@dataclass(frozen=True)
class Request:
    """One API call: ``role`` (by name) does ``action`` on ``resource`` in AWS region ``region``."""

    role: str
    action: str
    resource: str
    region: str
    context: dict[str, str] = field(default_factory=dict)

    def simulation(self, identity: dict | None, resource_policy: dict | None) -> dict[str, Any]:
        role_arn = f"arn:aws:iam::{ACCOUNT}:role/{self.role}"
        simulation: dict[str, Any] = {
            "identityPolicies": [{"name": "inline", "policy": identity}] if identity else [],
            "request": {
                "action": self.action,
                "principal": f"arn:aws:sts::{ACCOUNT}:assumed-role/{self.role}/proof",
                "resource": {"accountId": ACCOUNT, "resource": self.resource},
                "contextVariables": {
                    "aws:RequestedRegion": self.region,
                    "aws:PrincipalArn": role_arn,
                    "aws:PrincipalAccount": ACCOUNT,
                    "aws:SecureTransport": "true",
                    **self.context,
                },
            },
        }
        if resource_policy is not None:
            simulation["resourcePolicy"] = resource_policy
        return simulation


@dataclass(frozen=True)
class Scenario:
    """A request and what must decide it: ``allowed``, or the layers that must each deny it on their own."""

    name: str
    request: Request
    resource_policy: Callable[[Documents], dict]
    denied_by: frozenset[Layer] = frozenset()
    explicitly: bool = False  # the identity layer's denial must be an explicit Deny, not a missing Allow

    @property
    def is_allowed(self) -> bool:
        return not self.denied_by


def evaluate(simulations: list[dict]) -> list[str]:
    """Verdicts of the simulator, one per simulation: Allowed, ExplicitlyDenied or ImplicitlyDenied."""
    result = subprocess.run(
        ["node", str(SIMULATOR / "simulate.mjs")],
        input=json.dumps(simulations),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"the IAM simulator failed (run scripts/setup.sh for its npm package): {result.stderr}")
    verdicts = json.loads(result.stdout)
    errors = [v for v in verdicts if v.startswith("error")]
    if errors:
        raise RuntimeError(f"the IAM simulator refused a request: {errors[0]}")
    return verdicts


def prove(docs: Documents, scenarios: Iterable[Scenario]) -> list[str]:
    """Every way ``docs`` fail the scenarios (empty when the proof holds), each naming scenario and layer."""
    cases: list[tuple[Scenario, Layer, dict]] = []
    for scenario in scenarios:
        identity = docs.identity[scenario.request.role]
        resource = scenario.resource_policy(docs)
        request = scenario.request
        cases.append((scenario, "both", request.simulation(identity, resource)))
        for layer in scenario.denied_by:
            alone = (identity, None) if layer == "identity" else (ALLOW_EVERYTHING, resource)
            cases.append((scenario, layer, request.simulation(*alone)))
    failures = []
    for (scenario, layer, _), verdict in zip(cases, evaluate([c[2] for c in cases]), strict=True):
        if scenario.is_allowed and verdict != "Allowed":
            failures.append(f"{scenario.name}: expected Allowed, got {verdict}")
        elif not scenario.is_allowed and verdict == "Allowed":
            failures.append(f"{scenario.name}: the {layer} layer allowed it")
        elif layer == "identity" and scenario.explicitly and verdict != "ExplicitlyDenied":
            failures.append(f"{scenario.name}: the identity layer denied it only implicitly ({verdict})")
    return failures
