"""The serving workload as Argo Rollouts: a canary over the Istio gateway's routes, gated, rolled back on failure.

Each role (realtime, batch) is a `Rollout` with the serving pod template and three Services over its pods: the
role's own (every pod; what Prometheus scrapes and KEDA counts), and a stable and a canary one, whose selectors Argo
pins to the stable and the canary ReplicaSet. The gateway's VirtualService routes each public path to the stable
and the canary Service by weight, and Argo moves the weights. A new template (image, model, settings) then goes:

1. one canary pod, no traffic; the realtime canary also answers any request with the header ``canary: true``;
2. the pre-rollout check (`serving.smoke`): a known clip transcribed through the canary, within a WER bound;
3. optionally, mirroring: a share of batch requests copied to the canary, its answers discarded;
4. ``canaryWeight`` percent of new requests, then each further step, each held for ``stepMinutes``;
5. promotion to every pod. The gates (`infra.k8s.gates`) run in the background from the first step: one breach
   aborts, every weight returns to the stable pods and the canary is scaled away.

Streams survive both ends: a weight change moves new connections only (an open WebSocket stays on the pod it was
routed to), and replaced pods are kept for ``scaleDownDelaySeconds`` before they drain, then on SIGTERM finish
their open utterance and close cleanly (`infra.k8s.grace`).

Pure functions, no Pulumi: tests read the specs exactly as the Rollouts get them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from contract import service
from infra.config import DeliveryConfig
from infra.k8s.gates import GATES_TEMPLATE, HASH_ARG
from infra.k8s.pod_spec import STARTUP_FAILURES, STARTUP_PERIOD_S

ROLLOUT_API = "argoproj.io/v1alpha1"
HEADER_ROUTE = "canary-header"
MIRROR_ROUTE = "canary-mirror"
# A request carrying this header reaches the realtime canary whatever the weights: how the pre-rollout check and
# an operator talk to the new version before any user does.
CANARY_HEADER = ("canary", "true")
# A canary pod gets the startup probe's whole window to pull and warm its model, then five minutes more; one that
# is still not ready by then aborts the rollout instead of leaving it stuck.
PROGRESS_DEADLINE_S = STARTUP_PERIOD_S * STARTUP_FAILURES + 300


def canary_minutes(delivery: DeliveryConfig) -> int:
    """The longest a canary takes from its first pod to promotion: pod start, mirroring, every step's pause."""
    mirroring = delivery.mirror_minutes if delivery.is_mirroring else 0
    return PROGRESS_DEADLINE_S // 60 + mirroring + delivery.step_minutes * len(delivery.weights)


def stable_service(name: str) -> str:
    return f"{name}-stable"


def canary_service(name: str) -> str:
    return f"{name}-canary"


def smoke_template(name: str) -> str:
    return f"{name}-smoke"


def canary_steps(delivery: DeliveryConfig, *, smoke: str, with_header: bool, with_mirror: bool) -> list[dict]:
    """The canary's steps: one pod, the header route, the smoke check, mirroring, then each weight in turn."""
    steps: list[dict[str, Any]] = [{"setCanaryScale": {"replicas": 1}}]
    if with_header:
        name, value = CANARY_HEADER
        steps.append(
            {"setHeaderRoute": {"name": HEADER_ROUTE, "match": [{"headerName": name, "headerValue": {"exact": value}}]}}
        )
    steps.append({"analysis": {"templates": [{"templateName": smoke}]}})
    if with_mirror:
        match = [{"method": {"exact": "POST"}, "path": {"exact": service.BATCH_PATH}}]
        steps += [
            {"setMirrorRoute": {"name": MIRROR_ROUTE, "percentage": delivery.mirror_percent, "match": match}},
            {"pause": {"duration": f"{delivery.mirror_minutes}m"}},
            # A mirror route without a match is removed.
            {"setMirrorRoute": {"name": MIRROR_ROUTE}},
        ]
    steps.append({"setCanaryScale": {"matchTrafficWeight": True}})
    for weight in delivery.weights:
        steps += [{"setWeight": weight}, {"pause": {"duration": f"{delivery.step_minutes}m"}}]
    return steps


def rollout_spec(
    name: str,
    pod_labels: Mapping[str, str],
    template: Mapping[str, Any],
    delivery: DeliveryConfig,
    *,
    virtual_service: str,
    routes: Sequence[str],
    with_header: bool,
    with_mirror: bool,
) -> dict[str, Any]:
    """The Rollout ``name``: ``template``'s pods, canaried on the VirtualService's ``routes``.

    No replica count: KEDA scales the Rollout, as it scaled the Deployment before. The stable pods keep their full
    count through the canary (no dynamic stable scale), so an abort needs no scale-up to carry all traffic again.
    """
    steps = canary_steps(delivery, smoke=smoke_template(name), with_header=with_header, with_mirror=with_mirror)
    managed = ([HEADER_ROUTE] if with_header else []) + ([MIRROR_ROUTE] if with_mirror else [])
    traffic: dict[str, Any] = {"istio": {"virtualService": {"name": virtual_service, "routes": list(routes)}}}
    if managed:
        traffic["managedRoutes"] = [{"name": route} for route in managed]
    return {
        "selector": {"matchLabels": dict(pod_labels)},
        "template": dict(template),
        "revisionHistoryLimit": 3,
        "progressDeadlineSeconds": PROGRESS_DEADLINE_S,
        "progressDeadlineAbort": True,
        "strategy": {
            "canary": {
                "stableService": stable_service(name),
                "canaryService": canary_service(name),
                "scaleDownDelaySeconds": delivery.scale_down_delay_s,
                "abortScaleDownDelaySeconds": delivery.scale_down_delay_s,
                "trafficRouting": traffic,
                # The gates start with the first user traffic; before it, the smoke check is the canary's test.
                "analysis": {
                    "templates": [{"templateName": GATES_TEMPLATE}],
                    "args": [{"name": HASH_ARG, "valueFrom": {"podTemplateHashValue": "Latest"}}],
                    "startingStep": next(i for i, step in enumerate(steps) if "setWeight" in step),
                },
                "steps": steps,
            }
        },
    }
