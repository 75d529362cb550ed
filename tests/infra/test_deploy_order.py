"""`speech:deployOrder`: the order CI deploys the regional stacks in, validated like every key, shown in the README."""

from __future__ import annotations

import pytest

from contract.topology import DEFAULT_TOPOLOGY
from infra import config, deploy_order, markers, offline

README = offline.ROOT / "README.md"


def _global(order) -> dict:
    raw = offline.stack_config("global")
    if order is None:
        raw.pop("speech:deployOrder")
    else:
        raw["speech:deployOrder"] = order
    return raw


def test_the_canary_leads_every_region_follows_once_and_global_comes_last():
    waves = deploy_order.deploy_waves()
    assert [t.stack for t in waves.stacks] == ["us-west", "ap-northeast", "eu-west", "global"]
    assert waves.canary.qualified == "organization/speech-platform/us-west"
    assert [t.aws_region for t in waves.stacks] == ["us-west-2", "ap-northeast-1", "eu-west-1", "us-east-1"]


def test_left_out_the_default_region_is_the_canary_then_topology_order():
    cfg = config.load("global", _global(None), DEFAULT_TOPOLOGY)
    assert isinstance(cfg, config.GlobalConfig)
    assert [r.key for r in cfg.deploy_order] == ["us-west", "eu-west", "ap-northeast"]


@pytest.mark.parametrize(
    "order, message",
    [
        (["us-west", "eu-west"], 'speech:deployOrder = ["us-west", "eu-west"] leaves out ap-northeast'),
        (["us-west", "eu-west", "ap-northeast", "eu-west"], 'speech:deployOrder[3] = "eu-west" is listed twice'),
        (["us-west", "eu-central", "ap-northeast"], 'speech:deployOrder[1] = "eu-central" is not a region'),
        ("us-west", 'speech:deployOrder = "us-west" must list every region once, the canary first'),
    ],
)
def test_a_bad_deploy_order_is_one_clear_error(order, message):
    with pytest.raises(config.ConfigError) as caught:
        config.load("global", _global(order), DEFAULT_TOPOLOGY)
    assert message in str(caught.value) and str(caught.value).endswith("(Pulumi.global.yaml)")


def test_the_readme_shows_the_order_ci_deploys_in():
    block = markers.between(README.read_text(), deploy_order.WAVES_START, deploy_order.WAVES_END)
    assert block == deploy_order.render_markdown(deploy_order.deploy_waves()), (
        "README deploy order is stale: run python -m infra.deploy_order --write README.md"
    )


def test_the_cli_prints_github_outputs_and_rewrites_only_the_marked_block(tmp_path, capsys):
    assert deploy_order.main(["--github"]) == 0
    names = [line.split("=", 1)[0] for line in capsys.readouterr().out.splitlines()]
    assert names == ["canary", "regions", "global", "stacks"]
    target = tmp_path / "README.md"
    target.write_text(f"intro\n{deploy_order.WAVES_START}\nold\n{deploy_order.WAVES_END}\noutro\n")
    assert deploy_order.main(["--write", str(target)]) == 0
    text = target.read_text()
    assert text.startswith("intro\n") and text.endswith("outro\n") and "1. `us-west`, the canary region;" in text
