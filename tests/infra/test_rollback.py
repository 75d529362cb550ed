"""`python -m infra.rollback`: which regions, in what order, to which version; the live run is the drill's
(bench/rollback_drill.py, smoke-tested in tests/serving/test_rollback_drill.py)."""

from __future__ import annotations

import pytest

from contract.topology import DEFAULT_TOPOLOGY, TopologyError
from infra import rollback
from infra.deploy_order import deploy_waves


def _deploy_order() -> list[str]:
    waves = deploy_waves()
    return [t.stack for t in (waves.canary, *waves.regions)]


def _regions(keys: list[str]):
    return tuple(DEFAULT_TOPOLOGY.region(key) for key in keys)


def test_all_regions_roll_back_in_the_deploy_order_the_global_stack_documents():
    order = _regions(_deploy_order())
    assert [r.key for r in rollback.regions_to_roll(order, None, DEFAULT_TOPOLOGY)] == _deploy_order()


def test_a_jurisdiction_rolls_back_only_its_own_regions_in_deploy_order():
    order = _regions(_deploy_order())
    assert [r.key for r in rollback.regions_to_roll(order, "eu", DEFAULT_TOPOLOGY)] == ["eu-west"]
    with pytest.raises(TopologyError, match="unknown jurisdiction 'mars'"):
        rollback.regions_to_roll(order, "mars", DEFAULT_TOPOLOGY)


@pytest.mark.parametrize(
    ("current", "store", "expected"),
    [("2.0.0", ["1.0.0", "1.1.0", "2.0.0"], "1.1.0"), ("1.1.0", ["1.0.0", "1.1.0", "2.0.0"], "1.0.0")],
)
def test_the_previous_version_is_the_newest_the_store_holds_below_the_current_one(current, store, expected):
    assert rollback.previous_version(current, store) == expected


@pytest.mark.parametrize(
    ("current", "store", "message"),
    [("1.0.0", ["1.0.0", "2.0.0"], "no version older than '1.0.0'; name one with --to"),
     ("3.0.0", ["1.0.0", "2.0.0"], "'3.0.0' is not in the store (1.0.0, 2.0.0)")],
)  # fmt: skip
def test_without_an_older_version_the_rollback_asks_for_one(current, store, message):
    with pytest.raises(rollback.RollbackError, match=message.replace("(", r"\(").replace(")", r"\)")):
        rollback.previous_version(current, store)


def test_each_region_is_reached_on_its_regional_hostname_unless_replicas_are_named():
    regions = _regions(_deploy_order())
    plans = rollback.plan(regions, "speech.example.com", {"eu-west": ["http://10.0.3.7:8000", "http://10.0.4.2:8000"]})
    by_region = {p.region: p.endpoints for p in plans}
    assert by_region["us-west"] == ("https://us-west.speech.example.com",)
    assert by_region["eu-west"] == ("http://10.0.3.7:8000", "http://10.0.4.2:8000")
    assert [p.region for p in plans] == _deploy_order()


def test_an_endpoint_for_a_region_outside_the_rollback_is_refused():
    with pytest.raises(rollback.RollbackError, match="--endpoint names us-west, which this rollback does not touch"):
        rollback.plan(_regions(["eu-west"]), "speech.example.com", {"us-west": ["http://127.0.0.1:1"]})


def test_the_command_needs_an_admin_key_and_says_where_to_put_it(monkeypatch, capsys):
    monkeypatch.delenv(rollback.ADMIN_KEY_VARIABLE, raising=False)
    assert rollback.main(["--jurisdiction", "eu"]) == 1
    assert "no admin key: pass --admin-key-file or set SPEECH_ADMIN_KEY" in capsys.readouterr().err


def test_an_unreachable_region_stops_the_rollback_naming_it(monkeypatch, capsys):
    monkeypatch.setenv(rollback.ADMIN_KEY_VARIABLE, "admin")
    assert rollback.main(["--all", "--endpoint", "us-west=http://127.0.0.1:9"]) == 1
    assert "http://127.0.0.1:9/v1/models" in capsys.readouterr().err
