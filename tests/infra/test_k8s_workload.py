"""The serving workload of every regional stack: identity, settings, pods, budgets, scaling and network policy."""

from __future__ import annotations

import json

import pytest

from contract import service
from contract.topology import DEFAULT_TOPOLOGY, Topology
from infra import config, offline
from infra.k8s import grace
from infra.k8s.addons import PROMETHEUS_FULLNAME, PROMETHEUS_PORT
from infra.k8s.mesh import GATEWAY_LABELS, GATEWAY_NAMESPACE
from infra.k8s.network_policy import POD_IDENTITY_AGENT_CIDR
from infra.k8s.workload import SMOKE_LABELS
from tests.conftest import REGIONAL_STACKS
from tests.infra import kube

NS = service.KUBERNETES_NAMESPACE
REALTIME, BATCH = service.SERVICE_ACCOUNT, f"{service.SERVICE_ACCOUNT}-batch"


def _cfg(stack: str, raw: dict | None = None) -> config.RegionalConfig:
    cfg = config.load(stack, raw or offline.stack_config(stack), DEFAULT_TOPOLOGY)
    assert isinstance(cfg, config.RegionalConfig)
    return cfg


def _pod(graph: offline.Graph, rollout: str) -> dict:
    return kube.find(graph, "Rollout", rollout)["spec"]["template"]["spec"]


def _container(graph: offline.Graph, rollout: str) -> dict:
    (container,) = _pod(graph, rollout)["containers"]
    return container


@pytest.mark.parametrize("stack", REGIONAL_STACKS)
def test_the_service_account_is_exactly_the_one_the_serving_role_trusts(program, stack):
    graph = program(stack)
    account = kube.find(graph, "ServiceAccount", service.SERVICE_ACCOUNT)
    assert account["metadata"]["namespace"] == service.KUBERNETES_NAMESPACE
    for rollout in (REALTIME, BATCH):
        assert _pod(graph, rollout)["serviceAccountName"] == service.SERVICE_ACCOUNT
    labels = kube.find(graph, "Namespace", NS)["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"


@pytest.mark.parametrize("stack", REGIONAL_STACKS)
def test_the_container_gets_its_region_bucket_model_and_topology_by_the_contracts_names(program, stack):
    graph, cfg = program(stack), _cfg(stack)
    settings = kube.find(graph, "ConfigMap", "speech-serving-settings")["data"]
    assert settings[service.ENV_REGION] == cfg.region.aws_region
    assert settings[service.ENV_PUBLIC_DOMAIN] == cfg.domain, "a refused tenant is sent to its regional endpoint"
    assert settings[service.ENV_MODEL_BUCKET] == graph.exports["modelBucketName"]
    assert (settings[service.ENV_MODEL_NAME], settings[service.ENV_MODEL_VERSION]) == (
        cfg.model.name,
        cfg.model.version,
    )
    languages = json.loads(settings.get(service.ENV_MODEL_LANGUAGES, "{}"))
    assert languages == cfg.model.languages
    assert (languages == {"en": "whisper-tiny.en"}) == (stack == "us-west"), "English-only models serve us-west only"
    topology_map = kube.find(graph, "ConfigMap", "speech-topology")
    (file_name,) = topology_map["data"]
    assert Topology.from_dict(json.loads(topology_map["data"][file_name])) == DEFAULT_TOPOLOGY
    container, pod = _container(graph, REALTIME), _pod(graph, REALTIME)
    assert container["envFrom"] == [{"configMapRef": {"name": "speech-serving-settings"}}]
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == "topology"]
    (volume,) = [v for v in pod["volumes"] if v["name"] == "topology"]
    assert volume["configMap"]["name"] == "speech-topology"
    assert settings[service.ENV_TOPOLOGY_FILE] == f"{mount['mountPath']}/{file_name}"


@pytest.mark.parametrize("stack", REGIONAL_STACKS)
def test_realtime_pods_take_one_gpu_on_the_gpu_pool(program, stack):
    graph = program(stack)
    pod, container = _pod(graph, REALTIME), _container(graph, REALTIME)
    assert container["resources"]["requests"]["nvidia.com/gpu"] == "1"
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert {"cpu", "memory"} <= set(container["resources"]["requests"])
    assert "memory" in container["resources"]["limits"]
    assert pod["tolerations"] == [
        {"key": "nvidia.com/gpu", "operator": "Equal", "value": "true", "effect": "NoSchedule"}
    ]
    (term,) = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert term["matchExpressions"] == [{"key": "speech.io/pool", "operator": "In", "values": ["gpu"]}]
    spread = pod["topologySpreadConstraints"]
    assert [c["topologyKey"] for c in spread] == ["topology.kubernetes.io/zone"]


@pytest.mark.parametrize("stack", REGIONAL_STACKS)
def test_batch_pods_run_on_spot_first_and_tolerate_its_taint(program, stack):
    pod = _pod(program(stack), BATCH)
    assert {t["key"] for t in pod["tolerations"]} == {"nvidia.com/gpu", "speech.io/spot"}
    node_affinity = pod["affinity"]["nodeAffinity"]
    (preferred,) = node_affinity["preferredDuringSchedulingIgnoredDuringExecution"]
    assert preferred["preference"]["matchExpressions"][0]["values"] == ["spot"]
    # Granted the two-minute spot notice: the whole termination fits inside it.
    assert pod["terminationGracePeriodSeconds"] + grace.SPOT_DRAIN_REACTION_S <= grace.SPOT_INTERRUPTION_NOTICE_S


@pytest.mark.parametrize("stack", REGIONAL_STACKS)
def test_pods_are_probed_on_the_contracts_paths_with_room_to_pull_and_warm_the_model(program, stack):
    container = _container(program(stack), REALTIME)
    # Readiness by the gRPC health protocol, which reports SERVING exactly when /readyz is 200.
    assert container["readinessProbe"]["grpc"] == {"port": service.GRPC_PORT, "service": service.GRPC_SERVICE}
    assert container["livenessProbe"]["httpGet"]["path"] == service.HEALTH_PATH
    startup = container["startupProbe"]
    assert startup["httpGet"]["path"] == service.READINESS_PATH
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 600
    assert container["ports"] == [
        {"name": "http", "containerPort": service.SERVING_PORT, "protocol": "TCP"},
        {"name": "grpc", "containerPort": service.GRPC_PORT, "protocol": "TCP"},
    ]


@pytest.mark.parametrize("stack", REGIONAL_STACKS)
def test_pods_run_non_root_on_a_read_only_root_with_writable_cache_and_tmp(program, stack):
    graph = program(stack)
    pod, container = _pod(graph, REALTIME), _container(graph, REALTIME)
    security = container["securityContext"]
    assert security["runAsNonRoot"] and security["readOnlyRootFilesystem"]
    assert security["allowPrivilegeEscalation"] is False and security["capabilities"] == {"drop": ["ALL"]}
    assert pod["automountServiceAccountToken"] is False
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    settings = kube.find(graph, "ConfigMap", "speech-serving-settings")["data"]
    for path in (settings[service.ENV_MODEL_CACHE_DIR], "/tmp"):
        assert "emptyDir" in volumes[mounts[path]], f"{path} is not writable"


@pytest.mark.parametrize("stack", REGIONAL_STACKS)
def test_termination_grace_covers_the_containers_drain_after_the_pre_stop_pause(program, stack):
    cfg = _cfg(stack)
    for rollout in (REALTIME, BATCH):
        pod, container = _pod(program(stack), rollout), _container(program(stack), rollout)
        pause = container["lifecycle"]["preStop"]["sleep"]["seconds"]
        assert pause == grace.PRE_STOP_SLEEP_S
        assert pod["terminationGracePeriodSeconds"] == pause + cfg.serving.drain_seconds + 10
        assert pod["terminationGracePeriodSeconds"] == grace.termination_grace_seconds(cfg.serving.drain_seconds)
    settings = kube.find(program(stack), "ConfigMap", "speech-serving-settings")["data"]
    assert float(settings[service.ENV_SHUTDOWN_GRACE_S]) == cfg.serving.drain_seconds, "the container drains as long"


def test_grace_derivation_adds_pause_drain_close_and_unload():
    assert grace.termination_grace_seconds(20) == 5 + 20 + 5 + 5
    assert grace.termination_grace_seconds(grace.max_spot_drain_seconds()) + grace.SPOT_DRAIN_REACTION_S == 120


@pytest.mark.parametrize("stack", REGIONAL_STACKS)
def test_each_rollout_has_its_own_stable_and_canary_services_and_a_disruption_budget(program, stack):
    graph = program(stack)
    for name in (REALTIME, BATCH):
        rollout = kube.find(graph, "Rollout", name)
        assert "replicas" not in rollout["spec"], "KEDA owns the replica count"
        canary = rollout["spec"]["strategy"]["canary"]
        for service_name in (name, canary["stableService"], canary["canaryService"]):
            svc = kube.find(graph, "Service", service_name)
            assert svc["spec"]["selector"] == rollout["spec"]["selector"]["matchLabels"], service_name
        budget = kube.find(graph, "PodDisruptionBudget", name)
        assert budget["spec"]["selector"] == rollout["spec"]["selector"]
        assert budget["spec"]["maxUnavailable"] == 1


@pytest.mark.parametrize("stack", REGIONAL_STACKS)
def test_keda_scales_each_rollout_on_its_own_metric_with_cpu_as_a_floor(program, stack):
    graph, serving = program(stack), _cfg(stack).serving
    expected = {
        REALTIME: (service.METRIC_ACTIVE_STREAMS, serving.streams_per_replica, serving.replicas),
        BATCH: (service.METRIC_BATCH_IN_FLIGHT, serving.batch_requests_per_replica, serving.batch_replicas),
    }
    prometheus = kube.release(graph, "kube-prometheus-stack")
    url = f"http://{PROMETHEUS_FULLNAME}-prometheus.{prometheus.inputs['namespace']}.svc:{PROMETHEUS_PORT}"
    assert prometheus.inputs["values"]["fullnameOverride"] == PROMETHEUS_FULLNAME
    for name, (metric, target, bounds) in expected.items():
        spec = kube.find(graph, "ScaledObject", name)["spec"]
        rollout = kube.find(graph, "Rollout", name)
        assert spec["scaleTargetRef"] == {
            "apiVersion": rollout["apiVersion"],
            "kind": "Rollout",
            "name": rollout["metadata"]["name"],
        }
        assert (spec["minReplicaCount"], spec["maxReplicaCount"]) == (bounds.min_replicas, bounds.max_replicas)
        prom, cpu = spec["triggers"]
        assert prom["type"] == "prometheus" and prom["metadata"]["serverAddress"] == url
        assert prom["metadata"]["query"] == f'sum({metric}{{namespace="{NS}",service="{name}"}})'
        assert prom["metadata"]["threshold"] == str(target)
        assert cpu["type"] == "cpu" and cpu["metricType"] == "Utilization"


@pytest.mark.parametrize("stack", REGIONAL_STACKS)
def test_prometheus_scrapes_the_metrics_path_of_every_serving_service(program, stack):
    graph = program(stack)
    (monitor,) = kube.of_kind(graph, "ServiceMonitor")
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["path"] == service.METRICS_PATH and endpoint["port"] == "http"
    selector = monitor["spec"]["selector"]["matchLabels"]
    scraped = [
        s["metadata"]["name"]
        for s in kube.of_kind(graph, "Service")
        if selector.items() <= s["metadata"]["labels"].items()
    ]
    assert sorted(scraped) == [REALTIME, BATCH], "each pod is scraped once, through its role's own Service"
    assert monitor["spec"]["podTargetLabels"] == ["rollouts-pod-template-hash"], "the gates tell versions apart"
    values = kube.release(graph, "kube-prometheus-stack").inputs["values"]["prometheus"]["prometheusSpec"]
    assert values["serviceMonitorSelectorNilUsesHelmValues"] is False


@pytest.mark.parametrize("stack", REGIONAL_STACKS)
def test_the_namespace_denies_by_default_and_admits_only_the_gateway_prometheus_and_the_smoke_check(program, stack):
    graph = program(stack)
    policies = {p["metadata"]["name"]: p["spec"] for p in kube.of_kind(graph, "NetworkPolicy")}
    assert policies["default-deny"] == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
    gateway, prometheus, smoke = [rule["from"] for rule in policies["serving-ingress"]["ingress"]]
    assert [s[0]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"] for s in (gateway, prometheus)] == [
        GATEWAY_NAMESPACE,
        "monitoring",
    ]
    assert gateway[0]["podSelector"]["matchLabels"] == GATEWAY_LABELS
    assert smoke == [{"podSelector": {"matchLabels": SMOKE_LABELS}}], "only the pre-rollout check's own pods"
    smoke_egress = policies["smoke-egress"]
    assert smoke_egress["podSelector"]["matchLabels"] == SMOKE_LABELS
    assert [rule["to"][0].get("namespaceSelector", {}).get("matchLabels") for rule in smoke_egress["egress"]] == [
        {"kubernetes.io/metadata.name": "kube-system"},
        {"kubernetes.io/metadata.name": GATEWAY_NAMESPACE},
        None,
    ]
    from_gateway, from_prometheus, from_smoke = policies["serving-ingress"]["ingress"]
    assert from_gateway["ports"] == [
        {"protocol": "TCP", "port": service.SERVING_PORT},
        {"protocol": "TCP", "port": service.GRPC_PORT},
    ]
    assert from_prometheus["ports"] == from_smoke["ports"] == [{"protocol": "TCP", "port": service.SERVING_PORT}]


@pytest.mark.parametrize("stack", REGIONAL_STACKS)
def test_serving_pods_reach_only_dns_their_credentials_and_regional_s3(program, stack):
    egress = {p["metadata"]["name"]: p["spec"] for p in kube.of_kind(program(stack), "NetworkPolicy")}[
        "serving-egress"
    ]["egress"]
    dns, credentials, s3 = egress
    assert {p["port"] for p in dns["ports"]} == {53}
    assert credentials["to"] == [{"ipBlock": {"cidr": POD_IDENTITY_AGENT_CIDR}}]
    # The offline mock answers AWS's ip-ranges lookup for S3 in the stack's region with documentation ranges.
    assert [t["ipBlock"]["cidr"] for t in s3["to"]] == ["192.0.2.0/25", "198.51.100.0/25"]
    assert s3["ports"] == [{"protocol": "TCP", "port": 443}]


def test_a_cpu_profile_runs_on_the_cpu_pool_without_a_gpu_and_without_batch_replicas():
    raw = offline.stack_config("ap-northeast")
    raw["speech:serving"] = {"profile": "cpu", "replicas": {"min": 1, "max": 4}}
    raw["speech:spotPool"] = {"enabled": False}
    raw["speech:gpuPool"] = {"minSize": 0, "desiredSize": 0, "maxSize": 2, "nightSize": 0}
    graph = offline.run("ap-northeast", DEFAULT_TOPOLOGY, config=raw)
    pod, container = _pod(graph, REALTIME), _container(graph, REALTIME)
    assert "nvidia.com/gpu" not in container["resources"]["requests"]
    assert "nvidia.com/gpu" not in container["resources"].get("limits", {})
    assert pod["tolerations"] == []
    (term,) = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert term["matchExpressions"][0]["values"] == ["cpu"]
    assert [d["metadata"]["name"] for d in kube.of_kind(graph, "Rollout")] == [REALTIME]
    assert kube.find(graph, "ScaledObject", REALTIME)["spec"]["minReplicaCount"] == 1
