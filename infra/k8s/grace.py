"""How long a serving pod may take to stop, derived from how the container drains on SIGTERM.

On SIGTERM the serving container (`python -m serving`) turns readiness to 503, refuses new work, lets live streams
finish their open utterance and in-flight batch requests complete for at most its drain grace
(`SPEECH_SHUTDOWN__GRACE_S`, `speech:serving.drainSeconds` here), then gives uvicorn a short close for idle
keep-alive connections. Kubernetes must not SIGKILL it before that, so:

    terminationGracePeriodSeconds = preStop sleep + drain grace + server close + unload margin

The preStop sleep runs before SIGTERM while the pod is already out of its Service's ready endpoints: it gives the
ingress gateway (Envoy, fed by istiod) time to stop sending the pod new requests, so the drain starts with nothing
new arriving. Pure arithmetic, no Pulumi: the config validation checks a spot workload against it too.
"""

from __future__ import annotations

# Endpoint removal reaches the gateways' Envoy through istiod within a couple of seconds.
PRE_STOP_SLEEP_S = 5
# uvicorn's graceful close after the drain (serving/shutdown.py UVICORN_CLOSE_S): only idle connections are left.
SERVER_CLOSE_S = 5
# Unloading the model and closing clients after uvicorn returns.
UNLOAD_MARGIN_S = 5
# EC2 gives a spot instance two minutes' notice; EKS cordons and drains the node on the notice, which takes a
# few seconds of that before a pod sees its preStop.
SPOT_INTERRUPTION_NOTICE_S = 120
SPOT_DRAIN_REACTION_S = 10


def termination_grace_seconds(drain_seconds: int) -> int:
    """The pod's terminationGracePeriodSeconds for a container that drains for ``drain_seconds``."""
    return PRE_STOP_SLEEP_S + drain_seconds + SERVER_CLOSE_S + UNLOAD_MARGIN_S


def max_spot_drain_seconds() -> int:
    """The longest drain grace whose whole termination still fits inside a spot interruption notice."""
    return SPOT_INTERRUPTION_NOTICE_S - SPOT_DRAIN_REACTION_S - PRE_STOP_SLEEP_S - SERVER_CLOSE_S - UNLOAD_MARGIN_S
