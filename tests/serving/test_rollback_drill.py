"""The rollback drill's quick run: three loopback regions roll back in deploy order while streams stay on their
version. Its time is measured, not asserted (README, "Rollback")."""

from __future__ import annotations

import json

import pytest

from bench import rollback_drill


@pytest.mark.slow
def test_the_quick_drill_rolls_every_region_back_in_order_and_streams_finish_on_their_version(tmp_path, capsys):
    out = tmp_path / "rollback_drill.json"
    rollback_drill.main(["--quick", "--out", str(out)])
    result = json.loads(out.read_text())
    checks = {name: ok for name, ok in result["checks"].items() if name != "under_five_minutes"}
    assert all(checks.values()), (checks, result["command_output"], result["streams"])
    assert result["rolled_back"] == result["deploy_order"] and len(result["deploy_order"]) == 3
    for stream in result["streams"]:
        assert stream["started_on"] == rollback_drill.NEW and stream["final_versions"] == [rollback_drill.NEW]
    assert result["versions"]["after"] == dict.fromkeys(result["deploy_order"], rollback_drill.OLD)
    assert "rollback of 3 regions" in capsys.readouterr().out
