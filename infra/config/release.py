"""`speech:publishers`: who may assume each jurisdiction's publisher role (the global stack's release pipeline)."""

from __future__ import annotations

import re

from contract.topology import Topology
from infra.config.reader import NAMESPACE, Reader

_PRINCIPAL = re.compile(r"^arn:aws[a-z-]*:iam::\d{12}:(role|user)/[\w+=,.@/-]{1,512}$")
_KEY = f"{NAMESPACE}:publishers"


def read_publishers(reader: Reader, topology: Topology) -> dict[str, tuple[str, ...]]:
    """{jurisdiction code: principal ARNs}, one non-empty list for every jurisdiction that has regions."""
    needed = [j.code for j in topology.jurisdictions if topology.regions_in(j.code)]
    example = "{" + ", ".join(f"{code}: [arn:aws:iam::<account>:role/<ci role>]" for code in needed) + "}"
    value = reader.require("publishers", f"an object of IAM role or user ARNs per jurisdiction, e.g. {example}")
    if not isinstance(value, dict):
        raise reader.fail(_KEY, value, f"must be an object of IAM role or user ARNs per jurisdiction, e.g. {example}")
    unknown = sorted(set(value) - set(needed))
    if unknown:
        raise reader.fail(
            f"{_KEY}.{unknown[0]}", value[unknown[0]], f"names no jurisdiction with regions; use {', '.join(needed)}"
        )
    principals: dict[str, tuple[str, ...]] = {}
    for code in needed:
        arns = value.get(code)
        if not isinstance(arns, list) or not arns:
            raise reader.fail(
                f"{_KEY}.{code}", arns, "must list the IAM role or user ARNs that may publish models for it"
            )
        for i, arn in enumerate(arns):
            if not isinstance(arn, str) or not _PRINCIPAL.match(arn):
                raise reader.fail(
                    f"{_KEY}.{code}[{i}]", arn, "is not an IAM role or user ARN like arn:aws:iam::123456789012:role/ci"
                )
        principals[code] = tuple(arns)
    return principals
