"""The serving container answers to the topology the infrastructure hands it (SPEECH_TOPOLOGY_FILE)."""

from __future__ import annotations

import json

import pytest

from contract.topology import EU_OUTLYING_COUNTRIES, EUROPEAN_UNION, Jurisdiction, Region, Topology
from serving.settings import ConfigError, load_settings

# A platform team's own regions, none of which the default topology has.
FRANKFURT_AND_MONTREAL = Topology(
    regions=(
        Region(
            key="frankfurt", aws_region="eu-central-1", jurisdiction="eu", timezone="Europe/Berlin",
            continents=("EU", "AF"), cloudflare_regions=("WEU", "EEU"), countries=EU_OUTLYING_COUNTRIES,
        ),
        Region(
            key="montreal", aws_region="ca-central-1", jurisdiction="ca", timezone="America/Toronto",
            continents=("NA", "SA", "AN", "AS", "OC"), cloudflare_regions=("WNAM", "ENAM"), failover=("frankfurt",),
        ),
    ),
    jurisdictions=(EUROPEAN_UNION, Jurisdiction(code="ca", name="Canada (PIPEDA)", is_strict_residency=False)),
    default_region="montreal",
)  # fmt: skip


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch):
    import os

    for name in list(os.environ):
        if name.startswith("SPEECH_") and name != "SPEECH_MODEL_CACHE":
            monkeypatch.delenv(name)


@pytest.fixture
def topology_file(tmp_path):
    path = tmp_path / "topology.json"
    path.write_text(json.dumps(FRANKFURT_AND_MONTREAL.to_dict()))
    return path


def test_a_replica_takes_its_regions_from_the_topology_file(monkeypatch, topology_file):
    monkeypatch.setenv("SPEECH_TOPOLOGY_FILE", str(topology_file))
    monkeypatch.setenv("SPEECH_REGION", "ca-central-1")
    settings = load_settings()
    assert settings.topology == FRANKFURT_AND_MONTREAL
    assert settings.region_label == "montreal"


def test_a_region_the_topology_file_lacks_is_refused_even_if_the_default_topology_has_it(monkeypatch, topology_file):
    monkeypatch.setenv("SPEECH_TOPOLOGY_FILE", str(topology_file))
    monkeypatch.setenv("SPEECH_REGION", "eu-west-1")
    with pytest.raises(ConfigError, match="SPEECH_REGION='eu-west-1': no region is deployed to AWS region 'eu-west-1'"):
        load_settings()


def test_without_a_topology_file_the_default_regions_apply(monkeypatch):
    monkeypatch.setenv("SPEECH_REGION", "eu-west-1")
    assert load_settings().region_label == "eu-west"


def test_a_bad_topology_file_is_named_once_with_what_is_wrong(monkeypatch, tmp_path):
    path = tmp_path / "topology.json"
    data = FRANKFURT_AND_MONTREAL.to_dict()
    data["default_region"] = "frankfurt"
    path.write_text(json.dumps(data))
    monkeypatch.setenv("SPEECH_TOPOLOGY_FILE", str(path))
    monkeypatch.setenv("SPEECH_REGION", "ca-central-1")
    with pytest.raises(ConfigError) as error:
        load_settings()
    message = str(error.value)
    assert message.startswith(f"SPEECH_TOPOLOGY_FILE='{path}': {path}: default region 'frankfurt'")
    assert "SPEECH_REGION" not in message, "the region is not blamed for the file's mistake"
