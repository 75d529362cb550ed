"""The serving workload's canary: Argo Rollouts over the gateway's routes, with the speech gates and the smoke check."""

from __future__ import annotations

import pytest

from contract import service
from contract.topology import DEFAULT_TOPOLOGY
from infra import config, offline
from infra.k8s import gates, rollout
from tests.conftest import REGIONAL_STACKS
from tests.infra import kube

REALTIME, BATCH = service.SERVICE_ACCOUNT, f"{service.SERVICE_ACCOUNT}-batch"


def _canary(graph: offline.Graph, name: str) -> dict:
    return kube.find(graph, "Rollout", name)["spec"]["strategy"]["canary"]


def _kinds(steps: list[dict]) -> list[str]:
    return [next(iter(step)) for step in steps]


@pytest.mark.parametrize("stack", REGIONAL_STACKS)
def test_a_canary_is_smoke_checked_before_any_user_reaches_it_then_starts_at_the_configured_weight(program, stack):
    graph, delivery = program(stack), config.DeliveryConfig()
    steps = _canary(graph, REALTIME)["steps"]
    kinds = _kinds(steps)
    assert kinds.index("analysis") < kinds.index("setWeight"), "the smoke check runs before the first user"
    assert steps[kinds.index("setHeaderRoute")]["setHeaderRoute"]["match"] == [
        {"headerName": "canary", "headerValue": {"exact": "true"}}
    ]
    (smoke,) = steps[kinds.index("analysis")]["analysis"]["templates"]
    assert kube.find(graph, "AnalysisTemplate", smoke["templateName"])
    weights = [step["setWeight"] for step in steps if "setWeight" in step]
    assert weights == [1, *delivery.steps], "1% first, then each step"
    pauses = [step["pause"]["duration"] for step in steps[kinds.index("setWeight") :] if "pause" in step]
    assert pauses == [f"{delivery.step_minutes}m"] * len(weights)


@pytest.mark.parametrize("stack", REGIONAL_STACKS)
def test_every_rollout_runs_the_speech_gates_in_the_background_and_aborts_on_one_breach(program, stack):
    graph = program(stack)
    template = kube.find(graph, "AnalysisTemplate", gates.GATES_TEMPLATE)
    metrics = {m["name"]: m for m in template["spec"]["metrics"]}
    assert set(metrics) == {"error-rate", "stream-latency-p99", "real-time-factor", "shadow-wer"}
    prometheus = kube.find(graph, "ScaledObject", REALTIME)["spec"]["triggers"][0]["metadata"]["serverAddress"]
    for metric in metrics.values():
        assert metric["failureLimit"] == 0, "one breach aborts"
        assert metric["provider"]["prometheus"]["address"] == prometheus
        assert "{{args.canary-hash}}" in metric["provider"]["prometheus"]["query"], "the canary's pods only"
    assert metrics["stream-latency-p99"]["successCondition"] == "isNaN(result[0]) || result[0] <= 0.5"
    assert metrics["error-rate"]["successCondition"] == "isNaN(result[0]) || result[0] <= 0.01"
    for name in (REALTIME, BATCH):
        spec = kube.find(graph, "Rollout", name)["spec"]
        analysis = spec["strategy"]["canary"]["analysis"]
        assert analysis["templates"] == [{"templateName": gates.GATES_TEMPLATE}]
        assert analysis["args"] == [{"name": "canary-hash", "valueFrom": {"podTemplateHashValue": "Latest"}}]
        first_weight = _kinds(spec["strategy"]["canary"]["steps"]).index("setWeight")
        assert analysis["startingStep"] == first_weight, "the gates start with the first user traffic"
        assert spec["progressDeadlineAbort"] is True, "a canary that never gets ready is rolled back, not stuck"


def test_gate_thresholds_come_from_the_stack_config():
    raw = offline.stack_config("eu-west")
    raw["speech:delivery"] = {"gates": {"maxP99LatencySeconds": 0.8, "maxShadowWer": 0.05, "smokeMaxWer": 0.2}}
    graph = offline.run("eu-west", DEFAULT_TOPOLOGY, config=raw)
    metrics = {m["name"]: m for m in kube.find(graph, "AnalysisTemplate", gates.GATES_TEMPLATE)["spec"]["metrics"]}
    assert metrics["stream-latency-p99"]["successCondition"].endswith("<= 0.8")
    assert metrics["shadow-wer"]["successCondition"].endswith("<= 0.05")
    (smoke,) = kube.find(graph, "AnalysisTemplate", rollout.smoke_template(REALTIME))["spec"]["metrics"]
    (container,) = smoke["provider"]["job"]["spec"]["template"]["spec"]["containers"]
    assert container["command"][container["command"].index("--max-wer") + 1] == "0.2"


@pytest.mark.parametrize("stack", REGIONAL_STACKS)
def test_the_smoke_check_transcribes_through_the_canary_with_the_serving_image(program, stack):
    graph = program(stack)
    image = kube.find(graph, "Rollout", REALTIME)["spec"]["template"]["spec"]["containers"][0]["image"]
    for name, url_part, header in (
        (REALTIME, "istio-ingress", ["--header", "canary=true"]),
        (BATCH, f"{BATCH}-canary.{service.KUBERNETES_NAMESPACE}.svc", []),
    ):
        (metric,) = kube.find(graph, "AnalysisTemplate", rollout.smoke_template(name))["spec"]["metrics"]
        job = metric["provider"]["job"]["spec"]
        (container,) = job["template"]["spec"]["containers"]
        assert container["image"] == image
        command = container["command"]
        assert command[:3] == ["python", "-m", "serving.smoke"]
        assert url_part in command[command.index("--url") + 1]
        assert command[command.index("--max-wer") + 2 :] == header
        assert job["backoffLimit"] == 0 and metric["failureLimit"] == 0


@pytest.mark.parametrize("stack", REGIONAL_STACKS)
def test_replaced_pods_outlive_promotion_and_abort_so_open_streams_end_where_they_started(program, stack):
    canary = _canary(program(stack), REALTIME)
    delay = config.DeliveryConfig().scale_down_delay_s
    assert canary["scaleDownDelaySeconds"] == canary["abortScaleDownDelaySeconds"] == delay


@pytest.mark.parametrize("stack", REGIONAL_STACKS)
def test_each_rollout_weighs_only_its_own_routes_of_the_public_virtual_service(program, stack):
    graph = program(stack)
    (virtual_service,) = kube.of_kind(graph, "VirtualService")
    routes = {r["name"]: r for r in virtual_service["spec"]["http"]}
    owned = {}
    for name in (REALTIME, BATCH):
        canary = _canary(graph, name)
        istio = canary["trafficRouting"]["istio"]["virtualService"]
        assert istio["name"] == virtual_service["metadata"]["name"]
        for route in istio["routes"]:
            hosts = [d["destination"]["host"].split(".")[0] for d in routes[route]["route"]]
            assert hosts == [canary["stableService"], canary["canaryService"]], route
            owned[route] = name
    assert owned == {"grpc": REALTIME, "stream": REALTIME, "api": REALTIME, "probes": REALTIME, "batch": BATCH}
    assert _canary(graph, REALTIME)["trafficRouting"]["managedRoutes"] == [{"name": rollout.HEADER_ROUTE}]


def test_mirroring_copies_batch_requests_to_the_canary_before_it_takes_any_weight():
    raw = offline.stack_config("ap-northeast")
    raw["speech:delivery"] = {"mirrorPercent": 20, "mirrorMinutes": 15}
    graph = offline.run("ap-northeast", DEFAULT_TOPOLOGY, config=raw)
    steps = _canary(graph, BATCH)["steps"]
    kinds = _kinds(steps)
    start, end = (i for i, kind in enumerate(kinds) if kind == "setMirrorRoute")
    assert kinds.index("analysis") < start < end < kinds.index("setWeight")
    mirror = steps[start]["setMirrorRoute"]
    assert mirror["percentage"] == 20
    assert mirror["match"] == [{"method": {"exact": "POST"}, "path": {"exact": service.BATCH_PATH}}]
    assert steps[start + 1] == {"pause": {"duration": "15m"}}
    assert steps[end] == {"setMirrorRoute": {"name": rollout.MIRROR_ROUTE}}, "the mirror ends before users come"
    assert {"name": rollout.MIRROR_ROUTE} in _canary(graph, BATCH)["trafficRouting"]["managedRoutes"]
    assert "setMirrorRoute" not in _kinds(_canary(graph, REALTIME)["steps"]), "realtime owns no batch route here"
