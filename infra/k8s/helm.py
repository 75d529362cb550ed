"""One way to install a pinned chart: every add-on is a `helm.v3.Release` built here."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pulumi
import pulumi_kubernetes as kubernetes

from infra.versions import HelmChart

# Long enough for a chart whose pods wait for a node the autoscaler is still starting.
RELEASE_TIMEOUT_S = 900


def release(
    name: str,
    chart: HelmChart,
    *,
    release_name: str,
    namespace: pulumi.Input[str],
    values: Mapping[str, Any] | pulumi.Output[Mapping[str, Any]],
    opts: pulumi.ResourceOptions,
    create_namespace: bool = False,
) -> kubernetes.helm.v3.Release:
    """``chart`` at its pinned version as release ``release_name``.

    The release name is fixed (not auto-named) because other objects address what the chart creates by it: the
    TargetGroupBinding names the ingress gateway's Service, KEDA the Prometheus Service. A failed install or upgrade
    rolls back (atomic) instead of leaving a half-applied chart behind.
    """
    return kubernetes.helm.v3.Release(
        name,
        name=release_name,
        chart=chart.name,
        version=chart.version,
        repository_opts=kubernetes.helm.v3.RepositoryOptsArgs(repo=chart.repository),
        namespace=namespace,
        create_namespace=create_namespace,
        values=values if isinstance(values, pulumi.Output) else dict(values),
        atomic=True,
        cleanup_on_fail=True,
        max_history=5,
        timeout=RELEASE_TIMEOUT_S,
        opts=opts,
    )
