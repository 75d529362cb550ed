"""Per-region VPC: private subnets for nodes, public subnets for the ingress load balancer, NAT, S3 endpoint."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from contract.topology import Region


def subnet_cidrs(vpc_cidr: str, count: int) -> tuple[list[str], list[str]]:
    """(private, public) subnet CIDRs for ``count`` availability zones.

    The VPC is cut into quarters: one quarter per AZ for private subnets (the VPC CNI gives every pod a VPC
    address, so node subnets need room), and the last quarter split in sixteen for the public subnets, which only
    hold NAT gateways and load balancer interfaces. A /16 gives /18 private and /22 public subnets.
    """
    network = ipaddress.IPv4Network(vpc_cidr)
    if not 1 <= count <= 3:
        raise ValueError(f"availability zone count {count} must be 1 to 3: the VPC is cut in quarters")
    quarters = list(network.subnets(prefixlen_diff=2))
    public = list(quarters[3].subnets(prefixlen_diff=4))
    return [str(q) for q in quarters[:count]], [str(p) for p in public[:count]]


@dataclass(frozen=True)
class NetworkArgs:
    region: Region
    vpc_cidr: str
    availability_zones: int
    cluster_name: str  # for the kubernetes.io/cluster/<name> subnet tag that load balancer controllers look for


class Network(pulumi.ComponentResource):
    """A VPC spread over ``availability_zones`` zones of the region.

    Nodes sit in private subnets and reach the internet through one NAT gateway per zone, so losing a zone never
    cuts the other zones' egress. Model pulls go through an S3 gateway endpoint and stay on the AWS network (and
    cost no NAT data processing). Subnets carry the tags EKS and the AWS load balancer controller use to place
    internet-facing (public) and internal (private) load balancers.
    """

    vpc_id: pulumi.Output[str]
    public_subnet_ids: pulumi.Output[list[str]]
    private_subnet_ids: pulumi.Output[list[str]]
    private_route_table_ids: pulumi.Output[list[str]]
    availability_zones: pulumi.Output[list[str]]
    s3_endpoint_id: pulumi.Output[str]  # strict-residency stores admit their serving role only through it

    def __init__(self, name: str, args: NetworkArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("speech:infra:Network", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        region = args.region.aws_region
        cluster_tag = {f"kubernetes.io/cluster/{args.cluster_name}": "shared"}

        # Only zones that need no opt-in: Local and Wavelength Zones lack the GPU instances and the EKS control plane.
        zones = aws.get_availability_zones(
            region=region,
            state="available",
            filters=[{"name": "opt-in-status", "values": ["opt-in-not-required"]}],
            opts=pulumi.InvokeOptions(parent=self),
        ).names[: args.availability_zones]
        if len(zones) < args.availability_zones:
            raise pulumi.RunError(
                f"{region} offers {len(zones)} availability zones ({', '.join(zones)}); "
                f"speech:availabilityZones asks for {args.availability_zones}"
            )
        private_cidrs, public_cidrs = subnet_cidrs(args.vpc_cidr, len(zones))

        vpc = aws.ec2.Vpc(
            f"{name}-vpc",
            region=region,
            cidr_block=args.vpc_cidr,
            # EKS private endpoint access and the S3 endpoint both rely on VPC DNS.
            enable_dns_support=True,
            enable_dns_hostnames=True,
            tags={"Name": f"{name}-vpc"},
            opts=child,
        )
        igw = aws.ec2.InternetGateway(
            f"{name}-igw", region=region, vpc_id=vpc.id, tags={"Name": f"{name}-igw"}, opts=child
        )

        public_routes = aws.ec2.RouteTable(
            f"{name}-public-rt", region=region, vpc_id=vpc.id, tags={"Name": f"{name}-public"}, opts=child
        )
        aws.ec2.Route(
            f"{name}-public-default",
            region=region,
            route_table_id=public_routes.id,
            destination_cidr_block="0.0.0.0/0",
            gateway_id=igw.id,
            opts=child,
        )

        public_subnets: list[aws.ec2.Subnet] = []
        private_subnets: list[aws.ec2.Subnet] = []
        private_tables: list[aws.ec2.RouteTable] = []
        # Children are named by zone, not by list position, so changing the zone count never renames a subnet.
        for zone, private_cidr, public_cidr in zip(zones, private_cidrs, public_cidrs, strict=True):
            public = aws.ec2.Subnet(
                f"{name}-public-{zone}",
                region=region,
                vpc_id=vpc.id,
                availability_zone=zone,
                cidr_block=public_cidr,
                map_public_ip_on_launch=False,
                tags={"Name": f"{name}-public-{zone}", "kubernetes.io/role/elb": "1", **cluster_tag},
                opts=child,
            )
            aws.ec2.RouteTableAssociation(
                f"{name}-public-{zone}-rta",
                region=region,
                subnet_id=public.id,
                route_table_id=public_routes.id,
                opts=child,
            )
            eip = aws.ec2.Eip(
                f"{name}-nat-{zone}-ip", region=region, domain="vpc", tags={"Name": f"{name}-nat-{zone}"}, opts=child
            )
            nat = aws.ec2.NatGateway(
                f"{name}-nat-{zone}",
                region=region,
                subnet_id=public.id,
                allocation_id=eip.id,
                tags={"Name": f"{name}-nat-{zone}"},
                opts=pulumi.ResourceOptions(parent=self, depends_on=[igw]),
            )

            private = aws.ec2.Subnet(
                f"{name}-private-{zone}",
                region=region,
                vpc_id=vpc.id,
                availability_zone=zone,
                cidr_block=private_cidr,
                map_public_ip_on_launch=False,
                tags={"Name": f"{name}-private-{zone}", "kubernetes.io/role/internal-elb": "1", **cluster_tag},
                opts=child,
            )
            table = aws.ec2.RouteTable(
                f"{name}-private-{zone}-rt",
                region=region,
                vpc_id=vpc.id,
                tags={"Name": f"{name}-private-{zone}"},
                opts=child,
            )
            aws.ec2.Route(
                f"{name}-private-{zone}-default",
                region=region,
                route_table_id=table.id,
                destination_cidr_block="0.0.0.0/0",
                nat_gateway_id=nat.id,
                opts=child,
            )
            aws.ec2.RouteTableAssociation(
                f"{name}-private-{zone}-rta", region=region, subnet_id=private.id, route_table_id=table.id, opts=child
            )
            public_subnets.append(public)
            private_subnets.append(private)
            private_tables.append(table)

        s3_endpoint = aws.ec2.VpcEndpoint(
            f"{name}-s3",
            region=region,
            vpc_id=vpc.id,
            service_name=f"com.amazonaws.{region}.s3",
            vpc_endpoint_type="Gateway",
            route_table_ids=[t.id for t in private_tables],
            tags={"Name": f"{name}-s3"},
            opts=child,
        )

        self.vpc_id = vpc.id
        self.public_subnet_ids = pulumi.Output.all(*[s.id for s in public_subnets])
        self.private_subnet_ids = pulumi.Output.all(*[s.id for s in private_subnets])
        self.private_route_table_ids = pulumi.Output.all(*[t.id for t in private_tables])
        self.availability_zones = pulumi.Output.from_input(list(zones))
        self.s3_endpoint_id = s3_endpoint.id
        self.register_outputs(
            {
                "vpc_id": self.vpc_id,
                "public_subnet_ids": self.public_subnet_ids,
                "private_subnet_ids": self.private_subnet_ids,
                "private_route_table_ids": self.private_route_table_ids,
                "availability_zones": self.availability_zones,
                "s3_endpoint_id": self.s3_endpoint_id,
            }
        )
