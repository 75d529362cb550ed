"""Each config mistake stops the program at start with one message naming the key, the value and the fix."""

from __future__ import annotations

import pulumi
import pytest

from contract.topology import DEFAULT_TOPOLOGY
from infra import config, offline
from tests.conftest import REGIONAL_STACKS


def with_key(stack: str, key: str, value) -> dict:
    values = offline.stack_config(stack)
    if value is None:
        values.pop(key, None)
    else:
        values[key] = value
    return values


@pytest.mark.parametrize("stack", REGIONAL_STACKS)
def test_every_regional_stack_file_loads_into_its_topology_region(stack):
    cfg = config.load(stack, offline.stack_config(stack), DEFAULT_TOPOLOGY)
    assert isinstance(cfg, config.RegionalConfig)
    assert cfg.region is DEFAULT_TOPOLOGY.region(stack)
    assert cfg.jurisdiction.code == DEFAULT_TOPOLOGY.region(stack).jurisdiction
    assert 0 <= cfg.gpu_pool.night_size <= cfg.gpu_pool.size.min_size


def test_global_stack_file_loads():
    cfg = config.load("global", offline.stack_config("global"), DEFAULT_TOPOLOGY)
    assert isinstance(cfg, config.GlobalConfig)
    assert cfg.regional_stack_name(DEFAULT_TOPOLOGY.region("eu-west")) == "organization/speech-platform/eu-west"


def test_wire_form_strings_load_like_yaml_values():
    # Under `pulumi up` every value arrives as a string, objects as JSON.
    import json

    wire = {k: v if isinstance(v, str) else json.dumps(v) for k, v in offline.stack_config("us-west").items()}
    assert config.load("us-west", wire, DEFAULT_TOPOLOGY) == config.load(
        "us-west", offline.stack_config("us-west"), DEFAULT_TOPOLOGY
    )


CASES = [
    ("speech:gpuInstanceTypes", ["g6.xlarge", "m5.large"],
     'speech:gpuInstanceTypes[1] = "m5.large" is not an x86 NVIDIA GPU instance type; use a g4dn, g5, g6'),
    ("speech:gpuInstanceTypes", ["g5g.xlarge"], 'speech:gpuInstanceTypes[0] = "g5g.xlarge" is not an x86 NVIDIA GPU'),
    ("speech:gpuInstanceTypes", "g6.xlarge", 'speech:gpuInstanceTypes = "g6.xlarge" must be a non-empty list'),
    ("speech:gpuInstanceTypes", ["g6.xlarge", "g6.xlarge"], "lists an instance type twice"),
    ("speech:cpuInstanceTypes", ["g5.xlarge"], 'speech:cpuInstanceTypes[0] = "g5.xlarge" is a GPU instance type'),
    ("speech:cpuInstanceTypes", ["not a type"],
     'speech:cpuInstanceTypes[0] = "not a type" is not an EC2 instance type'),
    ("speech:gpuPool", {"minSize": 5, "desiredSize": 5, "maxSize": 2, "nightSize": 1},
     "speech:gpuPool.minSize = 5 must not exceed maxSize (2)"),
    ("speech:gpuPool", {"minSize": 1, "desiredSize": 9, "maxSize": 8, "nightSize": 1},
     "speech:gpuPool.desiredSize = 9 must lie between minSize (1) and maxSize (8)"),
    ("speech:gpuPool", {"minSize": 1, "desiredSize": 2, "maxSize": 8, "nightSize": 2},
     "speech:gpuPool.nightSize = 2 must lie between 0 and minSize (1)"),
    ("speech:gpuPool", {"minSize": -1, "desiredSize": 2, "maxSize": 8},
     "speech:gpuPool.minSize = -1 must be a whole number from 0 to 200"),
    ("speech:gpuPool", {"minSize": 1, "maxSize": 8}, "speech:gpuPool.desiredSize = <missing> is required"),
    ("speech:gpuPool", {"minSize": True, "desiredSize": 2, "maxSize": 8},
     "speech:gpuPool.minSize = true must be a whole number"),
    ("speech:cpuPool", {"minSize": 0, "desiredSize": 0, "maxSize": 3},
     "speech:cpuPool.minSize = 0 must be a whole number from 1"),
    ("speech:spotPool", {"enabled": "yes"}, 'speech:spotPool.enabled = "yes" must be true or false'),
    ("speech:spotPool", {"enabled": True, "instanceTypes": ["c7i.large"], "minSize": 0, "desiredSize": 0, "maxSize": 4},
     'speech:spotPool.instanceTypes[0] = "c7i.large" is not an x86 NVIDIA GPU instance type'),
    ("speech:region", "eu-north",
     'speech:region = "eu-north" is not a region of the topology; use one of us-west, eu-west'),
    ("speech:region", None, "speech:region = <missing> is required"),
    ("aws:region", "eu-central-1", 'aws:region = "eu-central-1" must be \'eu-west-1\', the AWS region of \'eu-west\''),
    ("speech:jurisdiction", "us", "speech:jurisdiction = \"us\" must be 'eu': the topology puts eu-west there"),
    ("speech:domain", "Speech_Example", 'speech:domain = "Speech_Example" is not allowed: a lower-case DNS name'),
    ("speech:hostedZoneId", "zone-1", 'speech:hostedZoneId = "zone-1" is not allowed: a Route 53 hosted zone id'),
    ("speech:kubernetesVersion", "1.21", 'speech:kubernetesVersion = "1.21" is not supported; use one of 1.32'),
    ("speech:vpcCidr", "10.0.0.0/8", 'speech:vpcCidr = "10.0.0.0/8" must be a private IPv4 network from /16 to /20'),
    ("speech:vpcCidr", "8.8.0.0/16", 'speech:vpcCidr = "8.8.0.0/16" must be a private IPv4 network'),
    ("speech:vpcCidr", "10.0.0.300/16", 'speech:vpcCidr = "10.0.0.300/16" is not an IPv4 network'),
    ("speech:availabilityZones", 1, "speech:availabilityZones = 1 must be a whole number from 2 to 3"),
    ("speech:model", {"name": "Whisper Base", "version": "1"},
     'speech:model.name = "Whisper Base" must be a lower-case model name'),
    ("speech:model", {"name": "whisper-base", "version": "../1"},
     'speech:model.version = "../1" must be a version string'),
    ("speech:model", {"name": "whisper-base", "version": "1", "language": {"en": "whisper-tiny.en"}},
     'speech:model.language = {"en": "whisper-tiny.en"} is not known; use name, version, shadow, languages'),
    ("speech:model", {"name": "whisper-tiny.en", "version": "1"},
     'speech:model.name = "whisper-tiny.en" is English-only, but it serves every language not under languages'),
    ("speech:model", {"name": "whisper-base", "version": "1", "languages": {"es": "whisper-tiny.en"}},
     'speech:model.languages.es = "whisper-tiny.en" is an English-only model; map it to en only'),
    ("speech:model", {"name": "whisper-base", "version": "1", "languages": {"english": "whisper-tiny.en"}},
     'speech:model.languages.english = "whisper-tiny.en" is not under an ISO 639-1 code such as en or es'),
    ("speech:model", {"name": "whisper-base", "version": "1", "languages": {"en": "whisper-base"}},
     'speech:model.languages.en = "whisper-base" is speech:model.name already, which serves every language'),
    ("speech:model", {"name": "whisper-base", "version": "1", "languages": ["whisper-tiny.en"]},
     'speech:model.languages = ["whisper-tiny.en"] must map language codes to model names'),
    ("speech:image", "ghcr.io/speech-platform/serving",
     'speech:image = "ghcr.io/speech-platform/serving" is not allowed: a container image pinned'),
    ("speech:image", "ghcr.io/speech-platform/serving:latest",
     "must be pinned: ':latest' makes deployments unrepeatable"),
    ("speech:cloudflare", {"accountId": "abc", "zoneId": "fedcba9876543210fedcba9876543210"},
     'speech:cloudflare.accountId = "abc" must be a 32-character lower-case hex Cloudflare id'),
    ("speech:scope", "planet", 'speech:scope = "planet" must be "regional" or "global"'),
    ("speech:gpuInstanceType", ["g6.xlarge"],
     'speech:gpuInstanceType = ["g6.xlarge"] is not a known key; known keys: availabilityZones'),
    ("speech:gpuPool", "{not json", 'speech:gpuPool = "{not json" is not valid JSON/YAML'),
]  # fmt: skip


@pytest.mark.parametrize("key, value, message", CASES, ids=[f"{c[0]}={c[1]!r}"[:60] for c in CASES])
def test_config_error_names_key_value_and_what_is_allowed(key, value, message):
    with pytest.raises(config.ConfigError) as caught:
        config.load("eu-west", with_key("eu-west", key, value), DEFAULT_TOPOLOGY)
    assert message in str(caught.value)
    assert str(caught.value).endswith("(Pulumi.eu-west.yaml)")
    assert "\n" not in str(caught.value)


def test_global_stack_errors_name_their_keys():
    with pytest.raises(
        config.ConfigError, match=r'speech:stackPrefix = "speech-platform" is not allowed: <organization>/<project>'
    ):
        config.load("global", with_key("global", "speech:stackPrefix", "speech-platform"), DEFAULT_TOPOLOGY)
    with pytest.raises(config.ConfigError, match=r"speech:gpuPool = .* is not a known key"):
        config.load("global", with_key("global", "speech:gpuPool", {"minSize": 1}), DEFAULT_TOPOLOGY)


def test_the_real_program_stops_at_start_with_the_config_message_and_creates_nothing():
    bad = with_key("us-west", "speech:gpuInstanceTypes", ["g6.xlarge", "m5.large"])
    with pytest.raises(
        pulumi.RunError, match=r'speech:gpuInstanceTypes\[1\] = "m5.large" is not an x86 NVIDIA GPU'
    ) as caught:
        offline.run("us-west", DEFAULT_TOPOLOGY, config=bad)
    assert caught.value.__cause__ is None  # one message, no provider traceback chained under it


def test_spot_pool_left_out_means_disabled():
    cfg = config.load("eu-west", with_key("eu-west", "speech:spotPool", None), DEFAULT_TOPOLOGY)
    assert isinstance(cfg, config.RegionalConfig)
    assert not cfg.spot_pool.enabled


def test_cloudflare_hostname_is_required_in_global_and_must_not_be_the_route53_domain():
    cloudflare = dict(offline.stack_config("global")["speech:cloudflare"])
    cfg = config.load("global", offline.stack_config("global"), DEFAULT_TOPOLOGY)
    assert isinstance(cfg, config.GlobalConfig) and cfg.cloudflare is not None
    assert cfg.cloudflare.hostname == cloudflare["hostname"]
    with pytest.raises(
        config.ConfigError, match=r"speech:cloudflare.hostname = <missing> must be the load balancer's DNS name"
    ):
        config.load(
            "global",
            with_key("global", "speech:cloudflare", {k: v for k, v in cloudflare.items() if k != "hostname"}),
            DEFAULT_TOPOLOGY,
        )
    same = {**cloudflare, "hostname": "speech.example.com"}
    with pytest.raises(
        config.ConfigError, match=r"must differ from speech:domain: Route 53 already answers for speech\.example\.com"
    ):
        config.load("global", with_key("global", "speech:cloudflare", same), DEFAULT_TOPOLOGY)
    regional = {**offline.stack_config("eu-west")["speech:cloudflare"], "hostname": "edge.example.com"}
    with pytest.raises(
        config.ConfigError, match=r'speech:cloudflare\.hostname = "edge\.example\.com" belongs in the global stack only'
    ):
        config.load("eu-west", with_key("eu-west", "speech:cloudflare", regional), DEFAULT_TOPOLOGY)


def test_global_load_balancer_answers_on_its_own_hostname(program):
    (balancer,) = program("global").of_type("cloudflare:index/loadBalancer:LoadBalancer")
    assert balancer.inputs["name"] == "edge.example.com"
