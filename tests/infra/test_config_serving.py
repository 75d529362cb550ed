"""`speech:serving` and `speech:clusterAccess`: defaults, and one clear error per mistake."""

from __future__ import annotations

import pytest

from contract.topology import DEFAULT_TOPOLOGY
from infra import config, offline
from infra.k8s.grace import max_spot_drain_seconds


def with_keys(stack: str, **values) -> dict:
    raw = offline.stack_config(stack)
    for key, value in values.items():
        full = f"speech:{key}"
        if value is None:
            raw.pop(full, None)
        else:
            raw[full] = value
    return raw


CPU_REGION = {
    "serving": {"profile": "cpu"},
    "spotPool": {"enabled": False},
    "gpuPool": {"minSize": 0, "desiredSize": 0, "maxSize": 2, "nightSize": 0},
}

CASES = [
    ({"serving": {"profile": "tpu"}}, 'speech:serving.profile = "tpu" must be one of gpu, cpu'),
    ({"serving": {"replica": {"min": 1}}}, 'speech:serving.replica = {"min": 1} is not known; use batchReplicas'),
    ({"serving": {"replicas": {"min": 0, "max": 4}}}, "speech:serving.replicas.min = 0 must be a whole number from 1"),
    ({"serving": {"replicas": {"min": 5, "max": 4}}}, "speech:serving.replicas.min = 5 must not exceed max (4)"),
    ({"serving": {"batchReplicas": {"min": 0}}}, "speech:serving.batchReplicas.min = 0 must be a whole number from 1"),
    ({"serving": {"streamsPerReplica": 0}}, "speech:serving.streamsPerReplica = 0 must be a whole number from 1 to 64"),
    ({"serving": {"drainSeconds": 200}},
     f"speech:serving.drainSeconds = 200 must be at most {max_spot_drain_seconds()} so a batch pod on spot"),
    ({"serving": "gpu"}, 'speech:serving = "gpu" must be an object'),
    ({"serving": {"profile": "cpu"}}, "speech:spotPool.enabled = true runs batch replicas on spot GPUs, but"),
    ({"serving": {"profile": "cpu"}, "spotPool": {"enabled": False}},
     "speech:gpuPool.minSize = 2 keeps GPU nodes that no pod of a cpu profile uses"),
    ({"clusterAccess": {"publicAccessCidrs": ["10.0.0.300/8"]}},
     'speech:clusterAccess.publicAccessCidrs[0] = "10.0.0.300/8" is not an IPv4 network'),
    ({"clusterAccess": {"publicAccessCidrs": []}},
     "speech:clusterAccess.publicAccessCidrs = [] must be a non-empty list of IPv4 networks"),
    ({"clusterAccess": {"admins": ["admins"]}},
     'speech:clusterAccess.admins[0] = "admins" is not an IAM role or user ARN'),
    ({"clusterAccess": {"deletionProtection": "yes"}},
     'speech:clusterAccess.deletionProtection = "yes" must be true or false'),
    ({"clusterAccess": {"owners": []}}, 'speech:clusterAccess = {"owners": []} must be an object with any of'),
]  # fmt: skip


@pytest.mark.parametrize("values, message", CASES, ids=[str(c[0])[:60] for c in CASES])
def test_serving_and_access_errors_name_the_key_the_value_and_the_fix(values, message):
    with pytest.raises(config.ConfigError) as caught:
        config.load("eu-west", with_keys("eu-west", **values), DEFAULT_TOPOLOGY)
    assert message in str(caught.value)
    assert str(caught.value).endswith("(Pulumi.eu-west.yaml)") and "\n" not in str(caught.value)


def test_left_out_sections_take_safe_defaults():
    cfg = config.load("eu-west", with_keys("eu-west", serving=None, clusterAccess=None), DEFAULT_TOPOLOGY)
    assert isinstance(cfg, config.RegionalConfig)
    assert cfg.serving == config.ServingConfig()
    assert cfg.serving.is_gpu and cfg.serving.replicas.min_replicas >= 1
    assert cfg.cluster_access.deletion_protection is True and cfg.cluster_access.admin_arns == ()


def test_a_cheap_region_runs_the_cpu_profile_without_gpu_nodes():
    cfg = config.load("ap-northeast", with_keys("ap-northeast", **CPU_REGION), DEFAULT_TOPOLOGY)
    assert isinstance(cfg, config.RegionalConfig)
    assert not cfg.serving.is_gpu and not cfg.spot_pool.enabled and cfg.gpu_pool.size.min_size == 0


def test_every_stack_config_key_is_documented_in_the_readme():
    from infra.config.stack import _GLOBAL_KEYS, _REGIONAL_KEYS

    readme = (offline.ROOT / "README.md").read_text()
    for key in sorted(_REGIONAL_KEYS | _GLOBAL_KEYS):
        assert f"`speech:{key}`" in readme, f"speech:{key} is missing from the README's stack configuration table"
