"""A request from the global DNS record to a serving pod's port, followed through the resources' own references.

Each hop is found from the previous one by what the registrations link (an input that is another resource's
output, a Service name a binding names, a selector that matches labels), never by assuming names, so a broken link
anywhere on the path fails here.
"""

from __future__ import annotations

import pytest

from contract import service
from contract.topology import DEFAULT_TOPOLOGY
from infra import offline
from tests.conftest import REGIONAL_STACKS
from tests.infra import kube

GRPC_STREAM_PATH = f"/{service.GRPC_SERVICE}/StreamingRecognize"


def _one(matches: list, what: str):
    assert len(matches) == 1, f"{len(matches)} {what}"
    return matches[0]


def _route_for(routes: list[dict], path: str) -> dict:
    """The first VirtualService route matching ``path``, as Envoy picks it."""
    for route in routes:
        for match in route["match"]:
            uri = match["uri"]
            if uri.get("exact") == path or ("prefix" in uri and path.startswith(uri["prefix"])):
                return route
    raise LookupError(path)


def _follow_to_pod(graph: offline.Graph, target_group_arn: str, path: str) -> tuple[dict, dict]:
    """From a target group ARN to the (Rollout, container port) that answers ``path`` outside a canary."""
    binding = _one(
        [o for o in kube.of_kind(graph, "TargetGroupBinding") if o["spec"]["targetGroupARN"] == target_group_arn],
        "bindings of the target group",
    )
    gateway_release = _one(
        [
            r
            for r in graph.of_type(kube.HELM_RELEASE)
            if r.inputs["name"] == binding["spec"]["serviceRef"]["name"]
            and r.inputs["namespace"] == binding["metadata"]["namespace"]
        ],
        "gateway releases behind the binding",
    )
    values = kube.as_json(gateway_release.inputs["values"])
    (port,) = [p for p in values["service"]["ports"] if p["port"] == binding["spec"]["serviceRef"]["port"]]
    pod_labels = values["labels"]
    gateway = _one(
        [g for g in kube.of_kind(graph, "Gateway") if g["spec"]["selector"].items() <= pod_labels.items()],
        "Istio Gateways selecting the gateway pods",
    )
    assert any(s["port"]["number"] == port["port"] for s in gateway["spec"]["servers"])
    virtual_service = _one(
        [v for v in kube.of_kind(graph, "VirtualService") if gateway["metadata"]["name"] in v["spec"]["gateways"]],
        "VirtualServices on the Gateway",
    )
    route = _route_for(virtual_service["spec"]["http"], path)
    # Outside a canary the stable Service takes every request; Argo Rollouts moves these weights during one.
    destination = _one([d for d in route["route"] if d["weight"] == 100], "destinations with all the traffic")[
        "destination"
    ]
    name, namespace = destination["host"].split(".")[:2]
    svc = _one(
        [
            s
            for s in kube.of_kind(graph, "Service")
            if (s["metadata"]["name"], s["metadata"]["namespace"]) == (name, namespace)
        ],
        f"Services for {destination['host']}",
    )
    (svc_port,) = [p for p in svc["spec"]["ports"] if p["port"] == destination["port"]["number"]]
    rollout = _one(
        [
            d
            for d in kube.of_kind(graph, "Rollout")
            if d["metadata"]["namespace"] == namespace
            and svc["spec"]["selector"].items() <= d["spec"]["template"]["metadata"]["labels"].items()
        ],
        "Rollouts behind the Service",
    )
    canary = rollout["spec"]["strategy"]["canary"]
    assert canary["stableService"] == name, "Argo pins the Service the route sends to onto the stable pods"
    istio = canary["trafficRouting"]["istio"]["virtualService"]
    assert istio["name"] == virtual_service["metadata"]["name"] and route["name"] in istio["routes"]
    (container,) = rollout["spec"]["template"]["spec"]["containers"]
    (container_port,) = [p for p in container["ports"] if p["name"] == svc_port["targetPort"]]
    return rollout, {
        "gateway_target_port": port["targetPort"],
        "app_protocol": svc_port["appProtocol"],
        **container_port,
    }


@pytest.mark.parametrize("stack", REGIONAL_STACKS)
def test_a_request_to_the_global_name_reaches_a_serving_pods_port(program, stack):
    global_graph, graph = program("global"), program(stack)
    region = DEFAULT_TOPOLOGY.region(stack)
    # Route 53: a record of the global name whose alias is this region's load balancer (read from its stack).
    aliases = [a for r in global_graph.of_type("aws:route53/record:Record") for a in r.inputs.get("aliases", [])]
    load_balancer = _one(
        [
            lb
            for lb in graph.of_type("aws:lb/loadBalancer:LoadBalancer")
            if any(a["name"] == lb.outputs["dnsName"] for a in aliases)
        ],
        "load balancers the global records alias",
    )
    listener = _one(
        [
            li
            for li in graph.of_type("aws:lb/listener:Listener")
            if li.inputs["loadBalancerArn"] == load_balancer.outputs["arn"]
        ],
        "listeners",
    )
    assert listener.inputs["port"] == 443
    (action,) = listener.inputs["defaultActions"]
    target_group = _one(
        [tg for tg in graph.of_type("aws:lb/targetGroup:TargetGroup") if tg.outputs["arn"] == action["targetGroupArn"]],
        "target groups",
    )
    assert target_group.inputs["targetType"] == "ip"
    for path, role in (
        (service.STREAM_PATH, ""),
        (service.BATCH_PATH, "-batch"),
        (service.OPENAI_TRANSCRIPTIONS_PATH, "-batch"),
        (service.READINESS_PATH, ""),
    ):
        rollout, port = _follow_to_pod(graph, target_group.outputs["arn"], path)
        assert rollout["metadata"]["name"] == f"{service.SERVICE_ACCOUNT}{role}", path
        assert port["containerPort"] == service.SERVING_PORT
    # gRPC (HTTP/2) calls reach the realtime pods' gRPC port, and Envoy speaks HTTP/2 to it.
    rollout, port = _follow_to_pod(graph, target_group.outputs["arn"], GRPC_STREAM_PATH)
    assert rollout["metadata"]["name"] == service.SERVICE_ACCOUNT
    assert (port["containerPort"], port["app_protocol"]) == (service.GRPC_PORT, "grpc")
    # The load balancer sends to the gateway's pods on the port its target group and health checks use.
    assert kube.as_json(target_group.inputs["port"]) == port["gateway_target_port"]
    assert target_group.inputs["healthCheck"]["path"] == service.READINESS_PATH
    assert region.aws_region == graph.exports["region"]


@pytest.mark.parametrize("stack", REGIONAL_STACKS)
def test_the_load_balancer_may_reach_the_gateway_pods_port_on_the_nodes(program, stack):
    graph = program(stack)
    (target_group,) = graph.of_type("aws:lb/targetGroup:TargetGroup")
    (cluster,) = graph.of_type("aws:eks/cluster:Cluster")
    rules = [
        r
        for r in graph.of_type("aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule")
        if r.inputs["securityGroupId"] == cluster.outputs["vpcConfig"]["clusterSecurityGroupId"]
    ]
    (rule,) = rules
    assert rule.inputs["referencedSecurityGroupId"] == graph.exports["loadBalancerSecurityGroupId"]
    assert rule.inputs["fromPort"] == rule.inputs["toPort"] == target_group.inputs["port"]
    (egress,) = graph.of_type("aws:vpc/securityGroupEgressRule:SecurityGroupEgressRule")
    assert egress.inputs["fromPort"] == target_group.inputs["port"]


@pytest.mark.parametrize("stack", REGIONAL_STACKS)
def test_metrics_are_never_routed_from_outside(program, stack):
    (virtual_service,) = kube.of_kind(program(stack), "VirtualService")
    with pytest.raises(LookupError):
        _route_for(virtual_service["spec"]["http"], service.METRICS_PATH)
    for path in (service.HEALTH_PATH, service.READINESS_PATH, service.BATCH_PATH, "/v1/models"):
        _route_for(virtual_service["spec"]["http"], path)


@pytest.mark.parametrize("stack", REGIONAL_STACKS)
def test_batch_requests_are_retried_on_another_replica_and_streams_never_time_out(program, stack):
    (virtual_service,) = kube.of_kind(program(stack), "VirtualService")
    routes = virtual_service["spec"]["http"]
    stream = _route_for(routes, service.STREAM_PATH)
    for path in (service.BATCH_PATH, service.OPENAI_TRANSCRIPTIONS_PATH):
        batch = _route_for(routes, path)
        assert "503" in batch["retries"]["retryOn"] and "reset" in batch["retries"]["retryOn"], path
    assert "timeout" not in stream and "retries" not in stream
    grpc_stream = _route_for(routes, GRPC_STREAM_PATH)
    assert "timeout" not in grpc_stream and "retries" not in grpc_stream


@pytest.mark.parametrize("stack", REGIONAL_STACKS)
def test_cloudflare_origins_send_the_regional_host_the_certificate_names(program, stack):
    graph = program(stack)
    (pool,) = graph.of_type("cloudflare:index/loadBalancerPool:LoadBalancerPool")
    (origin,) = pool.inputs["origins"]
    assert origin["header"] == {"hosts": [graph.exports["endpointHostname"]]}
    (certificate,) = graph.of_type("aws:acm/certificate:Certificate")
    assert certificate.inputs["domainName"] == graph.exports["endpointHostname"]


def test_without_batch_replicas_batch_requests_go_to_the_realtime_pods():
    raw = offline.stack_config("eu-west")
    raw["speech:spotPool"] = {"enabled": False}
    graph = offline.run("eu-west", DEFAULT_TOPOLOGY, config=raw)
    (target_group,) = graph.of_type("aws:lb/targetGroup:TargetGroup")
    rollout, _ = _follow_to_pod(graph, target_group.outputs["arn"], service.BATCH_PATH)
    assert rollout["metadata"]["name"] == service.SERVICE_ACCOUNT
