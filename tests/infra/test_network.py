"""The regional VPC: zones, subnets for nodes and load balancers, per-zone NAT, S3 endpoint."""

from __future__ import annotations

import ipaddress

import pytest

from contract.topology import DEFAULT_TOPOLOGY
from infra import config, offline
from infra.network import subnet_cidrs
from tests.conftest import REGIONAL_STACKS


def _cfg(stack: str) -> config.RegionalConfig:
    cfg = config.load(stack, offline.stack_config(stack), DEFAULT_TOPOLOGY)
    assert isinstance(cfg, config.RegionalConfig)
    return cfg


def _subnets(graph: offline.Graph, tier: str) -> list[offline.Registration]:
    return [s for s in graph.of_type("aws:ec2/subnet:Subnet") if f"-{tier}-" in s.name]


@pytest.mark.parametrize("stack", REGIONAL_STACKS)
def test_vpc_uses_the_configured_cidr_and_vpc_dns(program, stack):
    (vpc,) = program(stack).of_type("aws:ec2/vpc:Vpc")
    assert vpc.inputs["cidrBlock"] == _cfg(stack).vpc_cidr
    assert vpc.inputs["enableDnsSupport"] is True and vpc.inputs["enableDnsHostnames"] is True


@pytest.mark.parametrize("stack", REGIONAL_STACKS)
def test_private_and_public_subnets_span_the_configured_zones(program, stack):
    graph, cfg = program(stack), _cfg(stack)
    for tier in ("private", "public"):
        zones = [s.inputs["availabilityZone"] for s in _subnets(graph, tier)]
        assert len(zones) == cfg.availability_zones >= 2
        assert len(set(zones)) == len(zones), f"two {tier} subnets share a zone: {zones}"
        assert all(z.startswith(cfg.region.aws_region) for z in zones)


@pytest.mark.parametrize("stack", REGIONAL_STACKS)
def test_subnets_lie_inside_the_vpc_and_never_overlap(program, stack):
    graph = program(stack)
    vpc = ipaddress.IPv4Network(_cfg(stack).vpc_cidr)
    networks = [ipaddress.IPv4Network(s.inputs["cidrBlock"]) for s in graph.of_type("aws:ec2/subnet:Subnet")]
    assert all(n.subnet_of(vpc) for n in networks)
    assert not any(a.overlaps(b) for i, a in enumerate(networks) for b in networks[i + 1 :])


@pytest.mark.parametrize("stack", REGIONAL_STACKS)
def test_subnets_carry_the_tags_eks_load_balancers_are_placed_by(program, stack):
    graph, cluster_name = program(stack), program(stack).exports["clusterName"]
    for subnet in _subnets(graph, "public"):
        assert subnet.inputs["tags"]["kubernetes.io/role/elb"] == "1"
        assert subnet.inputs["tags"][f"kubernetes.io/cluster/{cluster_name}"] == "shared"
    for subnet in _subnets(graph, "private"):
        assert subnet.inputs["tags"]["kubernetes.io/role/internal-elb"] == "1"
        assert "kubernetes.io/role/elb" not in subnet.inputs["tags"]
        assert subnet.inputs["mapPublicIpOnLaunch"] is False


@pytest.mark.parametrize("stack", REGIONAL_STACKS)
def test_each_zones_private_subnet_leaves_through_its_own_zones_nat(program, stack):
    graph = program(stack)
    base = f"speech-{stack}-network"
    for subnet in _subnets(graph, "private"):
        zone = subnet.inputs["availabilityZone"]
        nat = graph.named(f"{base}-nat-{zone}")
        assert nat.type == "aws:ec2/natGateway:NatGateway"
        assert nat.inputs["subnetId"] == graph.named(f"{base}-public-{zone}").id
        route = graph.named(f"{base}-private-{zone}-default")
        assert route.inputs["destinationCidrBlock"] == "0.0.0.0/0"
        assert route.inputs["natGatewayId"] == nat.id
        association = [
            a
            for a in graph.of_type("aws:ec2/routeTableAssociation:RouteTableAssociation")
            if a.inputs["subnetId"] == subnet.id
        ]
        assert [a.inputs["routeTableId"] for a in association] == [route.inputs["routeTableId"]]


@pytest.mark.parametrize("stack", REGIONAL_STACKS)
def test_public_subnets_route_to_the_internet_gateway(program, stack):
    graph = program(stack)
    (igw,) = graph.of_type("aws:ec2/internetGateway:InternetGateway")
    route = graph.named(f"speech-{stack}-network-public-default")
    assert route.inputs["gatewayId"] == igw.id
    public_ids = {s.id for s in _subnets(graph, "public")}
    associated = {
        a.inputs["subnetId"]
        for a in graph.of_type("aws:ec2/routeTableAssociation:RouteTableAssociation")
        if a.inputs["routeTableId"] == route.inputs["routeTableId"]
    }
    assert associated == public_ids


@pytest.mark.parametrize("stack", REGIONAL_STACKS)
def test_model_pulls_reach_s3_through_a_gateway_endpoint_on_every_private_route_table(program, stack):
    graph = program(stack)
    (endpoint,) = graph.of_type("aws:ec2/vpcEndpoint:VpcEndpoint")
    assert endpoint.inputs["vpcEndpointType"] == "Gateway"
    assert endpoint.inputs["serviceName"] == f"com.amazonaws.{_cfg(stack).region.aws_region}.s3"
    private_tables = {graph.named(f"{s.name}-default").inputs["routeTableId"] for s in _subnets(graph, "private")}
    assert set(endpoint.inputs["routeTableIds"]) == private_tables


@pytest.mark.parametrize("stack", REGIONAL_STACKS)
def test_stack_exports_the_subnets_an_ingress_load_balancer_needs(program, stack):
    graph = program(stack)
    assert graph.exports["vpcId"] == graph.named(f"speech-{stack}-network-vpc").id
    assert sorted(graph.exports["publicSubnetIds"]) == sorted(str(s.id) for s in _subnets(graph, "public"))
    assert sorted(graph.exports["privateSubnetIds"]) == sorted(str(s.id) for s in _subnets(graph, "private"))


def test_two_zones_of_a_small_vpc_still_get_disjoint_subnets():
    private, public = subnet_cidrs("10.40.0.0/20", 2)
    assert private == ["10.40.0.0/22", "10.40.4.0/22"]
    assert public == ["10.40.12.0/26", "10.40.12.64/26"]


def test_a_slash_16_gives_large_node_subnets_and_small_public_ones():
    private, public = subnet_cidrs("10.10.0.0/16", 3)
    assert [ipaddress.IPv4Network(p).prefixlen for p in private] == [18, 18, 18]
    assert [ipaddress.IPv4Network(p).prefixlen for p in public] == [22, 22, 22]
