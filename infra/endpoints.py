"""What the global stack knows about each region: the regional stack's outputs, by name.

The regional stack writes these outputs (`infra/ingress.py`, `RegionalIngress.stack_exports`) and the global stack
reads them (`RegionalEndpoint.from_stack`). This module imports no provider, so a program that only builds DNS
(`infra/dns.py`) never imports Cloudflare's SDK.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi

from contract import service
from contract.topology import Region

# Stack output names: written by the regional stack, read by the global one.
OUTPUT_HOSTNAME = "endpointHostname"
OUTPUT_HEALTH_CHECK_ID = "healthCheckId"
OUTPUT_CLOUDFLARE_POOL_ID = "cloudflarePoolId"
OUTPUT_TARGET_GROUP_ARN = "targetGroupArn"
OUTPUT_LB_DNS_NAME = "loadBalancerDnsName"
OUTPUT_LB_ZONE_ID = "loadBalancerZoneId"
OUTPUT_LB_SECURITY_GROUP_ID = "loadBalancerSecurityGroupId"


def regional_hostname(region: Region, domain: str) -> str:
    """The hostname that reaches exactly one region, whatever the user's location (`contract.service`'s form, which
    the serving container also uses to send a tenant to its home region)."""
    return service.regional_hostname(region.key, domain)


@dataclass(frozen=True)
class RegionalEndpoint:
    """What the global stack knows about one region, read from its stack outputs."""

    region: Region
    hostname: pulumi.Input[str]
    health_check_id: pulumi.Input[str]
    load_balancer_dns_name: pulumi.Input[str]
    load_balancer_zone_id: pulumi.Input[str]
    cloudflare_pool_id: pulumi.Input[str] | None

    @classmethod
    def from_stack(cls, stack: pulumi.StackReference, region: Region, with_cloudflare: bool) -> RegionalEndpoint:
        """Read a deployed regional stack; a missing output fails the global stack with the output's name."""
        return cls(
            region=region,
            hostname=stack.require_output(OUTPUT_HOSTNAME),
            health_check_id=stack.require_output(OUTPUT_HEALTH_CHECK_ID),
            load_balancer_dns_name=stack.require_output(OUTPUT_LB_DNS_NAME),
            load_balancer_zone_id=stack.require_output(OUTPUT_LB_ZONE_ID),
            cloudflare_pool_id=stack.require_output(OUTPUT_CLOUDFLARE_POOL_ID) if with_cloudflare else None,
        )
