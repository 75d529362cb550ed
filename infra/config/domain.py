"""`speech:domain`, `speech:hostedZoneId`, `speech:cloudflare` and `speech:stackPrefix`: names users and stacks use."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from infra.config.reader import NAMESPACE, Reader

_DNS_NAME = re.compile(r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$")
_ZONE_ID = re.compile(r"^Z[A-Z0-9]{1,31}$")
_CLOUDFLARE_ID = re.compile(r"^[0-9a-f]{32}$")
_STACK_PREFIX = re.compile(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$")
_KEY = f"{NAMESPACE}:cloudflare"


@dataclass(frozen=True)
class CloudflareConfig:
    """A regional stack's Cloudflare account and zone: its monitor and pool live there."""

    account_id: str
    zone_id: str


@dataclass(frozen=True)
class CloudflareBalancerConfig(CloudflareConfig):
    """The global stack's Cloudflare load balancer."""

    # The load balancer's own name in the Cloudflare zone. It must differ from `speech:domain`: Route 53 answers
    # for that name, and only one of the two can be authoritative for it.
    hostname: str


def read_domain(reader: Reader) -> tuple[str, str]:
    """(domain, Route 53 hosted zone id), which every stack needs."""
    domain = reader.string("domain", _DNS_NAME, "a lower-case DNS name such as speech.example.com")
    zone = reader.string("hostedZoneId", _ZONE_ID, "a Route 53 hosted zone id such as Z0123456789ABCDEFGHIJ")
    return domain, zone


def read_stack_prefix(reader: Reader) -> str:
    return reader.string("stackPrefix", _STACK_PREFIX, "<organization>/<project>, e.g. acme/speech-platform")


def read_cloudflare(reader: Reader) -> CloudflareConfig | None:
    """A regional stack's Cloudflare ids, or None to use Route 53 only."""
    value = _cloudflare_ids(reader)
    if value is None:
        return None
    if value.get("hostname") is not None:
        raise reader.fail(f"{_KEY}.hostname", value["hostname"], "belongs in the global stack only; remove it here")
    return CloudflareConfig(account_id=value["accountId"], zone_id=value["zoneId"])


def read_cloudflare_balancer(reader: Reader, domain: str) -> CloudflareBalancerConfig | None:
    """The global stack's Cloudflare ids and load balancer hostname, or None to use Route 53 only."""
    value = _cloudflare_ids(reader)
    if value is None:
        return None
    hostname = value.get("hostname")
    if not isinstance(hostname, str) or not _DNS_NAME.match(hostname):
        raise reader.fail(
            f"{_KEY}.hostname",
            hostname,
            "must be the load balancer's DNS name in the Cloudflare zone, e.g. edge.example.com",
        )
    if hostname == domain:
        raise reader.fail(
            f"{_KEY}.hostname", hostname, f"must differ from speech:domain: Route 53 already answers for {domain}"
        )
    return CloudflareBalancerConfig(account_id=value["accountId"], zone_id=value["zoneId"], hostname=hostname)


def _cloudflare_ids(reader: Reader) -> dict[str, Any] | None:
    """`speech:cloudflare` with its account and zone ids checked, or None when it is left out."""
    value = reader.get("cloudflare")
    if value is None:
        return None
    if not isinstance(value, dict):
        raise reader.fail(_KEY, value, "must be an object with accountId and zoneId, or be left out")
    for field in ("accountId", "zoneId"):
        if not isinstance(value.get(field), str) or not _CLOUDFLARE_ID.match(value[field]):
            raise reader.fail(
                f"{_KEY}.{field}", value.get(field), "must be a 32-character lower-case hex Cloudflare id"
            )
    return value
