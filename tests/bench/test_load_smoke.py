"""The drills keep running: each ``--quick`` run ends, prints its tables with the machine and writes its JSON.

Nothing here asserts a speed or a latency (they belong to the README, measured by the commands themselves).
"""

from __future__ import annotations

import json

import pytest

from bench import load


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
