"""`speech:deployOrder`: the order in which CI runs `pulumi up` on the regional stacks, the first being the canary."""

from __future__ import annotations

from contract.topology import Region, Topology
from infra.config.reader import NAMESPACE, Reader

_KEY = f"{NAMESPACE}:deployOrder"


def read_deploy_order(reader: Reader, topology: Topology) -> tuple[Region, ...]:
    """Every region of the topology once, canary first; left out, the default region leads, then topology order.

    The default region is the natural canary when nothing is said: it serves the unrestricted users matched by
    nothing else, so a bad release there never reaches a strict jurisdiction first.
    """
    keys = list(topology.keys)
    example = "[" + ", ".join(keys) + "]"
    value = reader.get("deployOrder")
    if value is None:
        default = topology.region(topology.default_region)
        return (default, *(r for r in topology.regions if r != default))
    if not isinstance(value, list) or not value:
        raise reader.fail(_KEY, value, f"must list every region once, the canary first, e.g. {example}")
    for i, key in enumerate(value):
        if key not in keys:
            raise reader.fail(f"{_KEY}[{i}]", key, f"is not a region of the topology; use one of {', '.join(keys)}")
        if key in value[:i]:
            raise reader.fail(f"{_KEY}[{i}]", key, "is listed twice; every region is deployed once")
    missing = [k for k in keys if k not in value]
    if missing:
        raise reader.fail(_KEY, value, f"leaves out {', '.join(missing)}; list every region once, e.g. {example}")
    return tuple(topology.region(k) for k in value)
