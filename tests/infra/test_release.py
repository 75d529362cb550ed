"""`python -m infra.release`: regions in `speech:deployOrder`, stopping at the first region whose gate fails."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import pytest

from contract.topology import DEFAULT_TOPOLOGY
from infra import release
from infra.deploy_order import StackTarget, deploy_waves
from infra.project import REPOSITORY

CHANGE = release.Change(model_version="1.1.0")


@dataclass
class FakeRegions:
    """A per-region status source: each region's canary verdict, and the order the release asked in."""

    failing: set[str] = field(default_factory=set)
    asked: list[tuple[str, tuple[str, ...], release.Change]] = field(default_factory=list)

    def release(self, target: StackTarget, rollouts: Sequence[str], change: release.Change) -> release.Verdict:
        self.asked.append((target.stack, tuple(rollouts), change))
        if target.stack in self.failing:
            return release.Verdict(False, "rollout 'speech-serving' aborted: metric error-rate assessed Failed")
        return release.Verdict(True, "healthy")


def _rollouts(stack: str) -> tuple[str, ...]:
    return release.rollouts_of(stack, REPOSITORY, DEFAULT_TOPOLOGY)


def test_a_release_visits_every_region_in_deploy_order_with_the_canary_first_and_the_eu_last():
    regions = FakeRegions()
    results = release.release(deploy_waves().regional, CHANGE, regions, _rollouts)
    assert [stack for stack, _, _ in regions.asked] == ["us-west", "ap-northeast", "eu-west"]
    assert all(r.verdict is not None and r.verdict.promoted for r in results)
    assert {change for _, _, change in regions.asked} == {CHANGE}


def test_a_failed_gate_stops_the_release_in_that_region_and_no_later_region_is_touched():
    regions = FakeRegions(failing={"ap-northeast"})
    results = release.release(deploy_waves().regional, CHANGE, regions, _rollouts)
    assert [stack for stack, _, _ in regions.asked] == ["us-west", "ap-northeast"]
    assert [(r.stack, r.verdict and r.verdict.promoted) for r in results] == [
        ("us-west", True),
        ("ap-northeast", False),
        ("eu-west", None),
    ]
    text = release.report(results)
    assert "ap-northeast: STOPPED: rollout 'speech-serving' aborted" in text
    assert "eu-west: not released" in text


def test_a_failing_canary_region_stops_everything():
    regions = FakeRegions(failing={"us-west"})
    results = release.release(deploy_waves().regional, CHANGE, regions, _rollouts)
    assert [stack for stack, _, _ in regions.asked] == ["us-west"]
    assert [r.verdict for r in results[1:]] == [None, None]


def test_each_region_waits_on_every_serving_rollout_it_runs():
    regions = FakeRegions()
    release.release(deploy_waves().regional, CHANGE, regions, _rollouts)
    assert {stack: rollouts for stack, rollouts, _ in regions.asked}["eu-west"] == (
        "speech-serving",
        "speech-serving-batch",
    )


def test_the_real_gate_sets_the_version_deploys_and_waits_on_argo_for_each_rollout():
    target = deploy_waves().canary
    change = release.Change(model_version="1.1.0", image="registry.example.com/speech/serving:1.4.2")
    commands = release.PulumiAndKubectl(timeout_s=600).commands(target, ("speech-serving",), change, "/tmp/kc")
    assert commands[0] == [
        "pulumi",
        "config",
        "set",
        "--path",
        "speech:model.version",
        "1.1.0",
        "--stack",
        target.qualified,
    ]
    assert commands[1][4:6] == ["speech:image", "registry.example.com/speech/serving:1.4.2"]
    assert commands[2][:3] == ["pulumi", "up", "--yes"]
    assert commands[3] == [
        "kubectl", "argo", "rollouts", "status", "speech-serving", "--namespace", "speech", "--timeout", "600s",
        "--kubeconfig", "/tmp/kc",
    ]  # fmt: skip


def test_the_cli_plans_without_running_and_refuses_a_release_of_nothing(capsys):
    assert release.main(["--model-version", "1.1.0", "--plan"]) == 0
    planned = [line.split("--stack ")[-1].split()[0] for line in capsys.readouterr().out.splitlines() if " up " in line]
    assert [stack.rsplit("/", 1)[-1] for stack in planned] == ["us-west", "ap-northeast", "eu-west"]
    with pytest.raises(SystemExit) as exited:
        release.main([])
    assert exited.value.code == 2
    assert "give --model-version, --image or both" in capsys.readouterr().err
