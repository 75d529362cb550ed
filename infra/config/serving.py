"""`speech:serving`: how the serving workload runs (profile, replica bounds, autoscaling targets, drain)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from infra.config.cluster import GpuPoolConfig, SpotPoolConfig
from infra.config.reader import NAMESPACE, Reader
from infra.k8s.grace import max_spot_drain_seconds

_KEY = f"{NAMESPACE}:serving"
_FIELDS = {"profile", "replicas", "batchReplicas", "streamsPerReplica", "batchRequestsPerReplica", "drainSeconds"}
PROFILES = ("gpu", "cpu")


@dataclass(frozen=True)
class ReplicaBounds:
    min_replicas: int
    max_replicas: int


@dataclass(frozen=True)
class ServingConfig:
    """The serving workload of a region.

    ``profile`` "gpu" runs one replica per GPU on the GPU pool; "cpu" runs the same INT8 model on the CPU pool
    without a GPU request, for regions whose traffic does not pay for GPUs.
    """

    profile: Literal["gpu", "cpu"] = "gpu"
    replicas: ReplicaBounds = ReplicaBounds(2, 16)  # the realtime (streaming) Deployment
    batch_replicas: ReplicaBounds = ReplicaBounds(1, 10)  # the batch Deployment on the spot pool
    streams_per_replica: int = 6  # average open streams per pod that KEDA keeps
    batch_requests_per_replica: int = 4  # average admitted batch requests per pod that KEDA keeps
    drain_seconds: int = 20  # the container's drain grace on SIGTERM (SPEECH_SHUTDOWN__GRACE_S)

    @property
    def is_gpu(self) -> bool:
        return self.profile == "gpu"


def read_serving(reader: Reader, gpu_pool: GpuPoolConfig, spot_pool: SpotPoolConfig) -> ServingConfig:
    raw = reader.get("serving")
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise reader.fail(_KEY, raw, f"must be an object with any of {', '.join(sorted(_FIELDS))}")
    unknown = sorted(set(raw) - _FIELDS)
    if unknown:
        raise reader.fail(f"{_KEY}.{unknown[0]}", raw[unknown[0]], f"is not known; use {', '.join(sorted(_FIELDS))}")
    defaults = ServingConfig()
    profile = raw.get("profile", defaults.profile)
    if profile not in PROFILES:
        raise reader.fail(f"{_KEY}.profile", profile, f"must be one of {', '.join(PROFILES)}")
    serving = ServingConfig(
        profile=profile,
        replicas=_bounds(reader, "replicas", raw.get("replicas"), defaults.replicas),
        batch_replicas=_bounds(reader, "batchReplicas", raw.get("batchReplicas"), defaults.batch_replicas),
        streams_per_replica=reader.integer(
            f"{_KEY}.streamsPerReplica", raw.get("streamsPerReplica", defaults.streams_per_replica), 1, 64
        ),
        batch_requests_per_replica=reader.integer(
            f"{_KEY}.batchRequestsPerReplica",
            raw.get("batchRequestsPerReplica", defaults.batch_requests_per_replica),
            1,
            64,
        ),
        drain_seconds=reader.integer(f"{_KEY}.drainSeconds", raw.get("drainSeconds", defaults.drain_seconds), 1, 600),
    )
    _check_against_pools(reader, serving, gpu_pool, spot_pool)
    return serving


def _bounds(reader: Reader, name: str, value: Any, default: ReplicaBounds) -> ReplicaBounds:
    key = f"{_KEY}.{name}"
    if value is None:
        return default
    if not isinstance(value, dict) or set(value) - {"min", "max"}:
        raise reader.fail(key, value, "must be an object with min and max replicas")
    bounds = ReplicaBounds(
        # A Deployment's own pods report the metric KEDA scales it on: with none left, nothing says to scale up.
        min_replicas=reader.integer(f"{key}.min", value.get("min", default.min_replicas), 1, 500),
        max_replicas=reader.integer(f"{key}.max", value.get("max", default.max_replicas), 1, 500),
    )
    if bounds.min_replicas > bounds.max_replicas:
        raise reader.fail(f"{key}.min", bounds.min_replicas, f"must not exceed max ({bounds.max_replicas})")
    return bounds


def _check_against_pools(
    reader: Reader, serving: ServingConfig, gpu_pool: GpuPoolConfig, spot_pool: SpotPoolConfig
) -> None:
    if not serving.is_gpu and spot_pool.enabled:
        raise reader.fail(
            f"{NAMESPACE}:spotPool.enabled",
            True,
            "runs batch replicas on spot GPUs, but speech:serving.profile is cpu; set spotPool.enabled: false",
        )
    if not serving.is_gpu and gpu_pool.size.min_size > 0:
        raise reader.fail(
            f"{NAMESPACE}:gpuPool.minSize",
            gpu_pool.size.min_size,
            "keeps GPU nodes that no pod of a cpu profile uses; set it (and nightSize) to 0",
        )
    if spot_pool.enabled and serving.drain_seconds > max_spot_drain_seconds():
        raise reader.fail(
            f"{_KEY}.drainSeconds",
            serving.drain_seconds,
            f"must be at most {max_spot_drain_seconds()} so a batch pod on spot finishes its work within the "
            "two-minute interruption notice",
        )
