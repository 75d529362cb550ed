"""The drills keep running: each ``--quick`` run ends, prints its tables with the machine and writes its JSON.

Nothing here asserts a speed or a latency (they belong to the README, measured by the commands themselves).
"""

from __future__ import annotations

import json

import pytest

from bench import infra_scale


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
