"""Regional HTTPS endpoint: TLS network load balancer, regional hostname, and the health checks global routing uses.

The regional stack owns everything that names one region: its load balancer, its `<region>.<domain>` record, its
Route 53 health check and its Cloudflare monitor and pool. The `global` stack only reads the ids exported here
(`infra.endpoints.RegionalEndpoint.from_stack`), so each stack can be `pulumi up`-ed on its own and removing a
region never leaves a pool or health check behind in another stack.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_aws as aws
import pulumi_cloudflare as cloudflare

from contract.service import READINESS_PATH, SERVING_PORT
from contract.topology import Region
from infra.endpoints import (
    OUTPUT_CLOUDFLARE_POOL_ID,
    OUTPUT_HEALTH_CHECK_ID,
    OUTPUT_HOSTNAME,
    OUTPUT_LB_DNS_NAME,
    OUTPUT_LB_SECURITY_GROUP_ID,
    OUTPUT_LB_ZONE_ID,
    OUTPUT_TARGET_GROUP_ARN,
    regional_hostname,
)

HTTPS_PORT = 443
# Readiness, not liveness: /healthz answers 200 while a pod is still loading its model, and a network load
# balancer whose targets are all unhealthy fails open to every target, so a region whose pods cannot transcribe
# yet would look healthy end to end. /readyz is 200 only once a model is loaded and warmed up.
HEALTH_CHECK_PATH = READINESS_PATH
# Where Route 53 runs its checkers from (checker locations, not serving regions). Spread over three continents
# so that one continent's network trouble cannot by itself mark every region down.
ROUTE53_CHECKER_REGIONS = ("us-east-1", "us-west-2", "eu-west-1", "ap-northeast-1", "ap-southeast-1", "sa-east-1")
# TLS 1.3 with TLS 1.2 fallback; the load balancer terminates TLS and speaks plain TCP to the pods.
TLS_POLICY = "ELBSecurityPolicy-TLS13-1-2-2021-06"


@dataclass(frozen=True)
class RegionalIngressArgs:
    region: Region
    domain: str
    hosted_zone_id: str
    vpc_id: pulumi.Input[str]
    vpc_cidr: str  # the load balancer may reach the serving port only inside the VPC
    public_subnet_ids: pulumi.Input[Sequence[str]]
    cloudflare_account_id: str | None = None  # None: Route 53 only, no Cloudflare monitor or pool
    # The port the load balancer's targets listen on: the serving pods themselves, or (this repository's program)
    # the ingress gateway's pods in front of them (infra.k8s.mesh.GATEWAY_TARGET_PORT).
    target_port: int = SERVING_PORT


class RegionalIngress(pulumi.ComponentResource):
    """The public HTTPS entry of one region, and how the world checks that it can transcribe.

    Guarantees:

    * an internet-facing network load balancer in the public subnets terminates TLS on 443 with an ACM certificate
      for `<region>.<domain>` and `<domain>` (so both the regional name and the global name validate) and forwards
      TCP to an IP target group on ``target_port``; pods join it through a TargetGroupBinding
      (`target_group_arn`), and only pods that pass the readiness check receive connections;
    * `<region>.<domain>` is an alias of the load balancer and has a Route 53 health check (HTTPS, readiness path,
      failure threshold 2, every 10 s from checkers on three continents) that the global failover records use;
    * with Cloudflare, a monitor and a single-origin pool for the region whose id the global load balancer uses;
      the origin sends `Host: <region>.<domain>`, the name on the load balancer's certificate.

    WebSocket streams are long-lived TCP connections through the load balancer, whose TLS idle timeout is 350 s:
    the serving side's WebSocket pings (uvicorn sends one every 20 s) keep a quiet stream open.
    """

    hostname: pulumi.Output[str]
    health_check_id: pulumi.Output[str]
    target_group_arn: pulumi.Output[str]
    load_balancer_dns_name: pulumi.Output[str]
    load_balancer_zone_id: pulumi.Output[str]
    security_group_id: pulumi.Output[str]
    cloudflare_pool_id: pulumi.Output[str] | None

    def __init__(self, name: str, args: RegionalIngressArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("speech:infra:RegionalIngress", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        region = args.region.aws_region
        hostname = regional_hostname(args.region, args.domain)

        certificate_arn = self._certificate(name, args, hostname, child)

        security_group = aws.ec2.SecurityGroup(
            f"{name}-lb",
            region=region,
            vpc_id=args.vpc_id,
            # A network load balancer only takes security groups at creation; creating it with one lets the pods'
            # security group admit exactly this load balancer later, without replacing it.
            description=f"speech {args.region.key} ingress load balancer: HTTPS in, target port to the VPC",
            tags={"Name": f"{name}-lb"},
            opts=child,
        )
        aws.vpc.SecurityGroupIngressRule(
            f"{name}-lb-https",
            region=region,
            security_group_id=security_group.id,
            cidr_ipv4="0.0.0.0/0",
            ip_protocol="tcp",
            from_port=HTTPS_PORT,
            to_port=HTTPS_PORT,
            description="HTTPS from users, Cloudflare and the health checkers",
            opts=child,
        )
        aws.vpc.SecurityGroupEgressRule(
            f"{name}-lb-serving",
            region=region,
            security_group_id=security_group.id,
            cidr_ipv4=args.vpc_cidr,
            ip_protocol="tcp",
            from_port=args.target_port,
            to_port=args.target_port,
            description="connections and target health checks to the target pods",
            opts=child,
        )

        load_balancer = aws.lb.LoadBalancer(
            f"{name}-nlb",
            region=region,
            load_balancer_type="network",
            internal=False,
            subnets=args.public_subnet_ids,
            security_groups=[security_group.id],
            ip_address_type="ipv4",
            # Pods are spread over zones unevenly; without cross-zone balancing a zone with one pod takes a third.
            enable_cross_zone_load_balancing=True,
            tags={"Name": f"{name}-nlb"},
            opts=child,
        )
        target_group = aws.lb.TargetGroup(
            f"{name}-tg",
            region=region,
            vpc_id=args.vpc_id,
            target_type="ip",
            protocol="TCP",
            port=args.target_port,
            # A draining pod keeps its open streams this long before the load balancer resets them.
            deregistration_delay=300,
            health_check={
                "enabled": True,
                "protocol": "HTTP",
                "port": "traffic-port",
                "path": HEALTH_CHECK_PATH,
                "matcher": "200",
                "interval": 10,
                "healthy_threshold": 2,
                "unhealthy_threshold": 2,
            },
            tags={"Name": f"{name}-tg"},
            opts=child,
        )
        aws.lb.Listener(
            f"{name}-https",
            region=region,
            load_balancer_arn=load_balancer.arn,
            port=HTTPS_PORT,
            protocol="TLS",
            certificate_arn=certificate_arn,
            ssl_policy=TLS_POLICY,
            # gRPC clients offer only h2, so h2 must be negotiable; clients offering both (browsers, WebSocket
            # libraries) get HTTP/1.1, which WebSocket upgrades need. The gateway's Envoy takes either in clear text.
            alpn_policy="HTTP2Optional",
            default_actions=[{"type": "forward", "target_group_arn": target_group.arn}],
            opts=child,
        )

        record = aws.route53.Record(
            f"{name}-record",
            zone_id=args.hosted_zone_id,
            name=hostname,
            type="A",
            aliases=[
                {"name": load_balancer.dns_name, "zone_id": load_balancer.zone_id, "evaluate_target_health": True}
            ],
            opts=child,
        )
        health_check = aws.route53.HealthCheck(
            f"{name}-health",
            type="HTTPS",
            fqdn=hostname,
            port=HTTPS_PORT,
            resource_path=HEALTH_CHECK_PATH,
            enable_sni=True,
            # Two failures 10 s apart: a dead region stops receiving new users in well under a minute.
            failure_threshold=2,
            request_interval=10,
            measure_latency=True,
            regions=list(ROUTE53_CHECKER_REGIONS),
            tags={"Name": f"speech {args.region.key} {HEALTH_CHECK_PATH}"},
            opts=pulumi.ResourceOptions(parent=self, depends_on=[record]),
        )

        self.cloudflare_pool_id = None
        if args.cloudflare_account_id is not None:
            self.cloudflare_pool_id = self._cloudflare_pool(name, args, hostname, child)

        self.hostname = pulumi.Output.from_input(hostname)
        self.health_check_id = health_check.id
        self.target_group_arn = target_group.arn
        self.load_balancer_dns_name = load_balancer.dns_name
        self.load_balancer_zone_id = load_balancer.zone_id
        self.security_group_id = security_group.id
        self.register_outputs(
            {
                "hostname": self.hostname,
                "health_check_id": self.health_check_id,
                "target_group_arn": self.target_group_arn,
                "load_balancer_dns_name": self.load_balancer_dns_name,
                "load_balancer_zone_id": self.load_balancer_zone_id,
                "security_group_id": self.security_group_id,
                "cloudflare_pool_id": self.cloudflare_pool_id,
            }
        )

    def _certificate(
        self, name: str, args: RegionalIngressArgs, hostname: str, child: pulumi.ResourceOptions
    ) -> pulumi.Output[str]:
        """A DNS-validated certificate for the regional and the global name; returns its ARN once issued."""
        certificate = aws.acm.Certificate(
            f"{name}-certificate",
            region=args.region.aws_region,
            domain_name=hostname,
            subject_alternative_names=[args.domain],
            validation_method="DNS",
            tags={"Name": hostname},
            opts=child,
        )
        validation_records = []
        for role, domain in (("regional", hostname), ("global", args.domain)):
            shared = domain == args.domain
            validation_records.append(
                aws.route53.Record(
                    f"{name}-validation-{role}",
                    zone_id=args.hosted_zone_id,
                    name=_validation_field(certificate, domain, "resource_record_name"),
                    type=_validation_field(certificate, domain, "resource_record_type"),
                    records=[_validation_field(certificate, domain, "resource_record_value")],
                    ttl=60,
                    # ACM gives one account the same validation record for the same name in every region, so
                    # every regional stack writes this one record: overwriting is expected, and destroying one
                    # region must not delete the record the other regions' renewals still need.
                    allow_overwrite=shared,
                    opts=pulumi.ResourceOptions(parent=self, retain_on_delete=shared),
                )
            )
        validation = aws.acm.CertificateValidation(
            f"{name}-certificate",
            region=args.region.aws_region,
            certificate_arn=certificate.arn,
            validation_record_fqdns=[r.fqdn for r in validation_records],
            opts=child,
        )
        return validation.certificate_arn

    def _cloudflare_pool(
        self, name: str, args: RegionalIngressArgs, hostname: str, child: pulumi.ResourceOptions
    ) -> pulumi.Output[str]:
        monitor = cloudflare.LoadBalancerMonitor(
            f"{name}-monitor",
            account_id=args.cloudflare_account_id,
            type="https",
            method="GET",
            path=HEALTH_CHECK_PATH,
            port=HTTPS_PORT,
            expected_codes="200",
            header={"Host": [hostname]},
            follow_redirects=False,
            allow_insecure=False,
            interval=60,
            timeout=5,
            retries=2,
            consecutive_down=2,
            consecutive_up=2,
            description=f"speech {args.region.key} {HEALTH_CHECK_PATH}",
            opts=child,
        )
        pool = cloudflare.LoadBalancerPool(
            f"{name}-pool",
            account_id=args.cloudflare_account_id,
            name=f"speech-{args.region.key}",
            description=f"speech {args.region.key} ({args.region.aws_region}, jurisdiction {args.region.jurisdiction})",
            # The origin is the regional hostname, which resolves straight to this region's load balancer (never
            # through Cloudflare), so a pool is exactly one region and the pool's jurisdiction is the region's.
            # Without the Host header Cloudflare would send the balancer's own hostname (SNI and Host), which the
            # load balancer's certificate does not name: a Full (strict) zone answers 526 to users while the
            # monitor, which sends its own Host header, still reports the pool healthy.
            origins=[
                cloudflare.LoadBalancerPoolOriginArgs(
                    name=args.region.key,
                    address=hostname,
                    enabled=True,
                    weight=1,
                    header=cloudflare.LoadBalancerPoolOriginHeaderArgs(hosts=[hostname]),
                )
            ],
            minimum_origins=1,
            monitor=monitor.id,
            # Probe from where the region's own users are; no region code means Cloudflare's default probes.
            check_regions=list(args.region.cloudflare_regions) or None,
            opts=child,
        )
        return pool.id

    def stack_exports(self) -> dict[str, pulumi.Output[str]]:
        """The regional stack's outputs that the global stack and later issues read."""
        exports = {
            OUTPUT_HOSTNAME: self.hostname,
            OUTPUT_HEALTH_CHECK_ID: self.health_check_id,
            OUTPUT_TARGET_GROUP_ARN: self.target_group_arn,
            OUTPUT_LB_DNS_NAME: self.load_balancer_dns_name,
            OUTPUT_LB_ZONE_ID: self.load_balancer_zone_id,
            OUTPUT_LB_SECURITY_GROUP_ID: self.security_group_id,
        }
        if self.cloudflare_pool_id is not None:
            exports[OUTPUT_CLOUDFLARE_POOL_ID] = self.cloudflare_pool_id
        return exports


def _validation_field(certificate: aws.acm.Certificate, domain: str, field: str) -> pulumi.Output[str]:
    """One field of the certificate's DNS validation record for ``domain`` (known only once ACM answers)."""

    def pick(options: Sequence[Any]) -> str:
        for option in options:
            if option.domain_name == domain:
                return str(getattr(option, field))
        raise pulumi.RunError(f"ACM returned no DNS validation record for {domain}")

    return certificate.domain_validation_options.apply(pick)
