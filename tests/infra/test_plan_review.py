"""What the offline plan tells a reviewer without cloud credentials: the policy pack's verdict on every resource, and
what a change does, between two stacks or against a git ref, as text, Markdown and JSON."""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from infra import offline, plan, plan_diff, plan_report
from policy.rules import RULES
from tests.conftest import STACKS

REPO = offline.ROOT


def _diff(program, base: str, head: str) -> plan_diff.PlanDiff:
    renames = plan_diff.stack_renames(
        base,
        offline.stack_config(base).get("aws:region", ""),
        head,
        offline.stack_config(head).get("aws:region", ""),
    )
    return plan_diff.diff_plans(
        plan.as_json(program(base)), plan.as_json(program(head)), base_label=base, head_label=head, renames=renames
    )


def _changes(diff: plan_diff.PlanDiff, name: str) -> dict[str, tuple]:
    (resource,) = [r for r in diff.changed if r.name == name]
    return {c.path: (c.before, c.after) for c in resource.changes}


@pytest.mark.parametrize("stack", STACKS)
def test_every_resource_of_every_stack_gets_a_passing_verdict_from_every_rule(program, stack):
    graph = program(stack)
    verdicts = plan_report.resource_verdicts(graph)
    assert [(v.type, v.name) for v in verdicts] == [(r.type, r.name) for r in graph.resources]
    for verdict in verdicts:
        assert list(verdict.violations) == [rule.name for rule in RULES]
        assert verdict.passed, (verdict.name, verdict.violations)


def test_a_violating_resource_is_named_with_its_rule_and_fails_the_report(program):
    graph = program("eu-west")
    (node_group,) = [r for r in graph.of_type("aws:eks/nodeGroup:NodeGroup") if r.name.endswith("-gpu-group")]
    untainted = offline.Registration(**{**vars(node_group), "inputs": {**node_group.inputs, "taints": []}})
    graph = offline.Graph(graph.stack, [untainted if r is node_group else r for r in graph.resources])
    verdicts = plan_report.resource_verdicts(graph)
    failing = [v for v in verdicts if not v.passed]
    assert [(v.name, [rule for rule, found in v.violations.items() if found]) for v in failing] == [
        (node_group.name, ["tainted-gpu-node-groups"])
    ]
    report = plan_report.StackReport(graph.stack, len(graph.resources), verdicts, None)
    assert not report.passed
    text = plan_report.render_text([report])
    assert f"FAIL  tainted-gpu-node-groups\n      aws:eks/nodeGroup:NodeGroup  {node_group.name}:" in text
    markdown = plan_report.render_markdown([report])
    assert f"- ❌ `tainted-gpu-node-groups` on `{node_group.name}`" in markdown
    assert f"- ❌ `{node_group.name}` `aws:eks/nodeGroup:NodeGroup`" in markdown
    as_json = plan_report.as_json([report])
    assert as_json["passed"] is False
    (entry,) = [r for r in as_json["stacks"][0]["policy"]["resources"] if not r["passed"]]
    assert entry["name"] == node_group.name and entry["violations"]["tainted-gpu-node-groups"]


@pytest.mark.parametrize("stack", STACKS)
def test_a_stack_against_itself_has_no_difference(program, stack):
    diff = _diff(program, stack, stack)
    assert diff.is_empty
    assert diff.unchanged == len(program(stack).resources)


def test_us_west_against_eu_west_shows_the_eu_fences_and_no_renamed_resource(program):
    diff = _diff(program, "us-west", "eu-west")
    assert not diff.added and not diff.removed, "the same components build every regional stack"
    assert _changes(diff, "speech-eu-west-network-vpc") == {"cidrBlock": ("10.10.0.0/16", "10.20.0.0/16")}
    bucket_policy = _changes(diff, "speech-eu-west-store-policy")
    fence = bucket_policy["policy.Statement[Sid=DenyDataOutsideTheVpcEndpoint]"]
    assert fence[0] == plan_diff.MISSING and fence[1]["Effect"] == "Deny", "only the EU store is fenced to its VPC"
    key_policy = _changes(diff, "speech-eu-west-key-key")
    dropped = [before for before, after in key_policy.values() if after == plan_diff.MISSING]
    assert dropped and all("model-replication" in arn for arn in dropped), "no replication role reaches the EU key"
    assert _changes(diff, "speech-eu-west-cluster-gpu-day") == {"timeZone": ("America/Los_Angeles", "Europe/Dublin")}
    assert [(c.path, c.before, c.after) for c in diff.outputs] == [("jurisdiction", "us", "eu")]
    changed_types = {r.type for r in diff.changed}
    assert "kubernetes:core/v1:Service" not in changed_types, "names that differ only by region are no difference"


def test_two_unrestricted_regions_differ_by_no_residency_fence(program):
    diff = _diff(program, "us-west", "ap-northeast")
    for resource in diff.changed:
        assert not any("VpcEndpoint" in c.path for c in resource.changes), resource.name


def _policy_plan(*statements: dict) -> dict:
    inputs = {"policy": json.dumps({"Statement": list(statements)})}
    return {"resources": [{"type": "t", "name": "p", "parent": None, "inputs": inputs}]}


def test_a_list_element_with_a_sid_is_compared_by_it_and_a_new_statement_is_one_change():
    base = _policy_plan({"Sid": "A", "Effect": "Allow"})
    head = _policy_plan({"Sid": "B", "Effect": "Deny", "Action": ["s3:*"]}, {"Sid": "A", "Effect": "Deny"})
    diff = plan_diff.diff_plans(base, head, base_label="base", head_label="head")
    (resource,) = diff.changed
    assert [(c.path, c.before, c.after) for c in resource.changes] == [
        ("policy.Statement[Sid=A].Effect", "Allow", "Deny"),
        ("policy.Statement[Sid=B]", plan_diff.MISSING, {"Action[0]": "s3:*", "Effect": "Deny", "Sid": "B"}),
    ]


def test_a_long_markdown_report_fits_a_github_comment():
    changes = tuple(plan_diff.PropertyChange(f"tags.t{i}", "x" * 100, "y" * 100) for i in range(2000))
    diff = plan_diff.PlanDiff("main", "head", (), (), (plan_diff.ResourceChange("t", "r", changes),), 0, ())
    markdown = plan_report.render_markdown([plan_report.StackReport("eu-west", 1, None, diff)])
    assert len(markdown) <= plan_report.COMMENT_LIMIT + 200
    assert "| change | `r` | `t` |" in markdown


def _copy_repository(target: Path) -> None:
    listed = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO, capture_output=True, check=True, timeout=60
    )
    for name in filter(None, listed.stdout.decode().split("\0")):
        source = REPO / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)


def _git(cwd: Path, *args: str) -> None:
    identity = ["-c", "user.name=test", "-c", "user.email=test@example.com"]
    subprocess.run(["git", *identity, *args], cwd=cwd, check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def changed_repository(tmp_path_factory) -> Path:
    """A copy of this repository committed as it is, then one known change in the working tree: eu-west's GPU pool
    may grow to 12 nodes instead of 8."""
    repo = tmp_path_factory.mktemp("repo")
    _copy_repository(repo)
    _git(repo, "init", "-q", "-b", "main")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", "base")
    stack_file = repo / "Pulumi.eu-west.yaml"
    text = stack_file.read_text()
    assert text.count("maxSize: 8\n") == 1, "the GPU pool's maximum, and no other size, is 8"
    stack_file.write_text(text.replace("maxSize: 8\n", "maxSize: 12\n"))
    return repo


@dataclass(frozen=True)
class PlanRun:
    returncode: int
    stdout: str
    stderr: str


def _plan(repo: Path, capsys: pytest.CaptureFixture[str], *args: str) -> PlanRun:
    """`python -m infra.plan ARGS --project REPO`, run through the CLI's own `main` in this process: the working
    tree's code is the copy's, and the provider SDKs are already imported here. The base side of `--diff-ref` is
    still the ref's own `python -m infra.plan` in a subprocess (infra/plan_ref.py)."""
    capsys.readouterr()
    returncode = plan.main([*args, "--project", str(repo)])
    captured = capsys.readouterr()
    return PlanRun(returncode, captured.out, captured.err)


@pytest.mark.slow
def test_a_diff_against_a_git_ref_shows_exactly_the_change_made_since(changed_repository, capsys):
    result = _plan(changed_repository, capsys, "eu-west", "--policy", "--diff-ref", "main", "--format", "json")
    assert result.returncode == 0, result.stderr
    (report,) = json.loads(result.stdout)["stacks"]
    diff = report["diff"]
    assert (diff["added"], diff["removed"], diff["outputs"]) == ([], [], [])
    assert diff["changed"] == [
        {
            "type": "aws:eks/nodeGroup:NodeGroup",
            "name": "speech-eu-west-cluster-gpu-group",
            "properties": [{"path": "scalingConfig.maxSize", "before": 8, "after": 12}],
        }
    ]
    assert report["policy"]["passed"] is True


@pytest.mark.slow
def test_a_stack_the_ref_lacks_is_all_added_and_an_unknown_ref_is_a_clear_error(changed_repository, capsys):
    new_stack = changed_repository / "Pulumi.eu-west-copy.yaml"
    shutil.copy(changed_repository / "Pulumi.eu-west.yaml", new_stack)
    try:
        result = _plan(changed_repository, capsys, "eu-west-copy", "--diff-ref", "main", "--format", "json")
        assert result.returncode == 0, result.stderr
        (report,) = json.loads(result.stdout)["stacks"]
        assert len(report["diff"]["added"]) == report["resources"] and report["diff"]["changed"] == []
        unknown = _plan(changed_repository, capsys, "eu-west", "--diff-ref", "no-such-branch")
        assert unknown.returncode == 2
        assert "unknown git ref 'no-such-branch'" in unknown.stderr
    finally:
        new_stack.unlink()
