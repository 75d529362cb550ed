"""Release a model version or image region by region, in `speech:deployOrder`, stopping at the first failed gate.

For each regional stack in turn (the canary region first, the EU last, as `python -m infra.deploy_order` lists
them): set the new version in the stack's config, `pulumi up` (the new pod template starts each serving Rollout's
canary), then wait on `kubectl argo rollouts status` for every Rollout of the region. Healthy means the canary
passed the smoke check and every gate and was promoted; anything else (aborted by a gate, degraded, timed out)
stops the release there, and no later region is touched. The changed stack files (`Pulumi.<stack>.yaml`) are left
for the release's commit:

    python -m infra.release --model-version 1.1.0
    python -m infra.release --image registry.example.com/speech/serving:1.4.2 --plan   # print, run nothing

The waiting is a `RegionGate` so the ordering and stopping logic is tested without a cloud (tests/infra).
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from contract import service
from contract.topology import DEFAULT_TOPOLOGY, Topology
from infra import config
from infra.deploy_order import StackTarget, deploy_waves
from infra.k8s.workload import BATCH, REALTIME, rollout_name
from infra.project import REPOSITORY, Project

# A canary at the default steps takes under an hour from its first pod to promotion (infra.k8s.rollout).
DEFAULT_TIMEOUT_S = 2 * 3600


@dataclass(frozen=True)
class Change:
    """What the release sets in every regional stack: a model version, an image, or both."""

    model_version: str | None = None
    image: str | None = None

    def config_settings(self) -> list[tuple[str, str]]:
        """(`pulumi config set --path` key, value) pairs."""
        settings = [("speech:model.version", self.model_version)] if self.model_version else []
        return settings + ([("speech:image", self.image)] if self.image else [])


@dataclass(frozen=True)
class Verdict:
    """How a region's canary ended: ``promoted``, or stopped with what `kubectl argo rollouts` said last."""

    promoted: bool
    detail: str


class RegionGate(Protocol):
    """Applies the change to one regional stack and waits for its canaries' verdict."""

    def release(self, target: StackTarget, rollouts: Sequence[str], change: Change) -> Verdict: ...


@dataclass(frozen=True)
class RegionResult:
    stack: str
    verdict: Verdict | None  # None: not reached, because an earlier region stopped the release


def regional_config(
    stack: str, project: Project, topology: Topology, change: Change = Change()
) -> config.RegionalConfig:
    """The regional stack's config as it will read once ``change`` is set: a bad version or image fails here, with
    the config's one-line error, before any region is touched."""
    raw = project.stack_config(stack)
    if change.model_version:
        raw["speech:model"] = {**(raw.get("speech:model") or {}), "version": change.model_version}
    if change.image:
        raw["speech:image"] = change.image
    cfg = config.load(stack, raw, topology)
    if not isinstance(cfg, config.RegionalConfig):
        raise config.ConfigError(f"stack {stack!r} is not a regional stack (speech:scope: regional)")
    return cfg


def serving_rollouts(cfg: config.RegionalConfig) -> tuple[str, ...]:
    """The serving Rollouts of a regional stack: realtime, and batch where the stack has a spot pool."""
    roles = (REALTIME, BATCH) if cfg.spot_pool.enabled else (REALTIME,)
    return tuple(rollout_name(role) for role in roles)


def rollouts_of(stack: str, project: Project, topology: Topology) -> tuple[str, ...]:
    return serving_rollouts(regional_config(stack, project, topology))


def release(
    targets: Sequence[StackTarget], change: Change, gate: RegionGate, rollouts: Callable[[str], Sequence[str]]
) -> list[RegionResult]:
    """Every stack of ``targets`` in order (the canary first) until one is not promoted; the rest are not reached."""
    results: list[RegionResult] = []
    stopped = False
    for target in targets:
        if stopped:
            results.append(RegionResult(target.stack, None))
            continue
        verdict = gate.release(target, rollouts(target.stack), change)
        results.append(RegionResult(target.stack, verdict))
        stopped = not verdict.promoted
    return results


def report(results: Sequence[RegionResult], action: str = "release", undone: str = "not released") -> str:
    lines = []
    for result in results:
        if result.verdict is None:
            lines.append(f"{result.stack}: {undone} (an earlier region stopped the {action})")
        else:
            state = "promoted" if result.verdict.promoted else "STOPPED"
            lines.append(f"{result.stack}: {state}: {result.verdict.detail}")
    return "\n".join(lines)


@dataclass(frozen=True)
class PulumiAndKubectl:
    """The real gate: `pulumi config set` and `pulumi up` on the stack, then `kubectl argo rollouts status`.

    The region's kubeconfig is the stack's own `kubeconfig` output (it mints tokens with `aws eks get-token`, so
    the caller's AWS identity must be allowed on the cluster). With ``dry_run`` the commands are printed, not run.
    """

    timeout_s: int = DEFAULT_TIMEOUT_S
    dry_run: bool = False
    cwd: Path = REPOSITORY.root

    def commands(
        self, target: StackTarget, rollouts: Sequence[str], change: Change, kubeconfig: str
    ) -> list[list[str]]:
        stack = ["--stack", target.qualified]
        commands = [
            ["pulumi", "config", "set", "--path", key, value, *stack] for key, value in change.config_settings()
        ]
        commands.append(["pulumi", "up", "--yes", "--skip-preview", *stack])
        commands += [
            ["kubectl", "argo", "rollouts", "status", name, "--namespace", service.KUBERNETES_NAMESPACE,
             "--timeout", f"{self.timeout_s}s", "--kubeconfig", kubeconfig]
            for name in rollouts
        ]  # fmt: skip
        return commands

    def release(self, target: StackTarget, rollouts: Sequence[str], change: Change) -> Verdict:
        if self.dry_run:
            commands = self.commands(target, rollouts, change, f"<kubeconfig output of {target.qualified}>")
            print("\n".join(shlex.join(c) for c in commands))
            return Verdict(True, "planned")
        with tempfile.TemporaryDirectory() as workdir:
            kubeconfig = Path(workdir) / "kubeconfig"
            for command in self.commands(target, rollouts, change, str(kubeconfig)):
                if command[0] == "kubectl" and not kubeconfig.exists():
                    output = self._run(["pulumi", "stack", "output", "kubeconfig", "--show-secrets",
                                        "--stack", target.qualified])  # fmt: skip
                    if output.returncode != 0:
                        return Verdict(False, f"no kubeconfig: {_last_line(output)}")
                    kubeconfig.write_text(output.stdout)
                result = self._run(command)
                if result.returncode != 0:
                    return Verdict(False, f"{shlex.join(command[:5])}: {_last_line(result)}")
        return Verdict(True, f"{', '.join(rollouts)} healthy")

    def _run(self, command: list[str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(command, cwd=self.cwd, capture_output=True, text=True, check=False)


def _last_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = (result.stderr or result.stdout).strip().splitlines()
    return lines[-1] if lines else f"exit status {result.returncode}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.release", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-version", help="the model version to serve (speech:model.version)")
    parser.add_argument("--image", help="the serving image, pinned by tag or digest (speech:image)")
    parser.add_argument("--timeout", type=int, default=DEFAULT_TIMEOUT_S, help="seconds to wait for each Rollout")
    parser.add_argument("--plan", action="store_true", help="print the commands per region; run nothing")
    args = parser.parse_args(argv)
    if not (args.model_version or args.image):
        parser.error("give --model-version, --image or both")
    change = Change(model_version=args.model_version, image=args.image)
    try:
        waves = deploy_waves()
        stacks = {
            t.stack: serving_rollouts(regional_config(t.stack, REPOSITORY, DEFAULT_TOPOLOGY, change))
            for t in waves.regional
        }
    except (config.ConfigError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    results = release(waves.regional, change, PulumiAndKubectl(args.timeout, dry_run=args.plan), stacks.__getitem__)
    if not args.plan:
        print(report(results))
    return 0 if all(r.verdict is not None and r.verdict.promoted for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
