"""The regional endpoint: TLS load balancer, regional hostname, health checks, Cloudflare pool, stack outputs."""

from __future__ import annotations

import pytest

from contract.topology import DEFAULT_TOPOLOGY
from infra import config, ingress, offline
from infra.k8s.mesh import GATEWAY_TARGET_PORT
from tests.conftest import REGIONAL_STACKS

RECORD = "aws:route53/record:Record"


def _cfg(stack: str) -> config.RegionalConfig:
    cfg = config.load(stack, offline.stack_config(stack), DEFAULT_TOPOLOGY)
    assert isinstance(cfg, config.RegionalConfig)
    return cfg


def _one(graph: offline.Graph, type_: str) -> offline.Registration:
    (resource,) = graph.of_type(type_)
    return resource


@pytest.mark.parametrize("stack", REGIONAL_STACKS)
def test_load_balancer_is_internet_facing_in_the_public_subnets_of_the_region(program, stack):
    graph = program(stack)
    nlb = _one(graph, "aws:lb/loadBalancer:LoadBalancer")
    assert nlb.inputs["loadBalancerType"] == "network"
    assert nlb.inputs["internal"] is False
    assert nlb.inputs["region"] == _cfg(stack).region.aws_region
    assert nlb.inputs["subnets"] == graph.exports["publicSubnetIds"]
    assert nlb.inputs["securityGroups"] == [graph.exports[ingress.OUTPUT_LB_SECURITY_GROUP_ID]]


@pytest.mark.parametrize("stack", REGIONAL_STACKS)
def test_tls_on_443_forwards_to_ip_targets_on_the_gateway_port_checked_for_readiness(program, stack):
    graph = program(stack)
    listener = _one(graph, "aws:lb/listener:Listener")
    target_group = _one(graph, "aws:lb/targetGroup:TargetGroup")
    validation = _one(graph, "aws:acm/certificateValidation:CertificateValidation")
    assert (listener.inputs["port"], listener.inputs["protocol"]) == (443, "TLS")
    assert listener.inputs["certificateArn"] == validation.inputs["certificateArn"], "listener must wait for issuance"
    assert listener.inputs["alpnPolicy"] == "HTTP2Optional"  # h2 for gRPC clients, HTTP/1.1 for the rest
    assert listener.inputs["defaultActions"] == [{"type": "forward", "targetGroupArn": graph.exports["targetGroupArn"]}]
    assert (target_group.inputs["targetType"], target_group.inputs["protocol"], target_group.inputs["port"]) == (
        "ip",
        "TCP",
        GATEWAY_TARGET_PORT,
    )
    assert target_group.inputs["vpcId"] == graph.exports["vpcId"]
    check = target_group.inputs["healthCheck"]
    assert (check["protocol"], check["path"], check["matcher"]) == ("HTTP", "/readyz", "200")


@pytest.mark.parametrize("stack", REGIONAL_STACKS)
def test_load_balancer_admits_https_from_anywhere_and_reaches_only_the_gateway_port_in_the_vpc(program, stack):
    graph = program(stack)
    (https,) = [
        r for r in graph.of_type("aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule") if "-ingress-" in r.name
    ]
    (egress,) = graph.of_type("aws:vpc/securityGroupEgressRule:SecurityGroupEgressRule")
    assert (https.inputs["fromPort"], https.inputs["toPort"], https.inputs["cidrIpv4"]) == (443, 443, "0.0.0.0/0")
    assert (egress.inputs["fromPort"], egress.inputs["toPort"], egress.inputs["cidrIpv4"]) == (
        GATEWAY_TARGET_PORT,
        GATEWAY_TARGET_PORT,
        _cfg(stack).vpc_cidr,
    )


@pytest.mark.parametrize("stack", REGIONAL_STACKS)
def test_certificate_covers_the_regional_and_the_global_name_validated_in_the_hosted_zone(program, stack):
    graph, cfg = program(stack), _cfg(stack)
    certificate = _one(graph, "aws:acm/certificate:Certificate")
    assert certificate.inputs["domainName"] == f"{stack}.{cfg.domain}"
    assert certificate.inputs["subjectAlternativeNames"] == [cfg.domain]
    assert certificate.inputs["validationMethod"] == "DNS"
    validations = [r for r in graph.of_type(RECORD) if r.inputs["type"] == "CNAME"]
    assert {r.inputs["zoneId"] for r in validations} == {cfg.hosted_zone_id}
    assert sorted(r.inputs["name"].rstrip(".").split(".", 1)[1] for r in validations) == sorted(
        [cfg.domain, f"{stack}.{cfg.domain}"]
    )
    validation = _one(graph, "aws:acm/certificateValidation:CertificateValidation")
    assert sorted(validation.inputs["validationRecordFqdns"]) == sorted(
        r.inputs["name"].rstrip(".") for r in validations
    )


def test_the_global_names_validation_record_is_shared_by_every_region(program):
    """ACM hands every region the same CNAME for the global name; each stack may overwrite it, none owns it alone."""
    shared = {stack: program(stack).named(f"speech-{stack}-ingress-validation-global") for stack in REGIONAL_STACKS}
    assert len({(r.inputs["name"], tuple(r.inputs["records"])) for r in shared.values()}) == 1
    assert all(r.inputs["allowOverwrite"] is True for r in shared.values())
    for stack in REGIONAL_STACKS:
        assert program(stack).named(f"speech-{stack}-ingress-validation-regional").inputs["allowOverwrite"] is False


@pytest.mark.parametrize("stack", REGIONAL_STACKS)
def test_regional_hostname_is_an_alias_of_the_load_balancer_with_its_own_health_check(program, stack):
    graph, cfg = program(stack), _cfg(stack)
    hostname = f"{stack}.{cfg.domain}"
    (record,) = [r for r in graph.of_type(RECORD) if r.inputs["name"] == hostname]
    assert record.inputs["type"] == "A" and "ttl" not in record.inputs  # alias: the load balancer's 60 s TTL
    assert record.inputs["aliases"] == [
        {
            "name": graph.exports["loadBalancerDnsName"],
            "zoneId": graph.exports["loadBalancerZoneId"],
            "evaluateTargetHealth": True,
        }
    ]
    check = _one(graph, "aws:route53/healthCheck:HealthCheck")
    assert check.id == graph.exports["healthCheckId"]
    assert (check.inputs["type"], check.inputs["fqdn"], check.inputs["port"], check.inputs["resourcePath"]) == (
        "HTTPS",
        hostname,
        443,
        "/readyz",
    )
    assert check.inputs["failureThreshold"] <= 2 and check.inputs["requestInterval"] == 10
    assert check.inputs["measureLatency"] is True and check.inputs["enableSni"] is True
    assert len(check.inputs["regions"]) >= 3


@pytest.mark.parametrize("stack", REGIONAL_STACKS)
def test_cloudflare_pool_holds_only_this_region_and_is_monitored_for_readiness(program, stack):
    graph, cfg = program(stack), _cfg(stack)
    monitor = _one(graph, "cloudflare:index/loadBalancerMonitor:LoadBalancerMonitor")
    pool = _one(graph, "cloudflare:index/loadBalancerPool:LoadBalancerPool")
    assert cfg.cloudflare is not None
    assert (monitor.inputs["type"], monitor.inputs["path"], monitor.inputs["expectedCodes"]) == (
        "https",
        "/readyz",
        "200",
    )
    assert monitor.inputs["accountId"] == pool.inputs["accountId"] == cfg.cloudflare.account_id
    assert pool.inputs["monitor"] == monitor.id
    assert [o["address"] for o in pool.inputs["origins"]] == [f"{stack}.{cfg.domain}"]
    assert pool.inputs["checkRegions"] == list(cfg.region.cloudflare_regions)
    assert pool.id == graph.exports["cloudflarePoolId"]


@pytest.mark.parametrize("stack", REGIONAL_STACKS)
def test_regional_stack_exports_what_the_global_stack_and_the_serving_deployment_read(program, stack):
    exports = program(stack).exports
    for name in (
        ingress.OUTPUT_HOSTNAME,
        ingress.OUTPUT_HEALTH_CHECK_ID,
        ingress.OUTPUT_CLOUDFLARE_POOL_ID,
        ingress.OUTPUT_TARGET_GROUP_ARN,
        ingress.OUTPUT_LB_DNS_NAME,
        ingress.OUTPUT_LB_ZONE_ID,
        ingress.OUTPUT_LB_SECURITY_GROUP_ID,
    ):
        assert exports.get(name), f"{stack} does not export {name}"


def test_without_cloudflare_a_region_creates_no_cloudflare_resources_and_exports_no_pool():
    raw = {k: v for k, v in offline.stack_config("eu-west").items() if k != "speech:cloudflare"}
    graph = offline.run("eu-west", DEFAULT_TOPOLOGY, config=raw)
    assert not [r for r in graph.resources if r.type.startswith("cloudflare:")]
    assert ingress.OUTPUT_CLOUDFLARE_POOL_ID not in graph.exports
    assert graph.exports[ingress.OUTPUT_HEALTH_CHECK_ID]


@pytest.mark.parametrize("stack", REGIONAL_STACKS)
def test_every_ingress_resource_is_a_child_of_the_ingress_component(program, stack):
    graph = program(stack)
    component = graph.named(f"speech-{stack}-ingress")
    assert component.type == "speech:infra:RegionalIngress"
    owned = [r for r in graph.resources if r.name.startswith(f"speech-{stack}-ingress-")]
    assert owned and all(r.parent == component.urn for r in owned)
