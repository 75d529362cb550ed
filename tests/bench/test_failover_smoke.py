"""The drills keep running: each ``--quick`` run ends, prints its tables with the machine and writes its JSON.

Nothing here asserts a speed or a latency (they belong to the README, measured by the commands themselves); the
failover drill's verdict is behaviour, not speed, so its exit status is asserted.
"""

from __future__ import annotations

import json

import pytest

from bench import failover


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
