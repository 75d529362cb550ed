"""`speech:delivery` and `speech:model.shadow`: defaults, and one clear error per mistake."""

from __future__ import annotations

import pytest

from contract.topology import DEFAULT_TOPOLOGY
from infra import config
from tests.infra.test_config_serving import with_keys

MODEL = {"name": "whisper-base", "version": "1.0.0"}

CASES = [
    ({"delivery": {"canaryWeight": 0}}, "speech:delivery.canaryWeight = 0 must be a whole number from 1 to 50"),
    ({"delivery": {"steps": [5, 5]}}, "speech:delivery.steps[1] = 5 must exceed the step before it (steps[0] = 5)"),
    ({"delivery": {"canaryWeight": 10, "steps": [5]}},
     "speech:delivery.steps[0] = 5 must exceed the step before it (canaryWeight = 10)"),
    ({"delivery": {"steps": [5, 100]}}, "speech:delivery.steps[1] = 100 must be a whole number from 1 to 99"),
    ({"delivery": {"steps": "5,25"}}, 'speech:delivery.steps = "5,25" must be a list of increasing traffic'),
    ({"delivery": {"mirrorPercent": 101}}, "speech:delivery.mirrorPercent = 101 must be a whole number from 0 to 100"),
    ({"delivery": {"scaleDownDelaySeconds": 5}},
     "speech:delivery.scaleDownDelaySeconds = 5 must be a whole number from 30 to 3600"),
    ({"delivery": {"weight": 1}}, "speech:delivery.weight = 1 is not known; use canaryWeight"),
    ({"delivery": {"gates": {"maxErrorRate": 2}}},
     "speech:delivery.gates.maxErrorRate = 2 must be a number above 0 and at most 1"),
    ({"delivery": {"gates": {"maxP99LatencySeconds": "fast"}}},
     'speech:delivery.gates.maxP99LatencySeconds = "fast" must be a number above 0 and at most 60'),
    ({"delivery": {"gates": {"maxShadowWer": True}}},
     "speech:delivery.gates.maxShadowWer = true must be a number above 0 and at most 1"),
    ({"delivery": {"gates": {"p99": 0.5}}}, "speech:delivery.gates.p99 = 0.5 is not known; use maxErrorRate"),
    ({"delivery": [1, 5]}, "speech:delivery = [1, 5] must be an object with any of canaryWeight"),
    ({"model": {**MODEL, "shadow": {"version": "1.0.0"}}},
     'speech:model.shadow.version = "1.0.0" is the version already served; shadow a different one'),
    ({"model": {**MODEL, "shadow": {"version": "1.1.0", "sampleRate": 0}}},
     "speech:model.shadow.sampleRate = 0 must be a number above 0 and at most 1"),
    ({"model": {**MODEL, "shadow": "1.1.0"}},
     'speech:model.shadow = "1.1.0" must be an object with the candidate\'s version and an optional sampleRate'),
    ({"model": {**MODEL, "candidate": "1.1.0"}}, 'speech:model.candidate = "1.1.0" is not known; use name, version'),
]  # fmt: skip


@pytest.mark.parametrize("values, message", CASES, ids=[str(c[0])[:60] for c in CASES])
def test_delivery_and_shadow_errors_name_the_key_the_value_and_the_fix(values, message):
    with pytest.raises(config.ConfigError) as caught:
        config.load("eu-west", with_keys("eu-west", **values), DEFAULT_TOPOLOGY)
    assert message in str(caught.value)
    assert str(caught.value).endswith("(Pulumi.eu-west.yaml)") and "\n" not in str(caught.value)


def test_without_delivery_a_canary_starts_at_one_percent_and_gates_on_the_issues_thresholds():
    cfg = config.load("eu-west", with_keys("eu-west", delivery=None), DEFAULT_TOPOLOGY)
    assert isinstance(cfg, config.RegionalConfig)
    assert cfg.delivery.weights == (1, 5, 25, 50) and not cfg.delivery.is_mirroring
    assert (cfg.delivery.gates.max_error_rate, cfg.delivery.gates.max_p99_latency_s) == (0.01, 0.5)
    assert cfg.model.shadow is None


def test_delivery_and_shadow_are_read_as_given():
    raw = with_keys(
        "eu-west",
        delivery={"canaryWeight": 2, "steps": [10, 50], "mirrorPercent": 20, "gates": {"maxShadowWer": "0.1"}},
        model={**MODEL, "shadow": {"version": "1.1.0", "sampleRate": 0.25}},
    )
    cfg = config.load("eu-west", raw, DEFAULT_TOPOLOGY)
    assert isinstance(cfg, config.RegionalConfig)
    assert cfg.delivery.weights == (2, 10, 50) and cfg.delivery.mirror_percent == 20
    assert cfg.delivery.gates.max_shadow_wer == 0.1
    assert cfg.model.shadow == config.ShadowConfig(version="1.1.0", sample_rate=0.25)
