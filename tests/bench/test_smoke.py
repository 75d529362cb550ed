"""The drills keep running: each ``--quick`` run ends, prints its tables with the machine and writes its JSON.

Nothing here asserts a speed or a latency (they belong to the README, measured by the commands themselves); the
failover drill's verdict is behaviour, not speed, so its exit status is asserted.
"""

from __future__ import annotations

import json

import pytest

from bench import failover, infra_scale, load


@pytest.mark.slow
def test_the_load_bench_measures_streams_batch_the_long_recording_and_tts_beside_the_peer(tmp_path, capsys):
    out = tmp_path / "load.json"
    assert load.main(["--quick", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("machine: ") and "cores" in printed.splitlines()[0]
    result = json.loads(out.read_text())
    assert {"cpu", "cores", "load_average"} <= set(result["machine"])
    assert [lv["streams"] for lv in result["streams"]["levels"]][:1] == [1]
    assert result["streams"]["levels"][0]["finals"] > 0 and result["streams"]["levels"][0]["errors"] == 0
    assert [lv["concurrency"] for lv in result["batch_throughput"]["levels"]] == list(load.QUICK.batch_levels)
    for level in result["batch_throughput"]["levels"]:
        assert level["ours"] > 0 and level["peer"] > 0, level
    assert result["batch_short"]["ours_p50_s"] > 0 and result["batch_short"]["peer_p50_s"] > 0
    assert result["batch_long"]["audio_s"] >= 60 and result["batch_long"]["peer_rtf"] > 0
    tts = result["tts"]
    assert tts["misses_reported"] == tts["hits_reported"] == tts["texts"] == load.QUICK.tts_texts, tts
    assert tts["cold_p50_s"] > 0 and tts["hit_p50_s"] > 0


@pytest.mark.slow
def test_the_failover_drill_keeps_eu_data_in_the_eu_and_moves_everyone_else(tmp_path, capsys):
    out = tmp_path / "failover.json"
    status = failover.main(["--quick", "--out", str(out)])
    printed = capsys.readouterr().out
    result = json.loads(out.read_text())
    assert status == 0, printed
    assert all(check["passed"] for check in result["checks"]) and len(result["checks"]) == 6
    callers = {row["caller"] for row in result["summary"]}
    assert callers == set(failover.CALLERS), callers
    assert result["eu_refusals_on_non_eu_servers"] == {"us-west": 0, "ap-northeast": 0}


@pytest.mark.slow
def test_the_infra_scale_bench_times_every_stack_of_both_topologies(tmp_path, capsys):
    out = tmp_path / "infra_scale.json"
    assert infra_scale.main(["--quick", "--out", str(out)]) == 0
    assert "global stack:" in capsys.readouterr().out
    result = json.loads(out.read_text())
    default, generated = result["runs"]
    assert default["regions"] == 3 and set(default["regional_s"]) == {"us-west", "eu-west", "ap-northeast"}
    assert generated["regions"] == 6 and len(generated["regional_s"]) == 6
    assert generated["global_resources"] > default["global_resources"], "more regions, more routing records"


def test_the_generated_topology_keeps_eu_areas_in_the_eu_at_every_size():
    for count in (3, 6, 30):
        topology = infra_scale.generated_topology(count)
        assert len(topology.regions) == count
        assert {r.jurisdiction for r in topology.continent_chain("EU")} == {"eu"}
        assert {r.jurisdiction for r in topology.cloudflare_region_chain("EEU")} == {"eu"}
    thirty = infra_scale.generated_topology(30)
    assert len(thirty.regions_in("eu")) == 6 and len(thirty.continent_chain("EU")) >= 2
