"""Every Kubernetes object a regional stack applies is valid for the cluster it goes to.

Core objects are checked with `kubernetes-validate` against the schemas of the stack's Kubernetes version, in
strict mode (an unknown or misspelt field fails, which plain dict inputs would otherwise let through). Istio, KEDA,
Prometheus-operator and Argo Rollouts objects are checked against the CRD schemas the `@kubernetes-models` packages
ship (tests/k8s_schemas, installed by scripts/setup.sh). Argo's CRDs leave a Rollout's pod template and an analysis
Job's spec open, so those are checked as core objects too (a PodTemplate, a Job). TargetGroupBinding has no
published validator package: its API version and the fields the controller requires are checked here.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest

from contract.topology import DEFAULT_TOPOLOGY
from infra import config, offline
from tests.conftest import REGIONAL_STACKS
from tests.infra import kube

SCHEMAS = Path(__file__).resolve().parents[1] / "k8s_schemas"
CRD_GROUPS = ("networking.istio.io/", "keda.sh/", "monitoring.coreos.com/", "argoproj.io/")
CORE_GROUPS = ("v1", "apps/v1", "policy/v1", "networking.k8s.io/v1")


def _embedded(custom: dict) -> list[dict]:
    """The core objects inside Argo's custom resources, which its CRD schemas do not check field by field."""
    if custom["apiVersion"] != "argoproj.io/v1alpha1":
        return []
    meta = {"name": custom["metadata"]["name"], "namespace": custom["metadata"]["namespace"]}
    if custom["kind"] == "Rollout":
        return [{"apiVersion": "v1", "kind": "PodTemplate", "metadata": meta, "template": custom["spec"]["template"]}]
    if custom["kind"] == "AnalysisTemplate":
        return [
            {"apiVersion": "batch/v1", "kind": "Job", "metadata": meta, "spec": metric["provider"]["job"]["spec"]}
            for metric in custom["spec"]["metrics"]
            if "job" in metric["provider"]
        ]
    return []


def _version(stack: str) -> str:
    cfg = config.load(stack, offline.stack_config(stack), DEFAULT_TOPOLOGY)
    assert isinstance(cfg, config.RegionalConfig)
    return f"{cfg.kubernetes_version}.0"


def _validate_custom(objects: list[dict]) -> list[str | None]:
    node = shutil.which("node")
    assert node, "Node.js runs the CRD validators (scripts/setup.sh installs it)"
    assert (SCHEMAS / "node_modules").is_dir(), "run `npm ci --prefix tests/k8s_schemas` (scripts/setup.sh does)"
    result = subprocess.run(
        [node, str(SCHEMAS / "validate.mjs")],
        input=json.dumps(objects),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=SCHEMAS,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.mark.parametrize("stack", REGIONAL_STACKS)
def test_every_core_object_is_valid_for_the_stacks_kubernetes_version(program, stack):
    version = _version(stack)
    manifests = [kube.manifest(r) for r in kube.objects(program(stack))]
    core = [m for m in manifests if m["apiVersion"] in CORE_GROUPS] + [e for m in manifests for e in _embedded(m)]
    assert {o["kind"] for o in core} >= {
        "Namespace", "ServiceAccount", "ConfigMap", "PodTemplate", "Job", "Service", "PodDisruptionBudget",
        "NetworkPolicy",
    }  # fmt: skip
    for manifest in core:
        try:
            kubernetes_validate.validate(manifest, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{manifest['kind']} {manifest['metadata'].get('name')}: {exc.message} at {list(exc.path)}")


def test_strict_validation_catches_a_misspelt_field_that_a_plain_dict_input_lets_through(program):
    (rollout, *_) = kube.of_kind(program("eu-west"), "Rollout")
    rollout["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {"httpGet": {"port": 8000}}
    (template,) = _embedded(rollout)
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(template, _version("eu-west"), strict=True)


# Two objects the validators must reject: a ScaledObject without its scaleTargetRef, a canary step with a string weight.
INVALID_CUSTOM = [
    {"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject", "metadata": {"name": "x"}, "spec": {}},
    {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Rollout",
        "metadata": {"name": "x"},
        "spec": {"strategy": {"canary": {"steps": [{"setWeight": "1%"}]}}},
    },
]


@pytest.fixture(scope="module")
def crd_verdicts(program) -> dict[str, list[tuple[dict, str | None]]]:
    """{stack: [(custom object, problem or None)]} for every regional stack, plus "invalid" for INVALID_CUSTOM, all
    from one run of the validators: each run starts Node.js and loads every CRD schema, a CPU-second of its own, while
    an object's verdict does not depend on the others validated with it."""
    batches = {
        stack: [kube.manifest(r) for r in kube.objects(program(stack)) if r.inputs["apiVersion"].startswith(CRD_GROUPS)]
        for stack in REGIONAL_STACKS
    }
    batches["invalid"] = INVALID_CUSTOM
    objects = [o for batch in batches.values() for o in batch]
    verdicts = list(zip(objects, _validate_custom(objects), strict=True))
    by_batch, start = {}, 0
    for name, batch in batches.items():
        by_batch[name], start = verdicts[start : start + len(batch)], start + len(batch)
    return by_batch


@pytest.mark.parametrize("stack", REGIONAL_STACKS)
def test_every_istio_keda_prometheus_and_argo_object_matches_its_crd_schema(crd_verdicts, stack):
    assert {o["kind"] for o, _ in crd_verdicts[stack]} == {
        "Gateway", "VirtualService", "ScaledObject", "ServiceMonitor", "PrometheusRule", "Rollout", "AnalysisTemplate"
    }  # fmt: skip
    for manifest, problem in crd_verdicts[stack]:
        assert problem is None, f"{manifest['kind']} {manifest['metadata']['name']}: {problem}"


def test_the_crd_validators_reject_an_invalid_object(crd_verdicts):
    (_, problem), (_, rollout_problem) = crd_verdicts["invalid"]
    assert problem is not None and "scaleTargetRef" in problem
    assert rollout_problem is not None and "setWeight must be integer" in rollout_problem


@pytest.mark.parametrize("stack", REGIONAL_STACKS)
def test_target_group_binding_has_what_the_load_balancer_controller_requires(program, stack):
    (binding,) = kube.of_kind(program(stack), "TargetGroupBinding")
    assert binding["apiVersion"] == "elbv2.k8s.aws/v1beta1"
    assert binding["metadata"]["name"] and binding["metadata"]["namespace"]
    spec = binding["spec"]
    assert spec["targetGroupARN"].startswith("arn:aws:")
    assert set(spec["serviceRef"]) == {"name", "port"} and isinstance(spec["serviceRef"]["port"], int)
    assert spec["targetType"] in ("ip", "instance")
    assert set(spec) <= {"serviceRef", "targetGroupARN", "targetType", "networking", "nodeSelector", "ipAddressType"}


@pytest.mark.parametrize("stack", REGIONAL_STACKS)
def test_every_kubernetes_object_is_namespaced_and_named_explicitly(program, stack):
    for manifest in (kube.manifest(r) for r in kube.objects(program(stack))):
        assert manifest["metadata"].get("name"), f"{manifest['kind']} would be auto-named"
        if manifest["kind"] != "Namespace":
            assert manifest["metadata"].get("namespace"), f"{manifest['kind']} {manifest['metadata']['name']}"
