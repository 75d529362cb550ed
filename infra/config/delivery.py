"""`speech:delivery`: how a new image or model reaches users: canary weights, mirroring, hand-over, gate thresholds."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from infra.config.reader import NAMESPACE, Reader

_KEY = f"{NAMESPACE}:delivery"
_FIELDS = {
    "canaryWeight", "steps", "stepMinutes", "mirrorPercent", "mirrorMinutes", "scaleDownDelaySeconds", "gates"
}  # fmt: skip
_GATE_FIELDS = {
    "maxErrorRate", "maxP99LatencySeconds", "maxRealTimeFactor", "maxShadowWer", "smokeMaxWer", "windowMinutes"
}  # fmt: skip


@dataclass(frozen=True)
class GateThresholds:
    """What a canary must hold to be promoted; a breach aborts the rollout and traffic returns to the stable pods.

    Rates and WERs are fractions (0.01 is 1%); latency is the p99 of stream decodes (partials and finals), what a
    speaker waits for; the real-time factor is engine seconds per second of audio over every decode.
    """

    max_error_rate: float = 0.01
    max_p99_latency_s: float = 0.5
    max_real_time_factor: float = 0.5
    max_shadow_wer: float = 0.15  # mean WER between the served and the shadow candidate's transcripts
    smoke_max_wer: float = 0.4  # the pre-rollout clip's WER against its known text
    window_minutes: int = 5  # the rate window every gate query looks back over


@dataclass(frozen=True)
class DeliveryConfig:
    """The canary of a region's serving workload.

    The canary first takes ``canary_weight`` percent of new requests, then each of ``steps`` in turn, holding each
    for ``step_minutes`` while the gates run; with ``mirror_percent`` above zero it first receives that share of
    batch requests as copies whose answers are discarded. Replaced pods stay up ``scale_down_delay_s`` after
    promotion or abort, so open streams end on the pod they started on before it drains.
    """

    canary_weight: int = 1
    steps: tuple[int, ...] = (5, 25, 50)
    step_minutes: int = 5
    mirror_percent: int = 0
    mirror_minutes: int = 10
    scale_down_delay_s: int = 300
    gates: GateThresholds = field(default_factory=GateThresholds)

    @property
    def weights(self) -> tuple[int, ...]:
        """Every setWeight step, the canary's start weight first; 100% follows the last on promotion."""
        return (self.canary_weight, *self.steps)

    @property
    def is_mirroring(self) -> bool:
        return self.mirror_percent > 0


def read_delivery(reader: Reader) -> DeliveryConfig:
    raw = reader.get("delivery")
    if raw is None:
        return DeliveryConfig()
    if not isinstance(raw, dict):
        raise reader.fail(_KEY, raw, f"must be an object with any of {', '.join(sorted(_FIELDS))}")
    unknown = sorted(set(raw) - _FIELDS)
    if unknown:
        raise reader.fail(f"{_KEY}.{unknown[0]}", raw[unknown[0]], f"is not known; use {', '.join(sorted(_FIELDS))}")
    defaults = DeliveryConfig()
    canary_weight = reader.integer(f"{_KEY}.canaryWeight", raw.get("canaryWeight", defaults.canary_weight), 1, 50)
    return DeliveryConfig(
        canary_weight=canary_weight,
        steps=_steps(reader, raw.get("steps", list(defaults.steps)), canary_weight),
        step_minutes=reader.integer(f"{_KEY}.stepMinutes", raw.get("stepMinutes", defaults.step_minutes), 1, 240),
        mirror_percent=reader.integer(
            f"{_KEY}.mirrorPercent", raw.get("mirrorPercent", defaults.mirror_percent), 0, 100
        ),
        mirror_minutes=reader.integer(
            f"{_KEY}.mirrorMinutes", raw.get("mirrorMinutes", defaults.mirror_minutes), 1, 240
        ),
        scale_down_delay_s=reader.integer(
            f"{_KEY}.scaleDownDelaySeconds", raw.get("scaleDownDelaySeconds", defaults.scale_down_delay_s), 30, 3600
        ),
        gates=_gates(reader, raw.get("gates")),
    )


def _steps(reader: Reader, value: Any, canary_weight: int) -> tuple[int, ...]:
    key = f"{_KEY}.steps"
    if not isinstance(value, list):
        raise reader.fail(key, value, "must be a list of increasing traffic percentages below 100, e.g. [5, 25, 50]")
    steps: list[int] = []
    for i, item in enumerate(value):
        weight = reader.integer(f"{key}[{i}]", item, 1, 99)
        floor = steps[-1] if steps else canary_weight
        if weight <= floor:
            what = f"steps[{i - 1}]" if steps else "canaryWeight"
            raise reader.fail(f"{key}[{i}]", weight, f"must exceed the step before it ({what} = {floor})")
        steps.append(weight)
    return tuple(steps)


def _gates(reader: Reader, raw: Any) -> GateThresholds:
    key = f"{_KEY}.gates"
    if raw is None:
        return GateThresholds()
    if not isinstance(raw, dict):
        raise reader.fail(key, raw, f"must be an object with any of {', '.join(sorted(_GATE_FIELDS))}")
    unknown = sorted(set(raw) - _GATE_FIELDS)
    if unknown:
        known = ", ".join(sorted(_GATE_FIELDS))
        raise reader.fail(f"{key}.{unknown[0]}", raw[unknown[0]], f"is not known; use {known}")
    defaults = GateThresholds()

    def number(name: str, default: float, above: float, at_most: float) -> float:
        return reader.number(f"{key}.{name}", raw.get(name, default), above, at_most)

    return GateThresholds(
        max_error_rate=number("maxErrorRate", defaults.max_error_rate, 0, 1),
        max_p99_latency_s=number("maxP99LatencySeconds", defaults.max_p99_latency_s, 0, 60),
        max_real_time_factor=number("maxRealTimeFactor", defaults.max_real_time_factor, 0, 10),
        max_shadow_wer=number("maxShadowWer", defaults.max_shadow_wer, 0, 1),
        smoke_max_wer=number("smokeMaxWer", defaults.smoke_max_wer, 0, 1),
        window_minutes=reader.integer(f"{key}.windowMinutes", raw.get("windowMinutes", defaults.window_minutes), 1, 60),
    )
