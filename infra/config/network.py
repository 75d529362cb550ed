"""`speech:vpcCidr` and `speech:availabilityZones`: the regional VPC."""

from __future__ import annotations

import ipaddress

from infra.config.reader import NAMESPACE, Reader


def read_vpc_cidr(reader: Reader) -> str:
    """A private IPv4 network from /16 to /20: `infra.network` cuts it into a quarter per zone."""
    value = reader.require("vpcCidr", "an IPv4 network from /16 to /20, e.g. 10.20.0.0/16")
    try:
        cidr = ipaddress.IPv4Network(value)
    except (ipaddress.AddressValueError, ipaddress.NetmaskValueError, ValueError) as exc:
        raise reader.fail(f"{NAMESPACE}:vpcCidr", value, f"is not an IPv4 network ({exc})") from exc
    if not 16 <= cidr.prefixlen <= 20 or not cidr.is_private:
        raise reader.fail(f"{NAMESPACE}:vpcCidr", value, "must be a private IPv4 network from /16 to /20")
    return str(cidr)


def read_availability_zones(reader: Reader) -> int:
    return reader.integer(f"{NAMESPACE}:availabilityZones", reader.get("availabilityZones", 3), 2, 3)
